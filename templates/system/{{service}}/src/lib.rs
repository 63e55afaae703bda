//! {{service}}: items, in memory. One command and one query, mapped to
//! routes with the endpoint DSL:
//!
//! - `POST /items` sends `CreateItem`: `201 Created` with its `location`,
//!   `409` for a taken id, `422` naming each invalid field;
//! - `GET /items/{id}` asks `GetItem`: the item as JSON, or `404`.
//!
//! Through the gateway: `/api/{{service}}/items`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_core::{Error, Service, ServiceBuilder};
use mamey_discovery::Discovery;
use mamey_http::utoipa::{self, ToSchema};
use mamey_http::{Endpoints, WebApi};
use mamey_observability::Observability;
use serde::{Deserialize, Serialize};

/// An item, as `GET /items/{id}` answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct Item {
    id: i64,
    name: String,
}

/// Creates an item. Each `garde` rule has its `schema` twin, so that
/// `/openapi.json` states what `validate` checks.
#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct CreateItem {
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    id: i64,
    #[garde(length(chars, min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

impl Command for CreateItem {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

/// One item by id; `None` is answered `404`.
#[derive(Debug, Deserialize, ToSchema)]
struct GetItem {
    id: i64,
}

impl Query for GetItem {
    type Output = Option<Item>;
}

/// The items, in memory: gone when the process ends.
#[derive(Clone, Default)]
struct Items(Arc<Mutex<BTreeMap<i64, Item>>>);

impl Items {
    fn locked(&self) -> MutexGuard<'_, BTreeMap<i64, Item>> {
        // Each change is one call on the map, so a panic elsewhere while
        // the lock was held cannot have left it half-changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn create_item(c: CreateItem, Res(items): Res<Items>) -> Result<(), Error> {
    match items.locked().entry(c.id) {
        Entry::Occupied(_) => Err(Error::conflict(
            "item.exists",
            format!("item {} exists", c.id),
        )),
        Entry::Vacant(slot) => {
            slot.insert(Item {
                id: c.id,
                name: c.name,
            });
            Ok(())
        }
    }
}

async fn get_item(q: GetItem, Res(items): Res<Items>) -> Result<Option<Item>, Error> {
    Ok(items.locked().get(&q.id).cloned())
}

fn handlers(d: &mut DispatcherBuilder) {
    d.command(create_item).query(get_item);
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .post::<CreateItem>("/items")
        .summary("Create an item")
        .created(|item| format!("/items/{}", item.id))
        .get::<GetItem>("/items/{id}")
        .summary("One item")
        .into()
}

/// The service, ready to build. `Discovery` registers it when a registry
/// is configured (`[discovery]`); with the static backend it does nothing.
pub fn service() -> ServiceBuilder {
    Service::builder("{{service}}")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Observability::new())
        .plugin(Discovery::new())
        .resource(Items::default())
        .handlers(handlers)
        .plugin(WebApi::new().endpoints(endpoints()))
}
