//! The outbox and inbox stores on Postgres (feature `outbox`).

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
    OutboxSql, bind_message, check_message_id, claimed, lost, outbox_columns, quoted, store_error,
    unqualified,
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

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
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
async fn create_unless_present(pool: &PgPool, table: &str, ddl: &str) -> Result<(), StoreError> {
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
