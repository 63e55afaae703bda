//! The MongoDB part of the chapter "Persistence" (feature `mongo`: built
//! with `--all-features`, as CI builds the workspace).

use mamey_core::{Service, ServiceBuilder};
use mamey_messaging::{MemoryBroker, Messaging};
use mamey_persistence::mongo::{Mongo, MongoOutbox};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

/// An order, as stored: `_id` from `id`, the other fields in camelCase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    id: String,
    customer_id: String,
    total: i64,
}

/// The orders service on MongoDB: a repository of orders indexed by
/// customer, and the outbox and inbox the messaging plug-in uses.
#[must_use]
pub fn orders(broker: MemoryBroker) -> ServiceBuilder {
    // ANCHOR: plugin
    Service::builder("orders") // database `orders`
        .plugin(
            Mongo::new()
                .repository_with::<Order>(|orders| orders.index(doc! { "customerId": 1 }, false))
                .outbox()
                .inbox(),
        )
        .plugin(Messaging::new(broker).outbox::<MongoOutbox>())
    // ANCHOR_END: plugin
}
