//! The RabbitMQ backend against a real broker (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own service
//! name and exchange, and deletes what it declared.
#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use mamey_core::{MessageContext, TraceContext};
use mamey_messaging::rabbitmq::{
    ATTEMPTS_HEADER, DEATH_REASON_HEADER, dead_letter_queue, header_text,
};

mod rabbitmq_common;

use rabbitmq_common::{Names, OrderPlaced, Seen, eventually, get, raw, service, start};

/// Polls the dead-letter queue of the test's queue until a message is there.
async fn next_dead_letter(channel: &Channel, names: &Names) -> lapin::message::BasicGetMessage {
    let dlq = dead_letter_queue(&names.queue());
    let dead = Arc::new(Mutex::new(None));
    eventually("a dead letter", || {
        let (channel, dlq, dead) = (channel.clone(), dlq.clone(), Arc::clone(&dead));
        async move {
            if let Some(message) = get(&channel, &dlq).await {
                *dead.lock().unwrap() = Some(message);
            }
            dead.lock().unwrap().is_some()
        }
    })
    .await;
    dead.lock().unwrap().take().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_carries_every_property_and_header() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let seen = Seen::default();
    let running = start(service(&names, &seen, Some(0), Duration::ZERO)).await;
    // A raw queue on the same binding shows the message as it is on the wire.
    let wire_queue = format!("{}.raw", names.queue());
    channel
        .queue_declare(
            wire_queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            wire_queue.as_str().into(),
            names.exchange.as_str().into(),
            "order_placed".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let caller = MessageContext::new()
        .with_correlation_id("checkout-7")
        .with_trace(TraceContext {
            traceparent: traceparent.into(),
            tracestate: None,
        });
    caller
        .clone()
        .scope(running.publisher.publish(&OrderPlaced { id: 7 }))
        .await
        .unwrap();

    eventually("the handler", || {
        let seen = seen.clone();
        async move { seen.ids.lock().unwrap().len() == 1 }
    })
    .await;
    let context = seen.contexts.lock().unwrap()[0].clone();
    assert_eq!(context.correlation_id, "checkout-7");
    assert_eq!(
        context.causation_id.as_deref(),
        Some(caller.message_id.as_str())
    );
    assert_eq!(
        context.trace.as_ref().map(|t| t.traceparent.as_str()),
        Some(traceparent)
    );

    let wire = get(&channel, &wire_queue)
        .await
        .expect("the raw queue got a copy");
    let p = &wire.delivery.properties;
    assert_eq!(
        p.message_id()
            .as_ref()
            .map(lapin::types::ShortString::as_str),
        Some(context.message_id.as_str())
    );
    assert_eq!(
        p.correlation_id()
            .as_ref()
            .map(lapin::types::ShortString::as_str),
        Some("checkout-7")
    );
    assert_eq!(
        p.kind().as_ref().map(lapin::types::ShortString::as_str),
        Some("OrderPlaced")
    );
    assert_eq!(
        p.content_type()
            .as_ref()
            .map(lapin::types::ShortString::as_str),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(p.timestamp().is_some_and(|t| t.abs_diff(now) < 60));
    let headers = p.headers().clone().unwrap();
    assert_eq!(
        header_text(&headers, "traceparent").as_deref(),
        Some(traceparent)
    );
    let message_context: serde_json::Value =
        serde_json::from_str(&header_text(&headers, "message_context").unwrap()).unwrap();
    assert_eq!(message_context["correlation_id"], "checkout-7");
    assert_eq!(&wire.delivery.data, br#"{"id":7}"#);

    running.stop().await;
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_twice_is_retried_then_acked() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let seen = Seen::default();
    let running = start(service(&names, &seen, Some(2), Duration::ZERO)).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 1 })
        .await
        .unwrap();
    eventually("success on the third attempt", || {
        let seen = seen.clone();
        async move { seen.ids.lock().unwrap().len() == 1 }
    })
    .await;
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    running.stop().await;
    assert!(
        get(&channel, &dead_letter_queue(&names.queue()))
            .await
            .is_none()
    );
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_ends_in_the_dlq_with_reason_and_attempts() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let seen = Seen::default();
    let running = start(service(&names, &seen, None, Duration::ZERO)).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 2 })
        .await
        .unwrap();
    let dead = next_dead_letter(&channel, &names).await;
    let headers = dead.delivery.properties.headers().clone().unwrap();
    let reason = header_text(&headers, DEATH_REASON_HEADER).unwrap();
    assert!(reason.contains("database is down"), "{reason}");
    assert!(reason.ends_with("(after 3 attempts)"), "{reason}");
    assert_eq!(
        headers.inner().get(ATTEMPTS_HEADER),
        Some(&AMQPValue::LongUInt(3))
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    running.stop().await;
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_body_goes_straight_to_the_dlq() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let seen = Seen::default();
    let running = start(service(&names, &seen, Some(0), Duration::ZERO)).await;
    channel
        .basic_publish(
            names.exchange.as_str().into(),
            "order_placed".into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default().with_message_id("bad-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = next_dead_letter(&channel, &names).await;
    let headers = dead.delivery.properties.headers().clone().unwrap();
    assert!(
        header_text(&headers, DEATH_REASON_HEADER)
            .unwrap()
            .starts_with("cannot decode the message")
    );
    assert_eq!(
        headers.inner().get(ATTEMPTS_HEADER),
        Some(&AMQPValue::LongUInt(1))
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    running.stop().await;
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_of_one_queue_share_the_work() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let (a, b) = (Seen::default(), Seen::default());
    let first = start(service(&names, &a, Some(0), Duration::from_millis(5))).await;
    let second = start(service(&names, &b, Some(0), Duration::from_millis(5))).await;
    for id in 0..60 {
        first.publisher.publish(&OrderPlaced { id }).await.unwrap();
    }
    eventually("all 60", || {
        let (a, b) = (a.clone(), b.clone());
        async move { a.ids.lock().unwrap().len() + b.ids.lock().unwrap().len() >= 60 }
    })
    .await;
    assert!(!a.ids.lock().unwrap().is_empty() && !b.ids.lock().unwrap().is_empty());
    first.stop().await;
    second.stop().await;
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_handler_in_flight() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let seen = Seen::default();
    let running = start(service(&names, &seen, Some(0), Duration::from_millis(500))).await;
    running
        .publisher
        .publish(&OrderPlaced { id: 3 })
        .await
        .unwrap();
    eventually("the handler to start", || {
        let seen = seen.clone();
        async move { seen.calls.load(Ordering::SeqCst) == 1 }
    })
    .await;
    running.stop().await;
    assert_eq!(
        *seen.ids.lock().unwrap(),
        [3],
        "finished before stop returned"
    );
    // It was acked: nothing waits in the queue.
    assert!(get(&channel, &names.queue()).await.is_none());
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_is_a_clear_start_error() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongUInt(10));
    channel
        .queue_declare(
            names.queue().as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    let service = service(&names, &Seen::default(), Some(0), Duration::ZERO)
        .build()
        .await
        .unwrap();
    let error = service.run().await.unwrap_err().to_string();
    assert!(
        error.starts_with("plug-in `messaging` failed to start: cannot subscribe queue"),
        "{error}"
    );
    assert!(error.contains("exists with different arguments"), "{error}");
    names.clean(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_fails_and_publishing_goes_on() {
    let Some((_connection, channel)) = raw().await else {
        return;
    };
    let names = Names::new();
    let running = start(service(&names, &Seen::default(), Some(0), Duration::ZERO)).await;
    let nowhere = format!("{}-nowhere", names.exchange);
    let error = running
        .publisher
        .publish_with(
            &OrderPlaced { id: 1 },
            mamey_messaging::PublishOptions {
                route: Some(mamey_messaging::Route {
                    exchange: nowhere.clone(),
                    routing_key: "order_placed".into(),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, mamey_messaging::PublishError::Unroutable(_)),
        "{error}"
    );
    for id in 0..10 {
        running
            .publisher
            .publish(&OrderPlaced { id })
            .await
            .unwrap();
    }
    running.stop().await;
    let _ = channel
        .exchange_delete(
            nowhere.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await;
    names.clean(&channel).await;
}
