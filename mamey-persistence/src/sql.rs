//! What the SQL stores share: table names, reading an outbox row, and the
//! mapping of sqlx errors onto mamey's.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use mamey_core::InitContext;
use mamey_core::config::{Config, ConfigError};
use mamey_core::health::{HealthStatus, Probe};
use mamey_messaging::{OutboxEntry, OutgoingMessage, Properties, Route, StoreError};
use sqlx::{ColumnIndex, Decode, Row, Type};

/// The outbox columns every claim returns, in the order [`entry`] reads
/// them, each prefixed with `prefix` (a table alias and a dot, or nothing);
/// `headers` is the expression that reads the headers as text.
pub(crate) fn outbox_columns(prefix: &str, headers: &str) -> String {
    [
        "message_id",
        "exchange",
        "routing_key",
        "correlation_id",
        "message_type",
        "content_type",
        "persistent",
        "timestamp_ms",
        "headers",
        "body",
        "attempts",
        "seq",
    ]
    .iter()
    .map(|column| match *column {
        "headers" => headers.to_owned(),
        column => format!("{prefix}{column}"),
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// Whether `name` is `table` or `schema.table` of plain lower-case
/// identifiers, short enough that the index names made from them (up to
/// 10 more bytes) stay within Postgres's 63.
pub(crate) fn is_table_name(name: &str) -> bool {
    let ident = |part: &str| {
        !part.is_empty()
            && part.len() <= 48
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !part.as_bytes()[0].is_ascii_digit()
    };
    match name.split_once('.') {
        Some((schema, table)) => ident(schema) && ident(table),
        None => ident(name),
    }
}

/// The unqualified part of a table name, for naming its index.
#[cfg(feature = "postgres")]
pub(crate) fn unqualified(table: &str) -> &str {
    table.rsplit('.').next().unwrap_or(table)
}

/// `name` or `schema.name` as quoted SQL identifiers (`"schema"."name"`),
/// so that reserved words such as `order` work. Names are checked by
/// [`is_table_name`]: no quotes inside.
pub(crate) fn quoted(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// Maps a sqlx error onto mamey's error model, for handlers that use the
/// pool: a unique, foreign-key or exclusion violation is a conflict, no
/// row a "not found", a lost connection or an exhausted pool unavailable (retried),
/// anything else internal. The database's text stays in the source, for
/// logs.
///
/// The same for Postgres and SQLite: `mamey_persistence::postgres::error`
/// and `mamey_persistence::sqlite::error` are this function.
///
/// ```
/// use mamey_core::ErrorKind;
/// use mamey_persistence::error;
///
/// assert_eq!(error(sqlx::Error::RowNotFound).kind(), ErrorKind::NotFound);
/// assert_eq!(error(sqlx::Error::PoolTimedOut).kind(), ErrorKind::Unavailable);
/// ```
#[must_use]
pub fn error(error: sqlx::Error) -> mamey_core::Error {
    use mamey_core::Error;
    match &error {
        sqlx::Error::RowNotFound => Error::not_found("db.not_found", "no such row"),
        sqlx::Error::Database(db)
            if matches!(
                db.kind(),
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
            ) || db.code().as_deref() == Some("23P01") =>
        {
            Error::conflict("db.conflict", "conflicts with existing data")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => {
            Error::unavailable("db.unavailable", "the database is unavailable")
        }
        sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
            Error::unavailable("db.unavailable", "the database is unavailable")
        }
        _ => Error::internal("database error"),
    }
    .with_source(error)
}

/// Error codes worth retrying. Postgres SQLSTATE classes (five
/// characters): serialization failures and deadlocks (40xxx), lost
/// connections (08xxx), too many connections and shutdowns (53xxx, 57Pxx).
/// SQLite result codes: `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6) with their
/// extended codes (the low byte).
pub(crate) fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        if code.len() == 5 {
            return code.starts_with("40")
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P");
        }
        code.parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
    })
}

/// The SQL migrations of a `<section>.migrations` directory.
pub(crate) struct Migrations {
    dir: std::path::PathBuf,
    migrator: sqlx::migrate::Migrator,
}

impl Migrations {
    /// Reads `dir`, if set — before connecting: a directory that is not one
    /// of migrations is a configuration error naming `key`.
    ///
    /// Takes the [`Config`] rather than the `InitContext`: a shared
    /// reference to the latter is not `Send` (its dispatcher builder is not
    /// `Sync`), and this future is awaited inside the plug-in's `init`.
    pub(crate) async fn read(
        config: &Config,
        key: &str,
        dir: Option<&std::path::Path>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(dir) = dir else {
            return Ok(None);
        };
        match sqlx::migrate::Migrator::new(dir).await {
            Ok(migrator) => Ok(Some(Self {
                dir: dir.to_owned(),
                migrator,
            })),
            Err(e) => Err(config.invalid(
                key,
                format!(
                    "expected a directory of SQL migrations; `{}`: {e}",
                    dir.display()
                ),
            )),
        }
    }

    /// Applies the migrations not yet applied to `pool`, in order; `target`
    /// names the database in the error.
    pub(crate) async fn run<DB>(&self, pool: &sqlx::Pool<DB>, target: &str) -> Result<(), String>
    where
        DB: sqlx::Database,
        DB::Connection: sqlx::migrate::Migrate,
    {
        self.migrator.run(pool).await.map_err(|e| {
            format!(
                "applying the migrations in `{}` to {target}: {e}",
                self.dir.display()
            )
        })?;
        tracing::info!(dir = %self.dir.display(), migrations = self.migrator.iter().count(), "migrations applied");
        Ok(())
    }
}

/// Registers a readiness check `name` that pings a connection of `pool`.
pub(crate) fn register_readiness<DB: sqlx::Database>(
    ctx: &InitContext<'_>,
    name: &'static str,
    pool: sqlx::Pool<DB>,
) {
    use sqlx::Connection;
    ctx.health().register(name, &[Probe::Ready], move || {
        let pool = pool.clone();
        async move {
            let ping = async { pool.acquire().await?.ping().await };
            match ping.await {
                Ok(()) => HealthStatus::healthy(),
                Err(error) => HealthStatus::unhealthy(format!("{name}: {error}")),
            }
        }
    });
}

/// Turns the database's error into a [`StoreError`] saying what the store
/// was doing, the error kept as its source: `.map_err(store_error("claiming
/// messages"))`.
pub(crate) fn store_error(
    action: impl Into<Cow<'static, str>>,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    let action = action.into();
    move |error| StoreError::with_source(action, error)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An outbox row, read from the columns in [`OUTBOX_COLUMNS`] order: its
/// `seq` and the entry.
pub(crate) fn entry<'r, R>(row: &'r R) -> Result<(i64, OutboxEntry), sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let headers: String = row.try_get(8)?;
    let headers = serde_json::from_str(&headers).map_err(|e| sqlx::Error::ColumnDecode {
        index: "headers".into(),
        source: Box::new(e),
    })?;
    let timestamp_ms: i64 = row.try_get(7)?;
    let attempts: i32 = row.try_get(10)?;
    let body: Vec<u8> = row.try_get(9)?;
    let message = OutgoingMessage {
        route: Route {
            exchange: row.try_get(1)?,
            routing_key: row.try_get(2)?,
        },
        properties: Properties {
            message_id: row.try_get(0)?,
            correlation_id: row.try_get(3)?,
            message_type: row.try_get(4)?,
            timestamp: SystemTime::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(timestamp_ms).unwrap_or(0)),
            content_type: row.try_get(5)?,
            persistent: row.try_get(6)?,
            headers,
        },
        body: bytes::Bytes::from(body),
    };
    Ok((
        row.try_get(11)?,
        OutboxEntry {
            message,
            attempts: u32::try_from(attempts).unwrap_or(0),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for good in ["mamey_outbox", "app.outbox", "o2", "_x"] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in [
            "",
            "Outbox",
            "2x",
            "a.b.c",
            "x;drop table y",
            "x\"",
            ".x",
            &"x".repeat(49),
        ] {
            assert!(!is_table_name(bad), "{bad}");
        }
        #[cfg(feature = "postgres")]
        assert_eq!(unqualified("app.outbox"), "outbox");
        assert_eq!(quoted("app.order"), "\"app\".\"order\"");
    }

    #[test]
    fn transient_codes() {
        for transient in [
            "40001", "40P01", "57P01", "08006", "53300", "5", "517", "6", "262",
        ] {
            assert!(is_transient(Some(transient)), "{transient}");
        }
        for other in ["23505", "2067", "1", "19", "XX000"] {
            assert!(!is_transient(Some(other)), "{other}");
        }
        assert!(!is_transient(None));
    }

    #[test]
    fn errors_map_onto_kinds() {
        use mamey_core::ErrorKind;
        assert_eq!(error(sqlx::Error::RowNotFound).kind(), ErrorKind::NotFound);
        assert_eq!(
            error(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            error(sqlx::Error::Protocol("x".into())).kind(),
            ErrorKind::Internal
        );
    }
}
