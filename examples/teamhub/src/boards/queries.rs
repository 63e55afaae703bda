//! What the REST API reads: a workspace, a board with its cards, a card, a
//! comment — each for members of its workspace only. Reads use a pooled
//! connection, outside any transaction.

use mamey_core::cqrs::{Query, Res};
use mamey_core::{Error, MessageContext};
use serde::{Deserialize, Serialize};
use sqlx::Pool;
use sqlx::pool::PoolConnection;
use utoipa::ToSchema;

use super::access::require_member;
use super::cards::{board_not_found, card_not_found};
use super::store;
use super::workspaces::workspace_not_found;
use crate::contracts::CardSnapshot;
use crate::request::caller;
use crate::sql::Sql;

/// `GET /workspaces/{workspaceId}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetWorkspace {
    /// The workspace.
    workspace_id: i64,
}

impl Query for GetWorkspace {
    type Output = WorkspaceView;
}

/// A workspace, its members and its boards.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WorkspaceView {
    /// The workspace.
    id: i64,
    /// Its name.
    name: String,
    /// Its members' user ids, in the order they joined.
    members: Vec<i64>,
    /// Its boards, oldest first.
    boards: Vec<BoardSummary>,
}

/// A board in a workspace's list.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BoardSummary {
    /// The board.
    id: i64,
    /// Its name.
    name: String,
}

/// `GET /boards/{boardId}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetBoard {
    /// The board.
    board_id: i64,
}

impl Query for GetBoard {
    type Output = BoardView;
}

/// A board with its cards.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BoardView {
    /// The board.
    id: i64,
    /// Its workspace.
    workspace_id: i64,
    /// Its name.
    name: String,
    /// The number of its last event: the `seq` of the last event published
    /// about it, for a client that also follows the events.
    seq: i64,
    /// Its cards, in the order they were made.
    cards: Vec<CardSnapshot>,
}

/// `GET /cards/{cardId}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetCard {
    /// The card.
    card_id: i64,
}

impl Query for GetCard {
    type Output = CardSnapshot;
}

/// `GET /comments/{commentId}`: where `POST /cards/{cardId}/comments`
/// points.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetComment {
    /// The comment.
    comment_id: i64,
}

impl Query for GetComment {
    type Output = CommentView;
}

/// A comment on a card.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CommentView {
    /// The comment.
    id: i64,
    /// Its card.
    card_id: i64,
    /// The card's board.
    board_id: i64,
    /// Its author.
    author: i64,
    /// Its text.
    text: String,
    /// When it was written, Unix milliseconds.
    created_at: i64,
}

/// A connection of `pool` for one query's reads.
async fn connection<B: Sql>(pool: &Pool<B::Db>) -> Result<PoolConnection<B::Db>, Error> {
    pool.acquire().await.map_err(mamey_persistence::error)
}

/// The workspace, for its members.
pub(super) async fn get_workspace<B: Sql>(
    query: GetWorkspace,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<WorkspaceView, Error> {
    let user = caller(&ctx)?;
    let id = query.workspace_id;
    let mut conn = connection::<B>(&pool).await?;
    let name = store::workspace_name::<B>(&mut conn, id)
        .await?
        .ok_or_else(|| workspace_not_found(id))?;
    require_member::<B>(&mut conn, id, user).await?;
    let members = store::members::<B>(&mut conn, id).await?;
    let boards = store::boards_of::<B>(&mut conn, id)
        .await?
        .into_iter()
        .map(|board| BoardSummary {
            id: board.id,
            name: board.name,
        })
        .collect();
    Ok(WorkspaceView {
        id,
        name,
        members,
        boards,
    })
}

/// The board and its cards, for its workspace's members.
pub(super) async fn get_board<B: Sql>(
    query: GetBoard,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<BoardView, Error> {
    let user = caller(&ctx)?;
    let mut conn = connection::<B>(&pool).await?;
    let board = store::board::<B>(&mut conn, query.board_id)
        .await?
        .ok_or_else(|| board_not_found(query.board_id))?;
    require_member::<B>(&mut conn, board.workspace_id, user).await?;
    // Read after the board's `seq`: a change made in between shows in the
    // cards, so they are at least as new as `seq` says.
    let cards = store::cards_of::<B>(&mut conn, board.id).await?;
    Ok(BoardView {
        id: board.id,
        workspace_id: board.workspace_id,
        name: board.name,
        seq: board.seq,
        cards,
    })
}

/// The card, for its workspace's members.
pub(super) async fn get_card<B: Sql>(
    query: GetCard,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<CardSnapshot, Error> {
    let user = caller(&ctx)?;
    let mut conn = connection::<B>(&pool).await?;
    let card = store::card::<B>(&mut conn, query.card_id)
        .await?
        .ok_or_else(|| card_not_found(query.card_id))?;
    require_member::<B>(&mut conn, card.workspace_id, user).await?;
    Ok(card)
}

/// The comment, for its workspace's members.
pub(super) async fn get_comment<B: Sql>(
    query: GetComment,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<CommentView, Error> {
    let user = caller(&ctx)?;
    let mut conn = connection::<B>(&pool).await?;
    let comment = store::comment::<B>(&mut conn, query.comment_id)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "boards.comment_not_found",
                format!("there is no comment {}", query.comment_id),
            )
        })?;
    require_member::<B>(&mut conn, comment.workspace_id, user).await?;
    Ok(CommentView {
        id: comment.id,
        card_id: comment.card_id,
        board_id: comment.board_id,
        author: comment.author,
        text: comment.text,
        created_at: comment.created_at,
    })
}
