//! Extractors of your own.

use mamey_core::cqrs::{Command, DispatcherBuilder};
use mamey_persistence::postgres::{PgPool, error};

/// Cancel an order.
#[derive(Debug)]
pub struct CancelOrder {
    /// The order.
    pub id: i64,
}
impl Command for CancelOrder {}

/// Place an order.
#[derive(Debug)]
pub struct PlaceOrder {
    /// The order.
    pub id: i64,
    /// What is ordered.
    pub item: String,
}
impl Command for PlaceOrder {}

impl Orders {
    /// Deletes an order.
    pub async fn delete(&self, id: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM orders WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(error)?;
        Ok(())
    }

    /// Adds an order.
    pub async fn insert(&self, id: i64, item: &str, placed_by: &str) -> Result<(), Error> {
        sqlx::query("INSERT INTO orders (id, item, placed_by) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(item)
            .bind(placed_by)
            .execute(&self.pool)
            .await
            .map_err(error)?;
        Ok(())
    }
}

// ANCHOR: from_resources
use mamey_core::cqrs::FromResources;
use mamey_core::{MissingResource, Resources};

/// The orders table.
#[derive(Debug, Clone)]
pub struct Orders {
    pool: PgPool,
}

impl FromResources for Orders {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        Ok(Self {
            pool: resources.get()?,
        })
    }
}

async fn cancel_order(cmd: CancelOrder, orders: Orders) -> Result<(), Error> {
    orders.delete(cmd.id).await
}
// ANCHOR_END: from_resources

// ANCHOR: from_message_context
use mamey_core::cqrs::FromMessageContext;
use mamey_core::{Error, Identity, MessageContext};

/// The authenticated caller; 401 without one.
#[derive(Debug)]
pub struct CurrentUser(pub Identity);

impl FromMessageContext for CurrentUser {
    async fn from_message_context(context: &MessageContext) -> Result<Self, Error> {
        context
            .identity
            .clone()
            .map(CurrentUser)
            .ok_or_else(|| Error::unauthorized("auth.required", "sign in first"))
    }
}

async fn place_order(
    cmd: PlaceOrder,
    orders: Orders,
    CurrentUser(user): CurrentUser,
) -> Result<(), Error> {
    orders.insert(cmd.id, &cmd.item, &user.subject).await
}
// ANCHOR_END: from_message_context

/// Registers this section's handlers.
pub fn handlers(d: &mut DispatcherBuilder) {
    d.command(cancel_order).command(place_order);
}
