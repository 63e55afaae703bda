//! Publishes `--orders N` (default 10) `OrderPlaced` events to RabbitMQ and
//! exits; every fifth is invalid. Start the consumer first: publishing is
//! mandatory, so with no queue bound the publish fails (and says so).
//!
//! ```text
//! cargo run -p messaging-rabbitmq --bin publisher -- --orders 10
//! ```

use mamey_core::{BoxError, MessageContext, Service};
use mamey_messaging::{Messaging, Publisher};
use messaging_rabbitmq::{OrderPlaced, init_logging};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_logging();
    let count: u64 = std::env::args()
        .skip_while(|a| a != "--orders")
        .nth(1)
        .map_or(Ok(10), |n| n.parse())?;
    let service = Service::builder("publisher")
        .plugin(Messaging::rabbitmq())
        .build()
        .await?;
    let publisher = service.resources().get::<Publisher>()?;
    for id in 1..=count {
        let quantity = if id.is_multiple_of(5) { 0 } else { 2 };
        MessageContext::new()
            .with_correlation_id(format!("checkout-{id}"))
            .scope(publisher.publish(&OrderPlaced { id, quantity }))
            .await?;
        tracing::info!(order = id, quantity, "published");
    }
    service.shutdown_handle().shutdown();
    service.run().await?;
    println!("published {count} orders");
    Ok(())
}
