//! SQLite (feature `sqlite`): the embedded default. The [`Sqlite`] plug-in
//! keeps the service's data in a file, with no server to run, and offers the
//! same transactional outbox and inbox as Postgres.
//!
//! The plug-in opens a [`SqlitePool`] at init (creating the file if
//! missing, in WAL mode, with foreign keys on and a busy timeout), applies
//! the migrations of `sqlite.migrations` if set, provides the pool and the
//! queue of the database's writers ([`Writers`]: the unit of work and the
//! stores take turns in the process rather than in SQLite's polling busy
//! handler) as resources, registers a `sqlite` readiness check, and closes
//! the pool when the service stops.
//!
//! With the `outbox` feature (on by default), [`Sqlite::outbox`] adds a
//! [`SqliteOutbox`] resource for
//! [`Messaging::outbox`](mamey_messaging::Messaging::outbox), and
//! [`Sqlite::inbox`] a [`SqliteInbox`]. A commit that staged a message on
//! one of the pool's connections wakes the relay; what other processes
//! stage in the same file is found on the relay's interval.
//!
//! ```no_run
//! use mamey_core::Service;
//! use mamey_messaging::{MemoryBroker, Messaging};
//! use mamey_persistence::sqlite::{Sqlite, SqliteOutbox};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Service::builder("orders")
//!     .plugin(Sqlite::new().outbox().inbox())
//!     .plugin(Messaging::new(MemoryBroker::new()).outbox::<SqliteOutbox>())
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mamey_core::config::ConfigSection;
use mamey_core::{BoxError, InitContext, Plugin};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use crate::sql::error;
use crate::sql::{Migrations, SqlPlugin};
use crate::writers::Writers;
pub use sqlx::SqlitePool;

/// The `sqlite` section.
///
/// ```toml
/// [sqlite]
/// url = "sqlite://mamey.db"
/// max_connections = 4
/// busy_timeout = "5s"
/// outbox_table = "mamey_outbox"
/// inbox_table = "mamey_inbox"
/// migrations = "migrations"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database: `sqlite://path/to/file.db` (created if missing), with
    /// SQLite's URI parameters. Default: `sqlite://mamey.db`.
    pub url: String,
    /// Connections the pool opens at most. Default: `4`.
    pub max_connections: u32,
    /// How long a write waits for another writer to finish before it fails
    /// as unavailable. Default: `5s`.
    #[serde(with = "mamey_core::config::duration")]
    pub busy_timeout: Duration,
    /// The outbox table. Default: `mamey_outbox`.
    pub outbox_table: String,
    /// The inbox table. Default: `mamey_inbox`.
    pub inbox_table: String,
    /// A directory of SQL migrations to apply at start, in version order,
    /// each once (sqlx's layout: `<version>_<description>.sql`). Relative
    /// to the working directory. Default: none.
    pub migrations: Option<std::path::PathBuf>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://mamey.db".into(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            outbox_table: "mamey_outbox".into(),
            inbox_table: "mamey_inbox".into(),
            migrations: None,
        }
    }
}

impl ConfigSection for SqliteConfig {
    const KEY: &'static str = "sqlite";
}

/// The SQLite plug-in (section `sqlite`). Provides a [`SqlitePool`], and
/// with the `outbox` feature a [`SqliteOutbox`] / [`SqliteInbox`] when
/// asked for.
#[derive(Default)]
pub struct Sqlite {
    sql: SqlPlugin<sqlx::Sqlite>,
}

impl fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sql.debug(f, "Sqlite")
    }
}

impl Sqlite {
    /// The plug-in, providing the pool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also provides a [`SqliteOutbox`] on `sqlite.outbox_table`, creating
    /// the table if missing.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn outbox(mut self) -> Self {
        self.sql.outbox = true;
        self
    }

    /// Also provides a [`SqliteInbox`] on `sqlite.inbox_table`, creating the
    /// table if missing.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn inbox(mut self) -> Self {
        self.sql.inbox = true;
        self
    }
}

impl Plugin for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<SqliteConfig>()?;
        let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
        let options = if in_memory {
            Err(
                "an in-memory database is lost with the pool's last connection; use a file \
                 (a temporary one in tests)"
                    .to_owned(),
            )
        } else if config.url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(&config.url).map_err(|e| e.to_string())
        } else {
            Err("not a sqlite: URL".to_owned())
        }
        .map_err(|e| {
            ctx.config().invalid(
                "sqlite.url",
                format!("expected a URL like sqlite://data/orders.db ({e})"),
            )
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(config.busy_timeout);
        SqlPlugin::<sqlx::Sqlite>::check_tables(
            ctx.config(),
            [
                ("sqlite.outbox_table", &config.outbox_table),
                ("sqlite.inbox_table", &config.inbox_table),
            ],
            false,
        )?;
        if config.max_connections == 0 {
            return Err(ctx
                .config()
                .invalid("sqlite.max_connections", "expected at least 1")
                .into());
        }
        let migrations = Migrations::read(
            ctx.config(),
            "sqlite.migrations",
            config.migrations.as_deref(),
        )
        .await?;
        let file = options.get_filename().display().to_string();
        if file.is_empty() {
            return Err(ctx
                .config()
                .invalid(
                    "sqlite.url",
                    "expected a URL with a file, like sqlite://data/orders.db",
                )
                .into());
        }
        let pool = SqlitePoolOptions::new().max_connections(config.max_connections);
        #[cfg(feature = "outbox")]
        let (pool, staged) = self.wake_on_staging(pool, &config);
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot open SQLite database `{file}`: {e}"))?;
        self.sql
            .open(
                ctx,
                "sqlite",
                pool.clone(),
                migrations.as_ref(),
                &format!("`{file}`"),
            )
            .await?;
        let writers = Writers::new(config.busy_timeout);
        ctx.provide(writers.clone())?;
        #[cfg(feature = "outbox")]
        self.provide_stores(ctx, &pool, &config, staged, writers)
            .await?;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        self.sql.close().await;
        Ok(())
    }
}

#[cfg(feature = "outbox")]
mod stores;

#[cfg(feature = "outbox")]
pub use stores::{SqliteInbox, SqliteOutbox};
