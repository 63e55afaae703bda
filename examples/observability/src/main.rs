//! Emits logs, spans and metrics: a timer places an order every 200 ms;
//! the order handler logs, runs inside a span, and counts orders by status.
//! See README.md beside this file for how to look at each signal.

use std::time::Duration;

use mamey_core::cqrs::{Command, Dispatcher};
use mamey_core::{BoxError, Error, InitContext, MessageContext, Plugin, Service, StartContext};
use mamey_observability::Observability;

/// Command: place an order.
struct PlaceOrder {
    number: u64,
}

impl Command for PlaceOrder {}

/// The order handler: logs inside the dispatcher's `handle` span and
/// counts orders by status.
async fn place_order(order: PlaceOrder) -> Result<(), Error> {
    // Every tenth order is rejected, so error metrics show up too.
    if order.number % 10 == 9 {
        metrics::counter!("orders_total", "status" => "rejected").increment(1);
        return Err(Error::conflict("order.out_of_stock", "out of stock"));
    }
    tokio::time::sleep(Duration::from_millis(2)).await; // the "database"
    metrics::counter!("orders_total", "status" => "placed").increment(1);
    tracing::info!(order = order.number, "order placed");
    Ok(())
}

/// Places orders on a timer, like traffic arriving.
struct Shop;

impl Plugin for Shop {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        ctx.dispatcher().command(place_order);
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let dispatcher: Dispatcher = ctx.dispatcher().clone();
        let stop = ctx.shutdown_token();
        ctx.spawn("traffic", async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            for number in 0.. {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let request = MessageContext::new();
                // The dispatcher logs rejections itself.
                let _ = request.scope(dispatcher.send(PlaceOrder { number })).await;
            }
            Ok(())
        });
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config_dir = std::env::var_os("MAMEY_CONFIG_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        Into::into,
    );
    Service::builder("shop")
        .version(env!("CARGO_PKG_VERSION"))
        .config_dir(config_dir)
        .plugin(Observability::new()) // first: observes everything after it
        .plugin(Shop)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
