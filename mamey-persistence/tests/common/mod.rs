//! What the store tests share: the message they stage, a subscriber that
//! records deliveries, a publisher, and polling with a deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use mamey_core::cqrs::Event;
use mamey_messaging::{
    Broker, Delivery, MemoryBroker, Message, Publisher, RetryPolicy, Route, Subscription,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paid {
    pub invoice: u32,
}

impl Message for Paid {
    const NAMESPACE: &'static str = "payments";
}

impl Event for Paid {}

pub async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records the ids of `Paid` messages published on `broker`.
pub async fn record_deliveries(broker: &MemoryBroker) -> Arc<Mutex<Vec<String>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    broker
        .subscribe(Subscription {
            queue: "recorder/payments.paid".into(),
            binding: Route {
                exchange: "payments".into(),
                routing_key: "paid".into(),
            },
            message: "Paid",
            handler: Arc::new(move |delivery: Delivery| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(delivery.properties.message_id);
                    Ok(())
                }
                .boxed()
            }),
            retry: RetryPolicy::default(),
            concurrency: 4,
            handler_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
    received
}

pub fn publisher(broker: &MemoryBroker) -> Publisher {
    Publisher::new(
        Arc::new(broker.clone()),
        Arc::new(mamey_messaging::Conventions::new("billing")),
    )
}
