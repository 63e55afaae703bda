//! The chapter "Persistence" (`docs/src/persistence.md`).

#[cfg(feature = "mongo")]
pub mod mongo;

use mamey_core::ServiceBuilder;
use mamey_core::cqrs::Command;
use mamey_messaging::message;

/// An order was placed.
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    id: i64,
    total: i64,
}

/// An order was charged.
#[message(namespace = "billing", event)]
#[derive(Debug, Clone)]
pub struct OrderCharged {
    id: i64,
}

// ANCHOR: outbox_inbox
use mamey_core::cqrs::Res;
use mamey_core::{Error, MessageContext, Service};
use mamey_messaging::{InboxStore, Messaging, OutboxStore, PublishOptions, Publisher};
use mamey_persistence::postgres::{PgInbox, PgOutbox, PgPool, Postgres, error};

/// Charges an order once, however often `OrderPlaced` arrives, and stages
/// `OrderCharged`: the inbox record, the charge and the message commit
/// together or not at all.
async fn charge(
    order: OrderPlaced,
    Res(db): Res<PgPool>,
    Res(inbox): Res<PgInbox>,
    Res(outbox): Res<PgOutbox>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let mut tx = db.begin().await.map_err(error)?;
    if !inbox
        .record(&mut *tx, "billing.charge", &ctx.message_id)
        .await?
    {
        return Ok(()); // applied before: acknowledge, do nothing
    }
    sqlx::query("INSERT INTO charges (order_id, amount) VALUES ($1, $2)")
        .bind(order.id)
        .bind(order.total)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    let charged = events.prepare(&OrderCharged { id: order.id }, PublishOptions::default())?;
    outbox.stage(&mut *tx, charged).await?;
    tx.commit().await.map_err(error)?; // all three, or none
    Ok(())
}

/// The billing service.
pub fn billing() -> ServiceBuilder {
    Service::builder("billing")
        .plugin(Postgres::new().outbox().inbox())
        .plugin(
            Messaging::rabbitmq()
                .subscribe_event::<OrderPlaced>()
                .outbox::<PgOutbox>(), // the relay publishes what handlers stage
        )
        .handlers(|d| {
            d.event(charge);
        })
}
// ANCHOR_END: outbox_inbox

/// Place an order.
#[derive(Debug)]
pub struct PlaceOrder {
    /// The order.
    pub id: i64,
}
impl Command for PlaceOrder {}

// ANCHOR: tx
use mamey_persistence::Tx;

async fn place_order(
    cmd: PlaceOrder,
    mut tx: Tx<Postgres>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO orders (id) VALUES ($1)")
        .bind(cmd.id)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    events
        .publish(&OrderPlaced {
            id: cmd.id,
            total: 0,
        })
        .await?; // staged, sent after the commit
    Ok(())
}
// ANCHOR_END: tx

/// The orders service, writing in a unit of work.
pub fn orders() -> ServiceBuilder {
    Service::builder("orders")
        .plugin(Postgres::new().outbox())
        .plugin(Messaging::rabbitmq().outbox::<PgOutbox>())
        .handlers(|d| {
            d.command(place_order);
        })
}

// ANCHOR: credentials
use mamey_secrets::Secrets;

/// Postgres on credentials that a vault issues.
pub fn orders_with_issued_credentials() -> ServiceBuilder {
    Service::builder("orders")
        .plugin(Secrets::new()) // provides `CredentialSources`
        .plugin(Postgres::new().outbox()) // connects as the issued user
}
// ANCHOR_END: credentials

// ANCHOR: sqlite
use mamey_messaging::MemoryBroker;
use mamey_persistence::sqlite::{Sqlite, SqliteOutbox};

/// The same service on SQLite.
pub fn orders_on_sqlite() -> ServiceBuilder {
    Service::builder("orders")
        .plugin(Sqlite::new().outbox().inbox())
        .plugin(Messaging::new(MemoryBroker::new()).outbox::<SqliteOutbox>())
}
// ANCHOR_END: sqlite

/// Runs the nightly report under a fencing token.
pub async fn run_report(fencing_token: u64) -> Result<(), Error> {
    tracing::info!(fencing_token, "report");
    Ok(())
}

// ANCHOR: redis
use std::time::Duration;

use mamey_persistence::redis::RedisClient;

async fn price(sku: String, Res(redis): Res<RedisClient>) -> Result<u64, Error> {
    // `orders:price:…`; concurrent callers of one key in this process share one load
    redis
        .cache()
        .get_or_load(&format!("price:{sku}"), Duration::from_secs(60), || async {
            Ok(1999)
        })
        .await
}

/// Locks, rate limits and pub/sub.
pub async fn coordinate(redis: &RedisClient) -> Result<(), Error> {
    // Lock (a lease): fencing token for the guarded write
    if let Some(lease) = redis
        .lock("nightly-report")
        .try_acquire(Duration::from_secs(30))
        .await?
    {
        run_report(lease.fencing_token()).await?;
        lease.release().await?;
    }

    // Rate limit shared by every replica
    let decision = redis
        .rate_limiter()
        .hit("login:203.0.113.7", 5, Duration::from_secs(60))
        .await?;
    if let Some(wait) = decision.retry_after {
        tracing::info!(?wait, "too many sign-ins"); // 429, Retry-After: wait
    }

    // Pub/sub backplane
    redis.publish("orders.updated", b"42").await?;
    let mut updates = redis.subscribe(["orders.updated"]).await?;
    while let Some(next) = updates.recv().await {
        match next {
            Ok(message) => tracing::info!(payload = ?message.payload(), "update"),
            Err(gap) => tracing::warn!(?gap, "messages lost: reload state"),
        }
    }
    Ok(())
}
// ANCHOR_END: redis

/// A query for a price, answered from the cache.
#[derive(Debug)]
pub struct Price(pub String);

/// Registers `price`.
pub fn pricing(d: &mut mamey_core::cqrs::DispatcherBuilder) {
    d.query(|q: Price, redis: Res<RedisClient>| price(q.0, redis));
}

impl mamey_core::cqrs::Query for Price {
    type Output = u64;
}
