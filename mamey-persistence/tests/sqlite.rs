//! The SQLite plug-in, outbox and inbox, each test on a database file of its
//! own in a temporary directory (removed with it).
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Paid, eventually, publisher, record_deliveries};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use mamey_core::cqrs::Res;
use mamey_core::health::{Probe, Status};
use mamey_core::{Error, MessageContext, Service, ServiceBuilder};
use mamey_messaging::{
    InboxStore, MemoryBroker, Messaging, OutboxRelay, OutboxStore, PublishOptions, Publisher,
    RelayConfig, RetryPolicy,
};
use mamey_persistence::error;
use mamey_persistence::sqlite::{Sqlite, SqliteInbox, SqliteOutbox, SqlitePool};

/// A database file of this test's own.
struct Db {
    dir: tempfile::TempDir,
}

impl Db {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("test.db").display())
    }

    /// A pool of its own on the file, as another process would have.
    async fn pool(&self) -> SqlitePool {
        let options = self
            .url()
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap();
        SqlitePool::connect_with(
            options
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap()
    }

    /// A test service on this file; the relay's interval is an hour, so
    /// only a commit wakes it.
    fn service(&self, extra: &[(&str, &str)]) -> ServiceBuilder {
        let mut vars = vec![
            ("MAMEY__SQLITE__URL".to_owned(), self.url()),
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
}

async fn build_error(builder: ServiceBuilder) -> String {
    builder.build().await.map(|_| ()).unwrap_err().to_string()
}

/// Stages `count` messages in one committed transaction; returns their ids.
async fn stage(
    pool: &SqlitePool,
    outbox: &SqliteOutbox,
    publisher: &Publisher,
    count: u32,
) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::new();
    for invoice in 0..count {
        let message = publisher
            .prepare(&Paid { invoice }, PublishOptions::default())
            .unwrap();
        ids.push(message.properties.message_id.clone());
        outbox.stage(&mut *tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let db = Db::new();
    let error = build_error(
        db.service(&[("MAMEY__SQLITE__URL", "postgres://x/y")])
            .plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.url"), "{error}");
    assert!(error.contains("MAMEY__SQLITE__URL"), "{error}");
    for memory in [
        "sqlite::memory:",
        "sqlite://file:x?mode=memory",
        "sqlite://",
    ] {
        let error = build_error(
            db.service(&[("MAMEY__SQLITE__URL", memory)])
                .plugin(Sqlite::new()),
        )
        .await;
        assert!(error.contains("sqlite.url"), "{memory}: {error}");
    }
    let error = build_error(
        db.service(&[("MAMEY__SQLITE__OUTBOX_TABLE", "main.outbox")])
            .plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.outbox_table"), "{error}");
    let error = build_error(
        db.service(&[("MAMEY__SQLITE__MAX_CONNECTIONS", "0")])
            .plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.max_connections"), "{error}");
    let error = build_error(
        db.service(&[("MAMEY__SQLITE__MIGRATIONS", "/nonexistent/migrations")])
            .plugin(Sqlite::new()),
    )
    .await;
    assert!(error.contains("sqlite.migrations"), "{error}");
    let error = build_error(
        db.service(&[("MAMEY__SQLITE__URL", "sqlite:///nonexistent-dir/x.db")])
            .plugin(Sqlite::new()),
    )
    .await;
    assert!(
        error.contains("cannot open SQLite database `/nonexistent-dir/x.db`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_are_relayed_on_commit_and_rolled_back_ones_never_exist() {
    let db = Db::new();
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let service = db
        .service(&[])
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
async fn two_processes_relays_never_send_the_same_row() {
    let db = Db::new();
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    // Two pools on one file, as two processes would have.
    let (pool_a, pool_b) = (db.pool().await, db.pool().await);
    let (a, b) = (
        SqliteOutbox::new(pool_a.clone(), "outbox"),
        SqliteOutbox::new(pool_b, "outbox"),
    );
    a.create_table().await.unwrap();
    b.create_table().await.unwrap();
    let staged = stage(&pool_a, &a, &publisher(&broker), 200).await;
    let config = RelayConfig {
        batch: 7,
        ..RelayConfig::default()
    };
    let relay = |store: SqliteOutbox| {
        let relay = OutboxRelay::new(Arc::new(store), Arc::new(broker.clone()), config.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let round = relay.round().await.unwrap();
                if round.sent + round.failed == 0 {
                    return sent;
                }
                sent += round.sent;
            }
        })
    };
    let (sent_a, sent_b) = (relay(a.clone()), relay(b));
    assert_eq!(sent_a.await.unwrap() + sent_b.await.unwrap(), 200);
    eventually("every message", async || {
        received.lock().unwrap().len() >= 200
    })
    .await;
    let mut got = received.lock().unwrap().clone();
    got.sort();
    let mut want = staged;
    want.sort();
    assert_eq!(got, want, "each message exactly once");
    assert_eq!(a.pending().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_kept_leases_end_unreadable_rows_are_parked_and_sent_rows_purged() {
    let db = Db::new();
    let pool = db.pool().await;
    let broker = MemoryBroker::new();
    let outbox = SqliteOutbox::new(pool.clone(), "outbox");
    outbox.create_table().await.unwrap();
    let ids = stage(&pool, &outbox, &publisher(&broker), 3).await;

    // Nothing subscribed: unroutable, kept with its error, retried later.
    let relay = OutboxRelay::new(
        Arc::new(outbox.clone()),
        Arc::new(broker.clone()),
        RelayConfig {
            batch: 1,
            retry: RetryPolicy {
                initial_delay: Duration::from_secs(3600),
                ..RetryPolicy::default()
            },
            ..RelayConfig::default()
        },
    );
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed), (0, 1));
    let (attempts, last_error): (i64, String) =
        sqlx::query_as("SELECT attempts, last_error FROM outbox WHERE message_id = ?1")
            .bind(&ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(last_error.contains("no queue is bound"), "{last_error}");

    // A claim holds its rows until its lease ends (ended here by hand).
    let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
    let claimed: Vec<_> = claimed
        .into_iter()
        .map(|e| e.message.properties.message_id)
        .collect();
    assert_eq!(claimed, ids[1..], "the failed one is not due yet");
    assert!(
        outbox
            .claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    sqlx::query("UPDATE outbox SET leased_until_ms = 0 WHERE message_id = ?1")
        .bind(&ids[1])
        .execute(&pool)
        .await
        .unwrap();
    // Headers that are not a map of strings: parked, the rest goes on.
    sqlx::query("UPDATE outbox SET headers = '[1]', leased_until_ms = 0 WHERE message_id = ?1")
        .bind(&ids[2])
        .execute(&pool)
        .await
        .unwrap();
    let again: Vec<_> = outbox
        .claim(10, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.message.properties.message_id, e.attempts))
        .collect();
    assert_eq!(again, [(ids[1].clone(), 2)]);
    let parked: String = sqlx::query_scalar("SELECT last_error FROM outbox WHERE message_id = ?1")
        .bind(&ids[2])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(parked.starts_with("cannot read the row"), "{parked}");

    // Released untried: due at once, the claim's attempt given back.
    outbox.release(&ids[1..2]).await.unwrap();
    let again = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2, "released, then claimed again");
    outbox.mark_sent(&ids[1..2]).await.unwrap();
    let received = record_deliveries(&broker).await;
    // The failed one's retry delay is an hour: made due by hand.
    sqlx::query("UPDATE outbox SET due_ms = 0 WHERE message_id = ?1")
        .bind(&ids[0])
        .execute(&pool)
        .await
        .unwrap();
    eventually("the retried publish", async || {
        relay.round().await.unwrap().sent == 1
    })
    .await;
    assert_eq!(*received.lock().unwrap(), ids[..1]);
    let future = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(outbox.purge_sent(future).await.unwrap(), 2);
    assert_eq!(outbox.pending().await.unwrap(), 1, "the parked one");
}

#[tokio::test]
async fn the_inbox_records_each_message_once_per_consumer_inside_the_transaction() {
    let db = Db::new();
    let pool = db.pool().await;
    let inbox = SqliteInbox::new(pool.clone(), "inbox");
    inbox.create_table().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    assert!(inbox.record(&mut *tx, "billing", "m-1").await.unwrap());
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(inbox.record(&mut *tx, "billing", "m-1").await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(!inbox.record(&mut *tx, "billing", "m-1").await.unwrap());
    assert!(inbox.record(&mut *tx, "audit", "m-1").await.unwrap());
    let empty = inbox.record(&mut *tx, "audit", "").await.unwrap_err();
    assert!(empty.to_string().contains("empty message id"), "{empty}");
    tx.commit().await.unwrap();
    assert_eq!(inbox.purge(Duration::from_secs(3600)).await.unwrap(), 0);
    sqlx::query("UPDATE inbox SET processed_ms = 0")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(inbox.purge(Duration::from_secs(3600)).await.unwrap(), 2);
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
        db.service(&[("MAMEY__SQLITE__MIGRATIONS", &dir)])
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
    let options = PublishOptions {
        message_id: Some(mamey_core::new_id()),
        ..PublishOptions::default()
    };
    for _ in 0..2 {
        publisher
            .publish_with(&Paid { invoice: 9 }, options.clone())
            .await
            .unwrap();
    }
    publisher.publish(&Paid { invoice: 10 }).await.unwrap();
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
    let service = db
        .service(&[])
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
    outbox.mark_sent(&["none".to_owned()]).await.unwrap();
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
