//! A gRPC orders service and a client calling it by name.
//!
//! - `orders` hosts `orders.v1.Orders` (from `proto/orders.proto`) with the
//!   `GrpcServer` plug-in: bearer tokens required, `grpc.health.v1` and
//!   reflection served beside it.
//! - The client side resolves `orders` through the static list of the
//!   `ServiceClientPlugin` and calls it over a `GrpcChannel`, the caller's
//!   identity and trace going along in the metadata.
//!
//! `cargo run -p grpc-example` serves on 127.0.0.1:9090 until Ctrl-C and
//! prints a token for `grpcurl`. `cargo run -p grpc-example -- --demo`
//! uses a free port, makes the calls, prints the answers, and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mamey_core::{BoxError, Error, Identity, MessageContext, Service};
use mamey_http::grpc::{GrpcAddress, GrpcServer, status};
use mamey_http::{Auth, JwtIssuer, ServiceClient, ServiceClientPlugin};
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The generated code of `proto/orders.proto`.
mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::pedantic, clippy::all)]
    tonic::include_proto!("orders.v1");

    /// For reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orders");
}

use pb::orders_client::OrdersClient;
use pb::orders_server::{Orders, OrdersServer};
use pb::{GetOrderRequest, Order, PlaceOrderReply, PlaceOrderRequest};

/// The demo's signing secret; a real service reads `grpc.jwt` from its
/// configuration.
const SECRET: &str = "example-secret-change-me-32-bytes!!";

#[derive(Default)]
struct OrderBook {
    orders: Mutex<BTreeMap<u64, Order>>,
}

impl OrderBook {
    fn orders(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Order>> {
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl Orders for Arc<OrderBook> {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderReply>, Status> {
        let order = request.into_inner();
        if order.quantity == 0 {
            return Err(status(&Error::invalid_input(
                "order.quantity",
                "quantity must be positive",
            )));
        }
        // The caller's identity, from the bearer token, is in the context.
        let placed_by = MessageContext::current()
            .and_then(|ctx| ctx.identity.clone())
            .map(|identity| identity.subject)
            .unwrap_or_default();
        let mut orders = self.orders();
        if orders.contains_key(&order.id) {
            return Err(status(&Error::conflict(
                "order.exists",
                format!("order {} exists", order.id),
            )));
        }
        orders.insert(
            order.id,
            Order {
                id: order.id,
                customer: order.customer,
                quantity: order.quantity,
                placed_by,
            },
        );
        Ok(Response::new(PlaceOrderReply { id: order.id }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let id = request.get_ref().id;
        self.orders()
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| {
                status(&Error::not_found(
                    "order.not_found",
                    format!("no order {id}"),
                ))
            })
    }
}

/// The orders service on `address`.
async fn orders(address: &str) -> Result<(GrpcAddress, mamey_core::RunningService), BoxError> {
    let service = Service::builder("orders")
        .env_vars([
            ("MAMEY__GRPC__ADDRESS", address),
            ("MAMEY__GRPC__JWT__SECRET", SECRET),
        ])
        .plugin(
            GrpcServer::new()
                .service(OrdersServer::new(Arc::new(OrderBook::default())))
                .file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .auth(Auth::Authenticated),
        )
        .build()
        .await?;
    let address = service.resources().get::<GrpcAddress>()?;
    Ok((address, service.start().await?))
}

fn token(subject: &str) -> Result<String, Error> {
    JwtIssuer::hs256(SECRET).issue(&Identity::new(subject))
}

fn with_token<T>(message: T, token: Option<&str>) -> Result<Request<T>, BoxError> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(request)
}

fn outcome<T: std::fmt::Debug>(result: Result<Response<T>, Status>) -> String {
    match result {
        Ok(response) => format!("ok {:?}", response.into_inner()),
        Err(status) => {
            let error = mamey_http::grpc::error(&status);
            format!("{:?} ({})", status.code(), error.code())
        }
    }
}

async fn demo() -> Result<(), BoxError> {
    let (GrpcAddress(at), server) = orders("127.0.0.1:0").await?;
    // A second service that calls `orders` by name.
    let shop = Service::builder("shop")
        .env_vars([(
            "MAMEY__HTTP_CLIENT__SERVICES__ORDERS",
            format!("[\"http://{at}\"]"),
        )])
        .plugin(ServiceClientPlugin::new())
        .build()
        .await?;
    let channel = shop.resources().get::<ServiceClient>()?.grpc("orders");
    let shop = shop.start().await?;

    let mut health = HealthClient::new(channel.clone());
    let serving = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    println!("health: {}", outcome(serving));

    let mut client = OrdersClient::new(channel);
    let ada = token("ada")?;
    let order = PlaceOrderRequest {
        id: 7,
        customer: "acme".into(),
        quantity: 2,
    };
    println!(
        "place without a token: {}",
        outcome(client.place_order(with_token(order.clone(), None)?).await)
    );
    println!(
        "place as ada: {}",
        outcome(
            client
                .place_order(with_token(order.clone(), Some(&ada))?)
                .await
        )
    );
    println!(
        "place it again: {}",
        outcome(client.place_order(with_token(order, Some(&ada))?).await)
    );
    let invalid = PlaceOrderRequest {
        id: 8,
        customer: "acme".into(),
        quantity: 0,
    };
    println!(
        "place an invalid order: {}",
        outcome(client.place_order(with_token(invalid, Some(&ada))?).await)
    );
    println!(
        "get it: {}",
        outcome(
            client
                .get_order(with_token(GetOrderRequest { id: 7 }, Some(&ada))?)
                .await
        )
    );
    println!(
        "get another: {}",
        outcome(
            client
                .get_order(with_token(GetOrderRequest { id: 9 }, Some(&ada))?)
                .await
        )
    );

    shop.stop().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--demo") {
        return demo().await;
    }
    let (GrpcAddress(at), server) = orders("127.0.0.1:9090").await?;
    println!("orders.v1.Orders on {at}; token: {}", token("you")?);
    // Stops by itself on Ctrl-C or SIGTERM.
    server.wait().await?;
    Ok(())
}
