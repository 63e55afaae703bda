//! Messaging records RED metrics through the `metrics` facade: one
//! `messages_consumed_total` per outcome, `messages_published_total` and
//! `outbox_messages_total`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mamey_core::cqrs::Event;
use mamey_core::health::{Probe, Status};
use mamey_core::{Error, Service};
use std::sync::Arc;

use mamey_messaging::{
    Broker, MemoryBroker, MemoryOutbox, Message, Messaging, OutboxRelay, OutboxStore,
    PublishOptions, Publisher, RelayConfig,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Tick {
    valid: bool,
}

impl Message for Tick {
    const NAMESPACE: &'static str = "clock";
}

impl Event for Tick {}

#[tokio::test]
async fn consumed_and_published_messages_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let broker = MemoryBroker::new();
    let service = Service::builder("metrics-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(Vec::<(String, String)>::new())
        .plugin(Messaging::new(broker.clone()).subscribe_event::<Tick>())
        .handlers(|d| {
            d.event(|tick: Tick| async move {
                if tick.valid {
                    Ok(())
                } else {
                    Err(Error::invalid_input("tick", "invalid tick"))
                }
            });
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
    publisher.publish(&Tick { valid: true }).await.unwrap();
    publisher.publish(&Tick { valid: false }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.dead_letters().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.shutdown();
    running.await.unwrap().unwrap();

    // The outbox relay counts what each round did.
    let outbox = Arc::new(MemoryOutbox::new());
    for _ in 0..3 {
        let message = publisher
            .prepare(&Tick { valid: true }, PublishOptions::default())
            .unwrap();
        outbox.stage(&mut (), message).await.unwrap();
    }
    let closed = MemoryBroker::new();
    closed.close().await;
    let round = OutboxRelay::new(
        Arc::clone(&outbox),
        Arc::new(closed),
        RelayConfig::default(),
    )
    .round()
    .await
    .unwrap();
    assert_eq!((round.failed, round.released), (1, 2));
    let round = OutboxRelay::new(
        Arc::clone(&outbox),
        Arc::new(MemoryBroker::lenient()),
        RelayConfig::default(),
    )
    .round()
    .await
    .unwrap();
    assert_eq!(round.sent, 2, "the released ones, due at once");

    // A snapshot drains what it reads: take one and search it.
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, labels: &[(&str, &str)]| -> u64 {
        snapshot
            .iter()
            .find_map(|(key, _, _, value)| {
                let key = key.key();
                let matches = key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
                match (matches, value) {
                    (true, DebugValue::Counter(n)) => Some(*n),
                    _ => None,
                }
            })
            .unwrap_or(0)
    };
    assert_eq!(
        counter(
            "messages_consumed_total",
            &[("message", "Tick"), ("outcome", "handled")]
        ),
        1
    );
    assert_eq!(
        counter(
            "messages_consumed_total",
            &[("message", "Tick"), ("outcome", "dead_lettered")]
        ),
        1
    );
    assert_eq!(
        counter(
            "messages_published_total",
            &[("message", "Tick"), ("outcome", "confirmed")]
        ),
        2
    );
    for (outcome, count) in [("sent", 2), ("failed", 1), ("released", 2)] {
        assert_eq!(
            counter("outbox_messages_total", &[("outcome", outcome)]),
            count,
            "{outcome}"
        );
    }
}
