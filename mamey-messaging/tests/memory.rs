//! Behaviour of messaging over the in-process broker: round trip with every
//! property, retries, dead-letters, competing consumers, fan-out, graceful
//! shutdown. Written against the `Broker` trait so the RabbitMQ backend can
//! run the same cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mamey_core::cqrs::{Command, Event};
use mamey_core::health::{Probe, Status};
use mamey_core::{Error, MessageContext, Service, ShutdownHandle, TraceContext};
use mamey_messaging::{
    Broker, Delivery, MESSAGE_CONTEXT_HEADER, MemoryBroker, Message, Messaging, OutgoingMessage,
    Properties, Publisher, Route, context_of,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
}

impl Message for OrderPlaced {
    const NAMESPACE: &'static str = "orders";
}

impl Event for OrderPlaced {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShipOrder {
    id: u64,
}

impl Message for ShipOrder {
    const NAMESPACE: &'static str = "shipping";
}

impl Command for ShipOrder {}

/// What handlers saw.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<AtomicUsize>,
    contexts: Arc<Mutex<Vec<MessageContext>>>,
    ids: Arc<Mutex<Vec<u64>>>,
}

impl Seen {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A running service; stops when dropped.
struct Running {
    publisher: Publisher,
    shutdown: ShutdownHandle,
    task: Option<tokio::task::JoinHandle<Result<(), mamey_core::ServiceError>>>,
}

impl Running {
    async fn stop(mut self) {
        self.shutdown.shutdown();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// A service named `name` subscribed to `OrderPlaced`, whose handler fails
/// `fail_first` times before succeeding (forever if `None`).
async fn orders_service(
    name: &str,
    broker: &MemoryBroker,
    seen: &Seen,
    fail_first: Option<usize>,
    handler_delay: Duration,
) -> Running {
    let seen = seen.clone();
    let service = Service::builder(name)
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([
            ("MAMEY__MESSAGING__RETRY__INITIAL_DELAY", "20ms"),
            ("MAMEY__MESSAGING__RETRY__MAX_RETRIES", "3"),
            ("MAMEY__MESSAGING__CONCURRENCY", "2"),
        ])
        .plugin(Messaging::new(broker.clone()).subscribe_event::<OrderPlaced>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_event(move |event: OrderPlaced| {
                let seen = seen.clone();
                async move {
                    let call = seen.calls.fetch_add(1, Ordering::SeqCst);
                    if let Some(context) = MessageContext::current() {
                        seen.contexts.lock().unwrap().push(context);
                    }
                    tokio::time::sleep(handler_delay).await;
                    match fail_first {
                        Some(n) if call < n => {
                            Err(Error::unavailable("db.down", "database is down"))
                        }
                        None => Err(Error::unavailable("db.down", "database is down")),
                        _ => {
                            seen.ids.lock().unwrap().push(event.id);
                            Ok(())
                        }
                    }
                }
            });
            Ok(())
        })
        .build()
        .await
        .unwrap();
    start(service).await
}

async fn start(service: Service) -> Running {
    let publisher = service.resources().get::<Publisher>().unwrap();
    let shutdown = service.shutdown_handle();
    let health = service.health().clone();
    let task = tokio::spawn(service.run());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health.check(Probe::Startup).await.status != Status::Healthy {
        assert!(
            tokio::time::Instant::now() < deadline,
            "service never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Running {
        publisher,
        shutdown,
        task: Some(task),
    }
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

#[tokio::test]
async fn a_published_event_arrives_with_ids_context_and_trace() {
    let broker = MemoryBroker::new();
    let seen = Seen::default();
    let service = orders_service("shipping", &broker, &seen, Some(0), Duration::ZERO).await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let caller = MessageContext::new()
        .with_correlation_id("checkout-42")
        .with_trace(TraceContext {
            traceparent: traceparent.into(),
            tracestate: None,
        });
    caller
        .clone()
        .scope(service.publisher.publish(&OrderPlaced { id: 7 }))
        .await
        .unwrap();
    eventually("the handler", || seen.calls() == 1).await;

    let context = seen.contexts.lock().unwrap()[0].clone();
    assert_eq!(context.correlation_id, "checkout-42");
    assert_eq!(
        context.causation_id.as_deref(),
        Some(caller.message_id.as_str())
    );
    assert_ne!(context.message_id, caller.message_id);
    assert_eq!(
        context.trace.map(|t| t.traceparent).as_deref(),
        Some(traceparent)
    );
    assert_eq!(*seen.ids.lock().unwrap(), [7]);
    service.stop().await;
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
    assert_eq!(context["correlation_id"], "corr-1");
    assert_eq!(context["message_id"], p.message_id.as_str());
    assert_eq!(context["causation_id"], caller.message_id.as_str());
    assert_eq!(p.headers["x-correlation-id"], "corr-1");
    assert_eq!(p.headers["x-causation-id"], caller.message_id.as_str());
}

#[tokio::test]
async fn a_handler_failing_twice_is_retried_and_then_acked_once() {
    let broker = MemoryBroker::new();
    let seen = Seen::default();
    let service = orders_service("billing", &broker, &seen, Some(2), Duration::ZERO).await;
    service
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap();
    eventually("three attempts", || seen.ids.lock().unwrap().len() == 1).await;
    assert_eq!(seen.calls(), 3);
    service.stop().await;
    assert!(broker.dead_letters().is_empty());
    assert_eq!(seen.calls(), 3, "no redelivery after the ack");
}

#[tokio::test]
async fn a_handler_that_always_fails_ends_in_the_dead_letter_queue() {
    let broker = MemoryBroker::new();
    let seen = Seen::default();
    let service = orders_service("billing", &broker, &seen, None, Duration::ZERO).await;
    service
        .publisher
        .publish(&OrderPlaced { id: 2 })
        .await
        .unwrap();
    eventually("a dead letter", || !broker.dead_letters().is_empty()).await;
    let dead = broker.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].queue, "billing/orders.order_placed");
    assert_eq!(dead[0].delivery.attempt, 4, "first attempt + 3 retries");
    assert!(
        dead[0].reason.contains("database is down"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.ends_with("(after 4 attempts)"),
        "{}",
        dead[0].reason
    );
    assert_eq!(seen.calls(), 4);
    service.stop().await;
}

#[tokio::test]
async fn an_undecodable_body_is_dead_lettered_at_once() {
    let broker = MemoryBroker::new();
    let seen = Seen::default();
    let service = orders_service("billing", &broker, &seen, Some(0), Duration::ZERO).await;
    broker
        .publish(OutgoingMessage {
            route: Route {
                exchange: "orders".into(),
                routing_key: "order_placed".into(),
            },
            properties: Properties {
                message_id: "m-1".into(),
                correlation_id: "c-1".into(),
                message_type: "OrderPlaced".into(),
                timestamp: std::time::SystemTime::now(),
                content_type: "application/json".into(),
                persistent: true,
                headers: BTreeMap::new(),
            },
            body: Bytes::from_static(b"{not json"),
        })
        .await
        .unwrap();
    eventually("a dead letter", || !broker.dead_letters().is_empty()).await;
    let dead = &broker.dead_letters()[0];
    assert_eq!(dead.delivery.attempt, 1);
    assert!(
        dead.reason.starts_with("cannot decode the message:"),
        "{}",
        dead.reason
    );
    assert_eq!(seen.calls(), 0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_a_service_share_the_work() {
    let broker = MemoryBroker::new();
    let (a, b) = (Seen::default(), Seen::default());
    let slow = Duration::from_millis(5);
    let first = orders_service("warehouse", &broker, &a, Some(0), slow).await;
    let second = orders_service("warehouse", &broker, &b, Some(0), slow).await;
    for id in 0..40 {
        first.publisher.publish(&OrderPlaced { id }).await.unwrap();
    }
    let handled = || a.ids.lock().unwrap().len() + b.ids.lock().unwrap().len();
    eventually("all 40 handled", || handled() == 40).await;
    assert!(
        a.calls() > 0 && b.calls() > 0,
        "{} / {}",
        a.calls(),
        b.calls()
    );
    let mut ids: Vec<u64> = a.ids.lock().unwrap().clone();
    ids.extend(b.ids.lock().unwrap().iter());
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<_>>(), "each exactly once");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn every_subscribing_service_gets_each_event() {
    let broker = MemoryBroker::new();
    let (a, b) = (Seen::default(), Seen::default());
    let billing = orders_service("billing", &broker, &a, Some(0), Duration::ZERO).await;
    let shipping = orders_service("shipping", &broker, &b, Some(0), Duration::ZERO).await;
    billing
        .publisher
        .publish(&OrderPlaced { id: 5 })
        .await
        .unwrap();
    eventually("both services", || a.calls() == 1 && b.calls() == 1).await;
    billing.stop().await;
    shipping.stop().await;
}

#[tokio::test]
async fn stopping_one_service_leaves_the_others_on_the_broker_running() {
    let broker = MemoryBroker::new();
    let (a, b) = (Seen::default(), Seen::default());
    let billing = orders_service("billing", &broker, &a, Some(0), Duration::ZERO).await;
    let shipping = orders_service("shipping", &broker, &b, Some(0), Duration::ZERO).await;
    billing.stop().await;
    shipping
        .publisher
        .publish(&OrderPlaced { id: 8 })
        .await
        .unwrap();
    eventually("shipping still consumes", || b.calls() == 1).await;
    shipping.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_retried_not_lost() {
    let broker = MemoryBroker::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let service = Service::builder("billing")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([("MAMEY__MESSAGING__RETRY__INITIAL_DELAY", "10ms")])
        .plugin(Messaging::new(broker.clone()).subscribe_event::<OrderPlaced>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_event(move |_: OrderPlaced| {
                let counter = Arc::clone(&counter);
                async move {
                    assert!(
                        counter.fetch_add(1, Ordering::SeqCst) > 0,
                        "first attempt panics"
                    );
                    Ok(())
                }
            });
            Ok(())
        })
        .build()
        .await
        .unwrap();
    let running = start(service).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap();
    eventually("the second attempt", || {
        attempts.load(Ordering::SeqCst) == 2
    })
    .await;
    running.stop().await;
    assert!(broker.dead_letters().is_empty());
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_handler_in_flight() {
    let broker = MemoryBroker::new();
    let seen = Seen::default();
    let service = orders_service(
        "billing",
        &broker,
        &seen,
        Some(0),
        Duration::from_millis(300),
    )
    .await;
    service
        .publisher
        .publish(&OrderPlaced { id: 3 })
        .await
        .unwrap();
    eventually("the handler to start", || seen.calls() == 1).await;
    assert!(seen.ids.lock().unwrap().is_empty(), "still in flight");
    service.stop().await;
    assert_eq!(
        *seen.ids.lock().unwrap(),
        [3],
        "finished before stop returned"
    );
}

#[tokio::test]
async fn a_command_reaches_its_handler_and_unroutable_publishes_fail() {
    let broker = MemoryBroker::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let service = Service::builder("shipping")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(Vec::<(String, String)>::new())
        .plugin(Messaging::new(broker.clone()).subscribe_command::<ShipOrder>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_command(move |_: ShipOrder| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            });
            Ok(())
        })
        .build()
        .await
        .unwrap();
    let running = start(service).await;
    running
        .publisher
        .publish(&ShipOrder { id: 1 })
        .await
        .unwrap();
    eventually("the command", || handled.load(Ordering::SeqCst) == 1).await;

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
    convey.properties.message_id.clear();
    let id_less = context_of(&convey).context;
    assert!(!id_less.message_id.is_empty(), "a fresh id, never empty");
}
