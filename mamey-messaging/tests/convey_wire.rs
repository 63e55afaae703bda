//! Wire compatibility with Convey services, against a real RabbitMQ: raw
//! lapin plays a Convey service (Pacco's shapes: camelCase body,
//! `message_context` header, 32-hex message id, Unix-seconds timestamp, no
//! `correlation_id` property), publishing to a mamey subscriber and
//! consuming what mamey publishes while handling it.
#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rabbitmq_common;
mod suite;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use mamey_core::cqrs::Res;
use mamey_core::{Error, Identity, MessageContext, Service};
use mamey_messaging::rabbitmq::header_text;
use mamey_messaging::{Messaging, Publisher, message};
use rabbitmq_common::Rabbit;
use suite::{Backend, eventually, start};

/// Declared the documented way: Convey's camelCase on the wire.
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
struct OrderPlaced {
    order_id: u64,
    customer_name: String,
}

#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
struct OrderApproved {
    order_id: u64,
    approved_by: String,
}

type Handled = Arc<Mutex<Vec<(OrderPlaced, MessageContext)>>>;

async fn approve(
    event: OrderPlaced,
    context: MessageContext,
    Res(publisher): Res<Publisher>,
    Res(handled): Res<Handled>,
) -> Result<(), Error> {
    let approved_by = context
        .identity
        .as_ref()
        .map(|identity| identity.subject.clone())
        .unwrap_or_default();
    handled.lock().unwrap().push((event.clone(), context));
    publisher
        .publish(&OrderApproved {
            order_id: event.order_id,
            approved_by,
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))
}

/// What a Pacco service puts in `message_context`.
const PACCO_CONTEXT: &str = r#"{
  "correlationId": "8f1e0b5c2d3a4e6f9a7b1c2d3e4f5a6b",
  "spanContext": "",
  "retries": 0,
  "user": {"id": "5f3a3b2c", "isAuthenticated": true, "role": "admin", "claims": {"permissions": "orders"}},
  "resourceId": "c0ffee00c0ffee00c0ffee00c0ffee00",
  "traceId": "0HMVD2S2L3F6K:00000001",
  "connectionId": "0HMVD2S2L3F6K",
  "name": "approve_order",
  "createdAt": "2026-12-04T10:00:00Z"
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convey_message_reaches_a_mamey_handler_and_the_reply_reads_as_convey() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let names = &rabbit.names;
    let handled = Handled::default();
    let mut vars = suite::vars(&rabbit);
    // Only what Convey reads: the context header and the properties.
    vars.push((
        "MAMEY__MESSAGING__CONVENTIONS__ID_HEADERS".into(),
        "false".into(),
    ));
    let running = start(
        Service::builder(rabbit.service_name())
            .handle_signals(false)
            .config_dir("/nonexistent-mamey-config")
            .env_vars(vars)
            .resource(Arc::clone(&handled))
            .plugin(Messaging::rabbitmq().subscribe_event::<OrderPlaced>())
            .handlers(|d| {
                d.event(approve);
            }),
    )
    .await;

    // The Convey side listens for the reply, as its subscriber would (the
    // exchange is declared by the subscription).
    let channel = &rabbit.channel;
    let reply_queue = format!("{}.raw", names.queue());
    channel
        .queue_declare(
            reply_queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            reply_queue.as_str().into(),
            names.exchange.as_str().into(),
            "order_approved".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // A Convey publish: camelCase body, 32-hex id, no correlation_id.
    let message_id = "3f2504e04f8911d39a0c0305e82c3301";
    let sent_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut headers = FieldTable::default();
    headers.insert(
        "message_context".into(),
        AMQPValue::LongString(PACCO_CONTEXT.into()),
    );
    channel
        .basic_publish(
            names.exchange.as_str().into(),
            "order_placed".into(),
            BasicPublishOptions::default(),
            br#"{"orderId":7,"customerName":"ada","placedAt":"2026-12-04T10:00:00Z"}"#,
            BasicProperties::default()
                .with_message_id(message_id.into())
                .with_timestamp(sent_at)
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    eventually("the handler ran", || async {
        !handled.lock().unwrap().is_empty()
    })
    .await;
    let (event, context) = handled.lock().unwrap()[0].clone();
    assert_eq!(event.order_id, 7);
    assert_eq!(event.customer_name, "ada");
    assert_eq!(context.message_id, message_id);
    assert_eq!(context.correlation_id, "8f1e0b5c2d3a4e6f9a7b1c2d3e4f5a6b");
    assert_eq!(
        context.identity,
        Some(
            Identity::new("5f3a3b2c")
                .with_role("admin")
                .with_claim("permissions", "orders")
        )
    );
    assert_eq!(
        context.passthrough["resourceId"],
        "c0ffee00c0ffee00c0ffee00c0ffee00"
    );

    // The reply, read as a Convey subscriber reads it.
    let mut consumer = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "convey".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a reply within 30 s")
        .unwrap()
        .unwrap();
    reply.ack(BasicAckOptions::default()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.data).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"orderId": 7, "approvedBy": "5f3a3b2c"})
    );
    let p = &reply.properties;
    assert_eq!(
        p.correlation_id()
            .as_ref()
            .map(lapin::types::ShortString::as_str),
        Some("8f1e0b5c2d3a4e6f9a7b1c2d3e4f5a6b")
    );
    assert!(
        p.message_id()
            .as_ref()
            .is_some_and(|id| !id.as_str().is_empty())
    );
    assert_eq!(
        p.kind().as_ref().map(lapin::types::ShortString::as_str),
        Some("OrderApproved")
    );
    assert_eq!(
        p.content_type()
            .as_ref()
            .map(lapin::types::ShortString::as_str),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    // Unix seconds, as Convey's `Timestamp` property.
    assert!(p.timestamp().is_some_and(|t| t.abs_diff(sent_at) < 60));
    let headers = p.headers().clone().unwrap();
    assert_eq!(header_text(&headers, "x-correlation-id"), None);
    assert_eq!(header_text(&headers, "x-causation-id"), None);
    let context: serde_json::Value =
        serde_json::from_str(&header_text(&headers, "message_context").unwrap()).unwrap();
    assert_eq!(context["correlationId"], "8f1e0b5c2d3a4e6f9a7b1c2d3e4f5a6b");
    assert_eq!(context["causationId"], message_id);
    assert_eq!(context["user"]["id"], "5f3a3b2c");
    assert_eq!(context["user"]["isAuthenticated"], true);
    assert_eq!(context["user"]["role"], "admin");
    assert_eq!(context["user"]["claims"]["permissions"], "orders");
    assert_eq!(context["name"], "OrderApproved");
    assert!(context["createdAt"].as_str().unwrap().ends_with('Z'));
    // What mamey does not map is passed on, so the Convey side keeps it.
    assert_eq!(context["resourceId"], "c0ffee00c0ffee00c0ffee00c0ffee00");
    assert_eq!(context["connectionId"], "0HMVD2S2L3F6K");

    running.stop().await;
    rabbit.clean().await;
}
