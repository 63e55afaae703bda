//! Messages on the wire: the [`Message`] contract and the envelope brokers
//! carry.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A command or event that travels through a broker.
///
/// The namespace is declared once, on the type: it names the exchange
/// (Convey's topic exchange per namespace). The name defaults to the type's
/// name; its `snake_case` form is the routing key.
///
/// Declare message types with the [`message`](macro@crate::message)
/// attribute, which also gives them Convey's camelCase field names. A
/// hand-written implementation, as below, keeps the field names serde's
/// derive gives (Rust's `snake_case`):
///
/// ```
/// use mamey_messaging::Message;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderCreated { id: u64 }
///
/// impl Message for OrderCreated {
///     const NAMESPACE: &'static str = "orders";
/// }
///
/// assert_eq!(OrderCreated::name(), "OrderCreated");
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The namespace, e.g. `"orders"`: the exchange this type is published to.
    const NAMESPACE: &'static str;

    /// The message's name, e.g. `"OrderCreated"` (routing key
    /// `order_created`). Default: the type's name without its module path.
    fn name() -> &'static str {
        let full = std::any::type_name::<Self>();
        let end = full.find('<').unwrap_or(full.len());
        let start = full[..end].rfind("::").map_or(0, |i| i + 2);
        &full[start..end]
    }
}

/// Where a message goes: exchange and routing key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The exchange (a topic exchange per namespace, by convention).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
}

/// Broker-level properties of a message (AMQP basic properties and headers).
#[derive(Debug, Clone, PartialEq)]
pub struct Properties {
    /// Unique id; consumers de-duplicate by it.
    pub message_id: String,
    /// Correlation id of the whole conversation.
    pub correlation_id: String,
    /// The message's type name (`type` property).
    pub message_type: String,
    /// When it was published.
    pub timestamp: SystemTime,
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: String,
    /// Survive a broker restart (AMQP delivery mode 2). Default: `true`.
    pub persistent: bool,
    /// Headers: `message_context` (JSON), `traceparent`, and any custom ones.
    pub headers: BTreeMap<String, String>,
}

/// A message ready for a broker: route, properties and encoded body.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// Where it goes.
    pub route: Route,
    /// Its properties.
    pub properties: Properties,
    /// The encoded body.
    pub body: Bytes,
}

/// A message a broker delivered to a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The route it was published with.
    pub route: Route,
    /// Its properties as published.
    pub properties: Properties,
    /// The encoded body.
    pub body: Bytes,
    /// 1 for the first delivery, 2 for the first retry, …
    pub attempt: u32,
}

/// A message that will not be delivered again, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The message as last delivered.
    pub delivery: Delivery,
    /// The queue it was consumed from.
    pub queue: String,
    /// Why it was dead-lettered: the decode error or the handler's last error.
    pub reason: String,
}

/// Header carrying the serialized [`MessageContext`](mamey_core::MessageContext).
pub const MESSAGE_CONTEXT_HEADER: &str = "message_context";
