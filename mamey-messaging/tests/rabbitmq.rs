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
    assert_eq!(message_context["correlationId"], "checkout-7");
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

/// Issue 12, parts 5 and 6: a returned message is logged without its
/// payload; a dead letter records its original route and can be replayed.
mod returns_and_dead_letters {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lapin::options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Channel};
    use mamey_messaging::rabbitmq::{
        ATTEMPT_HEADER, ATTEMPTS_HEADER, DEATH_REASON_HEADER, DeadLetterError, DeadLetterQueue,
        ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, dead_letter_queue, header_text,
    };
    use mamey_messaging::{Message, PublishError, PublishOptions, Route};
    use mamey_observability::Observability;
    use serde::{Deserialize, Serialize};

    use crate::rabbitmq_common::{Rabbit, amqp_url, get};
    use crate::suite::{self, MAX_RETRIES, OrderPlaced, Seen, eventually, service, start};

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A message with a large body.
    #[derive(Serialize, Deserialize)]
    struct Blob {
        filler: String,
    }

    impl Message for Blob {
        const NAMESPACE: &'static str = "orders";
    }

    /// What the body is made of: found in a log, as text or as the decimal
    /// bytes lapin's record prints, it would be the payload.
    const PATTERN: &str = "PAYLOAD-7f3a-";

    /// A ~1 MB unroutable publish leaves one small WARN line naming the
    /// route and the message id, and no part of the body. lapin records the
    /// return from its own I/O thread, so the capture is the process's
    /// global subscriber — a thread-local one would not see lapin's record
    /// at all — built by the observability plug-in with the default filter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unroutable_message_is_logged_without_its_payload() {
        let Some(rabbit) = Rabbit::new().await else {
            return;
        };
        let logs = Captured::default();
        let mut vars = suite::vars(&rabbit);
        vars.push(("MAMEY__LOGGING__FORMAT".to_owned(), "json".to_owned()));
        let writer = logs.clone();
        let running = start(
            service(&rabbit, &Seen::default(), Some(0), Duration::ZERO)
                .env_vars(vars)
                .plugin(
                    Observability::new()
                        .with_writer(move || writer.clone())
                        // Not the process's RUST_LOG: the filter from config.
                        .with_env_vars(Vec::<(String, String)>::new()),
                ),
        )
        .await;
        let nowhere = format!("{}-nowhere", rabbit.names.exchange);
        let message_id = format!("{}-blob", rabbit.names.service);
        let filler = PATTERN.repeat((1 << 20) / PATTERN.len());

        let error = running
            .publisher
            .publish_with(
                &Blob { filler },
                PublishOptions {
                    message_id: Some(message_id.clone()),
                    route: Some(Route {
                        exchange: nowhere.clone(),
                        routing_key: "blob_dropped".into(),
                    }),
                    ..PublishOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, PublishError::Unroutable(_)), "{error}");

        // lapin logs the return when its frames arrive, before the confirm
        // that failed the publish: everything is written by now.
        let text = logs.text();
        let about: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(&nowhere) || line.contains("lapin::returned_messages"))
            .collect();
        assert_eq!(about.len(), 1, "one line: {about:?}");
        let line = about[0];
        assert!(line.len() < 4096, "{} bytes", line.len());
        let fields: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(fields["level"], "WARN", "{line}");
        assert_eq!(fields["exchange"], nowhere.as_str(), "{line}");
        assert_eq!(fields["routing_key"], "blob_dropped", "{line}");
        assert_eq!(fields["message_id"], message_id.as_str(), "{line}");
        assert!(fields["body_bytes"].as_u64().unwrap() > 1_000_000, "{line}");
        let as_bytes = PATTERN.as_bytes()[..8]
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        assert!(!text.contains(&PATTERN[..8]), "the body is in the log");
        assert!(!text.contains(&as_bytes), "the body is in the log as bytes");
        // Lines of other tests running meanwhile are in the capture too.
        assert!(text.len() < 256 * 1024, "{} bytes of logs", text.len());

        running.stop().await;
        let _ = rabbit
            .channel
            .exchange_delete(
                nowhere.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
        rabbit.clean().await;
    }

    /// Reads `key` of the message at the head of `queue` without taking it.
    async fn head_header(channel: &Channel, queue: &str, key: &str) -> Option<String> {
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()?;
        let headers = message.delivery.properties.headers().clone().unwrap();
        message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
        header_text(&headers, key)
    }

    /// A message whose handler fails every attempt is dead-lettered with
    /// its original route; `peek` shows it and leaves it; `replay` sends it
    /// back through the original exchange without the death headers, and
    /// the handler — succeeding now — gets it once; the dead-letter queue
    /// is then empty but for a message that was not chosen. A message
    /// without a recorded route cannot be replayed, and stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_letter_is_replayed_to_its_original_route() {
        let Some(rabbit) = Rabbit::new().await else {
            return;
        };
        let (names, channel) = (&rabbit.names, &rabbit.channel);
        let seen = Seen::default();
        // Fails the first message's every attempt, then succeeds.
        let failing = usize::try_from(MAX_RETRIES + 1).unwrap();
        let running = start(service(&rabbit, &seen, Some(failing), Duration::ZERO)).await;
        let dlq = dead_letter_queue(&names.queue());
        let message_id = format!("{}-order-5", names.service);
        running
            .publisher
            .publish_with(
                &OrderPlaced { id: 5 },
                PublishOptions {
                    message_id: Some(message_id.clone()),
                    ..PublishOptions::default()
                },
            )
            .await
            .unwrap();
        let mut dead = DeadLetterQueue::connect(&amqp_url(), &dlq).await.unwrap();
        eventually("the dead letter", || async {
            dead.count().await.unwrap() == 1
        })
        .await;
        assert_eq!(seen.calls(), failing);
        assert_eq!(seen.handled(), 0);

        // The route survived the retry hops (through the default exchange).
        assert_eq!(
            head_header(channel, &dlq, ORIGINAL_EXCHANGE_HEADER).await,
            Some(names.exchange.clone())
        );
        assert_eq!(
            head_header(channel, &dlq, ORIGINAL_ROUTING_KEY_HEADER).await,
            Some("order_placed".to_owned())
        );

        // A second dead letter, from before the route was recorded.
        channel
            .basic_publish(
                "".into(),
                dlq.as_str().into(),
                BasicPublishOptions::default(),
                br#"{"id":6}"#,
                BasicProperties::default().with_message_id("no-route".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        eventually("two dead letters", || async {
            dead.count().await.unwrap() == 2
        })
        .await;

        let letters = dead.peek(10).await.unwrap();
        assert_eq!(letters.len(), 2, "{letters:?}");
        let letter = &letters[0];
        assert_eq!(letter.message_id, message_id);
        assert_eq!(letter.message_type, "OrderPlaced");
        assert!(letter.reason.contains("database is down"), "{letter:?}");
        assert_eq!(letter.attempts, MAX_RETRIES + 1);
        assert_eq!(
            letter.original,
            Some(Route {
                exchange: names.exchange.clone(),
                routing_key: "order_placed".into(),
            })
        );
        assert_eq!(letter.body_size, br#"{"id":5}"#.len());
        assert_eq!(letters[1].message_id, "no-route");
        assert_eq!(letters[1].original, None);
        // (Not `count`: RabbitMQ may answer it before the requeues.)
        assert_eq!(
            dead.peek(10).await.unwrap(),
            letters,
            "peek takes nothing, and the order stays"
        );

        // A queue beside the service's shows the replay as it is on the wire.
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

        let replayed = dead.replay_ids(&[message_id.as_str()]).await.unwrap();
        assert_eq!(replayed, letters[..1]);
        eventually("the replay handled", || async { seen.handled() == 1 }).await;
        assert_eq!(*seen.ids.lock().unwrap(), [5]);
        assert_eq!(
            dead.peek(10).await.unwrap(),
            letters[1..],
            "only the other one left"
        );
        let wire = get(channel, &wire_queue).await.expect("the replay");
        assert!(get(channel, &wire_queue).await.is_none(), "replayed once");
        let headers = wire.delivery.properties.headers().clone().unwrap();
        for key in [
            ATTEMPT_HEADER,
            ATTEMPTS_HEADER,
            DEATH_REASON_HEADER,
            ORIGINAL_EXCHANGE_HEADER,
            ORIGINAL_ROUTING_KEY_HEADER,
            "x-death",
        ] {
            assert!(!headers.inner().contains_key(key), "{key} replayed");
        }
        assert!(header_text(&headers, "message_context").is_some());
        assert_eq!(
            wire.delivery
                .properties
                .message_id()
                .as_ref()
                .map(lapin::types::ShortString::as_str),
            Some(message_id.as_str())
        );

        // Without a recorded route: an error naming queue and message, and
        // the message stays.
        let error = dead.replay_ids(&["no-route"]).await.unwrap_err();
        assert!(
            matches!(&error, DeadLetterError::Replay { message_id, replayed: 0, .. } if message_id == "no-route"),
            "{error}"
        );
        let text = error.to_string();
        assert!(text.contains(&dlq) && text.contains("`no-route`"), "{text}");
        assert_eq!(dead.peek(10).await.unwrap(), letters[1..], "it stays");

        running.stop().await;
        assert_eq!(seen.calls(), failing + 1, "the replay handled once");
        dead.close().await;
        rabbit.clean().await;
    }
}
