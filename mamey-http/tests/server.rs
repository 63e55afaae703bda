//! The web API over real HTTP: the endpoint DSL, problem+json for bad
//! input, the request pipeline, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode};
use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_core::{Error, MessageContext};
use mamey_http::utoipa::ToSchema;
use mamey_http::{Endpoints, WebApi};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{get as http_get, post_json, send, serve, service};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct OrderDto {
    id: u64,
    customer: String,
    items: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
struct GetOrder {
    id: u64,
}
impl Query for GetOrder {
    type Output = Option<OrderDto>;
}

#[derive(Debug, Deserialize, ToSchema)]
struct ListOrders {
    customer: Option<String>,
}
impl Query for ListOrders {
    type Output = Vec<OrderDto>;
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
struct CreateOrder {
    id: u64,
    customer: String,
    items: u32,
}
impl Command for CreateOrder {
    fn validate(&self) -> Result<(), Error> {
        if self.items == 0 {
            return Err(
                Error::invalid_input("order.invalid", "the order is invalid").with_field(
                    "items",
                    "range",
                    "at least one item",
                ),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct RenameCustomer {
    id: u64,
    customer: String,
}
impl Command for RenameCustomer {}

#[derive(Debug, Deserialize, ToSchema)]
struct CancelOrder {
    id: u64,
}
impl Command for CancelOrder {}

#[derive(Debug, Deserialize, ToSchema)]
struct ShipOrder {
    id: u64,
}
impl Command for ShipOrder {}

type Orders = Arc<Mutex<HashMap<u64, OrderDto>>>;

/// The orders API: every DSL verb over an in-memory map.
fn orders_api() -> Endpoints {
    Endpoints::new()
        .get::<GetOrder>("/orders/{id}")
        .summary("One order")
        .get::<ListOrders>("/orders")
        .post::<CreateOrder>("/orders")
        .created(|order| format!("/orders/{}", order.id))
        .after(|order, response| {
            response
                .headers_mut()
                .insert("x-order-customer", order.customer.parse().unwrap());
        })
        .put::<RenameCustomer>("/orders/{id}/customer")
        .before(|rename| {
            rename.customer = rename.customer.trim().to_owned();
            Ok(())
        })
        .patch::<RenameCustomer>("/orders/{id}")
        .delete::<CancelOrder>("/orders/{id}")
        .post::<ShipOrder>("/orders/{id}/shipment")
        .accepted()
        .into()
}

async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<OrderDto>, Error> {
    Ok(orders.lock().unwrap().get(&q.id).cloned())
}

async fn list_orders(q: ListOrders, Res(orders): Res<Orders>) -> Result<Vec<OrderDto>, Error> {
    let mut all: Vec<OrderDto> = orders
        .lock()
        .unwrap()
        .values()
        .filter(|order| q.customer.as_ref().is_none_or(|c| *c == order.customer))
        .cloned()
        .collect();
    all.sort_by_key(|order| order.id);
    Ok(all)
}

async fn create_order(c: CreateOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    let mut orders = orders.lock().unwrap();
    if orders.contains_key(&c.id) {
        return Err(Error::conflict("order.exists", "the order exists"));
    }
    orders.insert(
        c.id,
        OrderDto {
            id: c.id,
            customer: c.customer,
            items: c.items,
        },
    );
    Ok(())
}

async fn rename_customer(c: RenameCustomer, Res(orders): Res<Orders>) -> Result<(), Error> {
    let mut orders = orders.lock().unwrap();
    let order = orders
        .get_mut(&c.id)
        .ok_or_else(|| Error::not_found("order.not_found", "no such order"))?;
    order.customer = c.customer;
    Ok(())
}

async fn cancel_order(c: CancelOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    orders.lock().unwrap().remove(&c.id);
    Ok(())
}

async fn ship_order(c: ShipOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    if orders.lock().unwrap().contains_key(&c.id) {
        Ok(())
    } else {
        Err(Error::not_found("order.not_found", "no such order"))
    }
}

/// The handlers behind [`orders_api`]; they take the [`Orders`] resource.
fn orders_handlers(d: &mut DispatcherBuilder) {
    d.query(get_order)
        .query(list_orders)
        .command(create_order)
        .command(rename_customer)
        .command(cancel_order)
        .command(ship_order);
}

/// The orders API, plus `/panic` and `/slow` (600 ms; counts its callers in
/// the returned counter when they enter).
async fn orders_service(config: &[(&str, &str)]) -> (support::Served, Orders) {
    let (served, orders, _) = orders_service_counting(config).await;
    (served, orders)
}

async fn orders_service_counting(
    config: &[(&str, &str)],
) -> (support::Served, Orders, Arc<AtomicUsize>) {
    let orders = Orders::default();
    let entered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&entered);
    let served = serve(
        service("orders", config)
            .resource(Arc::clone(&orders))
            .handlers(orders_handlers),
        WebApi::new()
            .endpoints(orders_api())
            .router(axum::Router::new().route(
                "/panic",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            ))
            .router(axum::Router::new().route(
                "/slow",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        tokio::time::sleep(Duration::from_millis(600)).await;
                        "done"
                    }
                }),
            )),
    )
    .await;
    (served, orders, entered)
}

#[tokio::test]
async fn every_verb_of_the_dsl() {
    let (api, orders) = orders_service(&[]).await;

    let created = post_json(
        &api.url("/orders"),
        &json!({ "id": 7, "customer": "ada", "items": 2 }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("location"), Some("/orders/7"));
    assert_eq!(created.header("x-order-customer"), Some("ada"));
    assert_eq!(orders.lock().unwrap()[&7].items, 2);

    let found = http_get(&api.url("/orders/7")).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(
        found.json(),
        json!({ "id": 7, "customer": "ada", "items": 2 })
    );

    let missing = http_get(&api.url("/orders/8")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.problem().status, 404);

    post_json(
        &api.url("/orders"),
        &json!({ "id": 9, "customer": "bob", "items": 1 }),
    )
    .await;
    let listed = http_get(&api.url("/orders?customer=bob")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.json(),
        json!([{ "id": 9, "customer": "bob", "items": 1 }])
    );

    // The route value is bound into the command; the before hook trims.
    let renamed = send(
        Method::PUT,
        &api.url("/orders/7/customer"),
        &[("content-type", "application/json")],
        r#"{ "customer": "  grace " }"#,
    )
    .await;
    assert_eq!(renamed.status, StatusCode::NO_CONTENT, "{:?}", renamed.body);
    assert_eq!(orders.lock().unwrap()[&7].customer, "grace");

    let patched = send(
        Method::PATCH,
        &api.url("/orders/7"),
        &[("content-type", "application/json")],
        r#"{ "customer": "hopper" }"#,
    )
    .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    assert_eq!(orders.lock().unwrap()[&7].customer, "hopper");

    let shipped = send(
        Method::POST,
        &api.url("/orders/7/shipment"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(shipped.status, StatusCode::ACCEPTED);

    let cancelled = send(Method::DELETE, &api.url("/orders/7"), &[], Bytes::new()).await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    assert!(!orders.lock().unwrap().contains_key(&7));

    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn handler_errors_are_problems_with_their_status() {
    let (api, _) = orders_service(&[]).await;
    let order = json!({ "id": 1, "customer": "ada", "items": 1 });
    post_json(&api.url("/orders"), &order).await;

    let conflict = post_json(&api.url("/orders"), &order).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.problem().code, "order.exists");

    let not_found = send(
        Method::PUT,
        &api.url("/orders/404/customer"),
        &[("content-type", "application/json")],
        r#"{ "customer": "x" }"#,
    )
    .await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_eq!(not_found.problem().code, "order.not_found");

    // A query answering `None` is a 404 that names no internal type.
    let missing = send(Method::GET, &api.url("/orders/999"), &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let problem = missing.problem();
    assert_eq!(problem.code, "not_found");
    assert!(!problem.detail.contains("GetOrder"), "{}", problem.detail);

    // The command's validation runs in the dispatcher: 422 with the field.
    let invalid = post_json(
        &api.url("/orders"),
        &json!({ "id": 2, "customer": "ada", "items": 0 }),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problem = invalid.problem();
    assert_eq!(problem.errors[0].field, "items");
    assert_eq!(problem.errors[0].code, "range");

    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_4xx_problems() {
    let (api, _) = orders_service(&[("http.body_limit", "1024")]).await;
    let json_header = [("content-type", "application/json")];

    let malformed = send(
        Method::POST,
        &api.url("/orders"),
        &json_header,
        "{ not json",
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.problem().code, "request.invalid_json");

    let wrong_type = send(
        Method::POST,
        &api.url("/orders"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    wrong_type.problem();

    let wrong_shape = send(
        Method::POST,
        &api.url("/orders"),
        &json_header,
        r#"{ "id": 1, "customer": "ada", "items": "many" }"#,
    )
    .await;
    assert_eq!(wrong_shape.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_shape.problem().errors[0].field, "items");

    let not_object = send(Method::POST, &api.url("/orders"), &json_header, "[1, 2]").await;
    assert_eq!(not_object.status, StatusCode::UNPROCESSABLE_ENTITY);
    not_object.problem();

    let oversized = send(
        Method::POST,
        &api.url("/orders"),
        &json_header,
        format!(r#"{{ "customer": "{}" }}"#, "x".repeat(4096)),
    )
    .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    oversized.problem();

    let bad_route_value = http_get(&api.url("/orders/seven")).await;
    assert_eq!(bad_route_value.status, StatusCode::BAD_REQUEST);
    bad_route_value.problem();

    let unknown_route = http_get(&api.url("/nowhere")).await;
    assert_eq!(unknown_route.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_route.problem().code, "request.no_route");

    let wrong_method = send(Method::PATCH, &api.url("/orders"), &[], Bytes::new()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    wrong_method.problem();

    let panicked = http_get(&api.url("/panic")).await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    let problem = panicked.problem();
    assert!(
        !problem.detail.contains("handler bug"),
        "{}",
        problem.detail
    );

    // The service survived all of it.
    assert_eq!(
        http_get(&api.url("/orders/1")).await.status,
        StatusCode::NOT_FOUND
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_accepted_or_generated_and_run_the_handler_in_context() {
    let seen = Arc::new(Mutex::new(None::<MessageContext>));
    let sink = Arc::clone(&seen);
    let api = serve(
        service("ids", &[]),
        WebApi::new().router(axum::Router::new().route(
            "/whoami",
            get(move || {
                let sink = Arc::clone(&sink);
                async move {
                    *sink.lock().unwrap() = MessageContext::current();
                    "ok"
                }
            }),
        )),
    )
    .await;

    let generated = http_get(&api.url("/whoami")).await;
    let id = generated.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(seen.lock().unwrap().as_ref().unwrap().message_id, id);

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let given = send(
        Method::GET,
        &api.url("/whoami"),
        &[
            ("x-request-id", "req-123"),
            ("x-correlation-id", "corr-9"),
            ("traceparent", traceparent),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(given.header("x-request-id"), Some("req-123"));
    let context = seen.lock().unwrap().clone().unwrap();
    assert_eq!(context.message_id, "req-123");
    assert_eq!(context.correlation_id, "corr-9");
    assert_eq!(context.trace.unwrap().traceparent, traceparent);
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn load_is_shed_with_503_and_slow_requests_time_out() {
    let (api, _) = orders_service(&[("http.concurrency_limit", "1")]).await;
    let url = api.url("/slow");
    let slow = tokio::spawn(async move { http_get(&url).await });
    // Poll until the slow request holds the only permit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let reply = http_get(&api.url("/orders/1")).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.problem().code, "request.overloaded");
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    api.service.stop().await.unwrap();

    let (api, _) = orders_service(&[("http.request_timeout", "100ms")]).await;
    let timed_out = http_get(&api.url("/slow")).await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(timed_out.problem().code, "request.timeout");
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let (api, _, entered) = orders_service_counting(&[]).await;
    let url = api.url("/slow");
    let in_flight = tokio::spawn(async move { http_get(&url).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while entered.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let address = api.address;
    api.service.stop().await.unwrap();
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, StatusCode::OK);
    assert_eq!(finished.body, "done");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn health_endpoints_follow_the_lifecycle() {
    let (api, _) = orders_service(&[]).await;
    for probe in ["live", "ready", "startup"] {
        let reply = http_get(&api.url(&format!("/health/{probe}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{probe}");
        assert_eq!(reply.json()["status"], "healthy", "{probe}");
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_lists_every_endpoint_with_its_schemas() {
    let (api, _) = orders_service(&[]).await;
    let reply = http_get(&api.url("/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc: mamey_http::utoipa::openapi::OpenApi =
        serde_json::from_slice(&reply.body).expect("a valid OpenAPI document");
    let raw = reply.json();
    assert_eq!(raw["openapi"], "3.1.0");
    for (path, method) in [
        ("/orders/{id}", "get"),
        ("/orders", "get"),
        ("/orders", "post"),
        ("/orders/{id}/customer", "put"),
        ("/orders/{id}", "delete"),
        ("/orders/{id}/shipment", "post"),
    ] {
        assert!(
            raw["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert!(doc.paths.paths.contains_key("/orders/{id}"));
    let schemas = &raw["components"]["schemas"];
    for name in ["CreateOrder", "RenameCustomer", "CancelOrder", "Problem"] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    assert_eq!(
        raw["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateOrder"
    );
    let get_order = &raw["paths"]["/orders/{id}"]["get"];
    assert_eq!(get_order["parameters"][0]["name"], "id");
    assert_eq!(get_order["parameters"][0]["in"], "path");
    assert_eq!(get_order["summary"], "One order");
    let answer = &get_order["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(answer["properties"]["customer"].is_object(), "{answer}");
    assert!(raw["paths"]["/orders/{id}"]["delete"]["responses"]["204"].is_object());
    assert!(raw["paths"]["/orders"]["post"]["responses"]["201"].is_object());

    let docs = http_get(&api.url("/docs")).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&docs.body).contains("openapi.json"));
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let (api, _) = orders_service(&[]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let response = client
        .get(api.url("/health/live").parse().unwrap())
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn cors_and_compression_when_asked_for() {
    let (api, _) =
        orders_service(&[("http.cors.allowed_origins", "[\"https://app.example.com\"]")]).await;

    let preflight = send(
        Method::OPTIONS,
        &api.url("/orders"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Bytes::new(),
    )
    .await;
    assert!(preflight.status.is_success(), "{:?}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    let allowed = send(
        Method::GET,
        &api.url("/orders"),
        &[("origin", "https://app.example.com")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let other = send(
        Method::GET,
        &api.url("/orders"),
        &[("origin", "https://evil.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // Compressed only for a client that accepts it.
    let gzipped = send(
        Method::GET,
        &api.url("/openapi.json"),
        &[("accept-encoding", "gzip")],
        Bytes::new(),
    )
    .await;
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(&gzipped.body[..2], [0x1f, 0x8b], "a gzip stream");
    let plain = http_get(&api.url("/openapi.json")).await;
    assert_eq!(plain.header("content-encoding"), None);
    plain.json();
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (api, _) = orders_service(&[("http.header_read_timeout", "200ms")]).await;
    let mut slow = tokio::net::TcpStream::connect(api.address).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Without the deadline the server would wait for the rest forever.
    let mut buffer = [0_u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("the server closed the connection");
    match read {
        Ok(n) => {
            let answer = String::from_utf8_lossy(&buffer[..n]);
            assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
    // Complete requests are still served.
    assert_eq!(
        http_get(&api.url("/health/live")).await.status,
        StatusCode::OK
    );
    api.service.stop().await.unwrap();
}
