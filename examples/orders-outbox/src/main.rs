//! Two services over Postgres and RabbitMQ, in one process:
//!
//! - `orders` serves `POST /orders` and `GET /orders/{id}`. Placing an order
//!   writes the row and stages `OrderPlaced` in its outbox **in one
//!   transaction**; the relay publishes it after the commit. When
//!   `OrderCharged` comes back, the order is marked `charged`.
//! - `billing` consumes `OrderPlaced`: in one transaction it records the
//!   message in its inbox (a redelivery is skipped), writes the charge and
//!   stages `OrderCharged`.
//!
//! Each service has its own schema (tables, outbox, inbox) in one database.
//!
//! `cargo run -p orders-outbox` serves orders on 127.0.0.1:8080
//! (`ORDERS_ADDRESS`) until Ctrl-C or SIGTERM, with Postgres and RabbitMQ
//! from `MAMEY__POSTGRES__URL` and `MAMEY__RABBITMQ__URL` (defaults: local
//! servers). With `RUN_ID` set, the schemas and exchange get fresh names
//! from it (`orders_{id}`, `billing_{id}`, `orders-outbox-{id}`) and the
//! schemas are dropped when it stops, so runs never meet.
//! `cargo run -p orders-outbox -- --demo` uses fresh names, places orders,
//! redelivers an event, prints what happened, drops its schemas and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::cqrs::middleware::from_fn;
use mamey_core::cqrs::{Command, Envelope, FromResources, Next, Query, Res};
use mamey_core::{
    BoxError, Error, MissingResource, Resources, Service, ServiceBuilder, ServiceGroup,
};
use mamey_http::{Endpoints, HttpAddress, WebApi};
use mamey_messaging::{Messaging, PublishOptions, Publisher, message};
use mamey_observability::Observability;
use mamey_persistence::Tx;
use mamey_persistence::postgres::{PgOutbox, PgPool, Postgres, error};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Published by `orders` when an order is placed. On the wire (and in the
/// outbox) its fields are camelCase, as Convey's: `totalCents`.
#[message(namespace = "orders", event)]
#[derive(Debug, Clone)]
struct OrderPlaced {
    id: i64,
    customer: String,
    total_cents: i64,
}

/// Published by `billing` once the order is charged: `amountCents` on the
/// wire.
#[message(namespace = "billing", event)]
#[derive(Debug, Clone)]
struct OrderCharged {
    id: i64,
    amount_cents: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
struct PlaceOrder {
    #[schema(minimum = 1)]
    id: i64,
    #[schema(min_length = 1)]
    customer: String,
    #[schema(minimum = 1)]
    total_cents: i64,
}
impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        if self.id <= 0 || self.total_cents <= 0 || self.customer.is_empty() {
            return Err(Error::invalid_input(
                "order.invalid",
                "id and total_cents must be positive, customer not empty",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct GetOrder {
    id: i64,
}
impl Query for GetOrder {
    type Output = Option<Order>;
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct Order {
    id: i64,
    customer: String,
    total_cents: i64,
    status: String,
}

/// `OrderPlaced` deliveries billing has handled, duplicates included (the
/// demo waits for them).
#[derive(Clone, Default)]
struct Deliveries(Arc<AtomicUsize>);

/// Where each service keeps its tables.
#[derive(Clone)]
struct Schemas {
    orders: String,
    billing: String,
}

/// The schema of a service's own tables, given to each service with
/// `ServiceBuilder::resource`.
#[derive(Clone)]
struct Schema(Arc<str>);

/// The service's database as its handlers see it: the pool, and the schema
/// its tables are in. Built once from the resources when the service is
/// built; each handler taking it gets a clone per call.
#[derive(Clone)]
struct Db {
    pool: PgPool,
    schema: Arc<str>,
}

impl FromResources for Db {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        let Schema(schema) = resources.get()?;
        Ok(Self {
            pool: resources.get()?,
            schema,
        })
    }
}

/// The process's environment plus `extra`: each service reads the shared
/// settings (database and broker URLs) and gets its own tables.
fn env(extra: &[(&str, String)]) -> Vec<(String, String)> {
    std::env::vars()
        .chain(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
        .collect()
}

/// Creates the schemas and the services' own tables (the outbox and inbox
/// tables are created by the Postgres plug-in).
async fn create_tables(schemas: &Schemas) -> Result<(), BoxError> {
    let url = std::env::var("MAMEY__POSTGRES__URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = PgPool::connect(&url).await?;
    let (orders, billing) = (&schemas.orders, &schemas.billing);
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {orders}"),
        format!("CREATE SCHEMA IF NOT EXISTS {billing}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {orders}.orders (
                id bigint PRIMARY KEY, customer text NOT NULL,
                total_cents bigint NOT NULL, status text NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {billing}.charges (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                order_id bigint NOT NULL, amount_cents bigint NOT NULL,
                charged_at timestamptz NOT NULL DEFAULT now())"
        ),
    ] {
        sqlx::query(&statement).execute(&pool).await?;
    }
    pool.close().await;
    Ok(())
}

/// Writes the order and publishes `OrderPlaced` in one unit of work: the
/// event is staged in the outbox in the order's transaction (both, or
/// neither), and the relay publishes it after the commit.
async fn place_order(
    c: PlaceOrder,
    db: Db,
    mut tx: Tx<Postgres>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO {}.orders (id, customer, total_cents, status) VALUES ($1, $2, $3, 'placed')",
        db.schema
    ))
    .bind(c.id)
    .bind(&c.customer)
    .bind(c.total_cents)
    .execute(&mut *tx)
    .await
    .map_err(error)?; // a duplicate id is a 409
    events
        .publish(&OrderPlaced {
            id: c.id,
            customer: c.customer,
            total_cents: c.total_cents,
        })
        .await?;
    Ok(())
}

async fn get_order(q: GetOrder, db: Db) -> Result<Option<Order>, Error> {
    let row: Option<(i64, String, i64, String)> = sqlx::query_as(&format!(
        "SELECT id, customer, total_cents, status FROM {}.orders WHERE id = $1",
        db.schema
    ))
    .bind(q.id)
    .fetch_optional(&db.pool)
    .await
    .map_err(error)?;
    Ok(row.map(|(id, customer, total_cents, status)| Order {
        id,
        customer,
        total_cents,
        status,
    }))
}

/// Marks the order charged, once per `OrderCharged` message however often
/// it is delivered: the inbox records it in the same transaction.
async fn mark_charged(charged: OrderCharged, db: Db, mut tx: Tx<Postgres>) -> Result<(), Error> {
    sqlx::query(&format!(
        "UPDATE {}.orders SET status = 'charged' WHERE id = $1",
        db.schema
    ))
    .bind(charged.id)
    .execute(&mut *tx)
    .await
    .map_err(error)?;
    Ok(())
}

/// Billing: charges the order and publishes `OrderCharged`, in one
/// transaction with the inbox record, so a redelivered `OrderPlaced` is
/// skipped.
async fn charge(
    placed: OrderPlaced,
    db: Db,
    mut tx: Tx<Postgres>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO {}.charges (order_id, amount_cents) VALUES ($1, $2)",
        db.schema
    ))
    .bind(placed.id)
    .bind(placed.total_cents)
    .execute(&mut *tx)
    .await
    .map_err(error)?;
    events
        .publish(&OrderCharged {
            id: placed.id,
            amount_cents: placed.total_cents,
        })
        .await?;
    Ok(())
}

fn orders_service(schema: &str, address: &str, extra: &[(&str, String)]) -> ServiceBuilder {
    let mut vars = vec![
        ("MAMEY__HTTP__ADDRESS", address.to_owned()),
        ("MAMEY__POSTGRES__OUTBOX_TABLE", format!("{schema}.outbox")),
        ("MAMEY__POSTGRES__INBOX_TABLE", format!("{schema}.inbox")),
    ];
    vars.extend_from_slice(extra);
    Service::builder("orders")
        .env_vars(env(&vars))
        .resource(Schema(schema.into()))
        .plugin(Observability::new())
        .plugin(Postgres::new().outbox().inbox())
        .plugin(
            Messaging::rabbitmq()
                .subscribe_event::<OrderCharged>()
                .outbox::<PgOutbox>(),
        )
        .handlers(|d| {
            d.command(place_order).query(get_order).event(mark_charged);
        })
        .plugin(
            WebApi::new().endpoints(
                Endpoints::new()
                    .post::<PlaceOrder>("/orders")
                    .summary("Place an order; billing charges it")
                    .created(|c| format!("/orders/{}", c.id))
                    .get::<GetOrder>("/orders/{id}")
                    .summary("One order, with its status"),
            ),
        )
}

fn billing_service(
    schema: &str,
    extra: &[(&str, String)],
    deliveries: &Deliveries,
) -> ServiceBuilder {
    let deliveries = deliveries.clone();
    let mut vars = vec![
        ("MAMEY__POSTGRES__OUTBOX_TABLE", format!("{schema}.outbox")),
        ("MAMEY__POSTGRES__INBOX_TABLE", format!("{schema}.inbox")),
    ];
    vars.extend_from_slice(extra);
    Service::builder("billing")
        .env_vars(env(&vars))
        .resource(Schema(schema.into()))
        .plugin(Observability::new())
        .plugin(Postgres::new().outbox().inbox())
        .plugin(
            Messaging::rabbitmq()
                .subscribe_event::<OrderPlaced>()
                .outbox::<PgOutbox>(),
        )
        .handlers(move |d| {
            // Counts every `OrderPlaced` billing is given, redeliveries the
            // inbox skips included, for the demo to wait on.
            let Deliveries(deliveries) = deliveries;
            d.event(charge)
                .layer(from_fn(move |envelope: Envelope, next: Next| {
                    let deliveries = Arc::clone(&deliveries);
                    async move {
                        let reply = next.run(envelope).await;
                        deliveries.fetch_add(1, Ordering::SeqCst);
                        reply
                    }
                }));
        })
}

/// Builds billing, then orders, as one group (orders stops first, while
/// billing still answers its events); returns orders' address and
/// publisher, and the group.
async fn system(
    names: &Names,
    address: &str,
    deliveries: &Deliveries,
) -> Result<(HttpAddress, Publisher, ServiceGroup), BoxError> {
    create_tables(&names.schemas).await?;
    let extra = names.exchange();
    let billing = billing_service(&names.schemas.billing, &extra, deliveries)
        .build()
        .await?;
    let orders = orders_service(&names.schemas.orders, address, &extra)
        .build()
        .await?;
    let at = orders.resources().get::<HttpAddress>()?;
    let publisher = orders.resources().get::<Publisher>()?;
    Ok((
        at,
        publisher,
        ServiceGroup::new().service(billing).service(orders),
    ))
}

/// The schemas and exchange of a run: the standing ones, or fresh ones
/// named after a run id.
struct Names {
    schemas: Schemas,
    exchange: Option<String>,
}

impl Names {
    fn standing() -> Self {
        Self {
            schemas: Schemas {
                orders: "orders".into(),
                billing: "billing".into(),
            },
            exchange: None,
        }
    }

    fn fresh(id: &str) -> Self {
        Self {
            schemas: Schemas {
                orders: format!("orders_{id}"),
                billing: format!("billing_{id}"),
            },
            exchange: Some(format!("orders-outbox-{id}")),
        }
    }

    /// The settings that put the services on this run's exchange.
    fn exchange(&self) -> Vec<(&'static str, String)> {
        self.exchange
            .iter()
            .map(|e| ("MAMEY__MESSAGING__CONVENTIONS__EXCHANGE", e.clone()))
            .collect()
    }

    /// Drops this run's schemas.
    async fn drop_schemas(&self) -> Result<(), BoxError> {
        let url = std::env::var("MAMEY__POSTGRES__URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let pool = PgPool::connect(&url).await?;
        for schema in [&self.schemas.orders, &self.schemas.billing] {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await?;
        }
        Ok(())
    }
}

/// One request over HTTP; returns the status and body.
async fn call(
    method: Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, String), BoxError> {
    let mut request = Request::builder().method(method).uri(url);
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&json)?)
        }
        None => Bytes::new(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request.body(Full::new(body))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn demo() -> Result<(), BoxError> {
    // Fresh names, so that runs (and tests) never meet: `RUN_ID` lets a
    // caller know them, to clean up the broker's queues afterwards.
    let id = std::env::var("RUN_ID").unwrap_or_else(|_| mamey_core::new_id()[..8].to_owned());
    let names = Names::fresh(&id);
    let deliveries = Deliveries::default();
    // The schemas are dropped whatever happens before.
    let outcome = async {
        let (HttpAddress(at), publisher, group) =
            system(&names, "127.0.0.1:0", &deliveries).await?;
        let running = group.handle_signals(false).start().await?;
        let walked = walk_through(&at.to_string(), &publisher, &names.schemas, &deliveries).await;
        running.stop().await?;
        walked
    }
    .await;
    names.drop_schemas().await?;
    outcome
}

async fn walk_through(
    at: &str,
    publisher: &Publisher,
    schemas: &Schemas,
    Deliveries(deliveries): &Deliveries,
) -> Result<(), BoxError> {
    let url = |path: &str| format!("http://{at}{path}");
    for (id, customer, cents) in [(1, "ada", 1250), (2, "grace", 990), (3, "alan", 4200)] {
        let order = serde_json::json!({ "id": id, "customer": customer, "total_cents": cents });
        let (status, _) = call(Method::POST, &url("/orders"), Some(order)).await?;
        println!("place order {id}: {status}");
    }
    let again = serde_json::json!({ "id": 1, "customer": "ada", "total_cents": 1250 });
    let (status, body) = call(Method::POST, &url("/orders"), Some(again)).await?;
    println!("place order 1 again: {status} {body}");

    let database = std::env::var("MAMEY__POSTGRES__URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = PgPool::connect(&database).await?;
    // A broker redelivery, played by hand: order 1's event once more, with
    // its original message id (as staged in the outbox).
    let (message_id, body): (String, Vec<u8>) = sqlx::query_as(&format!(
        "SELECT message_id, body FROM {}.outbox WHERE message_type = 'OrderPlaced' ORDER BY seq LIMIT 1",
        schemas.orders
    ))
    .fetch_one(&db)
    .await?;
    // The body as staged: camelCase field names, as Convey's.
    println!("staged OrderPlaced: {}", String::from_utf8_lossy(&body));
    let event: OrderPlaced = serde_json::from_slice(&body)?;
    publisher
        .publish_with(
            &event,
            PublishOptions {
                message_id: Some(message_id),
                ..PublishOptions::default()
            },
        )
        .await?;
    println!("redelivered OrderPlaced for order {}", event.id);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in 1..=3 {
        loop {
            let (_, body) = call(Method::GET, &url(&format!("/orders/{id}")), None).await?;
            if body.contains("\"status\":\"charged\"") {
                println!("order {id}: {body}");
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("order {id} was not charged: {body}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while deliveries.load(Ordering::SeqCst) < 4 {
        if tokio::time::Instant::now() > deadline {
            return Err("billing did not see the redelivery".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "OrderPlaced deliveries in billing: {}",
        deliveries.load(Ordering::SeqCst)
    );
    let charges: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}.charges", schemas.billing))
            .fetch_one(&db)
            .await?;
    println!("charges in billing: {charges}");
    for schema in [&schemas.orders, &schemas.billing] {
        let pending: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
        ))
        .fetch_one(&db)
        .await?;
        println!("unsent in {schema}.outbox: {pending}");
    }
    db.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--demo") {
        return demo().await;
    }
    let run_id = std::env::var("RUN_ID").ok();
    let names = run_id.as_deref().map_or_else(Names::standing, Names::fresh);
    let address = std::env::var("ORDERS_ADDRESS").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let (HttpAddress(at), _, group) = system(&names, &address, &Deliveries::default()).await?;
    let running = group.start().await?;
    println!("orders on http://{at} (docs: http://{at}/docs)");
    println!(
        "try: curl -si http://{at}/orders -H 'content-type: application/json' \
         -d '{{\"id\":1,\"customer\":\"ada\",\"total_cents\":1250}}'"
    );
    // Until Ctrl-C or SIGTERM: orders stops first, then billing.
    let stopped = running.wait().await;
    if run_id.is_some() {
        names.drop_schemas().await?;
    }
    Ok(stopped?)
}
