//! Workspaces and their members and boards: the commands of the REST API
//! and their handlers. Each writes in the handler's transaction and
//! publishes its event through the outbox in it.

use mamey_core::cqrs::{Command, Res};
use mamey_core::{Error, ErrorKind, MessageContext};
use mamey_http::{ServiceClient, url_path};
use mamey_messaging::Publisher;
use mamey_persistence::Tx;
use serde::Deserialize;
use utoipa::ToSchema;

use super::access::require_member;
use super::{fields, store};
use crate::contracts::{BoardCreated, MemberAdded};
use crate::request::caller;
use crate::sql::Sql;

/// `POST /workspaces`: a new workspace; the caller becomes its first
/// member.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateWorkspace {
    /// The workspace's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    pub(super) id: i64,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

impl Command for CreateWorkspace {
    fn validate(&self) -> Result<(), Error> {
        fields::name(&self.name).map(drop)
    }
}

/// `POST /workspaces/{workspaceId}/members`: adds a user to a workspace.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddMember {
    /// The workspace.
    workspace_id: i64,
    /// The user to add (an identity user id).
    user_id: i64,
}

impl Command for AddMember {}

/// `POST /workspaces/{workspaceId}/boards`: a new board in a workspace.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateBoard {
    /// The board's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    pub(super) id: i64,
    /// The workspace.
    workspace_id: i64,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

impl Command for CreateBoard {
    fn validate(&self) -> Result<(), Error> {
        fields::name(&self.name).map(drop)
    }
}

/// Makes the workspace with the caller as its member, and publishes
/// `MemberAdded` for them.
pub(super) async fn create_workspace<B: Sql>(
    command: CreateWorkspace,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let name = fields::name(&command.name)?;
    store::insert_workspace::<B>(&mut tx, command.id, name, user).await?;
    store::insert_member::<B>(&mut tx, command.id, user, user).await?;
    events
        .publish(&MemberAdded {
            workspace_id: command.id,
            user_id: user,
            by: user,
        })
        .await?;
    Ok(())
}

/// Adds a user identity knows to the workspace, and publishes
/// `MemberAdded`. Identity is asked first, before the transaction takes
/// any lock, so no lock is held across the call; an unknown user is
/// therefore a `404` whoever asks.
pub(super) async fn add_member<B: Sql>(
    command: AddMember,
    mut tx: Tx<B>,
    Res(client): Res<ServiceClient>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let AddMember {
        workspace_id,
        user_id,
    } = command;
    ensure_user_exists(&client, user_id).await?;
    if !store::lock_workspace::<B>(&mut tx, workspace_id).await? {
        return Err(workspace_not_found(workspace_id));
    }
    require_member::<B>(&mut tx, workspace_id, user).await?;
    if store::is_member::<B>(&mut tx, workspace_id, user_id).await? {
        return Err(Error::conflict(
            "boards.already_a_member",
            format!("user {user_id} is a member of workspace {workspace_id} already"),
        ));
    }
    store::insert_member::<B>(&mut tx, workspace_id, user_id, user).await?;
    events
        .publish(&MemberAdded {
            workspace_id,
            user_id,
            by: user,
        })
        .await?;
    Ok(())
}

/// Asks identity, by name over HTTP (the caller's token forwarded),
/// whether user `id` exists.
///
/// # Errors
/// Identity does not know the user (404); identity failed or is away (its
/// error's kind: 503, ...).
async fn ensure_user_exists(client: &ServiceClient, id: i64) -> Result<(), Error> {
    match client
        .get("identity", &url_path(["users", &id.to_string()]))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => Err(Error::not_found(
            "boards.user_not_found",
            format!("there is no user {id}"),
        )),
        Err(error) => Err(error),
    }
}

/// Makes the board in the workspace and publishes `BoardCreated`, the
/// board's event number 1.
pub(super) async fn create_board<B: Sql>(
    command: CreateBoard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let name = fields::name(&command.name)?;
    if !store::lock_workspace::<B>(&mut tx, command.workspace_id).await? {
        return Err(workspace_not_found(command.workspace_id));
    }
    require_member::<B>(&mut tx, command.workspace_id, user).await?;
    store::insert_board::<B>(&mut tx, command.id, command.workspace_id, name, user).await?;
    events
        .publish(&BoardCreated {
            board_id: command.id,
            workspace_id: command.workspace_id,
            name: name.to_owned(),
            seq: 1,
            by: user,
        })
        .await?;
    Ok(())
}

/// No workspace `id` (404).
pub(super) fn workspace_not_found(id: i64) -> Error {
    Error::not_found(
        "boards.workspace_not_found",
        format!("there is no workspace {id}"),
    )
}
