//! The chapter "gRPC" (`docs/src/grpc.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use mamey_core::{BoxError, Error};

/// Orders by id; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OrderStore(Arc<Mutex<HashMap<u64, orders::Order>>>);

impl OrderStore {
    /// One order.
    pub async fn find(&self, id: u64) -> Result<Option<orders::Order>, Error> {
        let orders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(orders.get(&id).cloned())
    }
}

/// The `orders.v1.Orders` service.
#[derive(Debug, Default)]
pub struct MyOrders {
    store: OrderStore,
}

// ANCHOR: hosting
use mamey_core::Service;
use mamey_http::grpc::GrpcServer;
use mamey_http::{Auth, ServiceClientPlugin};
use mamey_observability::Observability;

/// The code generated from `proto/orders.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod orders {
    tonic::include_proto!("orders.v1");
}
const DESCRIPTORS: &[u8] = tonic::include_file_descriptor_set!("orders_descriptor");

/// The program.
pub async fn serve() -> Result<(), BoxError> {
    Service::builder("orders")
        .plugin(Observability::new())
        .plugin(ServiceClientPlugin::new())
        .plugin(
            GrpcServer::new()
                .service(orders::orders_server::OrdersServer::new(MyOrders::default()))
                .file_descriptor_set(DESCRIPTORS)
                .auth(Auth::roles(["clerk"])),
        )
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
// ANCHOR_END: hosting

// ANCHOR: errors
use orders::{GetOrder, Order};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl orders::orders_server::Orders for MyOrders {
    async fn get(&self, request: Request<GetOrder>) -> Result<Response<Order>, Status> {
        let order = self
            .store
            .find(request.get_ref().id)
            .await
            .map_err(|e| mamey_http::grpc::status(&e))?
            .ok_or_else(|| {
                mamey_http::grpc::status(&Error::not_found("order.not_found", "no such order"))
            })?;
        Ok(Response::new(order))
    }
}
// ANCHOR_END: errors

// ANCHOR: client
use mamey_http::ServiceClient;

/// Reads order 7 from the `orders` service.
pub async fn order_seven(client: &ServiceClient) -> Result<Order, Status> {
    let channel = client.grpc("orders"); // `client`: the ServiceClient resource
    let mut orders = orders::orders_client::OrdersClient::new(channel.clone());
    let order = orders.get(GetOrder { id: 7 }).await?.into_inner();
    Ok(order)
}
// ANCHOR_END: client

// ANCHOR: retry
/// The same, retried after `UNAVAILABLE` or `RESOURCE_EXHAUSTED`.
pub async fn order_seven_retried(client: &ServiceClient) -> Result<Order, Status> {
    let channel = client.grpc("orders");
    let orders = orders::orders_client::OrdersClient::new(channel.clone());
    let order = channel
        .retry(|| {
            let mut orders = orders.clone();
            async move { orders.get(GetOrder { id: 7 }).await }
        })
        .await?
        .into_inner();
    Ok(order)
}
// ANCHOR_END: retry
