//! Postgres (feature `postgres`): the [`Postgres`] plug-in, and the
//! transactional outbox and inbox on it.
//!
//! The plug-in connects a [`PgPool`] at init (the service does not start
//! without its database), applies the SQL migrations of
//! `postgres.migrations` if set, provides the pool as a resource, registers
//! a `postgres` readiness check, and closes the pool when the service stops
//! — after the plug-ins added later, so handlers and the outbox relay finish
//! first.
//!
//! With `postgres.credentials`, the pool connects with the rotating
//! credentials of a named source (a vault's dynamic database credentials,
//! see [`CredentialSources`](mamey_core::credentials::CredentialSources))
//! and follows each rotation: new connections use the new credentials, and
//! those opened with the old ones close once their work is done.
//!
//! With the `outbox` feature (on by default), [`Postgres::outbox`] adds a
//! [`PgOutbox`] resource for
//! [`Messaging::outbox`](mamey_messaging::Messaging::outbox), and
//! [`Postgres::inbox`] a [`PgInbox`]. Their tables are created at init when
//! missing. Staging a message runs `pg_notify` in the caller's transaction,
//! so the relay of every instance wakes when it commits — and not at all if
//! it rolls back.
//!
//! ```no_run
//! use mamey_core::Service;
//! use mamey_messaging::{MemoryBroker, Messaging};
//! use mamey_persistence::postgres::{PgOutbox, Postgres};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Service::builder("orders")
//!     .plugin(Postgres::new().outbox().inbox())
//!     .plugin(Messaging::new(MemoryBroker::new()).outbox::<PgOutbox>())
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

use mamey_core::config::{ConfigSection, Secret};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
#[cfg(feature = "outbox")]
use tokio_util::sync::CancellationToken;

use credentials::RotatingCredentials;

pub use crate::sql::error;
use crate::sql::{Migrations, SqlPlugin, is_transient};
pub use sqlx::PgPool;

mod credentials;

/// The `postgres` section.
///
/// ```toml
/// [postgres]
/// url = "postgres://postgres@127.0.0.1:5432/postgres"
/// # password = "…"        # overrides the URL's (e.g. from a secret overlay)
/// # credentials = "orders" # rotating credentials, overriding user and password
/// max_connections = 10
/// min_connections = 0
/// acquire_timeout = "5s"
/// idle_timeout = "10m"
/// connect_timeout = "10s"
/// outbox_table = "mamey_outbox"
/// inbox_table = "mamey_inbox"
/// migrations = "migrations"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL (it may hold a password, so it never prints).
    /// Default: `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: Secret<String>,
    /// The password, overriding the one in `url`: a secret overlay can then
    /// supply just the password (`[[secrets.overlay]] path = "orders/db"
    /// into = "postgres"` with a key `password`). Not with `credentials`,
    /// which supplies its own. Never prints. Default: none (the URL's).
    pub password: Option<Secret<String>>,
    /// The name of a source of rotating credentials (a vault's dynamic
    /// database credentials: `secrets.vault.database.<name>`), whose user
    /// and password override the URL's. New connections use each new
    /// pair; those opened with the previous one close once their work is
    /// done. Needs the plug-in that issues them (`Secrets`) added before
    /// this one. Default: none.
    pub credentials: Option<String>,
    /// Connections the pool opens at most. Default: `10`.
    pub max_connections: u32,
    /// Connections the pool keeps open when idle. Default: `0`.
    pub min_connections: u32,
    /// How long a query waits for a free connection before it fails as
    /// unavailable. Default: `5s`.
    #[serde(with = "mamey_core::config::duration")]
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` close after this.
    /// Default: `10m`.
    #[serde(with = "mamey_core::config::duration")]
    pub idle_timeout: Duration,
    /// How long the first connection may take before the service fails to
    /// start. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
    /// The outbox table (`name` or `schema.name`); its `NOTIFY` channel is
    /// the name without the schema. Default: `mamey_outbox`.
    pub outbox_table: String,
    /// The inbox table (`name` or `schema.name`). Default: `mamey_inbox`.
    pub inbox_table: String,
    /// A directory of SQL migrations to apply at start, in version order,
    /// each once (sqlx's layout: `<version>_<description>.sql`). Relative
    /// to the working directory. Default: none.
    pub migrations: Option<std::path::PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres".into()),
            password: None,
            credentials: None,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            outbox_table: "mamey_outbox".into(),
            inbox_table: "mamey_inbox".into(),
            migrations: None,
        }
    }
}

impl ConfigSection for PostgresConfig {
    const KEY: &'static str = "postgres";
}

/// The Postgres plug-in (section `postgres`). Provides a [`PgPool`], and
/// with the `outbox` feature a [`PgOutbox`] / [`PgInbox`] when asked for.
#[derive(Default)]
pub struct Postgres {
    sql: SqlPlugin<sqlx::Postgres>,
    #[cfg(feature = "outbox")]
    outbox_store: Option<PgOutbox>,
    /// Stops the outbox listener before the pool closes.
    #[cfg(feature = "outbox")]
    listener: CancellationToken,
    /// With `postgres.credentials`: the source, and the pool that follows
    /// it, until `start` spawns the follower.
    rotating: Option<(RotatingCredentials, PgPool)>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sql.debug(f, "Postgres")
    }
}

impl Postgres {
    /// The plug-in, providing the pool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also provides a [`PgOutbox`] on `postgres.outbox_table`, creating the
    /// table if missing, and listens for its notifications while the service
    /// runs.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn outbox(mut self) -> Self {
        self.sql.outbox = true;
        self
    }

    /// Also provides a [`PgInbox`] on `postgres.inbox_table`, creating the
    /// table if missing.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn inbox(mut self) -> Self {
        self.sql.inbox = true;
        self
    }
}

impl Plugin for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<PostgresConfig>()?;
        let options = connect_options(&config).map_err(|e| {
            ctx.config().invalid(
                "postgres.url",
                format!("expected a URL like postgres://user@host:5432/db ({e})"),
            )
        })?;
        if config.password.is_some() && config.credentials.is_some() {
            return Err(ctx
                .config()
                .invalid(
                    "postgres.password",
                    "expected no password with `postgres.credentials`, whose source supplies it",
                )
                .into());
        }
        let rotating = match &config.credentials {
            Some(name) => Some(RotatingCredentials::new(ctx, name, options.clone())?),
            None => None,
        };
        let options = match &rotating {
            Some(rotating) => rotating.options(),
            None => options,
        };
        SqlPlugin::<sqlx::Postgres>::check_tables(
            ctx.config(),
            [
                ("postgres.outbox_table", &config.outbox_table),
                ("postgres.inbox_table", &config.inbox_table),
            ],
            true,
        )?;
        if self.sql.outbox && config.max_connections < 2 {
            return Err(ctx
                .config()
                .invalid(
                    "postgres.max_connections",
                    "expected at least 2 with the outbox: its listener holds one connection",
                )
                .into());
        }
        if config.max_connections == 0 || config.min_connections > config.max_connections {
            return Err(ctx
                .config()
                .invalid(
                    "postgres.max_connections",
                    "expected at least 1, and at least `postgres.min_connections`",
                )
                .into());
        }
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        let migrations = Migrations::read(
            ctx.config(),
            "postgres.migrations",
            config.migrations.as_deref(),
        )
        .await?;
        connect(&options, config.connect_timeout)
            .await
            .map_err(|e| format!("cannot connect to Postgres at {target}: {e}"))?;
        let mut pool_options = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(Some(config.idle_timeout));
        if let Some(rotating) = &rotating {
            pool_options = rotating.retire_stale(pool_options);
        }
        let pool = pool_options.connect_lazy_with(options);
        self.rotating = rotating.map(|rotating| (rotating, pool.clone()));
        self.sql
            .open(ctx, "postgres", pool.clone(), migrations.as_ref(), &target)
            .await?;
        #[cfg(feature = "outbox")]
        self.provide_stores(ctx, &pool, &config).await?;
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        // The outbox listener holds a pool connection for as long as it
        // listens, and connects through the pool (`PgListener::connect_with`),
        // so with the pool's current credentials: on a rotation it is told to
        // reconnect, rather than keep the old credentials until they are
        // revoked under it.
        #[cfg(feature = "outbox")]
        let listener = self.outbox_store.as_ref().map(PgOutbox::reconnect_signal);
        #[cfg(not(feature = "outbox"))]
        let listener = None;
        #[cfg(feature = "outbox")]
        if let Some(outbox) = self.outbox_store.clone() {
            let stop = ctx.shutdown_token().child_token();
            self.listener = stop.clone();
            ctx.spawn("postgres-outbox-listener", async move {
                outbox.listen(stop).await;
                Ok(())
            });
        }
        if let Some((rotating, pool)) = self.rotating.take() {
            let stop = ctx.shutdown_token();
            ctx.spawn("postgres-credentials", async move {
                rotating.follow(pool, listener, stop).await;
                Ok(())
            });
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        #[cfg(feature = "outbox")]
        self.listener.cancel();
        self.sql.close().await;
        Ok(())
    }
}

/// The options of `postgres.url`, with `postgres.password` if set.
///
/// # Errors
/// The URL is not a `postgres://` or `postgresql://` URL, or does not
/// parse; the message never holds the URL.
fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions, String> {
    let url = config.url.expose();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("not a postgres:// URL".to_owned());
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    Ok(match &config.password {
        Some(password) => options.password(password.expose()),
        None => options,
    })
}

/// Connects once, to check the database is there before the service starts:
/// retries with backoff within `timeout` (a database starting beside the
/// service), then reports the last error, e.g. a refused connection or an
/// unknown role.
async fn connect(options: &PgConnectOptions, timeout: Duration) -> Result<(), String> {
    use sqlx::{ConnectOptions, Connection};
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match tokio::time::timeout_at(deadline, options.connect()).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(format!(
                    "no connection within {timeout:?} (postgres.connect_timeout)"
                ));
            }
        };
        // Wrong credentials or database, or a TLS mismatch, will not fix
        // themselves; a server starting up or full will.
        let permanent = match &error {
            sqlx::Error::Database(db) => !is_transient(db.code().as_deref()),
            sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => true,
            _ => false,
        };
        if permanent {
            return Err(error.to_string());
        }
        if tokio::time::Instant::now() + backoff >= deadline {
            return Err(format!(
                "{error} (still failing after {timeout:?}, postgres.connect_timeout)"
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(feature = "outbox")]
mod stores;

#[cfg(feature = "outbox")]
pub use stores::{PgInbox, PgOutbox};

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;

    use super::*;

    fn effective_url(config: &PostgresConfig) -> String {
        connect_options(config).unwrap().to_url_lossy().to_string()
    }

    #[test]
    fn postgres_password_overrides_the_urls() {
        let mut config = PostgresConfig {
            url: Secret::new("postgres://app:fromurl@db:5432/orders".into()),
            ..PostgresConfig::default()
        };
        assert!(effective_url(&config).contains("app:fromurl@"));

        config.password = Some(Secret::new("fromconfig".into()));
        let url = effective_url(&config);
        assert!(url.contains("app:fromconfig@"), "{url}");
        assert!(!url.contains("fromurl"), "{url}");
        assert!(!format!("{config:?}").contains("fromconfig"));
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_echoing_it() {
        let config = PostgresConfig {
            url: Secret::new("mysql://app:hunter2@db/orders".into()),
            ..PostgresConfig::default()
        };
        let error = connect_options(&config).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
