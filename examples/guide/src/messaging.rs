//! The chapter "Messaging" (`docs/src/messaging.md`).

pub mod message_trait;
pub mod stores;
pub mod wire;

#[cfg(test)]
mod conventions_test;

// ANCHOR: service
use mamey_core::cqrs::{DispatcherBuilder, Res};
use mamey_core::{BoxError, Error, Service};
use mamey_messaging::{MemoryBroker, Messaging, Publisher, message};

/// An order was placed.
#[message(namespace = "orders", event)] // the exchange; {"id":7} on the wire
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    id: u64,
}

/// Ship an order.
#[message(namespace = "shipping", command)]
#[derive(Debug)]
pub struct ShipOrder {
    id: u64,
}

async fn order_placed(event: OrderPlaced, Res(events): Res<Publisher>) -> Result<(), Error> {
    // PublishError converts into mamey_core::Error (kind unavailable)
    events.publish(&ShipOrder { id: event.id }).await?;
    Ok(())
}

async fn ship_order(command: ShipOrder) -> Result<(), Error> {
    tracing::info!(order = command.id, "shipping");
    Ok(())
}

fn handlers(d: &mut DispatcherBuilder) {
    d.event(order_placed).command(ship_order);
}

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    Service::builder("shipping")
        .plugin(
            Messaging::new(MemoryBroker::new()) // or Messaging::rabbitmq()
                .subscribe_event::<OrderPlaced>()
                .subscribe_command::<ShipOrder>(),
        )
        .handlers(handlers)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
// ANCHOR_END: service

// ANCHOR: publish_options
use std::collections::BTreeMap;

use mamey_messaging::{PublishError, PublishOptions};

/// Publishes `OrderPlaced` with a stable id and a header of its own.
pub async fn publish_placed(publisher: &Publisher, id: u64) -> Result<(), PublishError> {
    let options = PublishOptions {
        message_id: Some(format!("order-{id}-placed")), // a stable id, for de-duplication
        headers: BTreeMap::from([("x-source".to_owned(), "importer".to_owned())]),
        ..PublishOptions::default()
    };
    publisher.publish_with(&OrderPlaced { id }, options).await?;
    Ok(())
}
// ANCHOR_END: publish_options

// ANCHOR: dead_letters
use mamey_messaging::rabbitmq::{DeadLetterQueue, dead_letter_queue};

/// Lists a dead-letter queue and replays some of its messages.
pub async fn replay_dead_letters() -> Result<(), BoxError> {
    let queue = dead_letter_queue("billing/orders.order_placed");
    let mut dead =
        DeadLetterQueue::connect("amqp://guest:guest@127.0.0.1:5672/%2f", &queue).await?;
    for letter in dead.peek(20).await? {
        // message_id, message_type, reason, attempts, original (Option<Route>), body_size
        println!(
            "{} after {} attempts: {}",
            letter.message_id, letter.attempts, letter.reason
        );
    }
    let replayed = dead
        .replay_ids(&["0f8fad5b-d9cb-469f-a165-70867728950e"])
        .await?;
    let replayed_too = dead
        .replay(|letter| letter.reason.contains("(db.down)"))
        .await?;
    println!("replayed {} and {}", replayed.len(), replayed_too.len());
    dead.close().await;
    Ok(())
}
// ANCHOR_END: dead_letters

/// An invoice was issued.
#[message(namespace = "billing", event)]
#[derive(Debug, Clone)]
pub struct InvoiceIssued {
    number: u64,
}

// ANCHOR: staging
use mamey_messaging::OutboxStore;
use mamey_persistence::postgres::{PgOutbox, PgPool, error};

/// Writes an invoice and stages `InvoiceIssued` in one transaction.
pub async fn issue_invoice(
    number: u64,
    pool: &PgPool,
    publisher: &Publisher,
    outbox: &PgOutbox,
) -> Result<(), Error> {
    let mut tx = pool.begin().await.map_err(error)?;
    let message = publisher.prepare(&InvoiceIssued { number }, PublishOptions::default())?;
    outbox.stage(&mut *tx, message).await?; // a StoreError is unavailable: retried
    // ... write the invoice in `tx`, commit: both or neither
    tx.commit().await.map_err(error)?;
    Ok(())
}
// ANCHOR_END: staging

// ANCHOR: relay
use mamey_messaging::MemoryOutbox;
use mamey_persistence::postgres::Postgres;

/// Postgres: the plug-in provides `PgOutbox` (see Persistence).
pub fn ledger_on_postgres() -> mamey_core::ServiceBuilder {
    Service::builder("ledger")
        .plugin(Postgres::new().outbox())
        .plugin(Messaging::rabbitmq().outbox::<PgOutbox>())
}

/// In memory, for a single process and tests.
pub fn ledger_in_memory() -> mamey_core::ServiceBuilder {
    let outbox = MemoryOutbox::new();
    Service::builder("ledger")
        .resource(outbox.clone())
        .plugin(Messaging::rabbitmq().outbox::<MemoryOutbox>())
    // handlers stage with `outbox.stage(&mut tx, publisher.prepare(&msg, …)?)`
}
// ANCHOR_END: relay

// ANCHOR: inbox
use mamey_core::MessageContext;
use mamey_messaging::{InboxStore, MemoryInbox};

async fn charge_order(
    event: OrderPlaced,
    Res(inbox): Res<MemoryInbox>, // given with `ServiceBuilder::resource(MemoryInbox::new())`
    ctx: MessageContext,
) -> Result<(), Error> {
    let mut tx = (); // with a SQL store: the transaction the effect is written in
    // StoreError converts into an unavailable Error: retried
    if !inbox
        .record(&mut tx, "billing.charge-order", &ctx.message_id)
        .await?
    {
        return Ok(()); // applied before: acknowledge and do nothing
    }
    // apply `event` in `tx`, then commit: the record and the effect
    // are kept, or rolled back, together
    tracing::info!(order = event.id, "charged");
    Ok(())
}
// ANCHOR_END: inbox

/// The billing service's handlers.
pub fn billing_handlers(d: &mut DispatcherBuilder) {
    d.event(charge_order);
}
