//! Two services in one process, over real HTTP on loopback:
//!
//! - `pricing` answers `GET /prices/{sku}` through a one-query endpoint DSL;
//! - `orders` serves an endpoint DSL — `GET /orders/{id}`, `GET /orders`,
//!   `POST /orders` (role `clerk`, validated with garde, priced by calling
//!   `pricing` by name), `DELETE /orders/{id}` (role `manager`) — with JWT
//!   authentication, problem+json errors, `/openapi.json` and `/docs`.
//!
//! `cargo run -p http-api` serves on 127.0.0.1:8080 (orders) and :8081
//! (pricing; `ORDERS_ADDRESS` and `PRICING_ADDRESS` change them) until
//! Ctrl-C or SIGTERM, printing a clerk's and a manager's token to try it
//! with curl. `cargo run -p http-api -- --demo` uses free ports, makes
//! the calls itself, prints what came back, and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_core::{BoxError, Error, Identity, MessageContext, Service, ServiceGroup};
use mamey_http::{
    Auth, Endpoints, HttpAddress, JwtIssuer, ServiceClient, ServiceClientPlugin, WebApi, url_path,
};
use mamey_observability::Observability;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The demo's signing secret; a real service reads `http.jwt` from its
/// configuration (a file, the environment or a vault).
const SECRET: &str = "example-secret-change-me-32-bytes!!";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Order {
    id: u64,
    customer: String,
    sku: String,
    quantity: u32,
    total_cents: u64,
    placed_by: String,
}

#[derive(Debug, Deserialize, ToSchema)]
struct GetOrder {
    id: u64,
}
impl Query for GetOrder {
    type Output = Option<Order>;
}

#[derive(Debug, Deserialize, ToSchema)]
struct ListOrders {
    customer: Option<String>,
}
impl Query for ListOrders {
    type Output = Vec<Order>;
}

/// Each garde rule is mirrored by a `#[schema(...)]` limit, so that
/// `/openapi.json` promises what `validate` checks. Lengths are counted in
/// characters (`chars`), as JSON Schema counts them; garde's default counts
/// bytes, which would refuse a spec-valid `"é"` × 64.
#[derive(Debug, Clone, Deserialize, ToSchema, garde::Validate)]
struct PlaceOrder {
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    id: u64,
    #[garde(length(chars, min = 1, max = 64))]
    #[schema(min_length = 1, max_length = 64)]
    customer: String,
    #[garde(length(chars, min = 1, max = 32))]
    #[schema(min_length = 1, max_length = 32)]
    sku: String,
    #[garde(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    quantity: u32,
}
impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct CancelOrder {
    id: u64,
}
impl Command for CancelOrder {}

#[derive(Serialize, Deserialize, ToSchema)]
struct Price {
    sku: String,
    cents: u64,
}

#[derive(Deserialize, ToSchema)]
struct GetPrice {
    sku: String,
}
impl Query for GetPrice {
    type Output = Price;
}

/// The orders, kept in memory: the example's repository. The service gets
/// one with `ServiceBuilder::resource`; the handlers take it as `Res<Orders>`.
#[derive(Clone, Default)]
struct Orders(Arc<Mutex<BTreeMap<u64, Order>>>);

impl Orders {
    fn locked(&self) -> MutexGuard<'_, BTreeMap<u64, Order>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .get::<GetOrder>("/orders/{id}")
        .summary("One order")
        .get::<ListOrders>("/orders")
        .summary("Orders, optionally of one customer")
        .post::<PlaceOrder>("/orders")
        .summary("Place an order, priced by the pricing service")
        .auth(Auth::roles(["clerk", "manager"]))
        .created(|order| format!("/orders/{}", order.id))
        .delete::<CancelOrder>("/orders/{id}")
        .summary("Cancel an order")
        .auth(Auth::roles(["manager"]))
        .into()
}

async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<Order>, Error> {
    Ok(orders.locked().get(&q.id).cloned())
}

async fn list_orders(q: ListOrders, Res(orders): Res<Orders>) -> Result<Vec<Order>, Error> {
    Ok(orders
        .locked()
        .values()
        .filter(|order| q.customer.as_ref().is_none_or(|c| *c == order.customer))
        .cloned()
        .collect())
}

/// Prices the order by calling `pricing` by name (the caller's trace and
/// correlation id go along) and records who placed it.
async fn place_order(
    c: PlaceOrder,
    Res(orders): Res<Orders>,
    Res(pricing): Res<ServiceClient>,
    ctx: MessageContext,
) -> Result<(), Error> {
    if orders.locked().contains_key(&c.id) {
        return Err(Error::conflict(
            "order.exists",
            format!("order {} exists", c.id),
        ));
    }
    // `url_path` keeps the sku one path segment, whatever it contains.
    let price: Price = pricing
        .get("pricing", &url_path(["prices", &c.sku]))
        .send()
        .await?
        .json()?;
    let placed_by = ctx.identity.map(|caller| caller.subject);
    let order = Order {
        id: c.id,
        customer: c.customer,
        sku: c.sku,
        quantity: c.quantity,
        total_cents: price.cents * u64::from(c.quantity),
        placed_by: placed_by.unwrap_or_default(),
    };
    orders.locked().insert(order.id, order);
    Ok(())
}

async fn cancel_order(c: CancelOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    orders
        .locked()
        .remove(&c.id)
        .map(|_| ())
        .ok_or_else(|| Error::not_found("order.not_found", format!("no order {}", c.id)))
}

fn handlers(d: &mut DispatcherBuilder) {
    d.query(get_order)
        .query(list_orders)
        .command(place_order)
        .command(cancel_order);
}

async fn get_price(q: GetPrice) -> Result<Price, Error> {
    let cents = 100 + q.sku.bytes().map(u64::from).sum::<u64>() % 900;
    Ok(Price { sku: q.sku, cents })
}

/// Builds both services as one group: `pricing` first, since `orders`
/// calls it, so it starts first and stops last. Returns the address of
/// `orders` and the group.
async fn system(
    orders_address: &str,
    pricing_address: &str,
) -> Result<(HttpAddress, ServiceGroup), BoxError> {
    let pricing = Service::builder("pricing")
        .env_vars([("MAMEY__HTTP__ADDRESS", pricing_address)])
        .handlers(|d| {
            d.query(get_price);
        })
        .plugin(
            WebApi::new().endpoints(
                Endpoints::new()
                    .get::<GetPrice>("/prices/{sku}")
                    .summary("The price of one unit of a SKU"),
            ),
        )
        .build()
        .await?;
    let HttpAddress(pricing_at) = pricing.resources().get::<HttpAddress>()?;

    let orders_service = Service::builder("orders")
        .env_vars([
            ("MAMEY__HTTP__ADDRESS".to_owned(), orders_address.to_owned()),
            ("MAMEY__HTTP__JWT__SECRET".to_owned(), SECRET.to_owned()),
            ("MAMEY__HTTP__JWT__ISSUER".to_owned(), "identity".to_owned()),
            (
                "MAMEY__HTTP_CLIENT__SERVICES__PRICING".to_owned(),
                format!("[\"http://{pricing_at}\"]"),
            ),
        ])
        .plugin(Observability::new())
        .plugin(ServiceClientPlugin::new())
        .resource(Orders::default())
        .handlers(handlers)
        .plugin(WebApi::new().endpoints(endpoints()))
        .build()
        .await?;
    let address = orders_service.resources().get::<HttpAddress>()?;
    Ok((
        address,
        ServiceGroup::new().service(pricing).service(orders_service),
    ))
}

fn token(subject: &str, role: &str) -> Result<String, Error> {
    JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .issue(&Identity::new(subject).with_role(role))
}

/// One request over HTTP; returns the status (with the `Location` of a
/// `201`) and the body.
async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<(String, String), BoxError> {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&json)?)
        }
        None => Bytes::new(),
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request.body(Full::new(body))?).await?;
    let mut status = response.status().as_u16().to_string();
    if let Some(location) = response.headers().get("location") {
        status = format!("{status} (Location: {})", location.to_str().unwrap_or("?"));
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn demo() -> Result<(), BoxError> {
    let (HttpAddress(at), group) = system("127.0.0.1:0", "127.0.0.1:0").await?;
    let running = group.handle_signals(false).start().await?;
    let url = |path: &str| format!("http://{at}{path}");
    let (clerk, manager) = (token("carol", "clerk")?, token("mia", "manager")?);
    let order = serde_json::json!({ "id": 1, "customer": "ada", "sku": "TEA-01", "quantity": 3 });

    let steps = [
        (
            "place without a token",
            Method::POST,
            "/orders",
            None,
            Some(order.clone()),
        ),
        (
            "place as clerk",
            Method::POST,
            "/orders",
            Some(&clerk),
            Some(order.clone()),
        ),
        (
            "place it again",
            Method::POST,
            "/orders",
            Some(&clerk),
            Some(order),
        ),
        (
            "place an invalid order",
            Method::POST,
            "/orders",
            Some(&clerk),
            Some(serde_json::json!({ "id": 2, "customer": "", "sku": "TEA-01", "quantity": 0 })),
        ),
        ("get it", Method::GET, "/orders/1", None, None),
        (
            "list ada's",
            Method::GET,
            "/orders?customer=ada",
            None,
            None,
        ),
        (
            "cancel as clerk",
            Method::DELETE,
            "/orders/1",
            Some(&clerk),
            None,
        ),
        (
            "cancel as manager",
            Method::DELETE,
            "/orders/1",
            Some(&manager),
            None,
        ),
        ("get it again", Method::GET, "/orders/1", None, None),
        (
            "place an odd sku",
            Method::POST,
            "/orders",
            Some(&clerk),
            Some(
                serde_json::json!({ "id": 3, "customer": "bo", "sku": "A?x=1#f/B", "quantity": 1 }),
            ),
        ),
        ("get the odd one", Method::GET, "/orders/3", None, None),
    ];
    for (what, method, path, token, body) in steps {
        let (status, body) =
            call(method.clone(), &url(path), token.map(String::as_str), body).await?;
        println!("{what}: {method} {path} -> {status} {body}");
    }
    let (_, openapi) = call(Method::GET, &url("/openapi.json"), None, None).await?;
    let openapi: serde_json::Value = serde_json::from_str(&openapi)?;
    let mut operations = Vec::new();
    if let Some(paths) = openapi["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    println!("openapi: {}", operations.join(", "));
    running.stop().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--demo") {
        return demo().await;
    }
    let address =
        |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let (HttpAddress(at), group) = system(
        &address("ORDERS_ADDRESS", "127.0.0.1:8080"),
        &address("PRICING_ADDRESS", "127.0.0.1:8081"),
    )
    .await?;
    let running = group.start().await?;
    println!("orders on http://{at} (docs: http://{at}/docs)");
    println!("clerk token:   {}", token("carol", "clerk")?);
    println!("manager token: {}", token("mia", "manager")?);
    // On Ctrl-C or SIGTERM: orders drains first, while pricing still
    // answers, then pricing stops.
    running.wait().await?;
    Ok(())
}
