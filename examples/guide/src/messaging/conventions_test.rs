//! Convey's naming conventions, checked.

use mamey_messaging::Conventions;

use super::message_trait::DeliveryStarted;

// ANCHOR: conventions
#[test]
fn convey_names() {
    let conventions = Conventions::new("conveyor.services.orders");
    assert_eq!(
        conventions.route::<DeliveryStarted>().exchange,
        "deliveries"
    );
    assert_eq!(
        conventions.route::<DeliveryStarted>().routing_key,
        "delivery_started"
    );
    assert_eq!(
        conventions.queue::<DeliveryStarted>(),
        "conveyor.services.orders/deliveries.delivery_started"
    );
}
// ANCHOR_END: conventions
