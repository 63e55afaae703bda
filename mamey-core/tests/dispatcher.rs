//! The CQRS dispatcher: routing, middleware, validation, context, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamey_core::cqrs::middleware::{HandlerMetrics, HandlerOutcome, from_fn};
use mamey_core::cqrs::{
    Command, CommandHandler, Dispatcher, DispatcherError, Envelope, Event, MessageKind, Next, Query,
};
use mamey_core::{Error, ErrorKind, MessageContext};

struct CreateOrder {
    quantity: u32,
}

impl Command for CreateOrder {
    fn validate(&self) -> Result<(), Error> {
        if (1..=100).contains(&self.quantity) {
            Ok(())
        } else {
            Err(
                Error::invalid_input("order.invalid", "invalid order").with_field(
                    "quantity",
                    "range",
                    "must be between 1 and 100",
                ),
            )
        }
    }
}

struct GetOrder {
    id: u32,
}

impl Query for GetOrder {
    type Output = Option<String>;
}

#[derive(Clone)]
struct OrderCreated;

impl Event for OrderCreated {}

/// A handler written as a type, holding state.
struct CountingHandler {
    calls: Arc<AtomicUsize>,
}

impl CommandHandler<CreateOrder> for CountingHandler {
    async fn handle(&self, _command: CreateOrder) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_command_goes_to_its_one_handler_and_a_query_returns_its_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dispatcher = Dispatcher::builder()
        .command(CountingHandler {
            calls: Arc::clone(&calls),
        })
        .query(|q: GetOrder| async move { Ok((q.id == 7).then(|| "order 7".to_owned())) })
        .build()
        .unwrap();
    dispatcher.send(CreateOrder { quantity: 1 }).await.unwrap();
    dispatcher.send(CreateOrder { quantity: 2 }).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        dispatcher
            .query(GetOrder { id: 7 })
            .await
            .unwrap()
            .as_deref(),
        Some("order 7")
    );
    assert_eq!(dispatcher.query(GetOrder { id: 8 }).await.unwrap(), None);
}

#[tokio::test]
async fn an_unhandled_command_is_an_error_not_a_panic() {
    let dispatcher = Dispatcher::builder().build().unwrap();
    let error = dispatcher
        .send(CreateOrder { quantity: 1 })
        .await
        .unwrap_err();
    assert_eq!(error.code(), "dispatch.no_handler");
    assert_eq!(
        error.message(),
        "no handler is registered for command `CreateOrder`"
    );
    let error = dispatcher.query(GetOrder { id: 1 }).await.unwrap_err();
    assert_eq!(error.code(), "dispatch.no_handler");
}

#[test]
fn a_second_command_handler_is_rejected() {
    let error = Dispatcher::builder()
        .command(|_: CreateOrder| async { Ok(()) })
        .command(|_: CreateOrder| async { Ok(()) })
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        DispatcherError::DuplicateHandler {
            kind: MessageKind::Command,
            message: "CreateOrder"
        }
    );
    assert_eq!(
        error.to_string(),
        "command `CreateOrder` already has a handler; a command is handled by exactly one handler"
    );
}

#[tokio::test]
async fn an_event_reaches_every_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut builder = Dispatcher::builder();
    for _ in 0..3 {
        let calls = Arc::clone(&calls);
        builder.event(move |_: OrderCreated| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
    }
    let dispatcher = builder.build().unwrap();
    assert_eq!(dispatcher.event_handlers::<OrderCreated>(), 3);
    dispatcher.publish(OrderCreated).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_event_without_handlers_is_fine() {
    let dispatcher = Dispatcher::builder().build().unwrap();
    dispatcher.publish(OrderCreated).await.unwrap();
}

#[tokio::test]
async fn a_failing_event_handler_is_reported_and_the_others_still_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let dispatcher = Dispatcher::builder()
        .event(|_: OrderCreated| async { Err(Error::unavailable("mail.down", "smtp is down")) })
        .event(move |_: OrderCreated| {
            let calls = Arc::clone(&counted);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let error = dispatcher.publish(OrderCreated).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.code(), "mail.down");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn several_failing_event_handlers_are_all_named() {
    let dispatcher = Dispatcher::builder()
        .event(|_: OrderCreated| async { Err(Error::unavailable("mail.down", "smtp is down")) })
        .event(|_: OrderCreated| async { Err(Error::conflict("stock.stale", "stale stock")) })
        .build()
        .unwrap();
    let error = dispatcher.publish(OrderCreated).await.unwrap_err();
    assert_eq!(error.code(), "dispatch.event_handlers_failed");
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(
        error
            .message()
            .starts_with("2 of 2 handlers of event `OrderCreated` failed")
    );
    assert!(error.message().contains("smtp is down"));
    assert!(error.message().contains("stale stock"));
}

#[tokio::test]
async fn middleware_runs_in_the_order_added_around_the_handler() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorder = |name: &'static str| {
        let log = Arc::clone(&log);
        from_fn(move |envelope: Envelope, next: Next| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push(format!("{name} before"));
                let result = next.run(envelope).await;
                log.lock().unwrap().push(format!("{name} after"));
                result
            }
        })
    };
    let handler_log = Arc::clone(&log);
    let dispatcher = Dispatcher::builder()
        .layer(recorder("outer"))
        .layer(recorder("inner"))
        .command(move |_: CreateOrder| {
            let log = Arc::clone(&handler_log);
            async move {
                log.lock().unwrap().push("handler".into());
                Ok(())
            }
        })
        .build()
        .unwrap();
    dispatcher.send(CreateOrder { quantity: 1 }).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer before",
            "inner before",
            "handler",
            "inner after",
            "outer after"
        ]
    );
}

#[tokio::test]
async fn validation_rejects_before_the_handler_runs_with_and_without_layers() {
    for layered in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer_saw = Arc::new(AtomicUsize::new(0));
        let mut builder = Dispatcher::builder();
        builder.command(CountingHandler {
            calls: Arc::clone(&calls),
        });
        if layered {
            let saw = Arc::clone(&layer_saw);
            builder.layer(from_fn(move |envelope: Envelope, next: Next| {
                saw.fetch_add(1, Ordering::SeqCst);
                next.run(envelope)
            }));
        }
        let dispatcher = builder.build().unwrap();
        let error = dispatcher
            .send(CreateOrder { quantity: 0 })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "layered: {layered}");
        assert_eq!(error.fields()[0].field, "quantity");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // Validation is innermost: the layers see what it rejects.
        assert_eq!(layer_saw.load(Ordering::SeqCst), usize::from(layered));
    }
}

#[tokio::test]
async fn middleware_can_see_the_message_and_its_kind() {
    let seen = Arc::new(Mutex::new(None));
    let captured = Arc::clone(&seen);
    let dispatcher = Dispatcher::builder()
        .layer(from_fn(move |envelope: Envelope, next: Next| {
            let seen = Arc::clone(&captured);
            async move {
                let quantity = envelope.message::<CreateOrder>().map(|c| c.quantity);
                *seen.lock().unwrap() = Some((envelope.kind(), envelope.name(), quantity));
                next.run(envelope).await
            }
        }))
        .command(|_: CreateOrder| async { Ok(()) })
        .build()
        .unwrap();
    dispatcher.send(CreateOrder { quantity: 42 }).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some((MessageKind::Command, "CreateOrder", Some(42)))
    );
}

#[tokio::test]
async fn handlers_see_the_callers_context_or_a_fresh_one() {
    let dispatcher = Dispatcher::builder()
        .query(|_: GetOrder| async { Ok(MessageContext::current().map(|c| c.correlation_id)) })
        .build()
        .unwrap();
    let ctx = MessageContext::new().with_correlation_id("corr-42");
    let seen = ctx
        .scope(dispatcher.query(GetOrder { id: 1 }))
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("corr-42"));

    let fresh = dispatcher.query(GetOrder { id: 1 }).await.unwrap();
    assert!(fresh.is_some_and(|id| !id.is_empty() && id != "corr-42"));
}

type Recorded = (MessageKind, String, Option<ErrorKind>, Duration);

#[derive(Default)]
struct RecordingMetrics {
    outcomes: Mutex<Vec<Recorded>>,
}

impl HandlerMetrics for RecordingMetrics {
    fn record(&self, outcome: &HandlerOutcome<'_>) {
        self.outcomes.lock().unwrap().push((
            outcome.kind,
            outcome.name.to_owned(),
            outcome.error,
            outcome.duration,
        ));
    }
}

#[tokio::test]
async fn the_metrics_hook_sees_every_outcome() {
    let metrics = Arc::new(RecordingMetrics::default());
    let dispatcher = Dispatcher::builder()
        .metrics(Arc::clone(&metrics))
        .command(|_: CreateOrder| async { Ok(()) })
        .build()
        .unwrap();
    dispatcher.send(CreateOrder { quantity: 5 }).await.unwrap();
    dispatcher
        .send(CreateOrder { quantity: 500 })
        .await
        .unwrap_err();
    let outcomes = metrics.outcomes.lock().unwrap();
    let summary: Vec<_> = outcomes
        .iter()
        .map(|(kind, name, error, _)| (*kind, name.as_str(), *error))
        .collect();
    assert_eq!(
        summary,
        [
            (MessageKind::Command, "CreateOrder", None),
            (
                MessageKind::Command,
                "CreateOrder",
                Some(ErrorKind::InvalidInput)
            ),
        ]
    );
}

#[tokio::test]
async fn the_service_dispatcher_validates() {
    let service = mamey_core::Service::builder("svc")
        .handle_signals(false)
        .env_vars(Vec::<(String, String)>::new())
        .config_dir("/nonexistent-mamey-config")
        .handlers(|d| {
            d.command(|_: CreateOrder| async { Ok(()) });
        })
        .build()
        .await
        .unwrap();
    let error = service
        .dispatcher()
        .send(CreateOrder { quantity: 0 })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    service
        .dispatcher()
        .send(CreateOrder { quantity: 3 })
        .await
        .unwrap();
}
