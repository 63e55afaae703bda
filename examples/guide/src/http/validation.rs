//! garde rules, mirrored in the OpenAPI document.

use mamey_core::Error;
use mamey_http::utoipa::{self, ToSchema};
use serde::Deserialize;

// ANCHOR: garde
/// Place an order.
#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
pub struct PlaceOrder {
    #[garde(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    quantity: u32,
    #[garde(length(chars, min = 1, max = 64))]
    #[schema(min_length = 1, max_length = 64)]
    customer: String,
}
// ANCHOR_END: garde

impl mamey_core::cqrs::Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use mamey_core::cqrs::Command;

    use super::PlaceOrder;

    #[test]
    fn garde_rules_apply() {
        let order = PlaceOrder {
            quantity: 0,
            customer: "ada".into(),
        };
        let Err(error) = order.validate() else {
            panic!("a quantity of 0 was accepted");
        };
        assert_eq!(error.kind(), mamey_core::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("quantity"), "{error}");
    }
}
