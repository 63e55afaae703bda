//! [`BoardsClient`]: how the other services ask boards about a card or a
//! board's members, over boards' internal gRPC API found by name
//! (`boards-grpc`).

use mamey_core::cqrs::FromResources;
use mamey_core::{Error, MissingResource, Resources};
use mamey_http::ServiceClient;
use mamey_http::grpc::GrpcChannel;
use tonic::{Code, Status};

use super::grpc::proto::boards_client::BoardsClient as Generated;
use super::grpc::proto::{BoardMembersRequest, GetCardRequest};
use crate::contracts::CardSnapshot;

/// The name boards' gRPC server is registered under in discovery.
pub const GRPC_SERVICE: &str = "boards-grpc";

/// A board's members, as boards knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The board's workspace.
    pub workspace_id: i64,
    /// The members' user ids, in the order they joined.
    pub user_ids: Vec<i64>,
}

/// Boards' internal API for the services beside it. Cheap to clone:
/// clones share one channel (its connections), and every call goes
/// through the service client's balancing and circuit breakers.
///
/// A handler takes it as an argument (`boards: BoardsClient`): it is built
/// from the `ServiceClient` resource when the dispatcher is, once per
/// handler. Elsewhere, [`BoardsClient::new`] makes one; make it once and
/// clone it.
#[derive(Debug, Clone)]
pub struct BoardsClient {
    channel: GrpcChannel,
    grpc: Generated<GrpcChannel>,
}

impl BoardsClient {
    /// A client over `client`'s channel to `boards-grpc`.
    #[must_use]
    pub fn new(client: &ServiceClient) -> Self {
        let channel = client.grpc(GRPC_SERVICE);
        Self {
            grpc: Generated::new(channel.clone()),
            channel,
        }
    }

    /// The members of board `board_id`'s workspace.
    ///
    /// # Errors
    /// No such board (`not_found`); boards could not answer
    /// (`unavailable`).
    pub async fn members(&self, board_id: i64) -> Result<Members, Error> {
        // Both calls only read: safe to repeat on another replica when one
        // is unreachable (a crashed replica stays in discovery until its
        // lease lapses).
        let reply = self
            .channel
            .retry(|| {
                let mut grpc = self.grpc.clone();
                async move { grpc.board_members(BoardMembersRequest { board_id }).await }
            })
            .await
            .map_err(|status| failure(&status, "boards.board_not_found"))?
            .into_inner();
        Ok(Members {
            workspace_id: reply.workspace_id,
            user_ids: reply.user_ids,
        })
    }

    /// Card `card_id` as it is now.
    ///
    /// # Errors
    /// No such card (`not_found`); boards could not answer
    /// (`unavailable`).
    pub async fn card(&self, card_id: i64) -> Result<CardSnapshot, Error> {
        let card = self
            .channel
            .retry(|| {
                let mut grpc = self.grpc.clone();
                async move { grpc.get_card(GetCardRequest { card_id }).await }
            })
            .await
            .map_err(|status| failure(&status, "boards.card_not_found"))?
            .into_inner();
        Ok(card.into())
    }
}

impl FromResources for BoardsClient {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        Ok(Self::new(&resources.get::<ServiceClient>()?))
    }
}

/// A failed call as an error: `NOT_FOUND` is `not_found` with
/// `not_found_code`, anything else `unavailable` (boards could not answer
/// as it should; the caller may retry).
fn failure(status: &Status, not_found_code: &'static str) -> Error {
    if status.code() == Code::NotFound {
        Error::not_found(not_found_code, status.message())
    } else {
        Error::unavailable("boards.unavailable", "boards did not answer")
            .with_source(mamey_http::grpc::error(status))
    }
}
