//! Benchmark P3: the transactional outbox on Postgres against publishing
//! directly, both to a real RabbitMQ with publisher confirms.
//!
//! N persistent messages of about 1 KiB (default 20 000, `BENCH_MESSAGES`):
//!
//! - `outbox`: the N messages are staged in Postgres first (in transactions
//!   of 100, as handlers would), then a service with the `Postgres`
//!   plug-in's outbox and the `Messaging` relay starts, and the clock runs
//!   from its start until the outbox has no unsent row: the relay's
//!   drain rate (claim with `FOR UPDATE SKIP LOCKED`, publish with confirms,
//!   mark sent);
//! - `direct`: the same N messages published with mamey-messaging's
//!   `Publisher`, 256 publishes in flight, each awaiting its confirm — what
//!   a service without an outbox does.
//!
//! Each of `BENCH_ROUNDS` rounds (default 3) runs both, alternating which
//! goes first. Prints msg/s per run, the medians, and `RATIO
//! outbox_vs_direct <x>` (the median of the per-round ratios). Goal: ≥ 0.5,
//! and the relay ≥ 5 000 msg/s.
//!
//! ```text
//! cargo bench -p mamey-persistence --features postgres --bench outbox
//! ```
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[cfg(all(feature = "postgres", feature = "outbox"))]
mod bench {
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use lapin::options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties, ExchangeKind};
    use mamey_core::Service;
    use mamey_messaging::{Messaging, OutboxStore, PublishOptions, Publisher, message};
    use mamey_persistence::postgres::{PgOutbox, PgPool, Postgres};

    #[message(namespace = "bench", event)]
    #[derive(Clone)]
    struct Payload {
        id: u64,
        data: String,
    }

    fn env(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_owned())
    }

    struct Setup {
        amqp: String,
        database: String,
        exchange: String,
        queue: String,
        schema: String,
    }

    impl Setup {
        fn vars(&self) -> Vec<(String, String)> {
            let separator = if self.database.contains('?') {
                '&'
            } else {
                '?'
            };
            vec![
                ("MAMEY__RABBITMQ__URL".into(), self.amqp.clone()),
                (
                    "MAMEY__POSTGRES__URL".into(),
                    format!(
                        "{}{separator}options=-c%20search_path%3D{}",
                        self.database, self.schema
                    ),
                ),
                (
                    "MAMEY__MESSAGING__CONVENTIONS__EXCHANGE".into(),
                    self.exchange.clone(),
                ),
                ("MAMEY__MESSAGING__OUTBOX__BATCH".into(), "500".into()),
            ]
        }

        fn service(&self, outbox: bool) -> mamey_core::ServiceBuilder {
            let postgres = if outbox {
                Postgres::new().outbox()
            } else {
                Postgres::new()
            };
            let messaging = if outbox {
                Messaging::rabbitmq().outbox::<PgOutbox>()
            } else {
                Messaging::rabbitmq()
            };
            Service::builder("bench-outbox")
                .handle_signals(false)
                .config_dir("/nonexistent-mamey-config")
                .env_vars(self.vars())
                .plugin(postgres)
                .plugin(messaging)
        }
    }

    fn payloads(n: usize) -> impl Iterator<Item = Payload> {
        let data = "x".repeat(1000);
        (0..n as u64).map(move |id| Payload {
            id,
            data: data.clone(),
        })
    }

    /// Stages `n` messages, then times the relay draining them.
    async fn outbox(setup: &Setup, admin: &PgPool, n: usize) -> f64 {
        let service = setup.service(true).build().await.unwrap();
        let store = service.resources().get::<PgOutbox>().unwrap();
        let publisher = service.resources().get::<Publisher>().unwrap();
        let pool = service.resources().get::<PgPool>().unwrap();
        let mut all = payloads(n).peekable();
        while all.peek().is_some() {
            let mut tx = pool.begin().await.unwrap();
            for payload in all.by_ref().take(100) {
                let message = publisher
                    .prepare(&payload, PublishOptions::default())
                    .unwrap();
                store.stage(&mut *tx, message).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        let unsent = format!(
            "SELECT count(*) FROM {}.mamey_outbox WHERE sent_at IS NULL",
            setup.schema
        );
        let started = Instant::now();
        let running = service.start().await.unwrap();
        loop {
            let left: i64 = sqlx::query_scalar(&unsent).fetch_one(admin).await.unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        running.stop().await.unwrap();
        sqlx::query(&format!("TRUNCATE {}.mamey_outbox", setup.schema))
            .execute(admin)
            .await
            .unwrap();
        n as f64 / elapsed.as_secs_f64()
    }

    /// Times `n` direct publishes, 256 in flight.
    async fn direct(setup: &Setup, n: usize) -> f64 {
        let service = setup.service(false).build().await.unwrap();
        let publisher = service.resources().get::<Publisher>().unwrap();
        let running = service.start().await.unwrap();
        let started = Instant::now();
        futures_util::stream::iter(payloads(n))
            .map(|payload| {
                let publisher = publisher.clone();
                async move { publisher.publish(&payload).await.unwrap() }
            })
            .buffer_unordered(256)
            .collect::<Vec<()>>()
            .await;
        let elapsed = started.elapsed();
        running.stop().await.unwrap();
        n as f64 / elapsed.as_secs_f64()
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    pub(crate) async fn run() {
        let n: usize = env("BENCH_MESSAGES", "20000").parse().unwrap();
        let rounds: usize = env("BENCH_ROUNDS", "3").parse().unwrap();
        let id = &mamey_core::new_id()[..8];
        let setup = Setup {
            amqp: env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            database: env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            exchange: format!("bench-outbox-{id}"),
            queue: format!("bench-outbox-{id}.sink"),
            schema: format!("bench_outbox_{id}"),
        };
        let admin = PgPool::connect(&setup.database).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {}", setup.schema))
            .execute(&admin)
            .await
            .unwrap();
        // A queue bound to the exchange, so every publish is routable.
        let amqp = Connection::connect(&setup.amqp, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = amqp.create_channel().await.unwrap();
        channel
            .exchange_declare(
                setup.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                setup.queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                setup.queue.as_str().into(),
                setup.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        println!("{n} messages of ~1 KiB, {rounds} rounds, Postgres + RabbitMQ with confirms");
        let (mut outboxes, mut directs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (o, d) = if round % 2 == 0 {
                let o = outbox(&setup, &admin, n).await;
                (o, direct(&setup, n).await)
            } else {
                let d = direct(&setup, n).await;
                (outbox(&setup, &admin, n).await, d)
            };
            println!(
                "round {}: outbox {o:.0} msg/s, direct {d:.0} msg/s",
                round + 1
            );
            channel
                .queue_purge(setup.queue.as_str().into(), Default::default())
                .await
                .unwrap();
            outboxes.push(o);
            directs.push(d);
            ratios.push(o / d);
        }
        println!(
            "median: outbox {:.0} msg/s, direct {:.0} msg/s",
            median(&mut outboxes),
            median(&mut directs)
        );
        println!("RATIO outbox_vs_direct {:.2}", median(&mut ratios));

        channel
            .queue_delete(setup.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        channel
            .exchange_delete(
                setup.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", setup.schema))
            .execute(&admin)
            .await
            .unwrap();
    }
}

fn main() {
    #[cfg(all(feature = "postgres", feature = "outbox"))]
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench::run());
    #[cfg(not(all(feature = "postgres", feature = "outbox")))]
    eprintln!("the outbox benchmark needs `--features postgres` (and the default `outbox`)");
}
