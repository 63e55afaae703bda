//! The `Message` trait, implemented by hand.

// ANCHOR: message_trait
use mamey_messaging::Message;
use serde::{Deserialize, Serialize};

/// A delivery has started; what `#[message(namespace = "deliveries")]`
/// would implement, written out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStarted {
    delivery_id: u64,
}

impl Message for DeliveryStarted {
    /// The namespace: the exchange this type is published to.
    const NAMESPACE: &'static str = "deliveries";

    /// The AMQP `type` property and, in `snake_case`, the routing key.
    /// Default: the type's name without its module path or generic
    /// arguments, as here.
    fn name() -> &'static str {
        "DeliveryStarted"
    }
}
// ANCHOR_END: message_trait
