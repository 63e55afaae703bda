//! Two services, `orders` and `shipping`, in one process, talking through a
//! shared [`MemoryBroker`]: orders publishes `OrderPlaced`; shipping ships it
//! (its courier API fails now and then, so retries show) and publishes
//! `OrderShipped`, which orders records. An order for a negative quantity is
//! invalid and goes to the dead-letter list.
//!
//! ```text
//! cargo run -p messaging-inprocess              # until Ctrl-C
//! cargo run -p messaging-inprocess -- --orders 10   # place 10 orders, report, exit
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mamey_core::cqrs::Res;
use mamey_core::{BoxError, Error, MessageContext, Service};
use mamey_messaging::{MemoryBroker, Messaging, Publisher, message};

/// Published by orders.
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
struct OrderPlaced {
    id: u64,
    quantity: i32,
}

/// Published by shipping.
#[message(namespace = "shipping", event)]
#[derive(Debug, Clone)]
struct OrderShipped {
    id: u64,
}

/// Retry quickly in the example (default is 1 s, 2 s, 4 s).
const FAST_RETRIES: [(&str, &str); 1] = [("MAMEY__MESSAGING__RETRY__INITIAL_DELAY", "100ms")];

/// Shipping's courier API: every third call fails, so retries show.
#[derive(Clone, Default)]
struct Courier {
    calls: Arc<AtomicU64>,
}

impl Courier {
    fn ship(&self, order: u64) -> Result<(), Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
            return Err(Error::unavailable(
                "courier.down",
                "courier API unavailable",
            ));
        }
        tracing::info!(order, "shipped");
        Ok(())
    }
}

/// Orders shipped, as orders has heard.
#[derive(Clone, Default)]
struct Shipped(Arc<AtomicU64>);

async fn ship_order(
    order: OrderPlaced,
    Res(courier): Res<Courier>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    if order.quantity <= 0 {
        return Err(Error::invalid_input(
            "order.quantity",
            "quantity must be positive",
        ));
    }
    courier.ship(order.id)?; // an error here is retried later
    events.publish(&OrderShipped { id: order.id }).await?;
    Ok(())
}

async fn record_shipment(
    event: OrderShipped,
    Res(Shipped(shipped)): Res<Shipped>,
    ctx: MessageContext,
) -> Result<(), Error> {
    tracing::info!(order = event.id, correlation = %ctx.correlation_id, "order shipped");
    shipped.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn shipping(broker: &MemoryBroker) -> Result<Service, BoxError> {
    Ok(Service::builder("shipping")
        .handle_signals(false)
        .env_vars(FAST_RETRIES)
        .resource(Courier::default())
        .plugin(Messaging::new(broker.clone()).subscribe_event::<OrderPlaced>())
        .handlers(|d| {
            d.event(ship_order);
        })
        .build()
        .await?)
}

async fn orders(broker: &MemoryBroker, shipped: Shipped) -> Result<Service, BoxError> {
    Ok(Service::builder("orders")
        .handle_signals(false)
        .env_vars(FAST_RETRIES)
        .resource(shipped)
        .plugin(Messaging::new(broker.clone()).subscribe_event::<OrderShipped>())
        .handlers(|d| {
            d.event(record_shipment);
        })
        .build()
        .await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let count: Option<u64> = std::env::args()
        .skip_while(|a| a != "--orders")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?;

    let broker = MemoryBroker::new();
    let shipped = Shipped::default();
    let shipping = shipping(&broker).await?;
    let orders = orders(&broker, shipped.clone()).await?;
    let publisher = orders.resources().get::<Publisher>()?;
    let (stop_orders, stop_shipping) = (orders.shutdown_handle(), shipping.shutdown_handle());
    let running = tokio::spawn(async move { tokio::try_join!(shipping.run(), orders.run()) });

    // Wait for both to subscribe before placing orders.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut placed = 0_u64;
    let mut invalid = 0_u64;
    loop {
        if count.is_some_and(|n| placed >= n) {
            break;
        }
        placed += 1;
        // Every fifth order is invalid: it will be dead-lettered.
        let quantity = if placed.is_multiple_of(5) { -1 } else { 1 };
        invalid += u64::from(quantity < 0);
        let request = MessageContext::new().with_correlation_id(format!("request-{placed}"));
        request
            .scope(publisher.publish(&OrderPlaced {
                id: placed,
                quantity,
            }))
            .await?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Let retries finish, then report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shipped.0.load(Ordering::SeqCst) + invalid < placed
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = broker.dead_letters();
    println!(
        "placed {placed}, shipped {}, dead-lettered {}",
        shipped.0.load(Ordering::SeqCst),
        dead.len()
    );
    for letter in &dead {
        println!(
            "dead letter {}: {}",
            letter.delivery.properties.message_id, letter.reason
        );
    }
    stop_orders.shutdown();
    stop_shipping.shutdown();
    running.await??;
    Ok(())
}
