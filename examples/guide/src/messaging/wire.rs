//! Message types and their field names on the wire.

// ANCHOR: message
use mamey_messaging::message;

/// An order was placed.
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    order_id: u64,
    customer_name: String,
}
// on the wire: {"orderId":7,"customerName":"ada"}
// ANCHOR_END: message

impl OrderPlaced {
    /// An order of `customer_name`.
    pub fn new(order_id: u64, customer_name: impl Into<String>) -> Self {
        Self {
            order_id,
            customer_name: customer_name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderPlaced;

    #[test]
    fn field_names_are_camel_case() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&OrderPlaced::new(7, "ada"))?;
        assert_eq!(json, r#"{"orderId":7,"customerName":"ada"}"#);
        Ok(())
    }
}
