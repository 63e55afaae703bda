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

use mamey_core::cqrs::Res;
use mamey_core::{BoxError, Error, Service};
use mamey_messaging::Messaging;
use messaging_rabbitmq::{OrderPlaced, init_logging};

/// The stock service the handler depends on: every third call fails.
#[derive(Clone, Default)]
struct Stock {
    calls: Arc<AtomicU64>,
}

impl Stock {
    fn reserve(&self) -> Result<(), Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
            return Err(Error::unavailable(
                "stock.down",
                "stock service unavailable",
            ));
        }
        Ok(())
    }
}

/// Orders handled so far.
#[derive(Clone, Default)]
struct Handled(Arc<AtomicU64>);

async fn handle_order(
    order: OrderPlaced,
    Res(stock): Res<Stock>,
    Res(Handled(handled)): Res<Handled>,
) -> Result<(), Error> {
    if order.quantity <= 0 {
        return Err(Error::invalid_input(
            "order.quantity",
            "quantity must be positive",
        ));
    }
    stock.reserve()?; // an error here is retried later
    handled.fetch_add(1, Ordering::SeqCst);
    tracing::info!(order = order.id, "order handled");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_logging();
    let handled = Handled::default();
    Service::builder("consumer")
        .resource(Stock::default())
        .resource(handled.clone())
        .plugin(Messaging::rabbitmq().subscribe_event::<OrderPlaced>())
        .handlers(|d| {
            d.event(handle_order);
        })
        .build()
        .await?
        .run()
        .await?;
    println!("handled {} orders", handled.0.load(Ordering::SeqCst));
    Ok(())
}
