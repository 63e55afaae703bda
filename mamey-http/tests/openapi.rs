//! `/openapi.json` describes what the endpoints do: parameters typed from
//! the message, bodies only where they are read, validation limits, every
//! status; and a seeded fuzzer finds no answer the document does not list.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mamey_core::cqrs::{Command, DispatcherBuilder, Query, Res};
use mamey_core::{Error, Identity};
use mamey_http::testing::OpenApiFuzz;
use mamey_http::utoipa::ToSchema;
use mamey_http::{Auth, Endpoints, JwtIssuer, WebApi};
use serde::{Deserialize, Serialize};
use support::{get, serve, service};

const SECRET: &str = "openapi-test-secret-of-32-bytes!!";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Order {
    id: u64,
    customer: String,
    quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct GetOrder {
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    id: u64,
}
impl Query for GetOrder {
    type Output = Option<Order>;
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct ListOrders {
    #[garde(length(chars, max = 16))]
    #[schema(max_length = 16)]
    customer: Option<String>,
    #[garde(range(min = 1, max = 50))]
    #[schema(minimum = 1, maximum = 50)]
    limit: Option<u32>,
}
impl Query for ListOrders {
    type Output = Vec<Order>;
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Channel {
    Web,
    Phone,
}

#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct PlaceOrder {
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    id: u64,
    #[garde(length(chars, min = 1, max = 20))]
    #[schema(min_length = 1, max_length = 20)]
    customer: String,
    #[garde(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    quantity: u32,
    #[garde(skip)]
    channel: Channel,
    #[garde(length(chars, max = 10))]
    #[schema(max_length = 10)]
    note: Option<String>,
}
impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct ChangeQuantity {
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    id: u64,
    #[garde(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    quantity: u32,
}
impl Command for ChangeQuantity {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

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

type Orders = Arc<Mutex<HashMap<u64, Order>>>;

async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<Order>, Error> {
    Ok(orders.lock().unwrap().get(&q.id).cloned())
}

async fn list_orders(q: ListOrders, Res(orders): Res<Orders>) -> Result<Vec<Order>, Error> {
    let limit = q.limit.unwrap_or(50) as usize;
    Ok(orders
        .lock()
        .unwrap()
        .values()
        .filter(|o| q.customer.as_ref().is_none_or(|c| *c == o.customer))
        .take(limit)
        .cloned()
        .collect())
}

async fn place_order(c: PlaceOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    let mut orders = orders.lock().unwrap();
    if orders.contains_key(&c.id) {
        return Err(Error::conflict("order.exists", "the order exists"));
    }
    let _ = (c.channel, c.note);
    orders.insert(
        c.id,
        Order {
            id: c.id,
            customer: c.customer,
            quantity: c.quantity,
        },
    );
    Ok(())
}

fn missing(id: u64) -> Error {
    Error::not_found("order.not_found", format!("no order {id}"))
}

async fn change_quantity(c: ChangeQuantity, Res(orders): Res<Orders>) -> Result<(), Error> {
    let mut orders = orders.lock().unwrap();
    let order = orders.get_mut(&c.id).ok_or_else(|| missing(c.id))?;
    order.quantity = c.quantity;
    Ok(())
}

async fn cancel_order(c: CancelOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    orders
        .lock()
        .unwrap()
        .remove(&c.id)
        .map(|_| ())
        .ok_or_else(|| missing(c.id))
}

async fn ship_order(c: ShipOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
    orders
        .lock()
        .unwrap()
        .get(&c.id)
        .map(|_| ())
        .ok_or_else(|| missing(c.id))
}

fn handlers(d: &mut DispatcherBuilder) {
    d.query(get_order)
        .query(list_orders)
        .command(place_order)
        .command(change_quantity)
        .command(cancel_order)
        .command(ship_order);
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .get::<GetOrder>("/orders/{id}")
        .get::<ListOrders>("/orders")
        .post::<PlaceOrder>("/orders")
        .auth(Auth::roles(["clerk", "manager"]))
        .created(|order| format!("/orders/{}", order.id))
        .patch::<ChangeQuantity>("/orders/{id}")
        .auth(Auth::Authenticated)
        .delete::<CancelOrder>("/orders/{id}")
        .auth(Auth::roles(["manager"]))
        .post::<ShipOrder>("/orders/{id}/shipment")
        .accepted()
        .into()
}

async fn orders() -> support::Served {
    serve(
        service(
            "orders",
            &[("http.jwt.secret", SECRET), ("http.jwt.issuer", "identity")],
        )
        .resource(Orders::default())
        .handlers(handlers),
        WebApi::new().endpoints(endpoints()),
    )
    .await
}

fn token(role: &str) -> String {
    JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .issue(&Identity::new("tester").with_role(role))
        .unwrap()
}

#[tokio::test]
async fn the_document_describes_parameters_bodies_limits_and_statuses() {
    let api = orders().await;
    let doc = get(&api.url("/openapi.json")).await.json();
    let _: mamey_http::utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("a valid OpenAPI document");
    let paths = &doc["paths"];

    // Path parameters are typed as the message's field, limits included.
    for method in ["get", "patch", "delete"] {
        let id = &paths["/orders/{id}"][method]["parameters"][0];
        assert_eq!(id["name"], "id", "{method}");
        assert_eq!(id["in"], "path", "{method}");
        assert_eq!(id["schema"]["type"], "integer", "{method}: {id}");
    }
    assert_eq!(
        paths["/orders/{id}"]["get"]["parameters"][0]["schema"]["minimum"],
        1
    );

    // A body only where one is read, without the fields the path gives.
    assert!(paths["/orders/{id}"]["delete"]["requestBody"].is_null());
    assert!(paths["/orders/{id}/shipment"]["post"]["requestBody"].is_null());
    let patch = &paths["/orders/{id}"]["patch"]["requestBody"];
    assert_eq!(patch["required"], true);
    let patch = &patch["content"]["application/json"]["schema"];
    assert!(patch["properties"]["quantity"].is_object(), "{patch}");
    assert!(patch["properties"]["id"].is_null(), "{patch}");

    // Validation limits are in the schemas.
    let place = &doc["components"]["schemas"]["PlaceOrder"]["properties"];
    assert_eq!(place["quantity"]["maximum"], 100);
    assert_eq!(place["customer"]["maxLength"], 20);
    assert_eq!(place["customer"]["minLength"], 1);
    let limit = paths["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 50);

    // Every status each can give, with the problem schema.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let post = statuses("/orders", "post");
    for status in [
        "201", "400", "401", "403", "404", "408", "409", "413", "415", "422", "500", "503", "504",
    ] {
        assert!(post.contains(&status.to_owned()), "{status} in {post:?}");
    }
    let delete = statuses("/orders/{id}", "delete");
    assert!(delete.contains(&"404".to_owned()), "{delete:?}");
    let get_one = statuses("/orders/{id}", "get");
    assert!(
        !get_one.contains(&"401".to_owned()),
        "anonymous: {get_one:?}"
    );
    assert!(
        !get_one.contains(&"408".to_owned()),
        "reads no body: {get_one:?}"
    );
    let conflict = &doc["components"]["responses"]["Conflict"];
    assert_eq!(
        conflict["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn fuzzing_the_document_finds_no_answer_it_does_not_list() {
    let api = orders().await;
    let report = OpenApiFuzz::new(format!("http://{}", api.address))
        .seed(20_240_601)
        .rounds(60)
        .token(token("clerk"))
        .token(token("manager"))
        .token(token("viewer"))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    // Each operation was reached past its guards at least once.
    for (operation, statuses) in &report.statuses {
        assert!(
            statuses
                .keys()
                .any(|s| (200..300).contains(s) || *s == 404 || *s == 409),
            "{operation} never got past validation: {statuses:?}"
        );
    }
    api.service.stop().await.unwrap();
}
