//! Cards and their comments: the commands of the REST API and their
//! handlers. Each locks the card's board first, lets only the workspace's
//! members in, and publishes its event, numbered by the board, through the
//! outbox in its transaction.

use mamey_core::cqrs::{Command, Res};
use mamey_core::{Error, MessageContext};
use mamey_messaging::Publisher;
use mamey_persistence::Tx;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::access::require_member;
use super::changes::{self, open};
use super::{fields, store};
use crate::contracts::{CardCreated, CardDeleted, CardSnapshot, CommentAdded, LISTS};
use crate::request::caller;
use crate::sql::{Conn, Sql};

/// `POST /boards/{boardId}/cards`: a new card on a board.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateCard {
    /// The card's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    pub(super) id: i64,
    /// The board.
    board_id: i64,
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// Up to 10 000 characters (default: empty).
    #[schema(max_length = 10000)]
    description: Option<String>,
    /// A card of the same board this one is a child of.
    parent_id: Option<i64>,
    /// 0 to 1000.
    #[schema(minimum = 0, maximum = 1000)]
    story_points: Option<i64>,
    /// Up to 20 labels of 1 to 40 characters.
    labels: Option<Vec<String>>,
    /// Due date, `YYYY-MM-DD`.
    #[schema(example = "2026-12-31")]
    due: Option<String>,
    /// `todo` (default), `doing` or `done`.
    list: Option<String>,
}

impl Command for CreateCard {
    fn validate(&self) -> Result<(), Error> {
        fields::title(&self.title)?;
        if let Some(description) = &self.description {
            fields::description(description)?;
        }
        if let Some(points) = self.story_points {
            fields::story_points(points)?;
        }
        if let Some(labels) = &self.labels {
            fields::labels(labels)?;
        }
        if let Some(due) = &self.due {
            fields::due(due)?;
        }
        if let Some(list) = &self.list {
            fields::list(list)?;
        }
        Ok(())
    }
}

/// `PATCH /cards/{cardId}`: changes a card's fields. An absent field stays
/// as it is; `null` clears `storyPoints`, `due` and `parentId`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EditCard {
    /// The card.
    card_id: i64,
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    /// Up to 10 000 characters.
    #[schema(max_length = 10000)]
    description: Option<String>,
    /// Up to 20 labels of 1 to 40 characters (replacing the card's).
    labels: Option<Vec<String>>,
    /// 0 to 1000, or `null`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000)]
    story_points: Option<Option<i64>>,
    /// `YYYY-MM-DD`, or `null`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "2026-12-31")]
    due: Option<Option<String>>,
    /// A card of the same board, not this one nor one of its descendants;
    /// `null` makes it a top-level card.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    parent_id: Option<Option<i64>>,
}

/// A field that may be absent (`None`: leave it), `null` (`Some(None)`:
/// clear it) or a value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl Command for EditCard {
    fn validate(&self) -> Result<(), Error> {
        if self.title.is_none()
            && self.description.is_none()
            && self.labels.is_none()
            && self.story_points.is_none()
            && self.due.is_none()
            && self.parent_id.is_none()
        {
            return Err(Error::invalid_input(
                "boards.nothing_to_change",
                "give at least one of title, description, labels, storyPoints, due, parentId",
            ));
        }
        if let Some(title) = &self.title {
            fields::title(title)?;
        }
        if let Some(description) = &self.description {
            fields::description(description)?;
        }
        if let Some(labels) = &self.labels {
            fields::labels(labels)?;
        }
        if let Some(Some(points)) = self.story_points {
            fields::story_points(points)?;
        }
        if let Some(Some(due)) = &self.due {
            fields::due(due)?;
        }
        Ok(())
    }
}

/// `POST /cards/{cardId}/move`: moves a card to another list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MoveCard {
    /// The card.
    card_id: i64,
    /// `todo`, `doing` or `done`.
    #[schema(example = "doing")]
    list: String,
}

impl Command for MoveCard {
    fn validate(&self) -> Result<(), Error> {
        fields::list(&self.list).map(drop)
    }
}

/// `POST /cards/{cardId}/assign`: gives a card to a member of its
/// workspace, or to nobody (`null`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SetAssignee {
    /// The card.
    card_id: i64,
    /// A member's user id, or `null`.
    assignee: Option<i64>,
}

impl Command for SetAssignee {}

/// `POST /cards/{cardId}/comments`: a comment on a card.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddComment {
    /// The comment's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    pub(super) id: i64,
    /// The card.
    card_id: i64,
    /// 1 to 4000 characters.
    #[schema(min_length = 1, max_length = 4000)]
    text: String,
}

impl Command for AddComment {
    fn validate(&self) -> Result<(), Error> {
        fields::comment(&self.text).map(drop)
    }
}

/// `DELETE /cards/{cardId}`: deletes a card and its comments. A card with
/// children is refused (409): move or delete them first.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteCard {
    /// The card.
    card_id: i64,
}

impl Command for DeleteCard {}

/// Makes the card and publishes `CardCreated`.
pub(super) async fn create_card<B: Sql>(
    command: CreateCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let Some(workspace_id) = store::lock_board::<B>(&mut tx, command.board_id).await? else {
        return Err(board_not_found(command.board_id));
    };
    require_member::<B>(&mut tx, workspace_id, user).await?;
    if let Some(parent) = command.parent_id {
        check_parent::<B>(&mut tx, command.board_id, parent).await?;
    }
    let card = CardSnapshot {
        id: command.id,
        board_id: command.board_id,
        workspace_id,
        parent_id: command.parent_id,
        title: fields::title(&command.title)?.to_owned(),
        description: fields::description(command.description.as_deref().unwrap_or_default())?
            .to_owned(),
        assignee: None,
        labels: fields::labels(command.labels.as_deref().unwrap_or_default())?,
        story_points: command.story_points.map(fields::story_points).transpose()?,
        due: command
            .due
            .as_deref()
            .map(fields::due)
            .transpose()?
            .map(str::to_owned),
        list: command
            .list
            .as_deref()
            .map_or(Ok(LISTS[0]), fields::list)?
            .to_owned(),
    };
    store::insert_card::<B>(&mut tx, &card, user).await?;
    let seq = store::next_seq::<B>(&mut tx, card.board_id).await?;
    events
        .publish(&CardCreated {
            card,
            seq,
            by: user,
        })
        .await?;
    Ok(())
}

/// Changes the card's fields and publishes `CardUpdated` (nothing when
/// they are so already).
pub(super) async fn edit_card<B: Sql>(
    command: EditCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let before = open_as_member::<B>(&mut tx, command.card_id, user).await?;
    let mut after = before.clone();
    if let Some(title) = &command.title {
        fields::title(title)?.clone_into(&mut after.title);
    }
    if let Some(description) = &command.description {
        fields::description(description)?.clone_into(&mut after.description);
    }
    if let Some(labels) = &command.labels {
        after.labels = fields::labels(labels)?;
    }
    if let Some(points) = command.story_points {
        after.story_points = points.map(fields::story_points).transpose()?;
    }
    if let Some(due) = &command.due {
        after.due = due
            .as_deref()
            .map(fields::due)
            .transpose()?
            .map(str::to_owned);
    }
    if let Some(parent) = command.parent_id {
        if let Some(parent) = parent
            && Some(parent) != before.parent_id
        {
            check_parent::<B>(&mut tx, before.board_id, parent).await?;
            if store::is_self_or_ancestor::<B>(&mut tx, before.id, parent).await? {
                return Err(Error::invalid_input(
                    "boards.parent_cycle",
                    format!(
                        "card {parent} is card {} or one of its descendants",
                        before.id
                    ),
                ));
            }
        }
        after.parent_id = parent;
    }
    changes::update::<B>(&mut tx, &events, &before, after, user).await
}

/// Moves the card and publishes `CardMoved` (nothing when it is in that
/// list already).
pub(super) async fn move_card<B: Sql>(
    command: MoveCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let list = fields::list(&command.list)?;
    let card = open_as_member::<B>(&mut tx, command.card_id, user).await?;
    changes::move_to::<B>(&mut tx, &events, card, list, user)
        .await
        .map(drop)
}

/// Gives the card to a member (or nobody) and publishes `CardAssigned`
/// (nothing when it is so already).
pub(super) async fn set_assignee<B: Sql>(
    command: SetAssignee,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let card = open_as_member::<B>(&mut tx, command.card_id, user).await?;
    if let Some(assignee) = command.assignee
        && !store::is_member::<B>(&mut tx, card.workspace_id, assignee).await?
    {
        return Err(Error::invalid_input(
            "boards.assignee_not_a_member",
            format!("user {assignee} is not a member of the card's workspace"),
        ));
    }
    changes::assign::<B>(&mut tx, &events, card, command.assignee, user).await
}

/// Deletes the card and its comments and publishes `CardDeleted`.
pub(super) async fn delete_card<B: Sql>(
    command: DeleteCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let card = open_as_member::<B>(&mut tx, command.card_id, user).await?;
    if store::has_children::<B>(&mut tx, card.id).await? {
        return Err(Error::conflict(
            "boards.card_has_children",
            format!(
                "card {} has child cards; move them to another parent or delete them first",
                card.id
            ),
        ));
    }
    store::delete_card::<B>(&mut tx, card.id).await?;
    let seq = store::next_seq::<B>(&mut tx, card.board_id).await?;
    events
        .publish(&CardDeleted {
            card,
            seq,
            by: user,
        })
        .await?;
    Ok(())
}

/// Writes the comment and publishes `CommentAdded`.
pub(super) async fn add_comment<B: Sql>(
    command: AddComment,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let user = caller(&ctx)?;
    let text = fields::comment(&command.text)?;
    let card = open_as_member::<B>(&mut tx, command.card_id, user).await?;
    store::insert_comment::<B>(&mut tx, command.id, card.id, user, text).await?;
    let seq = store::next_seq::<B>(&mut tx, card.board_id).await?;
    events
        .publish(&CommentAdded {
            comment_id: command.id,
            card_id: card.id,
            board_id: card.board_id,
            author: user,
            text: text.to_owned(),
            seq,
        })
        .await?;
    Ok(())
}

/// Locks the board of card `id` and reads the card, for `user`.
///
/// # Errors
/// No such card (404); `user` not a member of its workspace (403).
async fn open_as_member<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
    user: i64,
) -> Result<CardSnapshot, Error> {
    let card = open::<B>(conn, id)
        .await?
        .ok_or_else(|| card_not_found(id))?;
    require_member::<B>(conn, card.workspace_id, user).await?;
    Ok(card)
}

/// Lets card `parent` be a parent on board `board`.
///
/// # Errors
/// No such card, or one of another board (400).
async fn check_parent<B: Sql>(conn: &mut Conn<B>, board: i64, parent: i64) -> Result<(), Error> {
    match store::card::<B>(conn, parent).await? {
        Some(card) if card.board_id == board => Ok(()),
        _ => Err(Error::invalid_input(
            "boards.invalid_parent",
            format!("`parentId` must be a card of board {board}; {parent} is not"),
        )),
    }
}

/// No board `id` (404).
pub(super) fn board_not_found(id: i64) -> Error {
    Error::not_found("boards.board_not_found", format!("there is no board {id}"))
}

/// No card `id` (404).
pub(super) fn card_not_found(id: i64) -> Error {
    Error::not_found("boards.card_not_found", format!("there is no card {id}"))
}
