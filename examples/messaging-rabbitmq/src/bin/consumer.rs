//! Consumes `OrderPlaced` from RabbitMQ. Every third attempt fails as if a
//! dependency were down (retried through `…retry.{n}` queues); orders with a
//! quantity of zero or less are invalid and go to `….dlq` at once. Runs until
//! Ctrl-C / SIGTERM, then prints how many orders it handled.
//!
//! ```text
//! cargo run -p messaging-rabbitmq --bin consumer
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mamey_core::{BoxError, Error, Service};
use mamey_messaging::Messaging;
use messaging_rabbitmq::{OrderPlaced, init_logging};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_logging();
    let (handled, calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counter = Arc::clone(&handled);
    Service::builder("consumer")
        .plugin(Messaging::rabbitmq().subscribe_event::<OrderPlaced>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_event(move |order: OrderPlaced| {
                let (handled, calls) = (Arc::clone(&counter), Arc::clone(&calls));
                async move {
                    if order.quantity <= 0 {
                        return Err(Error::invalid_input(
                            "order.quantity",
                            "quantity must be positive",
                        ));
                    }
                    if calls.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                        return Err(Error::unavailable(
                            "stock.down",
                            "stock service unavailable",
                        ));
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(order = order.id, "order handled");
                    Ok(())
                }
            });
            Ok(())
        })
        .build()
        .await?
        .run()
        .await?;
    println!("handled {} orders", handled.load(Ordering::SeqCst));
    Ok(())
}
