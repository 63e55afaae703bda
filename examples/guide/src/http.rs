//! The chapter "HTTP" (`docs/src/http.md`).

pub mod auth;
pub mod client;
pub mod handlers;
pub mod hooks;
pub mod validation;

#[cfg(test)]
pub mod fuzz;

// ANCHOR: minimal
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_core::{BoxError, Error, Service};
use mamey_http::utoipa::{self, ToSchema};
use mamey_http::{Endpoints, WebApi};
use mamey_observability::Observability;
use serde::{Deserialize, Serialize};

/// An order, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderDto {
    id: u64,
    customer: String,
    items: u32,
}

/// One order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GetOrder {
    id: u64,
}
impl Query for GetOrder {
    type Output = Option<OrderDto>; // None → 404
}

/// Create an order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrder {
    id: u64,
    customer: String,
    items: u32,
}
impl Command for CreateOrder {
    fn validate(&self) -> Result<(), Error> {
        if self.items == 0 {
            return Err(
                Error::invalid_input("order.invalid", "the order is invalid").with_field(
                    "items",
                    "range",
                    "at least one item",
                ),
            );
        }
        Ok(())
    }
}

/// The orders, in memory: given to the service once, taken by the handlers.
#[derive(Debug, Clone, Default)]
pub struct Orders(Arc<Mutex<HashMap<u64, OrderDto>>>);

impl Orders {
    fn locked(&self) -> MutexGuard<'_, HashMap<u64, OrderDto>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<OrderDto>, Error> {
    Ok(orders.locked().get(&q.id).cloned())
}

async fn create_order(c: CreateOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    let mut orders = orders.locked();
    if orders.contains_key(&c.id) {
        return Err(Error::conflict("order.exists", "the order exists"));
    }
    orders.insert(
        c.id,
        OrderDto {
            id: c.id,
            customer: c.customer,
            items: c.items,
        },
    );
    Ok(())
}

fn handlers(d: &mut DispatcherBuilder) {
    d.query(get_order).command(create_order);
}

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    let endpoints = Endpoints::new()
        .get::<GetOrder>("/orders/{id}")
        .summary("One order")
        .post::<CreateOrder>("/orders")
        .created(|order| format!("/orders/{}", order.id));

    Service::builder("orders")
        .version(env!("CARGO_PKG_VERSION"))
        .resource(Orders::default())
        .plugin(Observability::new())
        .plugin(WebApi::new().endpoints(endpoints))
        .handlers(handlers)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
// ANCHOR_END: minimal
