//! The outbox relay and the inbox over the in-memory stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use mamey_messaging::{
    Broker, Conventions, Delivery, InboxStore, MemoryBroker, MemoryInbox, MemoryOutbox, Message,
    OutboxRelay, OutboxStore, PublishOptions, Publisher, RelayConfig, RetryPolicy, Route,
    Subscription,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct InvoiceIssued {
    number: u32,
}

impl Message for InvoiceIssued {
    const NAMESPACE: &'static str = "billing";
}

/// Subscribes a recorder of message ids to `InvoiceIssued`.
async fn record_deliveries(broker: &MemoryBroker) -> Arc<Mutex<Vec<String>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    broker
        .subscribe(Subscription {
            queue: "ledger/billing.invoice_issued".into(),
            binding: Route {
                exchange: "billing".into(),
                routing_key: "invoice_issued".into(),
            },
            message: "InvoiceIssued",
            handler: Arc::new(move |delivery: Delivery| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(delivery.properties.message_id);
                    Ok(())
                }
                .boxed()
            }),
            retry: RetryPolicy::default(),
            concurrency: 4,
            handler_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
    received
}

fn publisher(broker: &MemoryBroker) -> Publisher {
    Publisher::new(
        Arc::new(broker.clone()),
        Arc::new(Conventions::new("billing")),
    )
}

async fn stage(outbox: &MemoryOutbox, publisher: &Publisher, count: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for number in 0..count {
        let message = publisher
            .prepare(&InvoiceIssued { number }, PublishOptions::default())
            .unwrap();
        ids.push(message.properties.message_id.clone());
        outbox.stage(&mut (), message).await.unwrap();
    }
    ids
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_send_the_same_message() {
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let outbox = Arc::new(MemoryOutbox::new());
    let staged = stage(&outbox, &publisher(&broker), 300).await;
    let config = RelayConfig {
        batch: 7,
        ..RelayConfig::default()
    };
    let relay = |_: u8| {
        OutboxRelay::new(
            Arc::clone(&outbox),
            Arc::new(broker.clone()),
            config.clone(),
        )
    };
    let (a, b) = (relay(1), relay(2));
    while outbox.pending() > 0 {
        let (ra, rb) = tokio::join!(a.round(), b.round());
        assert_eq!(ra.unwrap().failed + rb.unwrap().failed, 0);
    }
    eventually("300 deliveries", || received.lock().unwrap().len() >= 300).await;
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 300, "no duplicates");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), 300);
    assert_eq!(unique, staged.iter().collect::<HashSet<_>>());
}

#[tokio::test]
async fn a_failed_publish_is_kept_and_retried_later() {
    let broker = MemoryBroker::new(); // nothing bound yet: publishes fail
    let outbox = Arc::new(MemoryOutbox::new());
    stage(&outbox, &publisher(&broker), 1).await;
    let relay = OutboxRelay::new(
        Arc::clone(&outbox),
        Arc::new(broker.clone()),
        RelayConfig {
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            ..RelayConfig::default()
        },
    );
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed), (0, 1));
    assert_eq!(outbox.pending(), 1, "kept, not dropped");
    let round = relay.round().await.unwrap();
    assert_eq!(
        (round.sent, round.failed),
        (0, 0),
        "not due before the delay"
    );

    let received = record_deliveries(&broker).await;
    // Due again once the delay has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let round = relay.round().await.unwrap();
        assert_eq!(round.failed, 0);
        if round.sent == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(outbox.pending(), 0);
    eventually("the delivery", || received.lock().unwrap().len() == 1).await;
}

#[tokio::test]
async fn the_relay_wakes_when_a_message_is_staged() {
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let outbox = Arc::new(MemoryOutbox::new());
    let stop = CancellationToken::new();
    let relay = OutboxRelay::new(
        Arc::clone(&outbox),
        Arc::new(broker.clone()),
        RelayConfig {
            interval: Duration::from_secs(3600), // only the notification can wake it
            ..RelayConfig::default()
        },
    );
    let running = tokio::spawn(relay.run(stop.clone()));
    tokio::task::yield_now().await;
    stage(&outbox, &publisher(&broker), 3).await;
    eventually("three deliveries", || received.lock().unwrap().len() == 3).await;
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn the_inbox_skips_a_message_it_has_seen() {
    let inbox = MemoryInbox::new();
    assert!(inbox.record(&mut (), "ledger", "m-1").await.unwrap());
    assert!(!inbox.record(&mut (), "ledger", "m-1").await.unwrap());
    assert!(
        inbox.record(&mut (), "audit", "m-1").await.unwrap(),
        "per consumer"
    );
}

#[tokio::test]
async fn the_plugin_runs_the_relay_while_the_service_runs() {
    use mamey_core::Error;
    use mamey_core::cqrs::{Event, Res};

    #[derive(Clone, Serialize, Deserialize)]
    struct Paid {
        invoice: u32,
    }
    impl Message for Paid {
        const NAMESPACE: &'static str = "payments";
    }
    impl Event for Paid {}

    /// The invoices the handler saw.
    #[derive(Clone)]
    struct Received(Arc<Mutex<Vec<String>>>);

    async fn paid(paid: Paid, Res(Received(sink)): Res<Received>) -> Result<(), Error> {
        sink.lock().unwrap().push(paid.invoice.to_string());
        Ok(())
    }

    let broker = MemoryBroker::new();
    let outbox = MemoryOutbox::new();
    let received = Arc::new(Mutex::new(Vec::new()));
    let service = mamey_core::Service::builder("ledger")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([("MAMEY__MESSAGING__OUTBOX__INTERVAL", "1h")])
        .resource(outbox.clone())
        .resource(Received(Arc::clone(&received)))
        .plugin(
            mamey_messaging::Messaging::new(broker.clone())
                .subscribe_event::<Paid>()
                .outbox::<MemoryOutbox>(),
        )
        .handlers(|d| {
            d.event(paid);
        })
        .build()
        .await
        .unwrap();
    let publisher = service.resources().get::<Publisher>().unwrap();
    let running = service.start().await.unwrap();
    // A handler would stage this inside its transaction.
    let message = publisher
        .prepare(&Paid { invoice: 42 }, PublishOptions::default())
        .unwrap();
    outbox.stage(&mut (), message).await.unwrap();
    eventually("the relayed message", || {
        received.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(outbox.pending(), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_round_ends_at_a_closed_broker_and_releases_what_it_did_not_try() {
    let broker = MemoryBroker::new();
    let outbox = Arc::new(MemoryOutbox::new());
    let staged = stage(&outbox, &publisher(&broker), 3).await;
    // Each clone of the in-process broker has its own lifecycle: close the
    // relay's.
    let closed = broker.clone();
    closed.close().await;
    let relay = OutboxRelay::new(
        Arc::clone(&outbox),
        Arc::new(closed),
        RelayConfig::default(),
    );
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed, round.released), (0, 1, 2));
    // The two it did not try are due again at once, not held for the lease;
    // the one that failed waits for its retry delay.
    let again: Vec<(String, u32)> = outbox
        .claim(10, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.message.properties.message_id, e.attempts))
        .collect();
    // Their attempt was given back: this claim is their first.
    let expected: Vec<(String, u32)> = staged[1..].iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(again, expected);
    assert_eq!(outbox.pending(), 3, "nothing dropped");
}

#[tokio::test]
async fn relay_settings_of_zero_are_config_errors() {
    for key in ["BATCH", "INTERVAL", "LEASE"] {
        let value = if key == "BATCH" { "0" } else { "0s" };
        let error = mamey_core::Service::builder("ledger")
            .handle_signals(false)
            .config_dir("/nonexistent-mamey-config")
            .env_vars([(format!("MAMEY__MESSAGING__OUTBOX__{key}"), value.to_owned())])
            .plugin(mamey_messaging::Messaging::new(MemoryBroker::new()))
            .build()
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let name = format!("messaging.outbox.{}", key.to_lowercase());
        assert!(error.contains(&name), "{error}");
        assert!(error.contains("expected more than zero"), "{error}");
    }
}

#[tokio::test]
async fn a_missing_outbox_store_fails_the_build_naming_it() {
    let error = mamey_core::Service::builder("ledger")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(Vec::<(String, String)>::new())
        .plugin(mamey_messaging::Messaging::new(MemoryBroker::new()).outbox::<MemoryOutbox>())
        .build()
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("MemoryOutbox"), "{error}");
    assert!(error.contains("ServiceBuilder::resource"), "{error}");
}

/// A broker whose publish lasts until another relay has claimed the message:
/// each publish outlasts the claim that is sending it. With `fail`, the
/// publish then fails.
struct Overtaken {
    outbox: MemoryOutbox,
    inner: MemoryBroker,
    fail: bool,
    /// What the other relay's claim returned.
    taken: Mutex<Vec<mamey_messaging::OutboxEntry>>,
}

impl Broker for Overtaken {
    fn publish(
        &self,
        message: mamey_messaging::OutgoingMessage,
    ) -> futures_util::future::BoxFuture<'_, Result<(), mamey_messaging::PublishError>> {
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            // Claimable again once this relay's lease has run out.
            loop {
                let claimed = self
                    .outbox
                    .claim(10, Duration::from_secs(60))
                    .await
                    .unwrap();
                if !claimed.is_empty() {
                    self.taken.lock().unwrap().extend(claimed);
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "never overtaken");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if self.fail {
                return Err(mamey_messaging::PublishError::Unavailable(
                    "overtaken".into(),
                ));
            }
            self.inner.publish(message).await
        }
        .boxed()
    }

    fn subscribe(
        &self,
        subscription: Subscription,
    ) -> futures_util::future::BoxFuture<'_, Result<(), mamey_messaging::SubscribeError>> {
        self.inner.subscribe(subscription)
    }

    fn close(&self) -> futures_util::future::BoxFuture<'_, ()> {
        self.inner.close()
    }
}

/// A relay on `outbox` whose lease (20 ms) every publish outlasts, and its
/// broker, which keeps what the overtaking claim took. A failed publish
/// would be retried in an hour.
fn overtaken_relay(
    outbox: &Arc<MemoryOutbox>,
    broker: &MemoryBroker,
    fail: bool,
) -> (OutboxRelay<MemoryOutbox>, Arc<Overtaken>) {
    let overtaken = Arc::new(Overtaken {
        outbox: (**outbox).clone(),
        inner: broker.clone(),
        fail,
        taken: Mutex::new(Vec::new()),
    });
    let relay = OutboxRelay::new(
        Arc::clone(outbox),
        Arc::clone(&overtaken) as Arc<dyn Broker>,
        RelayConfig {
            lease: Duration::from_millis(20),
            retry: RetryPolicy {
                initial_delay: Duration::from_secs(3600),
                max_delay: Duration::from_secs(3600),
                ..RetryPolicy::default()
            },
            // One publish at a time: the first one's overtaking claim takes
            // all three.
            concurrency: 1,
            ..RelayConfig::default()
        },
    );
    (relay, overtaken)
}

#[tokio::test]
async fn a_relay_overtaken_by_another_claim_counts_its_messages_lost_not_sent() {
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let outbox = Arc::new(MemoryOutbox::new());
    let staged = stage(&outbox, &publisher(&broker), 3).await;
    let (relay, overtaken) = overtaken_relay(&outbox, &broker, false);
    // The first publish outlasts the lease: the round stops after it, and
    // neither marks it nor gives back the two it did not try — the other
    // claim holds all three.
    let round = relay.round().await.unwrap();
    assert_eq!(
        (round.sent, round.failed, round.released, round.lost),
        (0, 0, 0, 3)
    );
    eventually("the overtaken publish", || {
        received.lock().unwrap().len() == 1
    })
    .await;
    // The other claim settles them, each once.
    let taken = std::mem::take(&mut *overtaken.taken.lock().unwrap());
    let ids: Vec<String> = taken
        .iter()
        .map(|e| e.message.properties.message_id.clone())
        .collect();
    assert_eq!(ids, staged);
    assert_eq!(
        outbox.mark_sent(&taken[0].claim, &ids).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(outbox.pending(), 0);
    assert_eq!(
        outbox.mark_sent(&taken[0].claim, &ids).await.unwrap(),
        ids,
        "settled once: the claim is spent"
    );
}

#[tokio::test]
async fn an_overtaken_relay_does_not_reschedule_a_message_another_claim_holds() {
    let broker = MemoryBroker::new();
    let outbox = Arc::new(MemoryOutbox::new());
    let staged = stage(&outbox, &publisher(&broker), 1).await;
    let (relay, overtaken) = overtaken_relay(&outbox, &broker, true);
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed, round.lost), (0, 0, 1));
    // Not pushed an hour away: the other claim still holds it, and can
    // mark it sent.
    let taken = std::mem::take(&mut *overtaken.taken.lock().unwrap());
    assert_eq!(
        outbox.mark_sent(&taken[0].claim, &staged).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(outbox.pending(), 0);
}

/// A broker whose publish waits until `n` publishes are in flight at once.
struct Gate {
    inner: MemoryBroker,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

impl Broker for Gate {
    fn publish(
        &self,
        message: mamey_messaging::OutgoingMessage,
    ) -> futures_util::future::BoxFuture<'_, Result<(), mamey_messaging::PublishError>> {
        use std::sync::atomic::Ordering;
        async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            // Let the other publishes of the round start before this one ends.
            tokio::task::yield_now().await;
            let result = self.inner.publish(message).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
        .boxed()
    }

    fn subscribe(
        &self,
        subscription: Subscription,
    ) -> futures_util::future::BoxFuture<'_, Result<(), mamey_messaging::SubscribeError>> {
        self.inner.subscribe(subscription)
    }

    fn close(&self) -> futures_util::future::BoxFuture<'_, ()> {
        self.inner.close()
    }
}

#[tokio::test]
async fn a_round_publishes_up_to_its_concurrency_at_once() {
    for (concurrency, expected_peak) in [(1, 1), (4, 4)] {
        let broker = MemoryBroker::new();
        let received = record_deliveries(&broker).await;
        let outbox = Arc::new(MemoryOutbox::new());
        stage(&outbox, &publisher(&broker), 8).await;
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Gate {
            inner: broker.clone(),
            in_flight: Arc::default(),
            peak: Arc::clone(&peak),
        };
        let relay = OutboxRelay::new(
            Arc::clone(&outbox),
            Arc::new(gate),
            RelayConfig {
                concurrency,
                ..RelayConfig::default()
            },
        );
        let round = relay.round().await.unwrap();
        assert_eq!(round.sent, 8);
        assert_eq!(
            peak.load(std::sync::atomic::Ordering::SeqCst),
            expected_peak,
            "concurrency {concurrency}"
        );
        eventually("all delivered", || received.lock().unwrap().len() == 8).await;
        assert_eq!(outbox.pending(), 0);
    }
}
