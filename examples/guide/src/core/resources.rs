//! Resources and requirements.

// ANCHOR: resources
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mamey_core::cqrs::{Command, Res};
use mamey_core::{BoxError, Error, InitContext, Plugin, Requirement};

/// Orders kept in memory; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OrderStore(Arc<Mutex<HashMap<u64, String>>>);

/// Place an order.
#[derive(Debug)]
pub struct PlaceOrder {
    /// The order's id.
    pub id: u64,
    /// What is ordered.
    pub item: String,
}
impl Command for PlaceOrder {}

/// Provides the store.
#[derive(Debug)]
pub struct Storage;

impl Plugin for Storage {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        ctx.provide(OrderStore::default())?;
        Ok(())
    }
}

/// Needs the store.
#[derive(Debug)]
pub struct Orders;

impl Plugin for Orders {
    fn requires(&self) -> Vec<Requirement> {
        vec![Requirement::of::<OrderStore>().hint("add `Storage` before `Orders`")]
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        ctx.dispatcher().command(place_order);
        Ok(())
    }
}

async fn place_order(cmd: PlaceOrder, Res(store): Res<OrderStore>) -> Result<(), Error> {
    if let Ok(mut orders) = store.0.lock() {
        orders.insert(cmd.id, cmd.item);
    }
    Ok(())
}
// ANCHOR_END: resources

/// Asks for one order.
#[derive(Debug)]
pub struct GetOrder {
    /// The order's id.
    pub id: u64,
}
impl mamey_core::cqrs::Query for GetOrder {
    type Output = Option<String>;
}

// ANCHOR: handler_resources
async fn get_order(q: GetOrder, Res(store): Res<OrderStore>) -> Result<Option<String>, Error> {
    Ok(store.0.lock().ok().and_then(|o| o.get(&q.id).cloned()))
}

/// The service: `get_order` takes the store that `Storage` provides.
pub fn service() -> mamey_core::ServiceBuilder {
    mamey_core::Service::builder("orders")
        .plugin(Storage)
        .handlers(|d| {
            d.query(get_order);
        })
}
// ANCHOR_END: handler_resources

#[cfg(test)]
mod tests {
    use mamey_core::{BoxError, ServiceError};

    use super::{GetOrder, Orders, PlaceOrder, Storage, service};

    #[tokio::test]
    async fn handlers_take_the_store() -> Result<(), BoxError> {
        let service = service()
            .handle_signals(false)
            .plugin(Orders)
            .build()
            .await?;
        let dispatcher = service.dispatcher();
        dispatcher
            .send(PlaceOrder {
                id: 1,
                item: "book".into(),
            })
            .await?;
        let item = dispatcher.query(GetOrder { id: 1 }).await?;
        assert_eq!(item.as_deref(), Some("book"));
        Ok(())
    }

    #[tokio::test]
    async fn orders_without_storage_fail_the_build() {
        let built = mamey_core::Service::builder("orders")
            .handle_signals(false)
            .plugin(Orders)
            .plugin(Storage)
            .build()
            .await;
        let Err(error) = built else {
            panic!("the build succeeded");
        };
        assert!(
            matches!(error, ServiceError::MissingResource { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("add `Storage` before `Orders`"),
            "{error}"
        );
    }
}
