//! The behaviour every broker backend must show, written once and run
//! against each (`memory.rs` with the in-process broker, `rabbitmq.rs` with
//! RabbitMQ): context round trip, retry then ack, dead-lettering after the
//! retries, undecodable bodies, competing consumers, graceful shutdown.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamey_core::cqrs::{Event, Res};
use mamey_core::{Error, MessageContext, RunningService, Service, ServiceBuilder, TraceContext};
use mamey_messaging::{Message, Messaging, Publisher};
use mamey_observability::propagation::OtelContext;
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};

/// The event every case publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub id: u64,
}

impl Message for OrderPlaced {
    const NAMESPACE: &'static str = "orders";
}

impl Event for OrderPlaced {}

/// Retries after the first attempt, in every backend's configuration.
pub const MAX_RETRIES: u32 = 2;

/// What a backend provides to the shared cases.
pub trait Backend: Sync {
    /// The plug-in, without subscriptions.
    fn messaging(&self) -> Messaging;
    /// Configuration the backend needs (URL, exchange override, …).
    fn vars(&self) -> Vec<(String, String)>;
    /// The service name (queues are named after it).
    fn service_name(&self) -> String;
    /// Publishes a body that is not JSON where `OrderPlaced` goes.
    fn publish_garbage(&self) -> impl Future<Output = ()> + Send;
    /// Dead letters so far: (reason, attempts).
    fn dead_letters(&self) -> impl Future<Output = Vec<(String, u32)>> + Send;
}

/// What handlers saw.
#[derive(Clone, Default)]
pub struct Seen {
    pub calls: Arc<AtomicUsize>,
    pub ids: Arc<Mutex<Vec<u64>>>,
    pub contexts: Arc<Mutex<Vec<MessageContext>>>,
    /// The OpenTelemetry trace id current in each call (all zeros when
    /// nothing is traced).
    pub trace_ids: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn handled(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

/// The configuration of [`service`]: short retries, and the backend's.
pub fn vars<B: Backend>(backend: &B) -> Vec<(String, String)> {
    let mut vars = vec![
        (
            "MAMEY__MESSAGING__RETRY__INITIAL_DELAY".to_owned(),
            "50ms".to_owned(),
        ),
        (
            "MAMEY__MESSAGING__RETRY__MAX_RETRIES".to_owned(),
            MAX_RETRIES.to_string(),
        ),
        ("MAMEY__MESSAGING__CONCURRENCY".to_owned(), "4".to_owned()),
    ];
    vars.extend(backend.vars());
    vars
}

/// How the suite's handler behaves: a resource of the service, so each
/// service built by [`service`] records into its own [`Seen`].
#[derive(Clone)]
struct Behaviour {
    seen: Seen,
    /// Calls that fail before the handler succeeds; `None`: all of them.
    fail_first: Option<usize>,
    /// How long each call takes.
    delay: Duration,
}

/// The handler of `OrderPlaced`: records the call, its message context and
/// the current trace id, then fails or records the id as its
/// [`Behaviour`] says.
async fn order_placed(
    event: OrderPlaced,
    Res(behaviour): Res<Behaviour>,
    context: MessageContext,
) -> Result<(), Error> {
    let Behaviour {
        seen,
        fail_first,
        delay,
    } = behaviour;
    let call = seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.contexts.lock().unwrap().push(context);
    seen.trace_ids.lock().unwrap().push(
        OtelContext::current()
            .span()
            .span_context()
            .trace_id()
            .to_string(),
    );
    tokio::time::sleep(delay).await;
    match fail_first {
        Some(n) if call < n => Err(Error::unavailable("db.down", "database is down")),
        None => Err(Error::unavailable("db.down", "database is down")),
        _ => {
            seen.ids.lock().unwrap().push(event.id);
            Ok(())
        }
    }
}

/// A service subscribed to `OrderPlaced` whose handler fails `fail_first`
/// times (always, if `None`) before succeeding, taking `delay` per call.
pub fn service<B: Backend>(
    backend: &B,
    seen: &Seen,
    fail_first: Option<usize>,
    delay: Duration,
) -> ServiceBuilder {
    let vars = vars(backend);
    Service::builder(backend.service_name())
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars)
        .resource(Behaviour {
            seen: seen.clone(),
            fail_first,
            delay,
        })
        .plugin(backend.messaging().subscribe_event::<OrderPlaced>())
        .handlers(|d| {
            d.event(order_placed);
        })
}

/// A running service and its publisher.
pub struct Running {
    pub publisher: Publisher,
    pub health: mamey_core::health::Health,
    pub service: RunningService,
}

impl Running {
    pub async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// Builds and starts `builder`, returning once every plug-in has started.
pub async fn start(builder: ServiceBuilder) -> Running {
    let service = builder.build().await.unwrap();
    let publisher = service.resources().get::<Publisher>().unwrap();
    Running {
        publisher,
        health: service.health().clone(),
        service: service.start().await.unwrap(),
    }
}

/// Polls `check` until it holds, or panics after 30 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn dead_letter<B: Backend>(backend: &B) -> (String, u32) {
    let found = Arc::new(Mutex::new(None));
    eventually("a dead letter", || {
        let found = Arc::clone(&found);
        async move {
            if let Some(letter) = backend.dead_letters().await.into_iter().next() {
                *found.lock().unwrap() = Some(letter);
            }
            found.lock().unwrap().is_some()
        }
    })
    .await;
    found.lock().unwrap().take().unwrap()
}

/// The `traceparent` the traced publishes carry.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Publishes `OrderPlaced { id: 7 }` from a caller context with
/// `correlation` and [`TRACEPARENT`]; waits for the handler and returns the
/// caller's context and the handler's.
pub async fn publish_traced(
    running: &Running,
    seen: &Seen,
    correlation: &str,
) -> (MessageContext, MessageContext) {
    let caller = MessageContext::new()
        .with_correlation_id(correlation)
        .with_trace(TraceContext {
            traceparent: TRACEPARENT.into(),
            tracestate: None,
        });
    caller
        .clone()
        .scope(running.publisher.publish(&OrderPlaced { id: 7 }))
        .await
        .unwrap();
    eventually("the handler", || {
        let seen = seen.clone();
        async move { seen.handled() == 1 }
    })
    .await;
    let handled = seen.contexts.lock().unwrap()[0].clone();
    (caller, handled)
}

/// Ids, correlation, causation and trace context reach the handler.
pub async fn context_reaches_the_handler<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let running = start(service(backend, &seen, Some(0), Duration::ZERO)).await;
    let (caller, context) = publish_traced(&running, &seen, "checkout-42").await;
    assert_eq!(context.correlation_id, "checkout-42");
    assert_eq!(
        context.causation_id.as_deref(),
        Some(caller.message_id.as_str())
    );
    assert_ne!(context.message_id, caller.message_id);
    assert_eq!(
        context.trace.map(|t| t.traceparent).as_deref(),
        Some(TRACEPARENT)
    );
    running.stop().await;
}

/// A handler failing twice is retried and then acked once.
pub async fn retried_then_acked_once<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let running = start(service(backend, &seen, Some(2), Duration::ZERO)).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap();
    eventually("success on the third attempt", || {
        let seen = seen.clone();
        async move { seen.handled() == 1 }
    })
    .await;
    running.stop().await;
    assert_eq!(seen.calls(), 3, "no redelivery after the ack");
    assert!(backend.dead_letters().await.is_empty());
}

/// A handler that always fails ends in the dead-letter queue with the
/// reason and the attempt count.
pub async fn dead_lettered_after_the_retries<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let running = start(service(backend, &seen, None, Duration::ZERO)).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 2 })
        .await
        .unwrap();
    let (reason, attempts) = dead_letter(backend).await;
    assert!(reason.contains("database is down"), "{reason}");
    assert!(
        reason.ends_with(&format!("(after {} attempts)", MAX_RETRIES + 1)),
        "{reason}"
    );
    assert_eq!(attempts, MAX_RETRIES + 1);
    assert_eq!(seen.calls(), usize::try_from(MAX_RETRIES + 1).unwrap());
    running.stop().await;
}

/// A body that cannot be decoded is dead-lettered at once.
pub async fn undecodable_dead_lettered_at_once<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let running = start(service(backend, &seen, Some(0), Duration::ZERO)).await;
    backend.publish_garbage().await;
    let (reason, attempts) = dead_letter(backend).await;
    assert!(reason.starts_with("cannot decode the message:"), "{reason}");
    assert_eq!(attempts, 1);
    assert_eq!(seen.calls(), 0);
    running.stop().await;
}

/// Two instances of one service share its queue's messages, each handled once.
pub async fn competing_consumers_share_the_work<B: Backend>(backend: &B) {
    let (a, b) = (Seen::default(), Seen::default());
    let slow = Duration::from_millis(5);
    let first = start(service(backend, &a, Some(0), slow)).await;
    let second = start(service(backend, &b, Some(0), slow)).await;
    for id in 0..40 {
        first.publisher.publish(&OrderPlaced { id }).await.unwrap();
    }
    eventually("all 40 handled", || {
        let (a, b) = (a.clone(), b.clone());
        async move { a.handled() + b.handled() == 40 }
    })
    .await;
    assert!(
        a.handled() > 0 && b.handled() > 0,
        "{} / {}",
        a.handled(),
        b.handled()
    );
    let mut ids: Vec<u64> = a.ids.lock().unwrap().clone();
    ids.extend(b.ids.lock().unwrap().iter());
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 40, "each once");
    first.stop().await;
    second.stop().await;
}

/// Stopping waits for the handler in flight, which then completes.
pub async fn shutdown_finishes_the_handler_in_flight<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let running = start(service(backend, &seen, Some(0), Duration::from_millis(300))).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 3 })
        .await
        .unwrap();
    eventually("the handler to start", || {
        let seen = seen.clone();
        async move { seen.calls() == 1 }
    })
    .await;
    assert_eq!(seen.handled(), 0, "still in flight");
    running.stop().await;
    assert_eq!(
        *seen.ids.lock().unwrap(),
        [3],
        "finished before stop returned"
    );
}
