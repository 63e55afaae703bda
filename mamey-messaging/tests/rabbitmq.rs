//! The RabbitMQ backend against a real broker (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): the shared behaviour suite, plus
//! what is particular to RabbitMQ (the AMQP message on the wire, queue
//! argument mismatches, unroutable publishes). Each test uses its own
//! service name and exchange, and deletes what it declared.
#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rabbitmq_common;
mod suite;

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use mamey_messaging::rabbitmq::header_text;
use mamey_messaging::rabbitmq::{ATTEMPT_HEADER, retry_queue};
use rabbitmq_common::{Rabbit, get};
use suite::{Backend, MAX_RETRIES, OrderPlaced, Seen, eventually, service, start};

/// Runs a shared case against a fresh RabbitMQ setup, then cleans up.
macro_rules! suite_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(rabbit) = Rabbit::new().await else {
                return;
            };
            suite::$name(&rabbit).await;
            rabbit.clean().await;
        }
    };
}

suite_case!(context_reaches_the_handler);
suite_case!(retried_then_acked_once);
suite_case!(dead_lettered_after_the_retries);
suite_case!(undecodable_dead_lettered_at_once);
suite_case!(competing_consumers_share_the_work);
suite_case!(shutdown_finishes_the_handler_in_flight);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_carries_every_property_and_header() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let (names, channel) = (&rabbit.names, &rabbit.channel);
    let seen = Seen::default();
    let running = start(service(&rabbit, &seen, Some(0), Duration::ZERO)).await;
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

    // The handler's view is checked by the shared suite; here, the wire.
    let (_caller, context) = suite::publish_traced(&running, &seen, "checkout-7").await;
    let wire = get(channel, &wire_queue)
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
        Some(suite::TRACEPARENT)
    );
    let message_context: serde_json::Value =
        serde_json::from_str(&header_text(&headers, "message_context").unwrap()).unwrap();
    assert_eq!(message_context["correlation_id"], "checkout-7");
    assert_eq!(&wire.delivery.data, br#"{"id":7}"#);

    running.stop().await;
    rabbit.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_is_a_clear_start_error() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let (names, channel) = (&rabbit.names, &rabbit.channel);
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
    let service = service(&rabbit, &Seen::default(), Some(0), Duration::ZERO)
        .build()
        .await
        .unwrap();
    let error = service.run().await.unwrap_err().to_string();
    assert!(
        error.starts_with("plug-in `messaging` failed to start: cannot subscribe queue"),
        "{error}"
    );
    assert!(error.contains("exists with different arguments"), "{error}");
    rabbit.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_fails_and_publishing_goes_on() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let (names, channel) = (&rabbit.names, &rabbit.channel);
    let running = start(service(&rabbit, &Seen::default(), Some(0), Duration::ZERO)).await;
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
    rabbit.clean().await;
}

/// A delivery whose `x-attempt` header was crafted (0, negative, huge) is
/// retried within the configured range and then dead-lettered; before the
/// fix, `x-attempt: 0` made a failing handler run about once a second for
/// ever (its retry queue `Q.retry.0` does not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_attempt_header_cannot_loop_a_failing_message() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let seen = Seen::default();
    let running = start(service(&rabbit, &seen, None, Duration::ZERO)).await;
    let crafted = [
        AMQPValue::LongUInt(0),
        AMQPValue::LongInt(-5),
        AMQPValue::LongLongInt(i64::MAX),
    ];
    for (id, attempt) in crafted.into_iter().enumerate() {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), attempt);
        rabbit
            .channel
            .basic_publish(
                rabbit.names.exchange.as_str().into(),
                "order_placed".into(),
                BasicPublishOptions::default(),
                format!("{{\"id\":{id}}}").as_bytes(),
                BasicProperties::default()
                    .with_message_id(format!("crafted-{id}").into())
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    eventually("all three dead-lettered", || async {
        rabbit.dead_letters().await.len() == 3
    })
    .await;
    let attempts: Vec<u32> = rabbit
        .dead_letters()
        .await
        .iter()
        .map(|(_, n)| *n)
        .collect();
    assert!(
        attempts.iter().all(|&n| (1..=MAX_RETRIES + 1).contains(&n)),
        "{attempts:?}"
    );
    // 0 and -5 count as the first attempt: every retry is used; the huge
    // one is past the last retry: dead-lettered at its first failure.
    assert_eq!(
        seen.calls(),
        usize::try_from(2 * (MAX_RETRIES + 1) + 1).unwrap()
    );
    running.stop().await;
    rabbit.clean().await;
}

/// A retry queue that is gone does not turn a retry into a requeue loop:
/// the message goes to the dead-letter queue, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_retry_queue_dead_letters_instead_of_looping() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let seen = Seen::default();
    let running = start(service(&rabbit, &seen, None, Duration::ZERO)).await;
    rabbit
        .channel
        .queue_delete(
            retry_queue(&rabbit.names.queue(), 1).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    running
        .publisher
        .publish(&OrderPlaced { id: 9 })
        .await
        .unwrap();
    eventually("dead-lettered", || async {
        !rabbit.dead_letters().await.is_empty()
    })
    .await;
    let (reason, attempts) = rabbit.dead_letters().await.remove(0);
    assert!(
        reason.contains("could not move the message to the retry queue"),
        "{reason}"
    );
    assert!(reason.contains(".retry.1"), "{reason}");
    assert_eq!(attempts, 1);
    assert_eq!(seen.calls(), 1);
    running.stop().await;
    rabbit.clean().await;
}
