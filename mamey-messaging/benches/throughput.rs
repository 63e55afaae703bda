//! Benchmark P2: RabbitMQ throughput, raw lapin against mamey, same settings.
//!
//! N persistent 1 KiB messages (default 50 000, `BENCH_MESSAGES`), publisher
//! confirms, one connection, prefetch 256, 256 concurrent publishers each
//! awaiting its confirms:
//!
//! - `lapin`: what a careful user writes by hand with lapin for the same
//!   result: the struct encoded with `serde_json` per message, the same AMQP
//!   properties and headers mamey sends (message and correlation ids, type,
//!   timestamp, the `message_context` JSON, `x-correlation-id`),
//!   `basic_publish` + confirm → `basic_consume` → body and context decoded
//!   with `serde_json` → `ack`, with up to 256 acks in flight (as many as
//!   mamey's handlers);
//! - `lapin_bytes`: the old baseline, pre-encoded bytes with only delivery
//!   mode and content type, acked without decoding;
//! - `mamey`: `Publisher::publish` → typed event handler (JSON decode,
//!   dispatcher) → `ack`.
//!
//! Each measures from the first publish to the last ack; the three run in
//! each of `BENCH_ROUNDS` rounds (default 4), in an order that rotates.
//! Prints msg/s per run, the medians, and the medians over rounds of the
//! per-round ratios: `RATIO rabbitmq_vs_lapin <x>` (mamey / lapin) and
//! `RATIO rabbitmq_vs_lapin_bytes <x>` (mamey / `lapin_bytes`).
//! `BENCH_ONLY=lapin|lapin_bytes|mamey` runs one side once, for a profiler.
//!
//! ```text
//! cargo bench -p mamey-messaging --features rabbitmq --bench throughput
//! ```
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "rabbitmq")]
mod bench {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
    use mamey_core::cqrs::{Event, Res};
    use mamey_core::health::{Probe, Status};
    use mamey_core::{Error, Service};
    use mamey_messaging::rabbitmq::{dead_letter_queue, retry_queue};
    use mamey_messaging::{Message, Messaging, Publisher};
    use serde::{Deserialize, Serialize};

    const PUBLISHERS: usize = 256;

    #[derive(Clone, Serialize, Deserialize)]
    struct Payload {
        id: u64,
        data: String,
    }

    impl Message for Payload {
        const NAMESPACE: &'static str = "bench";
    }

    impl Event for Payload {}

    fn url() -> String {
        std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
    }

    fn body() -> Vec<u8> {
        // 1 KiB of JSON, the same bytes both sides send.
        let payload = Payload {
            id: 0,
            data: "x".repeat(1024 - r#"{"id":0,"data":""}"#.len()),
        };
        let bytes = serde_json::to_vec(&payload).unwrap();
        assert_eq!(bytes.len(), 1024);
        bytes
    }

    /// What a raw run sends and reads.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Wire {
        /// The same message as mamey's, encoded and decoded by hand.
        Convey,
        /// Pre-encoded bytes, delivery mode and content type only.
        Bytes,
    }

    /// The correlation context a hand-written consumer reads.
    #[derive(Deserialize)]
    struct Context {
        message_id: String,
        correlation_id: String,
    }

    #[derive(Serialize)]
    struct OutgoingContext<'a> {
        message_id: &'a str,
        correlation_id: &'a str,
    }

    /// The properties and headers mamey sends (a new message id,
    /// correlation id, type, timestamp, the `message_context` JSON and
    /// `x-correlation-id`), built per message as a hand-written publisher
    /// would.
    fn properties(wire: Wire) -> BasicProperties {
        let plain = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if wire == Wire::Bytes {
            return plain;
        }
        let id = mamey_core::new_id();
        let context = serde_json::to_string(&OutgoingContext {
            message_id: &id,
            correlation_id: &id,
        })
        .unwrap();
        let mut headers = FieldTable::default();
        headers.insert(
            "message_context".into(),
            lapin::types::AMQPValue::LongString(context.into()),
        );
        headers.insert(
            "x-correlation-id".into(),
            lapin::types::AMQPValue::LongString(id.as_str().into()),
        );
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        plain
            .with_message_id(id.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_type("Payload".into())
            .with_timestamp(timestamp)
            .with_headers(headers)
    }

    /// What a hand-written consumer does with a delivery before acking it.
    fn read(wire: Wire, delivery: &lapin::message::Delivery) {
        if wire == Wire::Bytes {
            return;
        }
        let payload: Payload = serde_json::from_slice(&delivery.data).unwrap();
        let context = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("message_context"))
            .and_then(|v| v.as_long_string())
            .map(|s| serde_json::from_slice::<Context>(s.as_bytes()).unwrap())
            .unwrap();
        assert!(!context.message_id.is_empty() && !context.correlation_id.is_empty());
        std::hint::black_box(payload);
    }

    async fn lapin_run(n: usize, tag: &str, wire: Wire) -> f64 {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .unwrap();
        let setup = connection.create_channel().await.unwrap();
        let (exchange, queue) = (format!("bench-raw-{tag}"), format!("bench-raw-{tag}.q"));
        setup
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        setup
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        setup
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "payload".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consume = connection.create_channel().await.unwrap();
        consume
            .basic_qos(256, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consume
            .basic_consume(
                queue.as_str().into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&acked);
        let consuming = tokio::spawn(async move {
            // Acks in flight together, up to the prefetch: a consumer that
            // awaited each ack before taking the next delivery would be
            // slower than lapin allows.
            let mut acks = futures_util::stream::FuturesUnordered::new();
            let mut done = 0;
            while done < n {
                tokio::select! {
                    Some(()) = acks.next(), if !acks.is_empty() => {
                        done = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    }
                    Some(Ok(delivery)) = consumer.next(), if acks.len() < 256 => {
                        read(wire, &delivery);
                        acks.push(async move {
                            delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
                        });
                    }
                }
            }
        });
        let channels: Vec<_> = futures_util::future::join_all((0..2).map(|_| async {
            let channel = connection.create_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            channel
        }))
        .await;
        let bytes = Arc::new(body());
        let payload: Arc<Payload> = Arc::new(serde_json::from_slice(&bytes).unwrap());
        let started = Instant::now();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let channel = channels[p % channels.len()].clone();
                let (exchange, bytes, payload) =
                    (exchange.clone(), Arc::clone(&bytes), Arc::clone(&payload));
                tokio::spawn(async move {
                    for _ in (p..n).step_by(PUBLISHERS) {
                        let encoded;
                        let body = match wire {
                            Wire::Bytes => bytes.as_slice(),
                            Wire::Convey => {
                                encoded = serde_json::to_vec(&*payload).unwrap();
                                encoded.as_slice()
                            }
                        };
                        channel
                            .basic_publish(
                                exchange.as_str().into(),
                                "payload".into(),
                                BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                body,
                                properties(wire),
                            )
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        consuming.await.unwrap();
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let _ = setup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = setup
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        let _ = connection.close(200, "done".into()).await;
        rate
    }

    #[derive(Clone, Default)]
    struct Handled(Arc<AtomicUsize>);

    async fn count(_: Payload, Res(handled): Res<Handled>) -> Result<(), Error> {
        handled.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn mamey_run(n: usize, tag: &str) -> f64 {
        let handled = Handled::default();
        let service_name = format!("bench-mamey-{tag}");
        let exchange = format!("bench-mamey-{tag}.x");
        let service = Service::builder(service_name.clone())
            .handle_signals(false)
            .config_dir("/nonexistent-mamey-config")
            .env_vars([
                ("MAMEY__RABBITMQ__URL".to_owned(), url()),
                ("MAMEY__RABBITMQ__PREFETCH".to_owned(), "256".to_owned()),
                ("MAMEY__MESSAGING__CONCURRENCY".to_owned(), "256".to_owned()),
                (
                    "MAMEY__MESSAGING__CONVENTIONS__EXCHANGE".to_owned(),
                    exchange.clone(),
                ),
                ("MAMEY__LOGGING__LEVEL".to_owned(), "warn".to_owned()),
            ])
            .plugin(Messaging::rabbitmq().subscribe_event::<Payload>())
            .resource(handled.clone())
            .handlers(|d| {
                d.event(count);
            })
            .build()
            .await
            .unwrap();
        let publisher = service.resources().get::<Publisher>().unwrap();
        let (health, stop) = (service.health().clone(), service.shutdown_handle());
        let running = tokio::spawn(service.run());
        while health.check(Probe::Startup).await.status != Status::Healthy {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let payload: Payload = serde_json::from_slice(&body()).unwrap();
        let started = Instant::now();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (publisher, payload) = (publisher.clone(), payload.clone());
                tokio::spawn(async move {
                    for _ in (p..n).step_by(PUBLISHERS) {
                        publisher.publish(&payload).await.unwrap();
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        while handled.0.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        stop.shutdown();
        running.await.unwrap().unwrap();
        // Remove what the run declared.
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("{service_name}/{exchange}.payload");
        let mut queues = vec![queue.clone(), dead_letter_queue(&queue)];
        queues.extend((1..=3).map(|a| retry_queue(&queue, a)));
        for q in queues {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        let _ = connection.close(200, "done".into()).await;
        rate
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        if values.len().is_multiple_of(2) {
            (values[mid - 1] + values[mid]) / 2.0
        } else {
            values[mid]
        }
    }

    pub(crate) fn main() {
        let n: usize = std::env::var("BENCH_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tag = || mamey_core::new_id()[..8].to_owned();
            // For a profiler: one side only.
            match std::env::var("BENCH_ONLY").as_deref() {
                Ok("lapin") => {
                    let rate = lapin_run(n, &tag(), Wire::Convey).await;
                    return println!("lapin {rate:.0} msg/s");
                }
                Ok("lapin_bytes") => {
                    let rate = lapin_run(n, &tag(), Wire::Bytes).await;
                    return println!("lapin_bytes {rate:.0} msg/s");
                }
                Ok("mamey") => return println!("mamey {:.0} msg/s", mamey_run(n, &tag()).await),
                _ => {}
            }
            let (mut lapin, mut bytes, mut ours) = (Vec::new(), Vec::new(), Vec::new());
            let (mut ratios, mut ratios_bytes) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let tag = tag();
                // The order rotates, so that none always gets the broker
                // fresh or tired.
                let (mut l, mut b, mut m) = (0.0, 0.0, 0.0);
                for turn in 0..3 {
                    match (round + turn) % 3 {
                        0 => l = lapin_run(n, &format!("{tag}-c"), Wire::Convey).await,
                        1 => b = lapin_run(n, &format!("{tag}-b"), Wire::Bytes).await,
                        _ => m = mamey_run(n, &tag).await,
                    }
                }
                println!("round {round}: lapin       {l:>9.0} msg/s");
                println!("round {round}: lapin_bytes {b:>9.0} msg/s");
                println!("round {round}: mamey       {m:>9.0} msg/s");
                lapin.push(l);
                bytes.push(b);
                ours.push(m);
                ratios.push(m / l);
                ratios_bytes.push(m / b);
            }
            println!("messages per run {n}, {rounds} rounds");
            println!("lapin (median)       {:.0} msg/s", median(&mut lapin));
            println!("lapin_bytes (median) {:.0} msg/s", median(&mut bytes));
            println!("mamey (median)       {:.0} msg/s", median(&mut ours));
            println!("RATIO rabbitmq_vs_lapin {:.3}", median(&mut ratios));
            println!(
                "RATIO rabbitmq_vs_lapin_bytes {:.3}",
                median(&mut ratios_bytes)
            );
        });
    }
}

fn main() {
    #[cfg(feature = "rabbitmq")]
    bench::main();
    #[cfg(not(feature = "rabbitmq"))]
    {
        eprintln!(
            "this benchmark needs RabbitMQ: cargo bench -p mamey-messaging --features rabbitmq --bench throughput"
        );
        std::process::exit(2);
    }
}
