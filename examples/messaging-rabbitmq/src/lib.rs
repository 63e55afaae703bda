//! The messages the example's two services exchange.

use mamey_messaging::message;

/// Published by `publisher`, consumed by `consumer` from queue
/// `consumer/orders.order_placed` (Convey's naming).
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    /// Order number.
    pub id: u64,
    /// Items ordered; zero or less is invalid and dead-lettered.
    pub quantity: i32,
}

/// Logs to stdout with `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
