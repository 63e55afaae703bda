//! Broker-neutral messaging for mamey services: publish commands and events,
//! receive them in the core dispatcher's handlers, with Convey-compatible
//! naming, retries with backoff and dead-lettering.
//!
//! - [`Message`] declares a type's namespace once; [`Conventions`] turns it
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
mod memory;
mod message;
mod outbox;
mod plugin;
mod publisher;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

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
pub use publisher::{Codec, Json, PublishOptions, Publisher, context_of};
