//! The unit of work, `Tx<Postgres>` and `Tx<Sqlite>`: state and staged
//! events commit together or not at all; a redelivered message is skipped
//! by the inbox in the same transaction. SQLite in a temporary file;
//! Postgres in a schema of its own, dropped at the end.
#![cfg(all(feature = "postgres", feature = "sqlite", feature = "outbox"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mamey_core::Error;
use mamey_core::cqrs::{Command, Res};
use mamey_messaging::message;

/// Placed by `place`, which fails or panics when asked to.
struct Place {
    id: i64,
    outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Succeed,
    Fail,
    Panic,
}

impl Command for Place {}

#[message(namespace = "uow", event)]
#[derive(Debug, Clone)]
struct Placed {
    id: i64,
}

#[message(namespace = "uow", event)]
#[derive(Debug, Clone)]
struct Charged {
    amount: i64,
}

/// Calls of the `charge` handler, counted outside the database.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The scenarios, for one database: `$db` the plug-in type, `$pool` its
/// pool type, `$service` a fn building the service.
macro_rules! unit_of_work_suite {
    ($db:ty, $pool:ty) => {
        use mamey_messaging::{MemoryBroker, Messaging, PublishOptions, Publisher};
        use mamey_persistence::{Tx, error};

        use super::*;

        async fn place(
            cmd: Place,
            mut tx: Tx<$db>,
            Res(events): Res<Publisher>,
        ) -> Result<(), Error> {
            sqlx::query("INSERT INTO orders (id) VALUES ($1)")
                .bind(cmd.id)
                .execute(&mut *tx)
                .await
                .map_err(error)?;
            events.publish(&Placed { id: cmd.id }).await?;
            match cmd.outcome {
                Outcome::Succeed => Ok(()),
                Outcome::Fail => Err(Error::invalid_input(
                    "order.refused",
                    "refused after staging",
                )),
                Outcome::Panic => panic!("the handler panics after staging"),
            }
        }

        async fn charge(
            event: Charged,
            mut tx: Tx<$db>,
            Res(calls): Res<Calls>,
        ) -> Result<(), Error> {
            calls.0.fetch_add(1, Ordering::SeqCst);
            sqlx::query("UPDATE balance SET total = total + $1")
                .bind(event.amount)
                .execute(&mut *tx)
                .await
                .map_err(error)?;
            Ok(())
        }

        async fn count(pool: &$pool, sql: &str) -> i64 {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap()
        }

        async fn scenarios(builder: mamey_core::ServiceBuilder) {
            let broker = MemoryBroker::new();
            let calls = Calls::default();
            // Counts dispatches of `Charged`, the skipped ones too.
            let dispatched = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&dispatched);
            let service = builder
                .resource(calls.clone())
                .plugin(Messaging::new(broker.clone()).subscribe_event::<Charged>())
                .handlers(move |d| {
                    d.command(place)
                        .event(charge)
                        .layer(mamey_core::cqrs::middleware::from_fn(
                            move |envelope: mamey_core::cqrs::Envelope,
                                  next: mamey_core::cqrs::Next| {
                                let counter = Arc::clone(&counter);
                                async move {
                                    let reply = next.run(envelope).await;
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    reply
                                }
                            },
                        ));
                })
                .build()
                .await
                .unwrap();
            let pool = service.resources().get::<$pool>().unwrap();
            for ddl in [
                "CREATE TABLE orders (id BIGINT PRIMARY KEY)",
                "CREATE TABLE balance (total BIGINT NOT NULL)",
                "INSERT INTO balance (total) VALUES (0)",
            ] {
                sqlx::query(ddl).execute(&pool).await.unwrap();
            }
            let dispatcher = service.dispatcher().clone();
            let publisher = service.resources().get::<Publisher>().unwrap();
            let running = service.start().await.unwrap();
            let outbox_rows = "SELECT COUNT(*) FROM mamey_outbox";

            // Success: the order and its event commit together.
            dispatcher
                .send(Place {
                    id: 1,
                    outcome: Outcome::Succeed,
                })
                .await
                .unwrap();
            assert_eq!(count(&pool, "SELECT COUNT(*) FROM orders").await, 1);
            assert_eq!(count(&pool, outbox_rows).await, 1);

            // A failure after staging leaves neither.
            let refused = dispatcher
                .send(Place {
                    id: 2,
                    outcome: Outcome::Fail,
                })
                .await;
            assert_eq!(refused.unwrap_err().code(), "order.refused");
            assert_eq!(count(&pool, "SELECT COUNT(*) FROM orders").await, 1);
            assert_eq!(count(&pool, outbox_rows).await, 1);

            // Nor does a panic.
            let panicking = dispatcher.clone();
            let panicked = tokio::spawn(async move {
                panicking
                    .send(Place {
                        id: 3,
                        outcome: Outcome::Panic,
                    })
                    .await
            })
            .await;
            assert!(panicked.is_err(), "the handler panicked");
            eventually("the panicked transaction rolled back", async || {
                count(&pool, "SELECT COUNT(*) FROM orders WHERE id = 3").await == 0
            })
            .await;
            assert_eq!(count(&pool, outbox_rows).await, 1);

            // A redelivery is skipped by the inbox, in the same transaction.
            let options = || PublishOptions {
                message_id: Some("charge-1".to_owned()),
                ..PublishOptions::default()
            };
            publisher
                .publish_with(&Charged { amount: 5 }, options())
                .await
                .unwrap();
            eventually("the first delivery applied", async || {
                count(&pool, "SELECT total FROM balance").await == 5
            })
            .await;
            publisher
                .publish_with(&Charged { amount: 5 }, options())
                .await
                .unwrap();
            // Commands count too: one success and one refusal (the panic
            // never got back to the counter).
            eventually("the redelivery dispatched", async || {
                dispatched.load(Ordering::SeqCst) == 2 + 2
            })
            .await;
            assert_eq!(count(&pool, "SELECT COUNT(*) FROM mamey_inbox").await, 1);
            assert_eq!(count(&pool, "SELECT total FROM balance").await, 5);
            assert_eq!(calls.0.load(Ordering::SeqCst), 1, "the handler ran once");
            assert!(
                broker.dead_letters().is_empty(),
                "{:?}",
                broker.dead_letters()
            );

            running.stop().await.unwrap();
        }
    };
}

mod sqlite {
    use mamey_persistence::sqlite::{Sqlite, SqlitePool};

    unit_of_work_suite!(Sqlite, SqlitePool);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_and_events_commit_together_and_redeliveries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("uow.db").display());
        let builder = mamey_core::Service::builder("uow")
            .handle_signals(false)
            .config_dir("/nonexistent-mamey-config")
            .env_vars([("MAMEY__SQLITE__URL", url.as_str())])
            .plugin(Sqlite::new().outbox().inbox());
        scenarios(builder).await;
    }
}

mod postgres {
    use mamey_persistence::postgres::{PgPool, Postgres};

    unit_of_work_suite!(Postgres, PgPool);

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_and_events_commit_together_and_redeliveries_are_skipped() {
        let admin = match PgPool::connect(&url()).await {
            Ok(pool) => pool,
            Err(error) => {
                assert!(
                    std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "Postgres is required (MAMEY_REQUIRE_SERVICES=1) but unreachable: {error}"
                );
                eprintln!("SKIPPED: Postgres unreachable at {}: {error}", url());
                return;
            }
        };
        let schema = format!("uow_{}", &mamey_core::new_id()[..8]);
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let separator = if url().contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}options=-c%20search_path%3D{schema}", url());
        let builder = mamey_core::Service::builder("uow")
            .handle_signals(false)
            .config_dir("/nonexistent-mamey-config")
            .env_vars([("MAMEY__POSTGRES__URL", url.as_str())])
            .plugin(Postgres::new().outbox().inbox());
        scenarios(builder).await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
