//! {{project-name}}: a mamey service.
//!
//! One command, one query and one event:
//!
//! - `POST /items` sends `CreateItem`: the item is stored and `ItemCreated`
//!   is published. Answered `201 Created` with its `location`.
//! - `GET /items/{id}` asks `GetItem`: the item as JSON, or `404`.
//! - `confirm_item` handles `ItemCreated` and marks the item `confirmed`:
//!   where this service reacts to its own events (or another service's).
{%- if messaging == "none" %}
//!   The event goes through the service's dispatcher, in process, before
//!   `POST` is answered.
{%- elsif messaging == "in-process" %}
//!   The event goes through an in-process broker, after `POST` is answered.
{%- else %}
//!   The event goes through RabbitMQ, after `POST` is answered.
{%- endif %}
{%- if persistence != "none" and messaging != "none" %}
//!   It is staged in the outbox in the item's transaction and sent once
//!   that commits: both or neither.
{%- endif %}
//!
//! [`service`] puts it together; `main` runs it and the tests start it on
//! a free port.
{% if persistence == "none" %}
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
{% endif %}
{%- if messaging == "none" %}
use mamey_core::cqrs::{Command, Dispatcher, DispatcherBuilder, Event, Query, Res};
{%- else %}
use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
{%- endif %}
use mamey_core::{Error, Service, ServiceBuilder};
use mamey_http::utoipa::{self, ToSchema};
use mamey_http::{Endpoints, WebApi};
{%- if messaging == "in-process" %}
use mamey_messaging::{MemoryBroker, Messaging, Publisher, message};
{%- elsif messaging == "rabbitmq" %}
use mamey_messaging::{Messaging, Publisher, message};
{%- endif %}
use mamey_observability::Observability;
{%- if persistence == "sqlite" and messaging == "none" %}
use mamey_persistence::sqlite::{Sqlite, SqlitePool, error};
{%- elsif persistence == "sqlite" %}
use mamey_persistence::Tx;
use mamey_persistence::sqlite::{Sqlite, SqliteOutbox, SqlitePool, error};
{%- elsif persistence == "postgres" and messaging == "none" %}
use mamey_persistence::postgres::{PgPool, Postgres, error};
{%- elsif persistence == "postgres" %}
use mamey_persistence::Tx;
use mamey_persistence::postgres::{PgOutbox, PgPool, Postgres, error};
{%- endif %}
{%- if secrets != "none" %}
use mamey_secrets::Secrets;
{%- endif %}
use serde::{Deserialize, Serialize};
{%- if persistence == "sqlite" %}{% assign db = "Sqlite" %}{% assign pool = "SqlitePool" %}{% assign outbox = "SqliteOutbox" %}{% endif %}
{%- if persistence == "postgres" %}{% assign db = "Postgres" %}{% assign pool = "PgPool" %}{% assign outbox = "PgOutbox" %}{% endif %}

/// An item, as `GET /items/{id}` answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct Item {
    id: i64,
    name: String,
    /// `created`, then `confirmed` once `ItemCreated` was handled.
    status: String,
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
{% if messaging == "none" %}
/// Published once an item is stored.
#[derive(Debug, Clone)]
struct ItemCreated {
    id: i64,
}

impl Event for ItemCreated {}
{%- else %}
/// Published once an item is stored: exchange `{{project-name}}`, routing
/// key `item_created`, body `{"id": 7}`.
#[message(namespace = "{{project-name}}", event)]
#[derive(Debug, Clone)]
struct ItemCreated {
    id: i64,
}
{%- endif %}
{% if persistence == "none" %}
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

async fn create_item(
    c: CreateItem,
    Res(items): Res<Items>,
{%- if messaging == "none" %}
    Res(events): Res<Dispatcher>,
{%- else %}
    Res(events): Res<Publisher>,
{%- endif %}
) -> Result<(), Error> {
    match items.locked().entry(c.id) {
        Entry::Occupied(_) => {
            return Err(Error::conflict(
                "item.exists",
                format!("item {} exists", c.id),
            ));
        }
        Entry::Vacant(slot) => {
            slot.insert(Item {
                id: c.id,
                name: c.name,
                status: "created".into(),
            });
        }
    }
{%- if messaging == "none" %}
    events.publish(ItemCreated { id: c.id }).await
{%- else %}
    events.publish(&ItemCreated { id: c.id }).await?;
    Ok(())
{%- endif %}
}

async fn get_item(q: GetItem, Res(items): Res<Items>) -> Result<Option<Item>, Error> {
    Ok(items.locked().get(&q.id).cloned())
}

/// Runs once per event, or again when a broker redelivers it: marking the
/// item twice does no harm.
async fn confirm_item(event: ItemCreated, Res(items): Res<Items>) -> Result<(), Error> {
    if let Some(item) = items.locked().get_mut(&event.id) {
        item.status = "confirmed".into();
    }
    Ok(())
}
{%- elsif messaging == "none" %}
async fn create_item(
    c: CreateItem,
    Res(db): Res<{{ pool }}>,
    Res(events): Res<Dispatcher>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO items (id, name, status) VALUES ($1, $2, 'created')")
        .bind(c.id)
        .bind(&c.name)
        .execute(&db)
        .await
        .map_err(error)?; // a taken id is `409 Conflict`
    events.publish(ItemCreated { id: c.id }).await
}
{%- else %}
/// Runs in one transaction (`Tx`): the row and the staged event commit
/// together, and the outbox relay sends the event after the commit.
async fn create_item(
    c: CreateItem,
    mut tx: Tx<{{ db }}>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO items (id, name, status) VALUES ($1, $2, 'created')")
        .bind(c.id)
        .bind(&c.name)
        .execute(&mut *tx)
        .await
        .map_err(error)?; // a taken id is `409 Conflict`
    events.publish(&ItemCreated { id: c.id }).await?;
    Ok(())
}
{%- endif %}
{%- if persistence != "none" %}

async fn get_item(q: GetItem, Res(db): Res<{{ pool }}>) -> Result<Option<Item>, Error> {
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, status FROM items WHERE id = $1")
            .bind(q.id)
            .fetch_optional(&db)
            .await
            .map_err(error)?;
    Ok(row.map(|(id, name, status)| Item { id, name, status }))
}

/// Runs once per event, or again when a broker redelivers it: marking the
/// item twice does no harm.
async fn confirm_item(event: ItemCreated, Res(db): Res<{{ pool }}>) -> Result<(), Error> {
    sqlx::query("UPDATE items SET status = 'confirmed' WHERE id = $1")
        .bind(event.id)
        .execute(&db)
        .await
        .map_err(error)?;
    Ok(())
}
{%- endif %}

fn handlers(d: &mut DispatcherBuilder) {
    d.command(create_item).query(get_item).event(confirm_item);
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

/// The service, ready to build: configuration from `config/` and
/// `MAMEY__…` variables, its plug-ins, handlers and routes. Plug-ins start
/// in this order and stop in reverse: the web API stops taking requests
/// first, logs and traces are flushed last.
pub fn service() -> ServiceBuilder {
    Service::builder("{{project-name}}")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Observability::new())
{%- if secrets != "none" %}
        .plugin(Secrets::new())
{%- endif %}
{%- if persistence != "none" and messaging == "none" %}
        .plugin({{ db }}::new())
{%- elsif persistence != "none" %}
        .plugin({{ db }}::new().outbox())
{%- endif %}
{%- if messaging == "in-process" %}{% assign broker = "Messaging::new(MemoryBroker::new())" %}{% else %}{% assign broker = "Messaging::rabbitmq()" %}{% endif %}
{%- if messaging != "none" and persistence == "none" %}
        .plugin({{ broker }}.subscribe_event::<ItemCreated>())
{%- elsif messaging != "none" %}
        .plugin(
            {{ broker }}
                .subscribe_event::<ItemCreated>()
                .outbox::<{{ outbox }}>(),
        )
{%- endif %}
{%- if persistence == "none" %}
        .resource(Items::default())
{%- endif %}
        .handlers(handlers)
        .plugin(WebApi::new().endpoints(endpoints()))
}
