//! The outbox and inbox stores on SQLite (feature `outbox`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mamey_core::{BoxError, InitContext};
use mamey_messaging::{InboxStore, OutboxEntry, OutboxStore, OutgoingMessage, StoreError};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::sync::Notify;

use super::{Sqlite, SqliteConfig, SqlitePool, Writers};
use crate::sql::outbox::{
    OutboxSql, bind_message, check_message_id, claimed, lost, outbox_columns, quoted, store_error,
    unix_millis,
};
use crate::writers::Turn;

impl Sqlite {
    /// With the outbox, has each connection of `pool` wake the relay on the
    /// commits that staged a message (see [`wake_on_staging_commits`]);
    /// returns the options and what the store's relay waits on.
    pub(super) fn wake_on_staging(
        &self,
        pool: SqlitePoolOptions,
        config: &SqliteConfig,
    ) -> (SqlitePoolOptions, Arc<Notify>) {
        let staged = Arc::new(Notify::new());
        if !self.sql.outbox {
            return (pool, staged);
        }
        let (wake, table) = (
            Arc::clone(&staged),
            Arc::<str>::from(config.outbox_table.as_str()),
        );
        let pool = pool.after_connect(move |connection, _| {
            let (wake, table) = (Arc::clone(&wake), Arc::clone(&table));
            Box::pin(async move {
                wake_on_staging_commits(&mut connection.lock_handle().await?, wake, table);
                Ok(())
            })
        });
        (pool, staged)
    }

    /// Creates the tables of the stores asked for, if missing, and provides
    /// the stores; the outbox's relay waits on `staged`.
    pub(super) async fn provide_stores(
        &mut self,
        ctx: &mut InitContext<'_>,
        pool: &SqlitePool,
        config: &SqliteConfig,
        staged: Arc<Notify>,
        writers: Writers,
    ) -> Result<(), BoxError> {
        if self.sql.outbox {
            let outbox = SqliteOutbox::with_wake(pool.clone(), &config.outbox_table, staged)
                .with_writers(writers.clone());
            outbox.create_table().await?;
            ctx.provide(outbox)?;
        }
        if self.sql.inbox {
            let inbox = SqliteInbox::new(pool.clone(), &config.inbox_table).with_writers(writers);
            inbox.create_table().await?;
            ctx.provide(inbox)?;
        }
        Ok(())
    }
}

/// Makes each commit on `connection` that inserted into the outbox `table`
/// wake the relay: the store cannot otherwise tell when the caller's
/// transaction commits, and waking on every commit would have the relay's
/// own claims wake it again and again.
fn wake_on_staging_commits(
    connection: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
    wake: Arc<Notify>,
    table: Arc<str>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let staged = Arc::new(AtomicBool::new(false));
    let (inserted, committed, rolled_back) = (Arc::clone(&staged), Arc::clone(&staged), staged);
    connection.set_update_hook(move |change| {
        if matches!(change.operation, sqlx::sqlite::SqliteOperation::Insert)
            && change.database == "main"
            && change.table.eq_ignore_ascii_case(&table)
        {
            inserted.store(true, Ordering::Relaxed);
        }
    });
    // Called as the transaction commits; a relay's claim, a write, waits for
    // the commit to finish and then sees the rows.
    connection.set_commit_hook(move || {
        if committed.swap(false, Ordering::Relaxed) {
            wake.notify_one();
        }
        true
    });
    connection.set_rollback_hook(move || rolled_back.store(false, Ordering::Relaxed));
}

/// The transactional outbox on SQLite (see
/// [`mamey_messaging::OutboxStore`]). Cheap to clone.
///
/// Stage with `outbox.stage(&mut *tx, message)` in the transaction that
/// changes the state. SQLite has one writer at a time, so a claim (one
/// `UPDATE … RETURNING`) never overlaps another: relays in several
/// processes on one file never send the same row at once. Each claim
/// writes its token in `claim_id`, and rows are settled only under it,
/// as on Postgres.
#[derive(Clone)]
pub struct SqliteOutbox {
    pool: SqlitePool,
    table: Arc<str>,
    sql: Arc<OutboxSql>,
    staged: Arc<Notify>,
    writers: Option<Writers>,
}

impl fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOutbox")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// The outbox in `table` (the caller checks it is a plain identifier).
    /// Nothing wakes a relay on this store: it polls on its interval. The
    /// plug-in's store is woken by each commit that staged a message.
    #[must_use]
    pub fn new(pool: SqlitePool, table: &str) -> Self {
        Self::with_wake(pool, table, Arc::new(Notify::new()))
    }

    fn with_wake(pool: SqlitePool, name: &str, staged: Arc<Notify>) -> Self {
        let table = quoted(name);
        let columns = outbox_columns("", "headers");
        let sql = OutboxSql {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL UNIQUE,
                    exchange TEXT NOT NULL,
                    routing_key TEXT NOT NULL,
                    correlation_id TEXT NOT NULL,
                    message_type TEXT NOT NULL,
                    content_type TEXT NOT NULL,
                    persistent INTEGER NOT NULL,
                    timestamp_ms INTEGER NOT NULL,
                    headers TEXT NOT NULL,
                    body BLOB NOT NULL,
                    staged_ms INTEGER NOT NULL,
                    due_ms INTEGER NOT NULL,
                    leased_until_ms INTEGER,
                    claim_id TEXT,
                    sent_ms INTEGER,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT
                );
                CREATE INDEX IF NOT EXISTS \"{name}_unsent\" ON {table} (seq) WHERE sent_ms IS NULL;
                CREATE INDEX IF NOT EXISTS \"{name}_sent\" ON {table} (sent_ms) WHERE sent_ms IS NOT NULL;"
            ),
            add_claim_column: format!("ALTER TABLE {table} ADD COLUMN claim_id TEXT"),
            stage: format!(
                "INSERT INTO {table} (message_id, exchange, routing_key, correlation_id,
                    message_type, content_type, persistent, timestamp_ms, headers, body,
                    staged_ms, due_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)"
            ),
            // One statement: with one writer at a time, nothing can claim
            // between the choice of the rows and their lease. The claim's
            // token goes with the lease: settling a row below needs it, so a
            // claim whose lease ran out cannot touch a row another claim has
            // taken since. Settling clears it.
            claim: format!(
                "UPDATE {table}
                 SET leased_until_ms = ?1 + ?2, attempts = attempts + 1, claim_id = ?4
                 WHERE seq IN (
                     SELECT seq FROM {table}
                     WHERE sent_ms IS NULL AND due_ms <= ?1
                       AND (leased_until_ms IS NULL OR leased_until_ms <= ?1)
                     ORDER BY seq
                     LIMIT ?3)
                 RETURNING {columns}"
            ),
            park: format!(
                "UPDATE {table} SET due_ms = 9223372036854775807, leased_until_ms = NULL,
                     claim_id = NULL, last_error = ?2
                 WHERE message_id = ?1 AND claim_id = ?3"
            ),
            mark_sent: format!(
                "UPDATE {table} SET sent_ms = ?1, leased_until_ms = NULL, claim_id = NULL
                 WHERE message_id IN (SELECT value FROM json_each(?2)) AND claim_id = ?3
                 RETURNING message_id"
            ),
            release: format!(
                "UPDATE {table}
                 SET leased_until_ms = NULL, claim_id = NULL, attempts = max(attempts - 1, 0)
                 WHERE message_id IN (SELECT value FROM json_each(?1)) AND claim_id = ?2
                 RETURNING message_id"
            ),
            retry_later: format!(
                "UPDATE {table}
                 SET due_ms = ?2, leased_until_ms = NULL, claim_id = NULL, last_error = ?3
                 WHERE message_id = ?1 AND claim_id = ?4"
            ),
            purge_sent: format!(
                "DELETE FROM {table} WHERE sent_ms IS NOT NULL AND sent_ms < ?1"
            ),
            pending: format!("SELECT count(*) FROM {table} WHERE sent_ms IS NULL"),
        };
        Self {
            pool,
            table: name.into(),
            sql: Arc::new(sql),
            staged,
            writers: None,
        }
    }

    /// The store with its writes queued with the service's other writers
    /// of the database (the plug-in's [`Writers`]).
    #[must_use]
    pub fn with_writers(mut self, writers: Writers) -> Self {
        self.writers = Some(writers);
        self
    }

    /// The table.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The `CREATE TABLE` and `CREATE INDEX` statements of the table.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.sql.create
    }

    /// Creates the table and its indexes if missing. A table made before
    /// claims carried a token gets its `claim_id` column.
    ///
    /// # Errors
    /// The database refused, e.g. a read-only file.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        create(
            &self.pool,
            &self.table,
            &self.sql.create,
            Some(&self.sql.add_claim_column),
        )
        .await
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

impl OutboxStore for SqliteOutbox {
    /// A connection in the caller's transaction: `&mut *tx` of a
    /// `sqlx::Transaction<'_, Sqlite>`.
    type Transaction<'t> = SqliteConnection;

    async fn stage(
        &self,
        tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> Result<(), StoreError> {
        bind_message(sqlx::query(&self.sql.stage), &message)?
            .bind(unix_millis(SystemTime::now()))
            .execute(tx)
            .await
            .map_err(store_error("staging a message"))?;
        Ok(())
    }

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
        let claim = mamey_core::new_id();
        let _turn = turn(self.writers.as_ref()).await?;
        let rows = sqlx::query(&self.sql.claim)
            .bind(unix_millis(SystemTime::now()))
            .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
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
        let _turn = turn(self.writers.as_ref()).await?;
        let marked: Vec<String> = sqlx::query_scalar(&self.sql.mark_sent)
            .bind(unix_millis(SystemTime::now()))
            .bind(json_ids(message_ids)?)
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
        let _turn = turn(self.writers.as_ref()).await?;
        let released: Vec<String> = sqlx::query_scalar(&self.sql.release)
            .bind(json_ids(message_ids)?)
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
        let _turn = turn(self.writers.as_ref()).await?;
        let done = sqlx::query(&self.sql.retry_later)
            .bind(message_id)
            .bind(unix_millis(not_before))
            .bind(error)
            .bind(claim)
            .execute(&self.pool)
            .await
            .map_err(store_error("scheduling a retry"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
        let _turn = turn(self.writers.as_ref()).await?;
        let done = sqlx::query(&self.sql.purge_sent)
            .bind(unix_millis(before))
            .execute(&self.pool)
            .await
            .map_err(store_error("purging sent messages"))?;
        Ok(done.rows_affected())
    }

    fn staged(&self) -> Arc<Notify> {
        Arc::clone(&self.staged)
    }
}

/// The inbox on SQLite (see [`mamey_messaging::InboxStore`]): a row per
/// consumer and message id, inserted in the handler's transaction. Cheap to
/// clone.
#[derive(Clone)]
pub struct SqliteInbox {
    pool: SqlitePool,
    table: Arc<str>,
    create: Arc<str>,
    record: Arc<str>,
    purge: Arc<str>,
    writers: Option<Writers>,
}

impl fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteInbox")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl SqliteInbox {
    /// The inbox in `table` (the caller checks it is a plain identifier).
    #[must_use]
    pub fn new(pool: SqlitePool, name: &str) -> Self {
        let table = quoted(name);
        Self {
            pool,
            table: name.into(),
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    consumer TEXT NOT NULL,
                    message_id TEXT NOT NULL,
                    processed_ms INTEGER NOT NULL,
                    PRIMARY KEY (consumer, message_id)
                ) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS \"{name}_processed\" ON {table} (processed_ms);"
            )
            .into(),
            record: format!(
                "INSERT INTO {table} (consumer, message_id, processed_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING"
            )
            .into(),
            purge: format!("DELETE FROM {table} WHERE processed_ms < ?1").into(),
            writers: None,
        }
    }

    /// The store with its writes queued with the service's other writers
    /// of the database (the plug-in's [`Writers`]).
    #[must_use]
    pub fn with_writers(mut self, writers: Writers) -> Self {
        self.writers = Some(writers);
        self
    }

    /// The table.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The `CREATE TABLE` and `CREATE INDEX` statements of the table.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.create
    }

    /// Creates the table if missing.
    ///
    /// # Errors
    /// The database refused.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        create(&self.pool, &self.table, &self.create, None).await
    }

    /// Forgets message ids processed more than `older_than` ago; returns how
    /// many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge(&self, older_than: Duration) -> Result<u64, StoreError> {
        let before = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let _turn = turn(self.writers.as_ref()).await?;
        let done = sqlx::query(&self.purge)
            .bind(unix_millis(before))
            .execute(&self.pool)
            .await
            .map_err(store_error("purging the inbox"))?;
        Ok(done.rows_affected())
    }
}

impl InboxStore for SqliteInbox {
    /// A connection in the handler's transaction: `&mut *tx`.
    type Transaction<'t> = SqliteConnection;

    async fn record(
        &self,
        tx: &mut Self::Transaction<'_>,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        check_message_id(message_id)?;
        let done = sqlx::query(&self.record)
            .bind(consumer)
            .bind(message_id)
            .bind(unix_millis(SystemTime::now()))
            .execute(tx)
            .await
            .map_err(store_error("recording a message id"))?;
        Ok(done.rows_affected() == 1)
    }
}

/// A turn among `writers`, when the store has them.
async fn turn(writers: Option<&Writers>) -> Result<Option<Turn>, StoreError> {
    match writers {
        Some(writers) => writers
            .turn()
            .await
            .map(Some)
            .map_err(|e| StoreError::with_source("waiting to write", e)),
        None => Ok(None),
    }
}

/// Message ids as a JSON array, for `json_each`.
fn json_ids(message_ids: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(message_ids).map_err(|e| StoreError::with_source("encoding ids", e))
}

/// Runs `ddl` in one transaction (SQLite has one writer at a time, so
/// instances starting together take turns), then `add_claim_column` if the
/// table has no `claim_id` (made before claims carried a token).
async fn create(
    pool: &SqlitePool,
    table: &str,
    ddl: &str,
    add_claim_column: Option<&str>,
) -> Result<(), StoreError> {
    let creating = || store_error(format!("creating `{table}`"));
    // IMMEDIATE: the write lock from the start, so a busy database is
    // waited for (busy_timeout) rather than failing the upgrade.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(creating())?;
    for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .map_err(creating())?;
    }
    if let Some(add) = add_claim_column {
        let present: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = 'claim_id'",
        )
        .bind(table)
        .fetch_one(&mut *tx)
        .await
        .map_err(creating())?;
        if !present {
            sqlx::query(add)
                .execute(&mut *tx)
                .await
                .map_err(creating())?;
            tracing::info!(%table, "outbox table upgraded: column `claim_id` added");
        }
    }
    tx.commit().await.map_err(creating())
}
