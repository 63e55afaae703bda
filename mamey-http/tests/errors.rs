//! One status and code per class of bad request, whatever the method or the
//! route: parameters, JSON, bodies that do not fit, content codings, and
//! bodies that do not arrive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use http::{Method, StatusCode};
use mamey_core::Error;
use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_http::utoipa::ToSchema;
use mamey_http::{Endpoints, Json, QueryParams, WebApi};
use serde::{Deserialize, Serialize};
use support::{Reply, send, serve, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Order {
    id: u64,
    customer: String,
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
    limit: Option<u32>,
}
impl Query for ListOrders {
    type Output = Vec<Order>;
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Channel {
    Web,
    Phone,
}

#[derive(Debug, Deserialize, ToSchema)]
struct PlaceOrder {
    id: u64,
    customer: String,
    channel: Channel,
}
impl Command for PlaceOrder {}

#[derive(Debug, Deserialize, ToSchema)]
struct Rename {
    id: u64,
    customer: String,
}
impl Command for Rename {}

#[derive(Debug, Deserialize, ToSchema)]
struct CancelOrder {
    id: u64,
}
impl Command for CancelOrder {}

type Orders = Arc<Mutex<HashMap<u64, Order>>>;

async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<Order>, Error> {
    Ok(orders.lock().unwrap().get(&q.id).cloned())
}

async fn list_orders(q: ListOrders, Res(orders): Res<Orders>) -> Result<Vec<Order>, Error> {
    let limit = q.limit.unwrap_or(u32::MAX) as usize;
    Ok(orders
        .lock()
        .unwrap()
        .values()
        .take(limit)
        .cloned()
        .collect())
}

async fn place_order(c: PlaceOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    let _ = c.channel;
    orders.lock().unwrap().insert(
        c.id,
        Order {
            id: c.id,
            customer: c.customer,
        },
    );
    Ok(())
}

async fn rename(c: Rename, Res(orders): Res<Orders>) -> Result<(), Error> {
    if let Some(order) = orders.lock().unwrap().get_mut(&c.id) {
        order.customer = c.customer;
    }
    Ok(())
}

async fn cancel_order(c: CancelOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    orders
        .lock()
        .unwrap()
        .remove(&c.id)
        .map(|_| ())
        .ok_or_else(|| Error::not_found("order.not_found", "no such order"))
}

fn handlers(d: &mut DispatcherBuilder) {
    d.query(get_order)
        .query(list_orders)
        .command(place_order)
        .command(rename)
        .command(cancel_order);
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Note {
    text: String,
    stars: u8,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Page {
    limit: u32,
}

async fn orders(config: &[(&str, &str)]) -> (support::Served, Orders) {
    let orders = Orders::default();
    orders.lock().unwrap().insert(
        7001,
        Order {
            id: 7001,
            customer: "ada".into(),
        },
    );
    let served =
        serve(
            service("orders", config)
                .resource(Arc::clone(&orders))
                .handlers(handlers),
            WebApi::new()
                .endpoints(
                    Endpoints::new()
                        .get::<GetOrder>("/orders/{id}")
                        .get::<ListOrders>("/orders")
                        .post::<PlaceOrder>("/orders")
                        .put::<Rename>("/orders/{id}")
                        .patch::<Rename>("/orders/{id}/customer")
                        .delete::<CancelOrder>("/orders/{id}"),
                )
                .router(
                    axum::Router::new()
                        .route(
                            "/notes",
                            post(|Json(note): Json<Note>| async move { note.text }),
                        )
                        .route(
                            "/pages",
                            axum::routing::get(|QueryParams(page): QueryParams<Page>| async move {
                                page.limit.to_string()
                            }),
                        )
                        .route(
                            "/typed/{id}",
                            axum::routing::get(
                                |mamey_http::Path(id): mamey_http::Path<u64>| async move {
                                    id.to_string()
                                },
                            ),
                        ),
                ),
        )
        .await;
    (served, orders)
}

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

fn assert_problem(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let problem = reply.problem();
    assert_eq!(problem.code, code, "{problem:?}");
    if let Some(field) = field {
        assert_eq!(
            problem.errors.first().map(|e| e.field.as_str()),
            Some(field),
            "{problem:?}"
        );
    }
}

#[tokio::test]
async fn a_parameter_that_does_not_parse_is_400_naming_it_on_every_method() {
    let (api, _) = orders(&[]).await;
    let body = r#"{ "customer": "bo" }"#;
    for (method, path, body) in [
        (Method::GET, "/orders/seven", ""),
        (Method::PUT, "/orders/seven", body),
        (Method::PATCH, "/orders/seven/customer", body),
        (Method::DELETE, "/orders/seven", ""),
        (Method::GET, "/orders/-1", ""),
        (Method::DELETE, "/orders/99999999999999999999999", ""),
        (Method::GET, "/typed/seven", ""),
    ] {
        let reply = send(method.clone(), &api.url(path), &JSON, body).await;
        assert_problem(
            &reply,
            StatusCode::BAD_REQUEST,
            "request.invalid_parameter",
            Some("id"),
        );
        assert!(
            reply.problem().detail.contains("id"),
            "{method} {path}: {:?}",
            reply.problem()
        );
    }
    for path in [
        "/orders?limit=ten",
        "/orders?limit=-3",
        "/pages?limit=x",
        "/pages",
    ] {
        let reply = send(Method::GET, &api.url(path), &[], "").await;
        assert_problem(
            &reply,
            StatusCode::BAD_REQUEST,
            "request.invalid_parameter",
            Some("limit"),
        );
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn json_that_does_not_fit_is_422_naming_the_field_and_non_json_is_400() {
    let (api, _) = orders(&[]).await;
    for (body, field) in [
        (r#"{ "id": 1, "channel": "web" }"#, "customer"),
        (
            r#"{ "id": "one", "customer": "ada", "channel": "web" }"#,
            "id",
        ),
        (
            r#"{ "id": 1, "customer": "ada", "channel": "fax" }"#,
            "channel",
        ),
        ("", "id"),
    ] {
        let reply = send(Method::POST, &api.url("/orders"), &JSON, body).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_body",
            Some(field),
        );
    }
    let reply = send(Method::PUT, &api.url("/orders/1"), &JSON, "{}").await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid_body",
        Some("customer"),
    );
    for (body, field) in [
        (r#"{ "stars": 3 }"#, "text"),
        (r#"{ "text": "hi", "stars": 300 }"#, "stars"),
    ] {
        let reply = send(Method::POST, &api.url("/notes"), &JSON, body).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_body",
            Some(field),
        );
    }
    for url in ["/orders", "/notes"] {
        for body in ["{ not json", "{}}", "[1,"] {
            let reply = send(Method::POST, &api.url(url), &JSON, body).await;
            assert_problem(
                &reply,
                StatusCode::BAD_REQUEST,
                "request.invalid_json",
                None,
            );
        }
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_contradicts_the_path_is_refused() {
    let (api, orders) = orders(&[]).await;
    let reply = send(
        Method::DELETE,
        &api.url("/orders/7001"),
        &JSON,
        r#"{ "id": 7002 }"#,
    )
    .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid_body",
        Some("id"),
    );
    assert!(orders.lock().unwrap().contains_key(&7001), "not deleted");
    let same = send(
        Method::DELETE,
        &api.url("/orders/7001"),
        &JSON,
        r#"{ "id": 7001 }"#,
    )
    .await;
    assert_eq!(same.status, StatusCode::NO_CONTENT);
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn any_content_encoding_but_identity_is_415() {
    let (api, orders) = orders(&[]).await;
    let body = r#"{ "id": 5, "customer": "ada", "channel": "web" }"#;
    for coding in ["gzip", "br", "deflate", "identity, gzip"] {
        for (method, path, body) in [
            (Method::POST, "/orders", body),
            (Method::POST, "/notes", r#"{ "text": "hi", "stars": 3 }"#),
            (Method::GET, "/orders/7001", ""),
        ] {
            let reply = send(
                method,
                &api.url(path),
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", coding),
                ],
                body,
            )
            .await;
            assert_problem(
                &reply,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.unsupported_encoding",
                None,
            );
            assert_eq!(reply.header("accept-encoding"), Some("identity"));
        }
    }
    assert!(!orders.lock().unwrap().contains_key(&5));
    let plain = send(
        Method::POST,
        &api.url("/orders"),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
        body,
    )
    .await;
    assert_eq!(plain.status, StatusCode::NO_CONTENT);
    api.service.stop().await.unwrap();
}

/// Sends a head promising `length` bytes, then `sent` of them, and waits.
async fn stall(address: std::net::SocketAddr, path: &str, length: usize, sent: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n{sent}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if String::from_utf8_lossy(&answer).contains("\"code\"") {
                break;
            }
        }
    })
    .await
    .expect("answered");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let (api, _) = orders(&[("http.request_timeout", "300ms")]).await;
    for path in ["/orders", "/notes"] {
        let answer = stall(api.address, path, 100, r#"{ "id": 1"#).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("\"code\":\"request.timeout\""), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    api.service.stop().await.unwrap();
}
