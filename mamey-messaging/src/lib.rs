//! Broker-neutral messaging for mamey services: publish commands and events,
//! receive them in the core dispatcher's handlers, with Convey-compatible
//! naming, retries with backoff and dead-lettering.
//!
//! - [`macro@message`] declares a message type: its namespace, and Convey's
//!   camelCase field names on the wire; [`Conventions`] turns the namespace
//!   into exchange, routing key and queue names the way Convey does.
//! - [`Publisher`] (a resource of the [`Messaging`] plug-in) publishes with
//!   message id, correlation and causation ids, the `message_context` header
//!   and the W3C `traceparent`.
//! - [`Messaging::subscribe_event`] and [`Messaging::subscribe_command`]
//!   consume from the service's queues and dispatch to the handlers
//!   registered on the core dispatcher, so the dispatcher's middleware
//!   applies.
//! - [`Broker`] is the backend contract: [`MemoryBroker`] is the in-process
//!   default; [`rabbitmq::RabbitMqBroker`] (feature `rabbitmq`) talks to
//!   RabbitMQ.
//!
//! - [`OutboxStore`] and [`InboxStore`] with the [`OutboxRelay`]: publish in
//!   the same transaction as the state change, apply each message once.
//!
//! Delivery is at-least-once: a handler that fails with a retryable error
//! gets the message again after the retry delay; one that cannot succeed
//! (undecodable body, invalid input, retries exhausted) goes to the
//! dead-letter queue with the reason.

#![forbid(unsafe_code)]

mod broker;
mod conventions;
#[cfg(feature = "rabbitmq")]
mod dead_letters;
mod memory;
mod message;
mod outbox;
mod plugin;
mod publisher;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod unit_of_work;

pub use broker::{
    Broker, DeliveryHandler, Disposition, Failure, PublishError, RetryPolicy, SubscribeError,
    Subscription, topic_matches,
};
pub use conventions::{Conventions, ConventionsConfig, snake_case};
pub use memory::MemoryBroker;
pub use message::{
    DeadLetter, Delivery, MESSAGE_CONTEXT_HEADER, Message, OutgoingMessage, Properties, Route,
};
pub use outbox::{
    InboxStore, MemoryInbox, MemoryOutbox, OutboxEntry, OutboxRelay, OutboxStore, RelayConfig,
    RelayRound, StoreError,
};
pub use plugin::{Messaging, MessagingConfig};

/// Declares a message type: derives `Serialize` and `Deserialize` with
/// Convey's camelCase field names (`order_id` is `"orderId"` on the wire),
/// and implements [`Message`] with its namespace — plus core's `Command` or
/// `Event` when asked. Unknown fields in incoming messages are ignored.
///
/// ```
/// use mamey_messaging::{Message, message};
///
/// #[message(namespace = "orders", event)]
/// #[derive(Debug, Clone, PartialEq)]
/// struct OrderPlaced {
///     order_id: u64,
///     customer_name: String,
/// }
///
/// let json = serde_json::to_string(&OrderPlaced { order_id: 7, customer_name: "ada".into() })?;
/// assert_eq!(json, r#"{"orderId":7,"customerName":"ada"}"#);
/// // What a Convey service publishes, extra fields and all:
/// let from_convey: OrderPlaced =
///     serde_json::from_str(r#"{"orderId":7,"customerName":"ada","placedAt":"2026-12-04T10:00:00Z"}"#)?;
/// assert_eq!(from_convey.order_id, 7);
/// assert_eq!(OrderPlaced::NAMESPACE, "orders");
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// Options: `namespace = "..."` (required); `command` or `event`;
/// `casing = "snake_case"` to keep Rust's field names, for systems of mamey
/// services only. Field attributes of serde (`#[serde(rename = "...")]`,
/// `#[serde(default)]`) work as with a plain derive.
pub use mamey_macros::message;

/// What the [`macro@message`] macro's expansion names; not an API.
#[doc(hidden)]
pub mod __private {
    pub use mamey_core;
    pub use serde;
}
pub use publisher::{Codec, Json, PublishOptions, Publisher, context_of};
