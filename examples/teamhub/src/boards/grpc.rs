//! Boards' internal gRPC API, `teamhub.boards.v1.Boards` from
//! `proto/boards.proto`: `GetCard` and `BoardMembers`, for chat,
//! automations and notifications. Discovery registers it beside the web
//! API as `boards-grpc`; callers use [`BoardsClient`](super::BoardsClient).
//!
//! **It is internal and unauthenticated.** The gateway routes no gRPC, the
//! server listens on loopback (`grpc.address` in `config/boards.toml`), and
//! it answers any caller (`Auth::Anonymous`): automations calls it while
//! handling events, when there is no user token to pass on, and a service
//! token is more machinery than this example needs. Calls made while
//! serving a user carry that user's token (`http_client.forward_authorization`);
//! with `grpc.jwt` unset the server does not read it. A deployment across
//! hosts would keep the port on a private network or require client
//! certificates (`grpc.tls.client_ca_file`).

use std::fmt;
use std::marker::PhantomData;

use mamey_core::{BoxError, Error, InitContext, Plugin, Requirement, StartContext};
use mamey_http::grpc::{GrpcServer, status};
use sqlx::Pool;
use sqlx::pool::PoolConnection;
use tonic::{Request, Response, Status};

use super::cards::{board_not_found, card_not_found};
use super::store;
use crate::contracts::CardSnapshot;
use crate::sql::Sql;
use proto::boards_server::{Boards, BoardsServer};
use proto::{BoardMembersReply, BoardMembersRequest, Card, GetCardRequest};

/// The code generated from `proto/boards.proto` (package
/// `teamhub.boards.v1`): the messages, `boards_server` and
/// `boards_client`.
pub mod proto {
    #![allow(
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        clippy::pedantic,
        clippy::all
    )]
    tonic::include_proto!("teamhub.boards.v1");
}

impl From<CardSnapshot> for Card {
    fn from(card: CardSnapshot) -> Self {
        Self {
            id: card.id,
            board_id: card.board_id,
            workspace_id: card.workspace_id,
            parent_id: card.parent_id,
            title: card.title,
            description: card.description,
            assignee: card.assignee,
            labels: card.labels,
            story_points: card.story_points,
            due: card.due,
            list: card.list,
        }
    }
}

impl From<Card> for CardSnapshot {
    fn from(card: Card) -> Self {
        Self {
            id: card.id,
            board_id: card.board_id,
            workspace_id: card.workspace_id,
            parent_id: card.parent_id,
            title: card.title,
            description: card.description,
            assignee: card.assignee,
            labels: card.labels,
            story_points: card.story_points,
            due: card.due,
            list: card.list,
        }
    }
}

/// The gRPC service over boards' tables.
struct BoardsApi<B: Sql> {
    pool: Pool<B::Db>,
}

impl<B: Sql> BoardsApi<B> {
    async fn connection(&self) -> Result<PoolConnection<B::Db>, Status> {
        self.pool
            .acquire()
            .await
            .map_err(|e| status(&mamey_persistence::error(e)))
    }
}

#[tonic::async_trait]
impl<B: Sql> Boards for BoardsApi<B> {
    async fn get_card(&self, request: Request<GetCardRequest>) -> Result<Response<Card>, Status> {
        let id = request.get_ref().card_id;
        let mut conn = self.connection().await?;
        let card = store::card::<B>(&mut conn, id)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| status(&card_not_found(id)))?;
        Ok(Response::new(card.into()))
    }

    async fn board_members(
        &self,
        request: Request<BoardMembersRequest>,
    ) -> Result<Response<BoardMembersReply>, Status> {
        let id = request.get_ref().board_id;
        let mut conn = self.connection().await?;
        let answer = async {
            let board = store::board::<B>(&mut conn, id)
                .await?
                .ok_or_else(|| board_not_found(id))?;
            let user_ids = store::members::<B>(&mut conn, board.workspace_id).await?;
            Ok::<_, Error>(BoardMembersReply {
                workspace_id: board.workspace_id,
                user_ids,
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }
}

/// Boards' gRPC server: mamey's `GrpcServer` (section `[grpc]`) hosting
/// [`BoardsApi`]. A tonic service gets no extractors and the pool exists
/// only once the database plug-in has initialised, so this plug-in builds
/// the service from the pool in its `init` and then hands every step of its
/// life to the server.
pub(super) struct Grpc<B> {
    server: Option<GrpcServer>,
    database: PhantomData<fn() -> B>,
}

impl<B> Grpc<B> {
    /// The server, built when the service is.
    pub(super) fn new() -> Self {
        Self {
            server: None,
            database: PhantomData,
        }
    }

    fn server(&mut self) -> Result<&mut GrpcServer, BoxError> {
        self.server
            .as_mut()
            .ok_or_else(|| "boards' gRPC server was used before it was initialised".into())
    }
}

impl<B> fmt::Debug for Grpc<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grpc")
            .field("server", &self.server)
            .finish()
    }
}

impl<B: Sql> Plugin for Grpc<B> {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn requires(&self) -> Vec<Requirement> {
        vec![
            Requirement::of::<Pool<B::Db>>()
                .hint("add the database plug-in before boards' gRPC server"),
        ]
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let pool = ctx.resource::<Pool<B::Db>>()?;
        let mut server = GrpcServer::new().service(BoardsServer::new(BoardsApi::<B> { pool }));
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
