{%- assign sql = false %}{% if persistence == "sqlite" or persistence == "postgres" %}{% assign sql = true %}{% endif %}
{%- assign outbox = false %}{% if sql and messaging != "none" %}{% assign outbox = true %}{% endif -%}
//! {{project-name}}: a mamey service.
//!
//! One command, one query and one event:
//!
//! - `POST /items` sends `CreateItem`: the item is stored and `ItemCreated`
//!   is published. Answered `201 Created` with its `location`.
//! - `GET /items/{id}` asks `GetItem`: the item as JSON, or `404`.
{%- if grpc %}
//!   The gRPC method `{{crate_name}}.v1.Items/GetItem` asks the same query
//!   (`src/grpc.rs`).
{%- endif %}
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
{%- if outbox %}
//!   It is staged in the outbox in the item's transaction and sent once
//!   that commits: both or neither.
{%- elsif messaging != "none" and persistence != "none" %}
//!   It is published once the item is stored (no outbox: that needs a
//!   transaction, which the store here does not give).
{%- endif %}
{%- if persistence == "redis" %}
//!
//! Items live in Redis, as JSON under `{redis.key_prefix}items:{id}`:
//! written with `SET … NX` (a taken id is `409`), read through mamey's
//! typed cache.
{%- elsif persistence == "mongo" %}
//!
//! Items live in MongoDB, in the collection `items` of the database named
//! after the service, through a `Repository<Item>`.
{%- endif %}
{%- if discovery != "none" %}
//!
//! `Discovery` ({% if discovery == "static" %}fixed endpoints from `discovery.static.services`{% elsif discovery == "etcd" %}etcd{% else %}Consul{% endif %}) resolves other
//! services' names{% unless discovery == "static" %} and registers this one once it is ready{% endunless %}; a handler
//! that takes `Res<ServiceClient>` calls them by name:
//! `client.get("pricing", "/prices/7").send().await?`.
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
{%- if discovery != "none" %}
use mamey_discovery::Discovery;
{%- endif %}
use mamey_http::utoipa::{self, ToSchema};
{%- if discovery != "none" %}
use mamey_http::{Endpoints, ServiceClientPlugin, WebApi};
{%- else %}
use mamey_http::{Endpoints, WebApi};
{%- endif %}
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
{%- elsif persistence == "redis" %}
use mamey_persistence::redis::{Redis, RedisClient, error};
{%- elsif persistence == "mongo" %}
use mamey_persistence::mongo::{Mongo, Repository};
{%- endif %}
{%- if secrets != "none" %}
use mamey_secrets::Secrets;
{%- endif %}
use serde::{Deserialize, Serialize};
{%- if persistence == "sqlite" %}{% assign db = "Sqlite" %}{% assign pool = "SqlitePool" %}{% assign outbox_store = "SqliteOutbox" %}{% endif %}
{%- if persistence == "postgres" %}{% assign db = "Postgres" %}{% assign pool = "PgPool" %}{% assign outbox_store = "PgOutbox" %}{% endif %}
{%- if messaging == "none" %}{% assign events = "Dispatcher" %}{% else %}{% assign events = "Publisher" %}{% endif %}
{%- if grpc %}

mod grpc;

/// The code generated from `proto/items.proto` (see `build.rs`): the server
/// this service hosts, and the client its tests call it with.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("{{crate_name}}.v1");

    /// The encoded descriptors of `proto/items.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("items");
}
{%- endif %}

/// An item, as `GET /items/{id}` answers it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    Res(events): Res<{{ events }}>,
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
{%- elsif persistence == "redis" %}
/// The key of item `id`, under `redis.key_prefix`.
fn item_key(id: i64) -> String {
    format!("items:{id}")
}

/// Writes `item` with `SET key json {condition}`: `NX` only when there is
/// no such item, `XX` only when there is. Returns whether it was written.
async fn put(db: &RedisClient, item: &Item, condition: &str) -> Result<bool, Error> {
    let json = serde_json::to_string(item)
        .map_err(|e| Error::internal(format!("item {} as JSON: {e}", item.id)))?;
    let written: Option<String> = redis::cmd("SET")
        .arg(db.key(&item_key(item.id)))
        .arg(json)
        .arg(condition)
        .query_async(&mut db.connection())
        .await
        .map_err(error)?; // Redis away is `503`
    Ok(written.is_some())
}

async fn create_item(
    c: CreateItem,
    Res(db): Res<RedisClient>,
    Res(events): Res<{{ events }}>,
) -> Result<(), Error> {
    let item = Item {
        id: c.id,
        name: c.name,
        status: "created".into(),
    };
    if !put(&db, &item, "NX").await? {
        return Err(Error::conflict(
            "item.exists",
            format!("item {} exists", c.id),
        ));
    }
{%- if messaging == "none" %}
    events.publish(ItemCreated { id: c.id }).await
{%- else %}
    events.publish(&ItemCreated { id: c.id }).await?;
    Ok(())
{%- endif %}
}

/// Reads through the typed cache: the JSON under the item's key.
async fn get_item(q: GetItem, Res(db): Res<RedisClient>) -> Result<Option<Item>, Error> {
    db.cache().get(&item_key(q.id)).await
}

/// Runs once per event, or again when a broker redelivers it: marking the
/// item twice does no harm.
async fn confirm_item(event: ItemCreated, Res(db): Res<RedisClient>) -> Result<(), Error> {
    if let Some(mut item) = db.cache().get::<Item>(&item_key(event.id)).await? {
        item.status = "confirmed".into();
        put(&db, &item, "XX").await?;
    }
    Ok(())
}
{%- elsif persistence == "mongo" %}
async fn create_item(
    c: CreateItem,
    Res(items): Res<Repository<Item>>,
    Res(events): Res<{{ events }}>,
) -> Result<(), Error> {
    let item = Item {
        id: c.id,
        name: c.name,
        status: "created".into(),
    };
    items.add(&item).await?; // a taken id is `409 Conflict`
{%- if messaging == "none" %}
    events.publish(ItemCreated { id: c.id }).await
{%- else %}
    events.publish(&ItemCreated { id: c.id }).await?;
    Ok(())
{%- endif %}
}

async fn get_item(q: GetItem, Res(items): Res<Repository<Item>>) -> Result<Option<Item>, Error> {
    items.get(q.id).await
}

/// Runs once per event, or again when a broker redelivers it: marking the
/// item twice does no harm.
async fn confirm_item(event: ItemCreated, Res(items): Res<Repository<Item>>) -> Result<(), Error> {
    if let Some(mut item) = items.get(event.id).await? {
        item.status = "confirmed".into();
        items.update(&item).await?;
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
{%- if sql %}

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
{%- if sql and messaging == "none" %}
        .plugin({{ db }}::new())
{%- elsif sql %}
        .plugin({{ db }}::new().outbox())
{%- elsif persistence == "redis" %}
        .plugin(Redis::new())
{%- elsif persistence == "mongo" %}
        .plugin(Mongo::new().repository::<Item>())
{%- endif %}
{%- if messaging == "in-process" %}{% assign broker = "Messaging::new(MemoryBroker::new())" %}{% else %}{% assign broker = "Messaging::rabbitmq()" %}{% endif %}
{%- if messaging != "none" and outbox == false %}
        .plugin({{ broker }}.subscribe_event::<ItemCreated>())
{%- elsif messaging != "none" %}
        .plugin(
            {{ broker }}
                .subscribe_event::<ItemCreated>()
                .outbox::<{{ outbox_store }}>(),
        )
{%- endif %}
{%- if discovery != "none" %}
        // Before the plug-ins that call other services; registration waits
        // until every plug-in has started, and deregistration comes first.
        .plugin(Discovery::new())
        .plugin(ServiceClientPlugin::new())
{%- endif %}
{%- if persistence == "none" %}
        .resource(Items::default())
{%- endif %}
        .handlers(handlers)
{%- if grpc %}
        .plugin(grpc::Grpc::default())
{%- endif %}
        .plugin(WebApi::new().endpoints(endpoints()))
}
