//! The gRPC API: `{{crate_name}}.v1.Items` from `proto/items.proto`, on
//! `grpc.address`. `GetItem` asks the query `GetItem` of the service's
//! dispatcher, so it is answered by the same handler as `GET /items/{id}`
//! (in the call's context: its correlation id, trace and caller).

use mamey_core::cqrs::Dispatcher;
use mamey_core::{BoxError, Error, InitContext, Plugin, StartContext};
use mamey_http::grpc::{GrpcServer, status};
use tonic::{Request, Response, Status};

use crate::proto::items_server::{Items, ItemsServer};
use crate::proto::{self, GetItemRequest};
use crate::{GetItem, Item};

/// The tonic service: each method dispatches a message.
struct ItemsApi {
    dispatcher: Dispatcher,
}

#[tonic::async_trait]
impl Items for ItemsApi {
    async fn get_item(
        &self,
        request: Request<GetItemRequest>,
    ) -> Result<Response<proto::Item>, Status> {
        let id = request.get_ref().id;
        match self.dispatcher.query(GetItem { id }).await {
            Ok(Some(item)) => Ok(Response::new(item.into())),
            Ok(None) => Err(status(&Error::not_found(
                "item.not_found",
                format!("no item {id}"),
            ))),
            // Each error kind has its gRPC code (invalid input is
            // INVALID_ARGUMENT, unavailable UNAVAILABLE, …).
            Err(error) => Err(status(&error)),
        }
    }
}

impl From<Item> for proto::Item {
    fn from(item: Item) -> Self {
        Self {
            id: item.id,
            name: item.name,
            status: item.status,
        }
    }
}

/// The `grpc` plug-in of this service: mamey's `GrpcServer` (section
/// `[grpc]`) hosting [`ItemsApi`]. A tonic service gets no extractors, so
/// this plug-in builds it in `init` from the service's `Dispatcher` (a
/// resource from the start of `build`, dispatching once `build` is done)
/// and hands every step of its life to the server.
#[derive(Debug, Default)]
pub(crate) struct Grpc {
    server: Option<GrpcServer>,
}

impl Grpc {
    fn server(&mut self) -> Result<&mut GrpcServer, BoxError> {
        self.server
            .as_mut()
            .ok_or_else(|| "the gRPC server was used before it was initialised".into())
    }
}

impl Plugin for Grpc {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let dispatcher = ctx.resource::<Dispatcher>()?;
        let mut server = GrpcServer::new()
            .service(ItemsServer::new(ItemsApi { dispatcher }))
            .file_descriptor_set(proto::FILE_DESCRIPTOR_SET);
        server.init(ctx).await?;
        self.server = Some(server);
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.server()?.start(ctx).await
    }

    async fn ready(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.server()?.ready(ctx).await
    }

    async fn drain(&mut self) -> Result<(), BoxError> {
        match &mut self.server {
            Some(server) => server.drain().await,
            None => Ok(()),
        }
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        match &mut self.server {
            Some(server) => server.stop().await,
            None => Ok(()),
        }
    }
}
