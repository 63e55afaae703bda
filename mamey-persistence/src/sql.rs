//! What the Postgres and SQLite plug-ins share: the plug-in skeleton
//! ([`SqlPlugin`]: the stores asked for, table-name checks, migrations, the
//! pool as a resource with its readiness check, closing it on stop), the
//! mapping of sqlx errors onto mamey's, and — with the `outbox` feature —
//! what their outbox and inbox stores do alike ([`outbox`]).

use std::fmt;

use mamey_core::config::{Config, ConfigError};
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, InitContext};

/// The part of the [`Postgres`](crate::postgres::Postgres) and
/// [`Sqlite`](crate::sqlite::Sqlite) plug-ins that does not depend on the
/// database: which stores were asked for, and the pool, once open, to close
/// when the service stops.
pub(crate) struct SqlPlugin<DB: sqlx::Database> {
    /// The outbox store was asked for.
    pub(crate) outbox: bool,
    /// The inbox store was asked for.
    pub(crate) inbox: bool,
    pool: Option<sqlx::Pool<DB>>,
}

impl<DB: sqlx::Database> Default for SqlPlugin<DB> {
    fn default() -> Self {
        Self {
            outbox: false,
            inbox: false,
            pool: None,
        }
    }
}

impl<DB: sqlx::Database> SqlPlugin<DB> {
    /// The plug-in's `Debug`: its name and the stores asked for.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("outbox", &self.outbox)
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }

    /// Checks the `(key, table)` names of a section: plain identifiers, and
    /// `schema.name` only where the database has `schemas`. The error names
    /// the key.
    pub(crate) fn check_tables(
        config: &Config,
        tables: [(&str, &str); 2],
        schemas: bool,
    ) -> Result<(), ConfigError> {
        let expected = if schemas {
            "expected a table name: `name` or `schema.name`, each of lower-case letters, \
             digits and `_`, not starting with a digit, at most 48 bytes"
        } else {
            "expected a table name: lower-case letters, digits and `_`, not starting with a \
             digit, at most 48 bytes"
        };
        match tables
            .into_iter()
            .find(|(_, table)| !is_table_name(table) || (!schemas && table.contains('.')))
        {
            Some((key, _)) => Err(config.invalid(key, expected)),
            None => Ok(()),
        }
    }

    /// The end of the plug-in's `init` once `pool` is open: applies
    /// `migrations` (`target` names the database in their errors), provides
    /// the pool as a resource, registers the readiness check `name`, and
    /// keeps the pool for [`close`](Self::close).
    ///
    /// # Errors
    /// A migration failed, or a pool of this database is provided already.
    pub(crate) async fn open(
        &mut self,
        ctx: &mut InitContext<'_>,
        name: &'static str,
        pool: sqlx::Pool<DB>,
        migrations: Option<&Migrations>,
        target: &str,
    ) -> Result<(), BoxError>
    where
        DB::Connection: sqlx::migrate::Migrate,
    {
        if let Some(migrations) = migrations {
            migrations.run(&pool, target).await?;
        }
        ctx.provide(pool.clone())?;
        register_readiness(ctx, name, pool.clone());
        self.pool = Some(pool);
        Ok(())
    }

    /// Closes the pool: the plug-in's `stop`, which runs after the plug-ins
    /// added later (handlers, the outbox relay) have stopped.
    pub(crate) async fn close(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
    }
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
fn register_readiness<DB: sqlx::Database>(
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

/// What the Postgres and SQLite outbox and inbox stores do alike.
#[cfg(feature = "outbox")]
pub(crate) mod outbox {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::future::Future;
    use std::time::{Duration, SystemTime};

    use mamey_messaging::{OutboxEntry, OutgoingMessage, Properties, Route, StoreError};
    use sqlx::query::Query;
    use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

    /// The outbox statements of a store, with its table name in them.
    pub(crate) struct OutboxSql {
        /// `CREATE TABLE` and its indexes, `;`-separated.
        pub(crate) create: String,
        /// Adds the `claim_id` column to a table made before it existed.
        pub(crate) add_claim_column: String,
        pub(crate) stage: String,
        pub(crate) claim: String,
        pub(crate) park: String,
        pub(crate) release: String,
        pub(crate) mark_sent: String,
        pub(crate) retry_later: String,
        pub(crate) purge_sent: String,
        pub(crate) pending: String,
    }

    /// The outbox columns every claim returns, in the order [`claimed`]
    /// reads them, each prefixed with `prefix` (a table alias and a dot, or
    /// nothing); `headers` is the expression that reads the headers as text.
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

    /// The unqualified part of a table name, for naming its index.
    #[cfg(feature = "postgres")]
    pub(crate) fn unqualified(table: &str) -> &str {
        table.rsplit('.').next().unwrap_or(table)
    }

    /// `name` or `schema.name` as quoted SQL identifiers
    /// (`"schema"."name"`), so that reserved words such as `order` work.
    /// Names are checked by [`is_table_name`](super::is_table_name): no
    /// quotes inside.
    pub(crate) fn quoted(table: &str) -> String {
        table
            .split('.')
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Turns the database's error into a [`StoreError`] saying what the
    /// store was doing, the error kept as its source:
    /// `.map_err(store_error("claiming messages"))`.
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

    /// Binds `message` to the first ten parameters of a staging statement:
    /// message id, exchange, routing key, correlation id, message type,
    /// content type, persistent, timestamp (ms), headers (JSON text), body.
    ///
    /// # Errors
    /// The headers cannot be encoded.
    pub(crate) fn bind_message<'q, DB>(
        query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
        message: &'q OutgoingMessage,
    ) -> Result<Query<'q, DB, <DB as Database>::Arguments<'q>>, StoreError>
    where
        DB: Database,
        &'q str: Encode<'q, DB> + Type<DB>,
        &'q [u8]: Encode<'q, DB> + Type<DB>,
        String: Encode<'q, DB> + Type<DB>,
        bool: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        let OutgoingMessage {
            route,
            properties,
            body,
        } = message;
        let headers = serde_json::to_string(&properties.headers)
            .map_err(|e| StoreError::with_source("encoding headers", e))?;
        Ok(query
            .bind(properties.message_id.as_str())
            .bind(route.exchange.as_str())
            .bind(route.routing_key.as_str())
            .bind(properties.correlation_id.as_str())
            .bind(properties.message_type.as_str())
            .bind(properties.content_type.as_str())
            .bind(properties.persistent)
            .bind(unix_millis(properties.timestamp))
            .bind(headers)
            .bind(body.as_ref()))
    }

    /// The entries of a claim's rows (its `UPDATE … RETURNING` of
    /// [`outbox_columns`]), each with the claim's token, in staging order:
    /// `RETURNING` keeps none, and staging order is the publishing order.
    ///
    /// A row that cannot be read back (e.g. headers edited by hand into
    /// something that is not a map of strings) is logged and parked with
    /// `park(message_id, reason)` — due never, the reason as its last error
    /// — so that it does not hold back the rows claimed with it, round
    /// after round. If parking fails too, the row comes back after the
    /// lease.
    pub(crate) async fn claimed<R, P, F, T>(
        table: &str,
        claim: &str,
        rows: &[R],
        park: P,
    ) -> Vec<OutboxEntry>
    where
        R: Row,
        usize: ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
        P: Fn(String, String) -> F,
        F: Future<Output = Result<T, sqlx::Error>>,
    {
        // A row, read from the columns in `outbox_columns` order: its
        // `seq` and the entry.
        let read = |row: &R| -> Result<(i64, OutboxEntry), sqlx::Error> {
            let headers: String = row.try_get(8)?;
            let headers =
                serde_json::from_str(&headers).map_err(|e| sqlx::Error::ColumnDecode {
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
                    claim: claim.to_owned(),
                },
            ))
        };
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            match read(row) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    let id: Option<String> = row.try_get(0).ok();
                    tracing::error!(%table, message_id = ?id, %error, "outbox row cannot be read; parked");
                    if let Some(id) = id
                        && let Err(failure) =
                            park(id, format!("cannot read the row: {error}")).await
                    {
                        tracing::error!(%table, %failure, "parking an outbox row failed");
                    }
                }
            }
        }
        entries.sort_by_key(|(seq, _)| *seq);
        entries.into_iter().map(|(_, entry)| entry).collect()
    }

    /// The ids of `wanted` a settlement did not touch, given the ids it did
    /// (its `RETURNING message_id`): those the claim no longer held.
    pub(crate) fn lost(wanted: &[String], settled: &[String]) -> Vec<String> {
        let settled: HashSet<&String> = settled.iter().collect();
        wanted
            .iter()
            .filter(|id| !settled.contains(id))
            .cloned()
            .collect()
    }

    /// The inbox refuses an empty message id: every id-less message would
    /// otherwise count as the first one's duplicate.
    pub(crate) fn check_message_id(message_id: &str) -> Result<(), StoreError> {
        if message_id.is_empty() {
            return Err(StoreError::new(
                "an empty message id cannot be recorded in the inbox",
            ));
        }
        Ok(())
    }
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
    }

    #[cfg(feature = "outbox")]
    #[test]
    fn quoted_names() {
        #[cfg(feature = "postgres")]
        assert_eq!(outbox::unqualified("app.outbox"), "outbox");
        assert_eq!(outbox::quoted("app.order"), "\"app\".\"order\"");
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
