//! Messaging over the in-process broker: the shared behaviour suite, plus
//! what is particular to it (the wire message, fan-out, lifecycles of
//! clones, panics, commands and unroutable publishes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mamey_core::cqrs::{Command, Res};
use mamey_core::{Error, MessageContext, Service};
use mamey_messaging::{
    Broker, Delivery, MESSAGE_CONTEXT_HEADER, MemoryBroker, Message, Messaging, OutgoingMessage,
    Properties, Publisher, Route, context_of,
};
use serde::{Deserialize, Serialize};
use suite::{OrderPlaced, Seen, eventually, service, start};

/// The in-process backend of the shared suite.
struct Memory {
    broker: MemoryBroker,
    service: &'static str,
}

impl Memory {
    fn new() -> Self {
        Self::named(MemoryBroker::new(), "billing")
    }

    fn named(broker: MemoryBroker, service: &'static str) -> Self {
        Self { broker, service }
    }
}

impl suite::Backend for Memory {
    fn messaging(&self) -> Messaging {
        Messaging::new(self.broker.clone())
    }

    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn service_name(&self) -> String {
        self.service.to_owned()
    }

    async fn publish_garbage(&self) {
        self.broker
            .publish(OutgoingMessage {
                route: Route {
                    exchange: "orders".into(),
                    routing_key: "order_placed".into(),
                },
                properties: properties("m-1", BTreeMap::new()),
                body: Bytes::from_static(b"{not json"),
            })
            .await
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<(String, u32)> {
        self.broker
            .dead_letters()
            .into_iter()
            .map(|d| (d.reason, d.delivery.attempt))
            .collect()
    }
}

fn properties(message_id: &str, headers: BTreeMap<String, String>) -> Properties {
    Properties {
        message_id: message_id.into(),
        correlation_id: "corr-p".into(),
        message_type: "OrderPlaced".into(),
        timestamp: std::time::SystemTime::now(),
        content_type: "application/json".into(),
        persistent: true,
        headers,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShipOrder {
    id: u64,
}

impl Message for ShipOrder {
    const NAMESPACE: &'static str = "shipping";
}

impl Command for ShipOrder {}

#[tokio::test]
async fn suite_context_reaches_the_handler() {
    suite::context_reaches_the_handler(&Memory::new()).await;
}

#[tokio::test]
async fn suite_retried_then_acked_once() {
    suite::retried_then_acked_once(&Memory::new()).await;
}

#[tokio::test]
async fn suite_dead_lettered_after_the_retries() {
    suite::dead_lettered_after_the_retries(&Memory::new()).await;
}

#[tokio::test]
async fn suite_undecodable_dead_lettered_at_once() {
    suite::undecodable_dead_lettered_at_once(&Memory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_competing_consumers_share_the_work() {
    suite::competing_consumers_share_the_work(&Memory::new()).await;
}

#[tokio::test]
async fn suite_shutdown_finishes_the_handler_in_flight() {
    suite::shutdown_finishes_the_handler_in_flight(&Memory::new()).await;
}

/// A service on `broker` named `name`, subscribed to `OrderPlaced`.
async fn orders_service(name: &'static str, broker: &MemoryBroker, seen: &Seen) -> suite::Running {
    start(service(
        &Memory::named(broker.clone(), name),
        seen,
        Some(0),
        Duration::ZERO,
    ))
    .await
}

#[tokio::test]
async fn the_wire_message_carries_every_property_and_header() {
    let broker = MemoryBroker::new();
    let publisher = Publisher::new(
        Arc::new(broker.clone()),
        Arc::new(mamey_messaging::Conventions::new("checkout")),
    );
    let caller = MessageContext::new().with_correlation_id("corr-1");
    let wire = caller
        .clone()
        .scope(async { publisher.prepare(&OrderPlaced { id: 9 }, Default::default()) })
        .await
        .unwrap();
    assert_eq!(
        wire.route,
        Route {
            exchange: "orders".into(),
            routing_key: "order_placed".into()
        }
    );
    let p = &wire.properties;
    assert_eq!(p.message_type, "OrderPlaced");
    assert_eq!(p.content_type, "application/json");
    assert_eq!(p.correlation_id, "corr-1");
    assert!(p.persistent);
    assert_eq!(p.message_id.len(), 36, "a UUID");
    assert_eq!(&wire.body[..], br#"{"id":9}"#);
    let context: serde_json::Value =
        serde_json::from_str(&p.headers[MESSAGE_CONTEXT_HEADER]).unwrap();
    // Convey's shape: camelCase, with the message's name and creation time.
    assert_eq!(context["correlationId"], "corr-1");
    assert_eq!(context["messageId"], p.message_id.as_str());
    assert_eq!(context["causationId"], caller.message_id.as_str());
    assert_eq!(context["name"], "OrderPlaced");
    assert!(context["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(p.headers["x-correlation-id"], "corr-1");
    assert_eq!(p.headers["x-causation-id"], caller.message_id.as_str());
}

#[tokio::test]
async fn every_subscribing_service_gets_each_event() {
    let broker = MemoryBroker::new();
    let (a, b) = (Seen::default(), Seen::default());
    let billing = orders_service("billing", &broker, &a).await;
    let shipping = orders_service("shipping", &broker, &b).await;
    billing
        .publisher
        .publish(&OrderPlaced { id: 5 })
        .await
        .unwrap();
    eventually("both services", || {
        let (a, b) = (a.clone(), b.clone());
        async move { a.calls() == 1 && b.calls() == 1 }
    })
    .await;
    billing.stop().await;
    shipping.stop().await;
}

#[tokio::test]
async fn stopping_one_service_leaves_the_others_on_the_broker_running() {
    let broker = MemoryBroker::new();
    let (a, b) = (Seen::default(), Seen::default());
    let billing = orders_service("billing", &broker, &a).await;
    let shipping = orders_service("shipping", &broker, &b).await;
    billing.stop().await;
    shipping
        .publisher
        .publish(&OrderPlaced { id: 8 })
        .await
        .unwrap();
    eventually("shipping still consumes", || {
        let b = b.clone();
        async move { b.calls() == 1 }
    })
    .await;
    shipping.stop().await;
}

/// Counts the calls of a handler (a resource of the test's service).
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Panics on the first attempt, succeeds on the next.
async fn panics_first(_: OrderPlaced, Res(Calls(calls)): Res<Calls>) -> Result<(), Error> {
    assert!(
        calls.fetch_add(1, Ordering::SeqCst) > 0,
        "first attempt panics"
    );
    Ok(())
}

#[tokio::test]
async fn a_panicking_handler_is_retried_not_lost() {
    let broker = MemoryBroker::new();
    let attempts = Calls::default();
    let service = Service::builder("billing")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([("MAMEY__MESSAGING__RETRY__INITIAL_DELAY", "10ms")])
        .resource(attempts.clone())
        .plugin(Messaging::new(broker.clone()).subscribe_event::<OrderPlaced>())
        .handlers(|d| {
            d.event(panics_first);
        });
    let running = start(service).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap();
    eventually("the second attempt", || {
        let attempts = attempts.clone();
        async move { attempts.count() == 2 }
    })
    .await;
    running.stop().await;
    assert!(broker.dead_letters().is_empty());
}

async fn ship_order(_: ShipOrder, Res(Calls(calls)): Res<Calls>) -> Result<(), Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_command_reaches_its_handler_and_unroutable_publishes_fail() {
    let broker = MemoryBroker::new();
    let handled = Calls::default();
    let service = Service::builder("shipping")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(Vec::<(String, String)>::new())
        .resource(handled.clone())
        .plugin(Messaging::new(broker.clone()).subscribe_command::<ShipOrder>())
        .handlers(|d| {
            d.command(ship_order);
        });
    let running = start(service).await;
    running
        .publisher
        .publish(&ShipOrder { id: 1 })
        .await
        .unwrap();
    eventually("the command", || {
        let handled = handled.clone();
        async move { handled.count() == 1 }
    })
    .await;

    let error = running
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no queue is bound to exchange `orders` with routing key `order_placed`"
    );
    running.stop().await;
}

#[test]
fn context_of_falls_back_to_properties_and_headers() {
    let mut headers = BTreeMap::new();
    headers.insert("x-correlation-id".to_owned(), "corr-h".to_owned());
    headers.insert(MESSAGE_CONTEXT_HEADER.to_owned(), "{broken".to_owned());
    let delivery = Delivery {
        route: Route {
            exchange: "orders".into(),
            routing_key: "order_placed".into(),
        },
        properties: Properties {
            message_id: "m-9".into(),
            correlation_id: "corr-p".into(),
            message_type: "OrderPlaced".into(),
            timestamp: std::time::SystemTime::now(),
            content_type: "application/json".into(),
            persistent: true,
            headers,
        },
        body: Bytes::new(),
        attempt: 1,
    };
    let context = context_of(&delivery.clone()).context;
    assert_eq!(context.message_id, "m-9");
    assert_eq!(context.correlation_id, "corr-h");

    // Without mamey's headers (a Convey publisher), the AMQP properties count.
    let mut convey = delivery;
    convey.properties.headers.clear();
    let context = context_of(&convey).context;
    assert_eq!(context.correlation_id, "corr-p");
    let mut malformed = convey.clone();
    malformed
        .properties
        .headers
        .insert("x-correlation-id".to_owned(), "has space".to_owned());
    assert_eq!(
        context_of(&malformed).context.correlation_id,
        "corr-p",
        "a rejected header falls back to the property"
    );
    convey.properties.message_id.clear();
    let id_less = context_of(&convey).context;
    assert!(!id_less.message_id.is_empty(), "a fresh id, never empty");
}

/// One broker shared by two services of a process: a consumer runs in the
/// scope of the service that subscribed, not of the one that published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_runs_as_the_subscribing_service() {
    use futures_util::FutureExt;
    use mamey_core::ServiceScope;
    use mamey_messaging::{RetryPolicy, Subscription};

    let broker = MemoryBroker::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let subscription = Subscription {
        queue: "billing/orders.order_placed".into(),
        binding: Route {
            exchange: "orders".into(),
            routing_key: "order_placed".into(),
        },
        message: "OrderPlaced",
        handler: Arc::new(move |_: Delivery| {
            let current = ServiceScope::current().map(|s| s.name().to_owned());
            sink.lock().unwrap().push(current);
            async { Ok(()) }.boxed()
        }),
        retry: RetryPolicy::default(),
        concurrency: 2,
        handler_timeout: Duration::from_secs(5),
    };
    ServiceScope::new("billing", "billing-1", "1.0.0")
        .scope(broker.subscribe(subscription))
        .await
        .unwrap();
    ServiceScope::new("orders", "orders-1", "1.0.0")
        .scope(broker.publish(OutgoingMessage {
            route: Route {
                exchange: "orders".into(),
                routing_key: "order_placed".into(),
            },
            properties: properties("m-scope", BTreeMap::new()),
            body: Bytes::from_static(b"{}"),
        }))
        .await
        .unwrap();
    eventually("the delivery", || {
        let delivered = !seen.lock().unwrap().is_empty();
        async move { delivered }
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), [Some("billing".to_owned())]);
    broker.close().await;
}
