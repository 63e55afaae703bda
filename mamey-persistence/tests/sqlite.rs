//! The SQLite plug-in, each test on a database file of its own in a
//! temporary directory (removed with it): configuration, migrations, and
//! what is particular to its outbox and inbox — waking the relay on the
//! commits that staged a message, the rows' columns, parked rows, the claim
//! column added to an older table, purging the inbox. What every outbox and
//! inbox store does is in the shared suite (`stores.rs`).
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sqlite::Db;

use mamey_core::{Service, ServiceBuilder};
use mamey_persistence::sqlite::Sqlite;

/// A test service on `db`'s file; the relay's interval is an hour, so only
/// a commit wakes it.
fn service(db: &Db, extra: &[(&str, &str)]) -> ServiceBuilder {
    let mut vars = vec![
        ("MAMEY__SQLITE__URL".to_owned(), db.url()),
        (
            "MAMEY__MESSAGING__OUTBOX__INTERVAL".to_owned(),
            "1h".to_owned(),
        ),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Service::builder("sqlite-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars)
}

async fn build_error(builder: ServiceBuilder) -> String {
    builder.build().await.map(|_| ()).unwrap_err().to_string()
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let db = Db::new();
    let error = build_error(
        service(&db, &[("MAMEY__SQLITE__URL", "postgres://x/y")]).plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.url"), "{error}");
    assert!(error.contains("MAMEY__SQLITE__URL"), "{error}");
    for memory in [
        "sqlite::memory:",
        "sqlite://file:x?mode=memory",
        "sqlite://",
    ] {
        let error =
            build_error(service(&db, &[("MAMEY__SQLITE__URL", memory)]).plugin(Sqlite::new()))
                .await;
        assert!(error.contains("sqlite.url"), "{memory}: {error}");
    }
    let error = build_error(
        service(&db, &[("MAMEY__SQLITE__OUTBOX_TABLE", "main.outbox")]).plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.outbox_table"), "{error}");
    let error =
        build_error(service(&db, &[("MAMEY__SQLITE__MAX_CONNECTIONS", "0")]).plugin(Sqlite::new()))
            .await;
    assert!(error.contains("sqlite.max_connections"), "{error}");
    let error = build_error(
        service(
            &db,
            &[("MAMEY__SQLITE__MIGRATIONS", "/nonexistent/migrations")],
        )
        .plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.migrations"), "{error}");
    let error = build_error(
        service(
            &db,
            &[("MAMEY__SQLITE__URL", "sqlite:///nonexistent-dir/x.db")],
        )
        .plugin(Sqlite::new()),
    )
    .await;
    assert!(
        error.contains("cannot open SQLite database `/nonexistent-dir/x.db`"),
        "{error}"
    );
}

/// The outbox and inbox of the plug-in (feature `outbox`).
#[cfg(feature = "outbox")]
mod outbox {
    use crate::common::sqlite::Db;
    use crate::common::{
        Paid, eventually, publish_a_redelivery, publisher, record_deliveries, stage,
    };
    use crate::service;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use futures_util::FutureExt;
    use mamey_core::cqrs::Res;
    use mamey_core::health::{Probe, Status};
    use mamey_core::{Error, MessageContext};
    use mamey_messaging::{
        InboxStore, MemoryBroker, Messaging, OutboxRelay, OutboxStore, PublishOptions, Publisher,
        RelayConfig, RetryPolicy,
    };
    use mamey_persistence::error;
    use mamey_persistence::sqlite::{Sqlite, SqliteInbox, SqliteOutbox, SqlitePool};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_messages_are_relayed_on_commit_and_rolled_back_ones_never_exist() {
        let db = Db::new();
        let broker = MemoryBroker::new();
        let received = record_deliveries(&broker).await;
        let service = service(&db, &[])
            .plugin(Sqlite::new().outbox())
            .plugin(Messaging::new(broker.clone()).outbox::<SqliteOutbox>())
            .build()
            .await
            .unwrap();
        let pool = service.resources().get::<SqlitePool>().unwrap();
        let outbox = service.resources().get::<SqliteOutbox>().unwrap();
        let publisher = service.resources().get::<Publisher>().unwrap();
        let health = service.health().clone();
        let running = service.start().await.unwrap();
        assert_eq!(health.check(Probe::Ready).await.status, Status::Healthy);

        let mut tx = pool.begin().await.unwrap();
        let dropped = publisher
            .prepare(&Paid { invoice: 1 }, PublishOptions::default())
            .unwrap();
        outbox.stage(&mut *tx, dropped).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(outbox.pending().await.unwrap(), 0, "rolled back with it");

        // The relay's interval is an hour: the commit wakes it.
        let committed = stage(&pool, &outbox, &publisher, 1).await;
        eventually("the committed message", async || {
            received.lock().unwrap().len() == 1
        })
        .await;
        assert_eq!(*received.lock().unwrap(), committed);
        assert_eq!(outbox.pending().await.unwrap(), 0);
        running.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_kept_in_the_row_and_unreadable_rows_parked() {
        let db = Db::new();
        let pool = db.pool().await;
        let outbox = SqliteOutbox::new(pool.clone(), "outbox");
        outbox.create_table().await.unwrap();
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 3).await;

        // Nothing subscribed: unroutable, kept with its error, due later.
        let relay = OutboxRelay::new(
            Arc::new(outbox.clone()),
            Arc::new(MemoryBroker::new()),
            RelayConfig {
                batch: 1,
                retry: RetryPolicy {
                    initial_delay: Duration::from_secs(3600),
                    max_delay: Duration::from_secs(3600),
                    ..RetryPolicy::default()
                },
                ..RelayConfig::default()
            },
        );
        let round = relay.round().await.unwrap();
        assert_eq!((round.sent, round.failed), (0, 1));
        let (attempts, last_error, claim, due_ms): (i64, String, Option<String>, i64) =
            sqlx::query_as(
                "SELECT attempts, last_error, claim_id, due_ms FROM outbox WHERE message_id = ?1",
            )
            .bind(&ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((attempts, claim), (1, None), "settled");
        assert!(last_error.contains("no queue is bound"), "{last_error}");
        let in_an_hour = SystemTime::now() + Duration::from_secs(3500);
        let in_an_hour = in_an_hour.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert!(due_ms > i64::try_from(in_an_hour.as_millis()).unwrap());

        // Headers that are not a map of strings: parked, the rest goes on.
        sqlx::query("UPDATE outbox SET headers = '[1]' WHERE message_id = ?1")
            .bind(&ids[2])
            .execute(&pool)
            .await
            .unwrap();
        let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
        let claimed_ids: Vec<_> = claimed
            .iter()
            .map(|e| e.message.properties.message_id.clone())
            .collect();
        assert_eq!(claimed_ids, ids[1..2]);
        let held: Option<String> =
            sqlx::query_scalar("SELECT claim_id FROM outbox WHERE message_id = ?1")
                .bind(&ids[1])
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            held.as_deref(),
            Some(claimed[0].claim.as_str()),
            "the claim's token"
        );
        let parked: String =
            sqlx::query_scalar("SELECT last_error FROM outbox WHERE message_id = ?1")
                .bind(&ids[2])
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(parked.starts_with("cannot read the row"), "{parked}");
        assert!(
            outbox
                .claim(10, Duration::from_secs(0))
                .await
                .unwrap()
                .is_empty(),
            "the parked row is not claimed again"
        );
    }

    /// A table made before claims carried a token: `create_table` adds the
    /// column, and claims work on it.
    #[tokio::test]
    async fn an_outbox_table_without_the_claim_column_gets_it() {
        let db = Db::new();
        let pool = db.pool().await;
        let outbox = SqliteOutbox::new(pool.clone(), "outbox");
        outbox.create_table().await.unwrap();
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 1).await;
        sqlx::query("ALTER TABLE outbox DROP COLUMN claim_id")
            .execute(&pool)
            .await
            .unwrap();
        assert!(outbox.claim(10, Duration::from_secs(60)).await.is_err());

        outbox.create_table().await.unwrap();
        let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(claimed[0].message.properties.message_id, ids[0]);
        assert!(
            outbox
                .mark_sent(&claimed[0].claim, &ids)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(outbox.pending().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_inbox_forgets_ids_processed_before_its_purge_age() {
        let db = Db::new();
        let pool = db.pool().await;
        let inbox = SqliteInbox::new(pool.clone(), "inbox");
        inbox.create_table().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        assert!(inbox.record(&mut *tx, "billing", "m-1").await.unwrap());
        assert!(inbox.record(&mut *tx, "audit", "m-1").await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(inbox.purge(Duration::from_secs(3600)).await.unwrap(), 0);
        sqlx::query("UPDATE inbox SET processed_ms = 0")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(inbox.purge(Duration::from_secs(3600)).await.unwrap(), 2);
        let mut tx = pool.begin().await.unwrap();
        assert!(
            inbox.record(&mut *tx, "billing", "m-1").await.unwrap(),
            "forgotten"
        );
    }

    #[tokio::test]
    async fn a_store_error_keeps_the_database_error_as_its_source() {
        use std::error::Error as _;

        let db = Db::new();
        // The table is never created: SQLite refuses the query.
        let outbox = SqliteOutbox::new(db.pool().await, "outbox");
        let error = outbox.pending().await.unwrap_err();
        let source = error
            .source()
            .and_then(|e| e.downcast_ref::<sqlx::Error>())
            .unwrap_or_else(|| panic!("no sqlx error behind {error:?}"));
        let sqlx::Error::Database(database) = source else {
            panic!("expected a database error, got {source:?}");
        };
        assert!(database.message().contains("no such table"), "{database}");
        // The text still says what failed and why.
        let text = error.to_string();
        assert!(text.starts_with("outbox/inbox store: "), "{text}");
        assert!(text.contains("counting pending messages"), "{text}");
        assert!(text.contains(database.message()), "{text}");
    }

    /// Counts the handler's calls.
    #[derive(Clone)]
    struct Calls(Arc<AtomicUsize>);

    /// Applies `Paid` to the ledger once per message id, recording the id in
    /// the inbox in the same transaction.
    async fn apply_once(
        paid: Paid,
        Res(db): Res<SqlitePool>,
        Res(inbox): Res<SqliteInbox>,
        Res(Calls(calls)): Res<Calls>,
        context: MessageContext,
    ) -> Result<(), Error> {
        let mut tx = db.begin().await.map_err(error)?;
        if inbox
            .record(&mut *tx, "ledger", &context.message_id)
            .await?
        {
            sqlx::query("INSERT INTO ledger (invoice) VALUES (?1)")
                .bind(paid.invoice)
                .execute(&mut *tx)
                .await
                .map_err(error)?;
        }
        tx.commit().await.map_err(error)?;
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redelivered_message_is_applied_once_and_migrations_run_once() {
        let db = Db::new();
        let migrations = tempfile::tempdir().unwrap();
        std::fs::write(
            migrations.path().join("1_ledger.sql"),
            "CREATE TABLE ledger (invoice INTEGER NOT NULL);",
        )
        .unwrap();
        let dir = migrations.path().display().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = |calls: Arc<AtomicUsize>| {
            service(&db, &[("MAMEY__SQLITE__MIGRATIONS", &dir)])
                .resource(Calls(calls))
                .plugin(Sqlite::new().inbox())
                .plugin(Messaging::new(MemoryBroker::new()).subscribe_event::<Paid>())
                .handlers(|d| {
                    d.event(apply_once);
                })
        };
        // Built twice: the migration runs once.
        service(Arc::clone(&calls))
            .build()
            .await
            .unwrap()
            .start()
            .await
            .unwrap()
            .stop()
            .await
            .unwrap();
        let built = service(Arc::clone(&calls)).build().await.unwrap();
        let publisher = built.resources().get::<Publisher>().unwrap();
        let pool = built.resources().get::<SqlitePool>().unwrap();
        let running = built.start().await.unwrap();
        publish_a_redelivery(&publisher).await;
        eventually("three deliveries handled", async || {
            calls.load(Ordering::SeqCst) == 3
        })
        .await;
        let invoices: Vec<i64> = sqlx::query_scalar("SELECT invoice FROM ledger ORDER BY invoice")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(invoices, [9, 10], "applied once each");
        running.stop().await.unwrap();
    }

    /// The relay is woken by commits that staged a message, and only by those:
    /// its own claims must not wake it again, or it would never rest.
    #[tokio::test]
    async fn only_a_commit_that_staged_a_message_wakes_the_relay() {
        let db = Db::new();
        let service = service(&db, &[])
            .plugin(Sqlite::new().outbox().inbox())
            .build()
            .await
            .unwrap();
        let pool = service.resources().get::<SqlitePool>().unwrap();
        let outbox = service.resources().get::<SqliteOutbox>().unwrap();
        let inbox = service.resources().get::<SqliteInbox>().unwrap();
        let woken = outbox.staged();
        // A pending wake, if any, is taken at once: the hooks run inside the
        // commit, so what a statement causes is there when it returns.
        let woke = || woken.notified().now_or_never().is_some();
        while woke() {}

        assert!(
            outbox
                .claim(10, Duration::from_secs(60))
                .await
                .unwrap()
                .is_empty()
        );
        outbox
            .mark_sent("no-claim", &["none".to_owned()])
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        inbox.record(&mut *tx, "c", "m").await.unwrap();
        tx.commit().await.unwrap();
        assert!(
            !woke(),
            "claims, marks and other writes do not wake the relay"
        );

        let publisher = publisher(&MemoryBroker::new());
        let mut tx = pool.begin().await.unwrap();
        let message = publisher
            .prepare(&Paid { invoice: 1 }, PublishOptions::default())
            .unwrap();
        outbox.stage(&mut *tx, message).await.unwrap();
        assert!(!woke(), "not before the commit");
        tx.rollback().await.unwrap();
        assert!(!woke(), "not after a rollback");

        stage(&pool, &outbox, &publisher, 1).await;
        assert!(woke(), "a commit that staged a message wakes it");
        assert!(!woke(), "once");
    }
}
