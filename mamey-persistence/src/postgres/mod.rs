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

/// The outbox and inbox stores (feature `outbox`).
#[cfg(feature = "outbox")]
mod stores {
    use std::fmt;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use mamey_core::{BoxError, InitContext};
    use mamey_messaging::{InboxStore, OutboxEntry, OutboxStore, OutgoingMessage, StoreError};
    use sqlx::PgConnection;
    use sqlx::postgres::PgListener;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    use super::{PgPool, Postgres, PostgresConfig};
    use crate::sql::outbox::{
        OutboxSql, bind_message, check_message_id, claimed, lost, outbox_columns, quoted,
        store_error, unqualified,
    };

    impl Postgres {
        /// Creates the tables of the stores asked for, if missing, and provides
        /// the stores; keeps the outbox for its listener.
        pub(super) async fn provide_stores(
            &mut self,
            ctx: &mut InitContext<'_>,
            pool: &PgPool,
            config: &PostgresConfig,
        ) -> Result<(), BoxError> {
            if self.sql.outbox {
                let outbox = PgOutbox::new(pool.clone(), &config.outbox_table);
                outbox.create_table().await?;
                ctx.provide(outbox.clone())?;
                self.outbox_store = Some(outbox);
            }
            if self.sql.inbox {
                let inbox = PgInbox::new(pool.clone(), &config.inbox_table);
                inbox.create_table().await?;
                ctx.provide(inbox)?;
            }
            Ok(())
        }
    }

    /// Seconds, as SQL's `make_interval(secs => …)` takes them.
    fn seconds(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    /// The transactional outbox on Postgres (see
    /// [`mamey_messaging::OutboxStore`]). Cheap to clone.
    ///
    /// Stage in the transaction that changes the state; the relay claims
    /// rows with `FOR UPDATE SKIP LOCKED` and a lease, so relays in several
    /// instances never send the same row at once, and a relay that dies
    /// mid-batch frees its rows when the lease ends. Each claim writes its
    /// token in `claim_id`, and rows are settled only under it: a relay whose
    /// lease ran out cannot mark, free or reschedule a row another relay has
    /// claimed since.
    ///
    /// A handler takes the pool, the outbox and the publisher as arguments:
    ///
    /// ```no_run
    /// use mamey_core::cqrs::{Command, Res};
    /// use mamey_core::Error;
    /// use mamey_messaging::{OutboxStore, PublishOptions, Publisher, message};
    /// use mamey_persistence::postgres::{PgOutbox, PgPool, error};
    ///
    /// struct PlaceOrder { id: i64 }
    /// impl Command for PlaceOrder {}
    ///
    /// #[message(namespace = "orders", event)]
    /// #[derive(Clone)]
    /// struct OrderPlaced { id: i64 }
    ///
    /// async fn place_order(
    ///     cmd: PlaceOrder,
    ///     Res(pool): Res<PgPool>,
    ///     Res(outbox): Res<PgOutbox>,
    ///     Res(events): Res<Publisher>,
    /// ) -> Result<(), Error> {
    ///     let mut tx = pool.begin().await.map_err(error)?;
    ///     sqlx::query("INSERT INTO orders (id) VALUES ($1)")
    ///         .bind(cmd.id)
    ///         .execute(&mut *tx)
    ///         .await
    ///         .map_err(error)?;
    ///     let event = events.prepare(&OrderPlaced { id: cmd.id }, PublishOptions::default())?;
    ///     outbox.stage(&mut *tx, event).await?;
    ///     tx.commit().await.map_err(error)?; // the relay wakes and publishes the event
    ///     Ok(())
    /// }
    /// ```
    #[derive(Clone)]
    pub struct PgOutbox {
        pool: PgPool,
        table: Arc<str>,
        sql: Arc<OutboxSql>,
        staged: Arc<Notify>,
        /// Tells the listener to take a fresh connection (the pool's
        /// credentials rotated).
        reconnect: Arc<Notify>,
    }

    impl fmt::Debug for PgOutbox {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("PgOutbox")
                .field("table", &self.table)
                .finish_non_exhaustive()
        }
    }

    impl PgOutbox {
        /// The outbox in `table` (`name` or `schema.name`; the caller checks it
        /// is a plain identifier). Its `NOTIFY` channel is `table`, as given.
        #[must_use]
        pub fn new(pool: PgPool, name: &str) -> Self {
            let table = quoted(name);
            let index = unqualified(name);
            let columns = outbox_columns("o.", "o.headers::text");
            let sql = OutboxSql {
                create: format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        seq bigint GENERATED ALWAYS AS IDENTITY,
                        message_id text PRIMARY KEY,
                        exchange text NOT NULL,
                        routing_key text NOT NULL,
                        correlation_id text NOT NULL,
                        message_type text NOT NULL,
                        content_type text NOT NULL,
                        persistent boolean NOT NULL,
                        timestamp_ms bigint NOT NULL,
                        headers jsonb NOT NULL,
                        body bytea NOT NULL,
                        staged_at timestamptz NOT NULL DEFAULT now(),
                        due_at timestamptz NOT NULL DEFAULT now(),
                        leased_until timestamptz,
                        claim_id text,
                        sent_at timestamptz,
                        attempts integer NOT NULL DEFAULT 0,
                        last_error text
                    );
                    CREATE INDEX IF NOT EXISTS \"{index}_unsent\" ON {table} (seq) WHERE sent_at IS NULL;
                    CREATE INDEX IF NOT EXISTS \"{index}_sent\" ON {table} (sent_at) WHERE sent_at IS NOT NULL;"
                ),
                add_claim_column: format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS claim_id text"),
                // One round trip: the row, and a notification delivered when
                // (and only if) the transaction commits.
                stage: format!(
                    "WITH staged AS (
                        INSERT INTO {table} (message_id, exchange, routing_key, correlation_id,
                            message_type, content_type, persistent, timestamp_ms, headers, body)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
                        RETURNING 1
                     )
                     SELECT pg_notify($11, '') FROM staged"
                ),
                // The rows are picked once, in a CTE: an `IN (SELECT … LIMIT)`
                // may be evaluated again by the planner and lease more than
                // `batch` rows.
                // The claim's token goes with the lease: settling a row below
                // needs it, so a claim whose lease ran out cannot touch a row
                // another claim has taken since. Settling clears it.
                claim: format!(
                    "WITH picked AS (
                         SELECT message_id FROM {table}
                         WHERE sent_at IS NULL AND due_at <= now()
                           AND (leased_until IS NULL OR leased_until <= now())
                         ORDER BY seq
                         LIMIT $1
                         FOR UPDATE SKIP LOCKED)
                     UPDATE {table} AS o
                     SET leased_until = now() + make_interval(secs => $2), attempts = o.attempts + 1,
                         claim_id = $3
                     FROM picked
                     WHERE o.message_id = picked.message_id
                     RETURNING {columns}"
                ),
                park: format!(
                    "UPDATE {table}
                     SET due_at = 'infinity', leased_until = NULL, claim_id = NULL, last_error = $2
                     WHERE message_id = $1 AND claim_id = $3"
                ),
                mark_sent: format!(
                    "UPDATE {table} SET sent_at = now(), leased_until = NULL, claim_id = NULL
                     WHERE message_id = ANY($1) AND claim_id = $2
                     RETURNING message_id"
                ),
                release: format!(
                    "UPDATE {table}
                     SET leased_until = NULL, claim_id = NULL, attempts = GREATEST(attempts - 1, 0)
                     WHERE message_id = ANY($1) AND claim_id = $2
                     RETURNING message_id"
                ),
                retry_later: format!(
                    "UPDATE {table}
                     SET due_at = now() + make_interval(secs => $2), leased_until = NULL,
                         claim_id = NULL, last_error = $3
                     WHERE message_id = $1 AND claim_id = $4"
                ),
                purge_sent: format!(
                    "DELETE FROM {table}
                     WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)"
                ),
                pending: format!("SELECT count(*) FROM {table} WHERE sent_at IS NULL"),
            };
            Self {
                pool,
                table: name.into(),
                sql: Arc::new(sql),
                staged: Arc::new(Notify::new()),
                reconnect: Arc::new(Notify::new()),
            }
        }

        /// Notified when the listener must drop its connection and take a
        /// fresh one from the pool.
        pub(in crate::postgres) fn reconnect_signal(&self) -> Arc<Notify> {
            Arc::clone(&self.reconnect)
        }

        /// The table.
        #[must_use]
        pub fn table(&self) -> &str {
            &self.table
        }

        /// The `CREATE TABLE` and `CREATE INDEX` statements of the table, for a
        /// migration tool when the service's role may not create tables.
        #[must_use]
        pub fn schema(&self) -> &str {
            &self.sql.create
        }

        /// Creates the table and its indexes if missing. Instances starting at
        /// once take turns (an advisory lock), so the creation never races. A
        /// table made before claims carried a token gets its `claim_id` column.
        ///
        /// # Errors
        /// The database refused, e.g. no `CREATE` privilege, or no right to
        /// add the missing column (the error says the statement to run).
        pub async fn create_table(&self) -> Result<(), StoreError> {
            create_unless_present(&self.pool, &self.table, &self.sql.create).await?;
            let table = &self.table;
            let present: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute
                 WHERE attrelid = to_regclass($1) AND attname = 'claim_id' AND NOT attisdropped)",
            )
            .bind(quoted(table))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error(format!("looking up `{table}`")))?;
            if !present {
                let add = &self.sql.add_claim_column;
                sqlx::query(add)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error(format!(
                        "adding the claim token column to `{table}` (as its owner: `{add}`)"
                    )))?;
                tracing::info!(%table, "outbox table upgraded: column `claim_id` added");
            }
            Ok(())
        }

        /// Wakes the relay on each `NOTIFY` of the table's channel, until `stop`;
        /// reconnects with backoff when the connection is lost, and wakes the
        /// relay after each (re)connection for what was staged meanwhile. The
        /// listener holds one connection of the pool; when the pool's
        /// credentials rotate, it takes a fresh one.
        pub async fn listen(&self, stop: CancellationToken) {
            let channel = self.table.to_string();
            let mut backoff = Duration::from_millis(100);
            loop {
                let connected = async {
                    let mut listener = PgListener::connect_with(&self.pool).await?;
                    listener.listen(&channel).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                let listener = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    connected = connected => connected,
                };
                match listener {
                    Ok(mut listener) => {
                        backoff = Duration::from_millis(100);
                        self.staged.notify_one();
                        let reconnect = loop {
                            let next = tokio::select! {
                                biased;
                                () = stop.cancelled() => return,
                                () = self.reconnect.notified() => break true,
                                next = listener.try_recv() => next,
                            };
                            match next {
                                Ok(Some(_)) => self.staged.notify_one(),
                                // The connection was lost; the next call
                                // reconnects. Notifications may have been missed.
                                Ok(None) => {
                                    tracing::warn!(%channel, "outbox listener reconnecting");
                                    self.staged.notify_one();
                                }
                                Err(error) => {
                                    tracing::warn!(%channel, %error, "outbox listener failed");
                                    break false;
                                }
                            }
                        };
                        // Dropping the listener returns its connection to
                        // the pool, which closes it (opened before the
                        // rotation); the next one is opened with the new
                        // credentials, at once.
                        if reconnect {
                            tracing::debug!(%channel, "outbox listener reconnecting with rotated credentials");
                            continue;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%channel, %error, ?backoff, "outbox listener cannot connect");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }

        /// Messages staged and not yet sent (for tests and dashboards).
        ///
        /// # Errors
        /// The database failed.
        pub async fn pending(&self) -> Result<u64, StoreError> {
            let count: i64 = sqlx::query_scalar(&self.sql.pending)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error("counting pending messages"))?;
            Ok(u64::try_from(count).unwrap_or(0))
        }
    }

    impl OutboxStore for PgOutbox {
        /// A connection in the caller's transaction: `&mut *tx` of a
        /// `sqlx::Transaction<'_, Postgres>`.
        type Transaction<'t> = PgConnection;

        async fn stage(
            &self,
            tx: &mut Self::Transaction<'_>,
            message: OutgoingMessage,
        ) -> Result<(), StoreError> {
            bind_message(sqlx::query(&self.sql.stage), &message)?
                .bind(&*self.table)
                .execute(tx)
                .await
                .map_err(store_error("staging a message"))?;
            Ok(())
        }

        async fn claim(
            &self,
            batch: usize,
            lease: Duration,
        ) -> Result<Vec<OutboxEntry>, StoreError> {
            let claim = mamey_core::new_id();
            let rows = sqlx::query(&self.sql.claim)
                .bind(i64::try_from(batch).unwrap_or(i64::MAX))
                .bind(seconds(lease))
                .bind(&claim)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error("claiming messages"))?;
            let (park, pool, token) = (self.sql.park.as_str(), &self.pool, claim.as_str());
            Ok(claimed(&self.table, &claim, &rows, move |id, reason| {
                sqlx::query(park)
                    .bind(id)
                    .bind(reason)
                    .bind(token)
                    .execute(pool)
            })
            .await)
        }

        async fn mark_sent(
            &self,
            claim: &str,
            message_ids: &[String],
        ) -> Result<Vec<String>, StoreError> {
            let marked: Vec<String> = sqlx::query_scalar(&self.sql.mark_sent)
                .bind(message_ids)
                .bind(claim)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error("marking messages sent"))?;
            Ok(lost(message_ids, &marked))
        }

        async fn release(
            &self,
            claim: &str,
            message_ids: &[String],
        ) -> Result<Vec<String>, StoreError> {
            let released: Vec<String> = sqlx::query_scalar(&self.sql.release)
                .bind(message_ids)
                .bind(claim)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error("releasing messages"))?;
            Ok(lost(message_ids, &released))
        }

        async fn retry_later(
            &self,
            claim: &str,
            message_id: &str,
            error: &str,
            not_before: SystemTime,
        ) -> Result<bool, StoreError> {
            // Relative to the database's clock, so clock skew between this host
            // and the database moves nothing.
            let delay = not_before
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let done = sqlx::query(&self.sql.retry_later)
                .bind(message_id)
                .bind(seconds(delay))
                .bind(error)
                .bind(claim)
                .execute(&self.pool)
                .await
                .map_err(store_error("scheduling a retry"))?;
            Ok(done.rows_affected() == 1)
        }

        async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
            let age = SystemTime::now().duration_since(before).unwrap_or_default();
            let done = sqlx::query(&self.sql.purge_sent)
                .bind(seconds(age))
                .execute(&self.pool)
                .await
                .map_err(store_error("purging sent messages"))?;
            Ok(done.rows_affected())
        }

        fn staged(&self) -> Arc<Notify> {
            Arc::clone(&self.staged)
        }
    }

    /// The inbox on Postgres (see
    /// [`mamey_messaging::InboxStore`]): a row per consumer
    /// and message id, inserted in the handler's transaction. A duplicate
    /// delivery finds the row and is skipped; if the handler's transaction rolls
    /// back, so does the row, and the redelivery is applied. Cheap to clone.
    ///
    /// A subscribed handler records the consumed message's id, from its
    /// [`MessageContext`](mamey_core::MessageContext) argument:
    ///
    /// ```no_run
    /// use mamey_core::cqrs::{Event, Res};
    /// use mamey_core::{Error, MessageContext};
    /// use mamey_messaging::InboxStore;
    /// use mamey_persistence::postgres::{PgInbox, PgPool, error};
    ///
    /// #[derive(Clone)]
    /// struct OrderPaid { account: i64, amount: i64 }
    /// impl Event for OrderPaid {}
    ///
    /// async fn charge(
    ///     paid: OrderPaid,
    ///     Res(pool): Res<PgPool>,
    ///     Res(inbox): Res<PgInbox>,
    ///     ctx: MessageContext,
    /// ) -> Result<(), Error> {
    ///     let mut tx = pool.begin().await.map_err(error)?;
    ///     if !inbox.record(&mut *tx, "billing", &ctx.message_id).await? {
    ///         return Ok(()); // applied before: skip
    ///     }
    ///     sqlx::query("UPDATE accounts SET balance = balance - $1 WHERE id = $2")
    ///         .bind(paid.amount)
    ///         .bind(paid.account)
    ///         .execute(&mut *tx)
    ///         .await
    ///         .map_err(error)?;
    ///     tx.commit().await.map_err(error)?;
    ///     Ok(())
    /// }
    /// ```
    #[derive(Clone)]
    pub struct PgInbox {
        pool: PgPool,
        table: Arc<str>,
        create: Arc<str>,
        record: Arc<str>,
        purge: Arc<str>,
    }

    impl fmt::Debug for PgInbox {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("PgInbox")
                .field("table", &self.table)
                .finish_non_exhaustive()
        }
    }

    impl PgInbox {
        /// The inbox in `table` (`name` or `schema.name`; the caller checks it
        /// is a plain identifier).
        #[must_use]
        pub fn new(pool: PgPool, name: &str) -> Self {
            let table = quoted(name);
            let index = unqualified(name);
            Self {
                pool,
                table: name.into(),
                create: format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        consumer text NOT NULL,
                        message_id text NOT NULL,
                        processed_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (consumer, message_id)
                    );
                    CREATE INDEX IF NOT EXISTS \"{index}_processed\" ON {table} (processed_at);"
                )
                .into(),
                record: format!(
                    "INSERT INTO {table} (consumer, message_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING"
                )
                .into(),
                purge: format!(
                    "DELETE FROM {table} WHERE processed_at < now() - make_interval(secs => $1)"
                )
                .into(),
            }
        }

        /// The table.
        #[must_use]
        pub fn table(&self) -> &str {
            &self.table
        }

        /// The `CREATE TABLE` and `CREATE INDEX` statements of the table (see
        /// [`PgOutbox::schema`]).
        #[must_use]
        pub fn schema(&self) -> &str {
            &self.create
        }

        /// Creates the table if missing (see [`PgOutbox::create_table`]).
        ///
        /// # Errors
        /// The database refused.
        pub async fn create_table(&self) -> Result<(), StoreError> {
            create_unless_present(&self.pool, &self.table, &self.create).await
        }

        /// Forgets message ids processed more than `older_than` ago; returns how
        /// many. Keep `older_than` well beyond the longest time a duplicate can
        /// arrive (the broker's redelivery and the publishers' retries).
        ///
        /// # Errors
        /// The database failed.
        pub async fn purge(&self, older_than: Duration) -> Result<u64, StoreError> {
            let done = sqlx::query(&self.purge)
                .bind(seconds(older_than))
                .execute(&self.pool)
                .await
                .map_err(store_error("purging the inbox"))?;
            Ok(done.rows_affected())
        }
    }

    impl InboxStore for PgInbox {
        /// A connection in the handler's transaction: `&mut *tx`.
        type Transaction<'t> = PgConnection;

        async fn record(
            &self,
            tx: &mut Self::Transaction<'_>,
            consumer: &str,
            message_id: &str,
        ) -> Result<bool, StoreError> {
            check_message_id(message_id)?;
            // A concurrent transaction inserting the same id makes this one wait
            // for its outcome: committed → a duplicate, rolled back → ours.
            let done = sqlx::query(&self.record)
                .bind(consumer)
                .bind(message_id)
                .execute(tx)
                .await
                .map_err(store_error("recording a message id"))?;
            Ok(done.rows_affected() == 1)
        }
    }

    /// Runs `ddl` in a transaction holding an advisory lock named after `table`,
    /// unless the table exists: a role without `CREATE` on the schema (the
    /// tables made by a migration) then starts too — Postgres checks that right
    /// before it looks at `IF NOT EXISTS`.
    async fn create_unless_present(
        pool: &PgPool,
        table: &str,
        ddl: &str,
    ) -> Result<(), StoreError> {
        let creating = || store_error(format!("creating `{table}`"));
        let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(quoted(table))
            .fetch_one(pool)
            .await
            .map_err(store_error(format!("looking up `{table}`")))?;
        if present {
            return Ok(());
        }
        let mut tx = pool.begin().await.map_err(creating())?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("mamey:{table}"))
            .execute(&mut *tx)
            .await
            .map_err(creating())?;
        // One statement at a time: prepared statements hold one each.
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(creating())?;
        }
        tx.commit().await.map_err(creating())
    }
}

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
