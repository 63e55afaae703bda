//! Service lifecycle: plug-ins, running, background tasks, signals,
//! several services in one process.

use std::path::PathBuf;
use std::time::Duration;

use mamey_core::config::Config;
use mamey_core::config::figment::value::Dict;
use mamey_core::cqrs::Event;
use mamey_core::{
    BoxError, InServiceScope, InitContext, Plugin, Requirement, Service, ServiceGroup,
    ServiceScope, StartContext,
};

use super::resources::{Orders, Storage};

// ANCHOR: lifecycle
/// The program.
#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    Service::builder("orders") // the default `app.name`
        .version(env!("CARGO_PKG_VERSION")) // the default `app.version`
        .plugin(Storage) // init and start first, stop last
        .plugin(Orders) // init and start last, stop first
        .build() // load config, init every plug-in
        .await?
        .run() // start, wait, stop
        .await?;
    Ok(())
}
// ANCHOR_END: lifecycle

/// A spool directory that a plug-in owns.
#[derive(Debug, Clone)]
pub struct Spool(pub PathBuf);

// ANCHOR: plugin
/// A plug-in that overrides every method of `Plugin`; only `init` has no
/// default.
#[derive(Debug, Default)]
pub struct Audit {
    spool: Option<Spool>,
}

impl Plugin for Audit {
    // Default: the type's name without its module path ("Audit").
    fn name(&self) -> &'static str {
        "audit"
    }

    // Checked before `init`. Default: nothing.
    fn requires(&self) -> Vec<Requirement> {
        vec![Requirement::of::<Spool>().hint("add `SpoolDir` before `Audit`")]
    }

    // Configuration laid over files and environment before any `init`.
    // Default: none.
    async fn config_overlay(&mut self, _base: &Config) -> Result<Option<Dict>, BoxError> {
        Ok(None)
    }

    // The only method without a default.
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        self.spool = Some(ctx.resource::<Spool>()?);
        Ok(())
    }

    // Default: Ok(()).
    async fn start(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }

    // Default: Ok(()).
    async fn ready(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }

    // Default: Ok(()).
    async fn drain(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    // Default: Ok(()).
    async fn stop(&mut self) -> Result<(), BoxError> {
        self.spool = None;
        Ok(())
    }
}
// ANCHOR_END: plugin

// ANCHOR: start
/// Runs `service` in the background while the caller works with it.
pub async fn in_the_background(service: Service) -> Result<(), BoxError> {
    let running = service.start().await?; // every plug-in started and ready
    // ... send requests, publish messages ...
    running.stop().await?; // stopped in reverse order
    Ok(())
}
// ANCHOR_END: start

// ANCHOR: background
/// Published every ten seconds.
#[derive(Debug, Clone)]
pub struct Tick;
impl Event for Tick {}

/// Publishes `Tick` until its plug-in stops.
#[derive(Debug)]
pub struct Heartbeat;

impl Plugin for Heartbeat {
    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let token = ctx.shutdown_token();
        let dispatcher = ctx.dispatcher().clone();
        ctx.spawn("tick", async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    _ = every.tick() => dispatcher.publish(Tick).await?,
                }
            }
        });
        Ok(())
    }
}
// ANCHOR_END: background

/// The orders service's own plug-in.
#[derive(Debug)]
pub struct OrdersPlugin;

impl Plugin for OrdersPlugin {
    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The payments service's own plug-in.
#[derive(Debug)]
pub struct PaymentsPlugin;

impl Plugin for PaymentsPlugin {
    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

// ANCHOR: two_services
/// Two services in one process, each configured from a directory of its own.
pub async fn two_services() -> Result<(Service, Service), BoxError> {
    let orders = Service::builder("orders")
        .config_dir("config/orders")
        .plugin(OrdersPlugin)
        .build()
        .await?;
    let payments = Service::builder("payments")
        .config_dir("config/payments")
        .plugin(PaymentsPlugin)
        .build()
        .await?;
    Ok((orders, payments))
}
// ANCHOR_END: two_services

// ANCHOR: group
/// Runs both as one.
pub async fn run_together(orders: Service, payments: Service) -> Result<(), BoxError> {
    ServiceGroup::new()
        .service(payments) // called by orders: starts first, stops last
        .service(orders)
        .run() // until Ctrl-C or SIGTERM; a second one ends the process
        .await?;
    Ok(())
}
// ANCHOR_END: group

/// Refreshes a price list.
pub async fn refresh_prices() {}

// ANCHOR: scope
/// Carries the current service's scope to work it starts, and runs work in
/// the scope of `other`.
pub async fn scopes(ctx: &StartContext, other: &Service) {
    tokio::spawn(async move { refresh_prices().await }.in_current_service());

    // Reading it, and running work in a given scope:
    let name = ServiceScope::current().map(|s| s.name().to_owned());
    let scope = ctx.scope().clone(); // InitContext / StartContext / Service::scope
    std::thread::spawn(move || scope.sync_scope(|| tracing::info!(?name, "on a thread")));
    refresh_prices().in_service(other.scope().clone()).await;
}
// ANCHOR_END: scope
