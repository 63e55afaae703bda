//! The Postgres plug-in against a real server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): configuration, connection,
//! TLS and migrations, and what is particular to its outbox and inbox —
//! `LISTEN`/`NOTIFY`, the rows' columns, parked rows, the claim column
//! added to an older table, lock waits, table names and rights. What every
//! outbox and inbox store does is in the shared suite (`stores.rs`). Each
//! test uses a schema of its own and drops it at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pg::{Schema, pool, url};

use mamey_core::{Service, ServiceBuilder};
use mamey_persistence::postgres::Postgres;

/// A service for one test: no signal handling, no configuration files,
/// `vars` as its whole environment.
fn test_service<K: Into<String>, V: Into<String>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> ServiceBuilder {
    Service::builder("pg-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars)
}

/// What a service that must not build fails with.
trait BuildError {
    async fn build_error(self) -> String;
}

impl BuildError for ServiceBuilder {
    async fn build_error(self) -> String {
        self.build().await.map(|_| ()).unwrap_err().to_string()
    }
}

#[tokio::test]
async fn config_errors_name_the_key_and_keep_the_password() {
    let build = |vars: Vec<(&'static str, &'static str)>| async move {
        test_service(vars)
            .plugin(Postgres::new())
            .build_error()
            .await
    };
    let error = build(vec![(
        "MAMEY__POSTGRES__URL",
        "mysql://app:hunter2@127.0.0.1:5432/x",
    )])
    .await;
    assert!(error.contains("postgres.url"), "{error}");
    assert!(error.contains("MAMEY__POSTGRES__URL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    let error = build(vec![(
        "MAMEY__POSTGRES__OUTBOX_TABLE",
        "outbox; drop table x",
    )])
    .await;
    assert!(error.contains("postgres.outbox_table"), "{error}");
    assert!(error.contains("expected a table name"), "{error}");

    let error = build(vec![("MAMEY__POSTGRES__MAX_CONNECTIONS", "0")]).await;
    assert!(error.contains("postgres.max_connections"), "{error}");
}

#[cfg(feature = "outbox")]
#[tokio::test]
async fn the_outbox_needs_a_second_connection_for_its_listener() {
    let error = test_service([("MAMEY__POSTGRES__MAX_CONNECTIONS", "1")])
        .plugin(Postgres::new().outbox())
        .build_error()
        .await;
    assert!(error.contains("postgres.max_connections"), "{error}");
    assert!(error.contains("listener"), "{error}");
}

/// With feature `tls`, `sslmode=require` connects over TLS (the local
/// server's certificate is self-signed: `require` encrypts without
/// verifying it).
#[cfg(feature = "tls")]
#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    use mamey_persistence::postgres::PgPool;

    let Some(_pool) = pool().await else { return };
    let service = test_service([(
        "MAMEY__POSTGRES__URL",
        "postgres://postgres@127.0.0.1:5432/test?sslmode=require",
    )])
    .plugin(Postgres::new())
    .build()
    .await
    .unwrap();
    let pool = service.resources().get::<PgPool>().unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted);
    pool.close().await;
}

#[tokio::test]
async fn wrong_credentials_fail_the_build_at_once_with_the_reason() {
    let Some(_pool) = pool().await else { return };
    let error = test_service([(
        "MAMEY__POSTGRES__URL",
        "postgres://no_such_role:hunter2@127.0.0.1:5432/test",
    )])
    .plugin(Postgres::new())
    .build_error()
    .await;
    assert!(error.contains("no_such_role"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn an_unreachable_database_fails_the_build_naming_it() {
    let error = test_service([
        (
            "MAMEY__POSTGRES__URL",
            "postgres://app:hunter2@127.0.0.1:1/orders",
        ),
        ("MAMEY__POSTGRES__CONNECT_TIMEOUT", "300ms"),
    ])
    .plugin(Postgres::new())
    .build_error()
    .await;
    assert!(
        error.contains("cannot connect to Postgres at 127.0.0.1:1/orders"),
        "{error}"
    );
    assert!(error.contains("refused"), "the reason: {error}");
    assert!(!error.contains("hunter2"), "{error}");
}

async fn build_with_migrations(url: &str, dir: &std::path::Path) -> Result<Service, String> {
    test_service([
        ("MAMEY__POSTGRES__URL", url.to_owned()),
        ("MAMEY__POSTGRES__MIGRATIONS", dir.display().to_string()),
    ])
    .plugin(Postgres::new())
    .build()
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_applied_once_and_an_edited_one_stops_the_start() {
    let Some(pool) = pool().await else { return };
    let schema = Schema::new(&pool).await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_create_items.sql"),
        "CREATE TABLE items (id integer PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("2_seed.sql"),
        "INSERT INTO items VALUES (1);",
    )
    .unwrap();

    for _ in 0..2 {
        let service = build_with_migrations(&url, dir.path()).await.unwrap();
        service.start().await.unwrap().stop().await.unwrap();
    }
    let items: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.items", schema.name))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(items, 1, "each migration ran once");

    std::fs::write(
        dir.path().join("1_create_items.sql"),
        "CREATE TABLE items (id bigint PRIMARY KEY);",
    )
    .unwrap();
    let error = build_with_migrations(&url, dir.path()).await.unwrap_err();
    assert!(error.contains("applying the migrations in"), "{error}");
    assert!(
        error.contains("migration 1 was previously applied but has been modified"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_stops_the_start_and_names_it() {
    let Some(pool) = pool().await else { return };
    let schema = Schema::new(&pool).await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1_ok.sql"), "CREATE TABLE ok (id integer);").unwrap();
    std::fs::write(dir.path().join("2_broken.sql"), "CREATE TABLE broken (").unwrap();
    let error = build_with_migrations(&url, dir.path()).await.unwrap_err();
    assert!(error.contains("migration 2"), "{error}");
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}._sqlx_migrations WHERE success",
        schema.name
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(applied, 1, "the migrations before it stay applied");
}

#[tokio::test]
async fn a_missing_migrations_directory_is_a_config_error() {
    let error = build_with_migrations(&url(), std::path::Path::new("/nonexistent/migrations"))
        .await
        .unwrap_err();
    assert!(error.contains("postgres.migrations"), "{error}");
    assert!(error.contains("MAMEY__POSTGRES__MIGRATIONS"), "{error}");
}

/// The outbox and inbox of the plug-in (feature `outbox`).
#[cfg(feature = "outbox")]
mod outbox {
    use crate::common::pg::{Schema, pool, url};
    use crate::common::{
        Paid, eventually, publish_a_redelivery, publisher, record_deliveries, stage,
    };
    use crate::test_service;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use mamey_core::cqrs::Res;
    use mamey_core::health::{Probe, Status};
    use mamey_core::{Error, MessageContext};
    use mamey_messaging::{
        InboxStore, MemoryBroker, Messaging, OutboxRelay, OutboxStore, PublishOptions, Publisher,
        RelayConfig, RetryPolicy,
    };
    use mamey_persistence::postgres::{PgInbox, PgOutbox, PgPool, Postgres};

    /// The plug-in's configuration with the test's tables; the relay's
    /// interval is an hour, so only a notification wakes it.
    fn vars(schema: &Schema) -> Vec<(String, String)> {
        vec![
            ("MAMEY__POSTGRES__URL".into(), url()),
            (
                "MAMEY__POSTGRES__OUTBOX_TABLE".into(),
                schema.table("outbox"),
            ),
            ("MAMEY__POSTGRES__INBOX_TABLE".into(), schema.table("inbox")),
            ("MAMEY__MESSAGING__OUTBOX__INTERVAL".into(), "1h".into()),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_messages_are_relayed_on_notify_and_rolled_back_ones_never_exist() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let broker = MemoryBroker::new();
        let received = record_deliveries(&broker).await;
        let service = test_service(vars(&schema))
            .plugin(Postgres::new().outbox())
            .plugin(Messaging::new(broker.clone()).outbox::<PgOutbox>())
            .build()
            .await
            .unwrap();
        let (db, outbox) = (
            service.resources().get::<PgPool>().unwrap(),
            service.resources().get::<PgOutbox>().unwrap(),
        );
        let publisher = service.resources().get::<Publisher>().unwrap();
        let health = service.health().clone();
        let running = service.start().await.unwrap();
        assert_eq!(health.check(Probe::Ready).await.status, Status::Healthy);

        let mut tx = db.begin().await.unwrap();
        let dropped = publisher
            .prepare(&Paid { invoice: 1 }, PublishOptions::default())
            .unwrap();
        let dropped_id = dropped.properties.message_id.clone();
        outbox.stage(&mut *tx, dropped).await.unwrap();
        tx.rollback().await.unwrap();

        // The relay's interval is an hour: only the commit's NOTIFY wakes it.
        let committed = stage(&db, &outbox, &publisher, 1).await;
        eventually("the committed message", async || {
            received.lock().unwrap().len() == 1
        })
        .await;
        assert_eq!(*received.lock().unwrap(), committed);
        assert_eq!(outbox.pending().await.unwrap(), 0);
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE message_id = $1",
            schema.table("outbox")
        ))
        .bind(&dropped_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(rows, 0, "the rolled-back message was never staged");

        running.stop().await.unwrap();
    }

    /// Waits until a backend other than `not` listens on `channel`; its pid.
    async fn listening(pool: &PgPool, channel: &str, not: i32) -> i32 {
        let pid = Arc::new(Mutex::new(0));
        eventually("a listener", async || {
            let found: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> $2 LIMIT 1",
            )
            .bind(format!("LISTEN%{channel}%"))
            .bind(not)
            .fetch_optional(pool)
            .await
            .unwrap();
            *pid.lock().unwrap() = found.unwrap_or_default();
            found.is_some()
        })
        .await;
        *pid.lock().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_wakes_another_instance_even_after_its_listener_lost_the_connection() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let table = schema.table("outbox");
        let here = PgOutbox::new(pool.clone(), &table);
        here.create_table().await.unwrap();
        // Another instance's store, listening.
        let there = PgOutbox::new(pool.clone(), &table);
        let woken = there.staged();
        let stop = tokio_util::sync::CancellationToken::new();
        let listener = tokio::spawn({
            let (there, stop) = (there.clone(), stop.clone());
            async move { there.listen(stop).await }
        });
        let wait = async || {
            tokio::time::timeout(Duration::from_secs(15), woken.notified())
                .await
                .is_ok()
        };
        let pid = listening(&pool, &table, 0).await;
        assert!(
            wait().await,
            "a wake once listening, for what was staged before"
        );
        let publisher = publisher(&MemoryBroker::new());
        stage(&pool, &here, &publisher, 1).await;
        assert!(wait().await, "the commit's NOTIFY wakes it");

        // The listener's connection dies: it reconnects, listens again, and
        // wakes the relay for what it may have missed meanwhile.
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
        assert!(wait().await, "a wake after the connection was lost");
        listening(&pool, &table, pid).await;
        // A reconnection wake may still be pending and answer one wait; two
        // commits with a wait after each need a NOTIFY on the new connection.
        for _ in 0..2 {
            stage(&pool, &here, &publisher, 1).await;
            assert!(wait().await, "a commit's NOTIFY after reconnecting");
        }
        stop.cancel();
        listener.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_publish_keeps_its_error_and_claims_write_their_token_in_the_row() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let table = schema.table("outbox");
        let outbox = PgOutbox::new(pool.clone(), &table);
        outbox.create_table().await.unwrap();
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 2).await;
        let relay = OutboxRelay::new(
            Arc::new(outbox.clone()),
            Arc::new(MemoryBroker::new()),
            RelayConfig {
                batch: 1,
                retry: RetryPolicy {
                    initial_delay: Duration::from_secs(3600),
                    ..RetryPolicy::default()
                },
                ..RelayConfig::default()
            },
        );
        // Nothing subscribed: the publish is unroutable.
        let round = relay.round().await.unwrap();
        assert_eq!((round.sent, round.failed), (0, 1));
        let row = format!(
            "SELECT attempts, last_error, claim_id, leased_until IS NOT NULL, due_at > now()
         FROM {table} WHERE message_id = $1"
        );
        type Columns = (i32, Option<String>, Option<String>, bool, bool);
        let failed: Columns = sqlx::query_as(&row)
            .bind(&ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(failed.0, 1);
        assert!(failed.1.unwrap().contains("no queue is bound"));
        assert_eq!(
            (failed.2, failed.3, failed.4),
            (None, false, true),
            "settled, due later"
        );

        let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
        let held: Columns = sqlx::query_as(&row)
            .bind(&ids[1])
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(held.2.as_deref(), Some(claimed[0].claim.as_str()));
        assert!(held.3, "leased");
    }

    /// A table made before claims carried a token: `create_table` adds the
    /// column, and claims work on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outbox_table_without_the_claim_column_gets_it() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let table = schema.table("outbox");
        let outbox = PgOutbox::new(pool.clone(), &table);
        outbox.create_table().await.unwrap();
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 1).await;
        sqlx::query(&format!("ALTER TABLE {table} DROP COLUMN claim_id"))
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_is_parked_and_the_rest_of_its_batch_goes_on() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let outbox = PgOutbox::new(pool.clone(), &schema.table("outbox"));
        outbox.create_table().await.unwrap();
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 3).await;
        // Headers that are not a map of strings, written by hand.
        sqlx::query(&format!(
            "UPDATE {} SET headers = '[1, 2]'::jsonb WHERE message_id = $1",
            schema.table("outbox")
        ))
        .bind(&ids[1])
        .execute(&pool)
        .await
        .unwrap();
        let claimed: Vec<_> = outbox
            .claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message.properties.message_id)
            .collect();
        assert_eq!(claimed, [ids[0].clone(), ids[2].clone()]);
        let (due, error): (String, String) = sqlx::query_as(&format!(
            "SELECT due_at::text, last_error FROM {} WHERE message_id = $1",
            schema.table("outbox")
        ))
        .bind(&ids[1])
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(due, "infinity", "parked, not claimed again");
        assert!(error.starts_with("cannot read the row"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_duplicate_waits_for_the_first_transaction_and_the_inbox_purges() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        let inbox = PgInbox::new(pool.clone(), &schema.table("inbox"));
        inbox.create_table().await.unwrap();

        let mut tx = pool.begin().await.unwrap();
        assert!(inbox.record(&mut *tx, "billing", "m-1").await.unwrap());

        // A concurrent duplicate waits for the first transaction's outcome.
        let (pool2, inbox2) = (pool.clone(), inbox.clone());
        let duplicate = tokio::spawn(async move {
            let mut tx = pool2.begin().await.unwrap();
            let first = inbox2.record(&mut *tx, "billing", "m-1").await.unwrap();
            tx.commit().await.unwrap();
            first
        });
        // Its statement names the schema: `"it_…"."inbox"`.
        let statement = format!("%{}%", schema.name);
        eventually("the duplicate to wait on the lock", async || {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE $1",
            )
            .bind(&statement)
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting == 1
        })
        .await;
        tx.commit().await.unwrap();
        assert!(
            !duplicate.await.unwrap(),
            "a duplicate once the first committed"
        );

        let mut tx = pool.begin().await.unwrap();
        assert!(
            inbox.record(&mut *tx, "audit", "m-1").await.unwrap(),
            "per consumer"
        );
        tx.commit().await.unwrap();
        assert_eq!(inbox.purge(Duration::ZERO).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_store_error_keeps_the_database_error_as_its_source() {
        use std::error::Error as _;

        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        // The table is never created: the database refuses the query.
        let outbox = PgOutbox::new(pool, &schema.table("outbox"));
        let error = outbox.pending().await.unwrap_err();
        let source = error
            .source()
            .and_then(|e| e.downcast_ref::<sqlx::Error>())
            .unwrap_or_else(|| panic!("no sqlx error behind {error:?}"));
        let sqlx::Error::Database(db) = source else {
            panic!("expected a database error, got {source:?}");
        };
        assert_eq!(db.code().as_deref(), Some("42P01"), "undefined_table");
        // The text still says what failed and why.
        let text = error.to_string();
        assert!(text.starts_with("outbox/inbox store: "), "{text}");
        assert!(text.contains("counting pending messages"), "{text}");
        assert!(text.contains(db.message()), "{text}");
        // Converted for a handler: unavailable, with the chain kept.
        let converted = mamey_core::Error::from(error);
        assert_eq!(converted.kind(), mamey_core::ErrorKind::Unavailable);
        assert!(
            converted
                .source()
                .and_then(|e| e.source())
                .is_some_and(<dyn std::error::Error>::is::<sqlx::Error>)
        );
    }

    /// The test's ledger table, and a count of the handler's calls.
    #[derive(Clone)]
    struct Ledger {
        table: String,
        calls: Arc<AtomicUsize>,
    }

    /// Applies `Paid` to the ledger once per message id, recording the id in
    /// the inbox in the same transaction.
    async fn apply_once(
        paid: Paid,
        Res(db): Res<PgPool>,
        Res(inbox): Res<PgInbox>,
        Res(ledger): Res<Ledger>,
        context: MessageContext,
    ) -> Result<(), Error> {
        let mut tx = db
            .begin()
            .await
            .map_err(mamey_persistence::postgres::error)?;
        if inbox
            .record(&mut *tx, "ledger", &context.message_id)
            .await?
        {
            sqlx::query(&format!(
                "INSERT INTO {} (invoice) VALUES ($1)",
                ledger.table
            ))
            .bind(i32::try_from(paid.invoice).unwrap())
            .execute(&mut *tx)
            .await
            .map_err(mamey_persistence::postgres::error)?;
        }
        tx.commit()
            .await
            .map_err(mamey_persistence::postgres::error)?;
        ledger.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redelivered_message_is_applied_once() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        sqlx::query(&format!(
            "CREATE TABLE {} (invoice integer NOT NULL)",
            schema.table("ledger")
        ))
        .execute(&pool)
        .await
        .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = test_service(vars(&schema))
            .resource(Ledger {
                table: schema.table("ledger"),
                calls: Arc::clone(&calls),
            })
            .plugin(Postgres::new().inbox())
            .plugin(Messaging::new(MemoryBroker::new()).subscribe_event::<Paid>())
            .handlers(|d| {
                d.event(apply_once);
            })
            .build()
            .await
            .unwrap();
        let publisher = service.resources().get::<Publisher>().unwrap();
        let running = service.start().await.unwrap();
        publish_a_redelivery(&publisher).await;
        eventually("three deliveries handled", async || {
            calls.load(Ordering::SeqCst) == 3
        })
        .await;
        running.stop().await.unwrap();
        let invoices: Vec<i32> = sqlx::query_scalar(&format!(
            "SELECT invoice FROM {} ORDER BY invoice",
            schema.table("ledger")
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(invoices, [9, 10], "applied once each");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reserved_words_work_as_table_names() {
        let Some(pool) = pool().await else { return };
        let schema = Schema::new(&pool).await;
        // `order` and `user` are reserved in SQL.
        let outbox = PgOutbox::new(pool.clone(), &schema.table("order"));
        let inbox = PgInbox::new(pool.clone(), &schema.table("user"));
        outbox.create_table().await.unwrap();
        inbox.create_table().await.unwrap();
        assert!(
            outbox.schema().starts_with(&format!(
                "CREATE TABLE IF NOT EXISTS \"{}\".\"order\" (",
                schema.name
            )),
            "{}",
            outbox.schema()
        );
        let ids = stage(&pool, &outbox, &publisher(&MemoryBroker::new()), 1).await;
        let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(claimed[0].message.properties.message_id, ids[0]);
        let mut tx = pool.begin().await.unwrap();
        assert!(inbox.record(&mut *tx, "c", "m").await.unwrap());
        tx.commit().await.unwrap();
    }

    /// Tables made by a migration, a role that may use but not create them:
    /// the plug-in starts, and the outbox works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_role_without_create_rights_starts_when_the_tables_exist() {
        let Some(pool) = pool().await else { return };
        let mut schema = Schema::new(&pool).await;
        let name = schema.name.clone();
        let role = format!("{name}_app");
        // The role goes after the schema (and its grants).
        schema.also_at_the_end(format!("DROP ROLE IF EXISTS {role}"));
        let (outbox_table, inbox_table) = (schema.table("outbox"), schema.table("inbox"));
        PgOutbox::new(pool.clone(), &outbox_table)
            .create_table()
            .await
            .unwrap();
        PgInbox::new(pool.clone(), &inbox_table)
            .create_table()
            .await
            .unwrap();
        for statement in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT USAGE ON SCHEMA {name} TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name} TO {role}"
            ),
        ] {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        let role_url = url().replacen("postgres@", &format!("{role}@"), 1);
        let service = test_service([
            ("MAMEY__POSTGRES__URL", role_url),
            ("MAMEY__POSTGRES__OUTBOX_TABLE", outbox_table),
            ("MAMEY__POSTGRES__INBOX_TABLE", inbox_table),
        ])
        .plugin(Postgres::new().outbox().inbox())
        .build()
        .await;
        let outcome = match service {
            Ok(service) => {
                let outbox = service.resources().get::<PgOutbox>().unwrap();
                let pending = outbox.pending().await;
                service.start().await.unwrap().stop().await.unwrap();
                pending.map(|_| ()).map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        outcome.unwrap();
    }
}
