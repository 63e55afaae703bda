//! CQRS: contracts, handlers, registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use mamey_core::{InitContext, Resources};

/// Orders by id, with who placed them; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OrderStore(Arc<Mutex<HashMap<u64, (String, String)>>>);

impl OrderStore {
    /// Adds an order; a second order with the same id is a conflict.
    pub fn insert(&self, id: u64, item: &str, placed_by: &str) -> Result<(), Error> {
        let mut orders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if orders.contains_key(&id) {
            return Err(Error::conflict(
                "order.exists",
                format!("order {id} exists"),
            ));
        }
        orders.insert(id, (item.to_owned(), placed_by.to_owned()));
        Ok(())
    }

    /// The item of an order.
    pub fn get(&self, id: u64) -> Option<String> {
        let orders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        orders.get(&id).map(|(item, _)| item.clone())
    }
}

/// Sends receipts; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Mailer {
    sent: Arc<Mutex<Vec<u64>>>,
}

impl Mailer {
    /// Sends the receipt of an order.
    pub async fn send_receipt(&self, order: u64) -> Result<(), Error> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(order);
        Ok(())
    }

    /// The orders whose receipts were sent.
    pub fn sent(&self) -> Vec<u64> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// ANCHOR: contracts
use mamey_core::Error;
use mamey_core::cqrs::{Command, Event, Query};

/// Place an order.
#[derive(Debug)]
pub struct PlaceOrder {
    /// The order's id.
    pub id: u64,
    /// What is ordered.
    pub item: String,
}

impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        if self.item.is_empty() {
            return Err(
                Error::invalid_input("order.invalid", "the order is not valid").with_field(
                    "item",
                    "required",
                    "must not be empty",
                ),
            );
        }
        Ok(())
    }
}

/// One order's item.
#[derive(Debug)]
pub struct GetOrder {
    /// The order's id.
    pub id: u64,
}

impl Query for GetOrder {
    type Output = Option<String>;
}

/// An order was placed.
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    /// The order's id.
    pub id: u64,
}

impl Event for OrderPlaced {}
// ANCHOR_END: contracts

// ANCHOR: handlers
use mamey_core::MessageContext;
use mamey_core::cqrs::{Dispatcher, DispatcherBuilder, Res};

async fn place_order(
    cmd: PlaceOrder,
    Res(store): Res<OrderStore>,      // a resource
    Res(dispatcher): Res<Dispatcher>, // the service's dispatcher, always there
    ctx: MessageContext,              // the caller's context
) -> Result<(), Error> {
    let placed_by = ctx
        .identity
        .map(|caller| caller.subject)
        .unwrap_or_default();
    store.insert(cmd.id, &cmd.item, &placed_by)?;
    // Published in the same message context as the command.
    dispatcher.publish(OrderPlaced { id: cmd.id }).await
}

async fn get_order(q: GetOrder, Res(store): Res<OrderStore>) -> Result<Option<String>, Error> {
    Ok(store.get(q.id))
}

async fn send_receipt(event: OrderPlaced, Res(mailer): Res<Mailer>) -> Result<(), Error> {
    mailer.send_receipt(event.id).await
}

/// Registers the handlers.
pub fn handlers(d: &mut DispatcherBuilder) {
    d.command(place_order).query(get_order).event(send_receipt);
}
// ANCHOR_END: handlers

// ANCHOR: standalone
/// A dispatcher outside any service, e.g. in a unit test.
pub fn standalone(resources: &Resources) -> Result<Dispatcher, mamey_core::cqrs::DispatcherError> {
    let dispatcher = Dispatcher::builder()
        .command(place_order)
        .query(get_order)
        .build_with(resources)?;
    Ok(dispatcher)
}
// ANCHOR_END: standalone

// ANCHOR: handler_type
use mamey_core::cqrs::EventHandler;

/// Sends a receipt for each order placed.
#[derive(Debug)]
pub struct SendReceipt {
    mailer: Mailer,
}

impl EventHandler<OrderPlaced> for SendReceipt {
    async fn handle(&self, event: OrderPlaced) -> Result<(), Error> {
        self.mailer.send_receipt(event.id).await
    }
}

/// Registers it, in a plug-in's `init`.
pub fn subscribe(ctx: &mut InitContext<'_>, mailer: Mailer) {
    ctx.dispatcher().event(SendReceipt { mailer });
}
// ANCHOR_END: handler_type

#[cfg(test)]
mod tests {
    use mamey_core::cqrs::Dispatcher;
    use mamey_core::{BoxError, ErrorKind, Resources};

    use super::{GetOrder, Mailer, OrderStore, PlaceOrder, handlers, send_receipt, standalone};

    /// The store, the mailer, and a dispatcher (for `Res<Dispatcher>`)
    /// that sends receipts.
    fn resources(mailer: &Mailer) -> Result<Resources, BoxError> {
        let mut resources = Resources::new();
        resources.insert(OrderStore::default());
        resources.insert(mailer.clone());
        let events = Dispatcher::builder()
            .event(send_receipt)
            .build_with(&resources)?;
        resources.insert(events);
        Ok(resources)
    }

    #[tokio::test]
    async fn placing_an_order_sends_a_receipt() -> Result<(), BoxError> {
        let mailer = Mailer::default();
        let resources = resources(&mailer)?;
        let mut builder = Dispatcher::builder();
        handlers(&mut builder);
        let dispatcher = builder.build_with(&resources)?;

        dispatcher
            .send(PlaceOrder {
                id: 7,
                item: "book".into(),
            })
            .await?;
        assert_eq!(
            dispatcher.query(GetOrder { id: 7 }).await?.as_deref(),
            Some("book")
        );
        assert_eq!(mailer.sent(), [7]);
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_item_is_invalid() -> Result<(), BoxError> {
        let dispatcher = standalone(&resources(&Mailer::default())?)?;
        let Err(error) = dispatcher
            .send(PlaceOrder {
                id: 8,
                item: String::new(),
            })
            .await
        else {
            panic!("an empty item was accepted");
        };
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert_eq!(error.code(), "order.invalid");
        Ok(())
    }
}
