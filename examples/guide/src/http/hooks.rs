//! Endpoint hooks.

use mamey_core::cqrs::{Command, DispatcherBuilder};
use mamey_http::Auth;
use mamey_http::utoipa::{self, ToSchema};
use mamey_http::{Endpoints, WebApi};
use serde::Deserialize;

// ANCHOR: before
use mamey_core::{Error, MessageContext};

/// Place an order for the caller.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlaceOrder {
    #[serde(default)]
    customer: String, // set from the caller, not the body
    items: u32,
}
impl Command for PlaceOrder {}

/// `POST /orders`, answered `202 Accepted`.
pub fn endpoints() -> Endpoints {
    Endpoints::new()
        .post::<PlaceOrder>("/orders")
        .auth(Auth::Authenticated)
        .before(|order| {
            let caller = MessageContext::current()
                .and_then(|c| c.identity)
                .ok_or_else(|| Error::unauthorized("auth.unauthorized", "no caller"))?;
            order.customer = caller.subject;
            Ok(())
        })
        .accepted()
        .into()
}
// ANCHOR_END: before

async fn place_order(order: PlaceOrder) -> Result<(), Error> {
    tracing::info!(
        customer = order.customer,
        items = order.items,
        "order placed"
    );
    Ok(())
}

/// The web API and its handler.
pub fn web_api(d: &mut DispatcherBuilder) -> WebApi {
    d.command(place_order);
    WebApi::new().endpoints(endpoints())
}
