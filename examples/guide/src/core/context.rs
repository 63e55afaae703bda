//! The message context.

use mamey_core::cqrs::{Command, DispatcherBuilder, Event};

use super::resources::PlaceOrder;

// ANCHOR: context
use mamey_core::cqrs::Dispatcher;
use mamey_core::{Error, Identity, MessageContext};

/// Places an order as `user-42` of tenant `acme`.
pub async fn place_as_acme(dispatcher: &Dispatcher) -> Result<(), Error> {
    let ctx = MessageContext::new() // root: correlation_id == message_id
        .with_identity(Identity::new("user-42").with_role("admin"))
        .with_header("X-Tenant", "acme"); // stored as "x-tenant"

    ctx.scope(async {
        dispatcher
            .send(PlaceOrder {
                id: 1,
                item: "book".into(),
            })
            .await
    })
    .await
}

// in a handler: `ctx: MessageContext` is an argument
async fn place_order(cmd: PlaceOrder, ctx: MessageContext) -> Result<(), Error> {
    let tenant = ctx.headers.get("x-tenant");
    tracing::info!(order = cmd.id, ?tenant, "order placed");
    Ok(())
}

// in middleware, or any code inside the scope:
/// The tenant of the work being done, if any.
pub fn current_tenant() -> Option<String> {
    MessageContext::with_current(|ctx| ctx.and_then(|c| c.headers.get("x-tenant").cloned()))
}
// ANCHOR_END: context

/// Ship an order.
#[derive(Debug)]
pub struct ShipOrder {
    /// The order.
    pub id: u64,
}
impl Command for ShipOrder {}

/// An order has been shipped.
#[derive(Debug, Clone)]
pub struct OrderShipped {
    /// The order.
    pub id: u64,
}
impl Event for OrderShipped {}

// ANCHOR: spawn
async fn ship_later(
    cmd: ShipOrder,
    ctx: MessageContext,
    Res(dispatcher): Res<Dispatcher>,
) -> Result<(), Error> {
    tokio::spawn(
        ctx.child()
            .scope(async move { dispatcher.publish(OrderShipped { id: cmd.id }).await }),
    );
    Ok(())
}
// ANCHOR_END: spawn

use mamey_core::cqrs::Res;

/// Registers this section's handlers.
pub fn handlers(d: &mut DispatcherBuilder) {
    d.command(place_order).command(ship_later);
}

#[cfg(test)]
mod tests {
    use mamey_core::cqrs::Dispatcher;
    use mamey_core::{BoxError, MessageContext};

    use super::{current_tenant, place_as_acme, place_order};

    #[tokio::test]
    async fn the_context_travels_with_the_work() -> Result<(), BoxError> {
        let dispatcher = Dispatcher::builder().command(place_order).build()?;
        place_as_acme(&dispatcher).await?;

        assert_eq!(current_tenant(), None);
        let tenant = MessageContext::new()
            .with_header("X-Tenant", "acme")
            .scope(async { current_tenant() })
            .await;
        assert_eq!(tenant.as_deref(), Some("acme"));
        Ok(())
    }
}
