//! Messages: post, edit, delete, and a channel's history, over one SQL
//! handler body for SQLite and Postgres (see [`crate::sql`]).

use mamey_core::cqrs::{Command, Query, Res};
use mamey_core::{Error, MessageContext};
use mamey_messaging::Publisher;
use mamey_persistence::Tx;
use serde::{Deserialize, Serialize};
use sqlx::Pool;
use utoipa::ToSchema;

use super::access::{channel, enter};
use crate::args;
use crate::boards::BoardsClient;
use crate::contracts::MessagePosted;
use crate::request::caller;
use crate::sql::{Row, Sql};

/// The longest message, in characters (after trimming).
const MAX_TEXT: usize = 4000;
/// `POST /channels/{channel}/messages`: a new message by the caller.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostMessage {
    /// The message's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    pub(super) id: i64,
    /// `board:{id}` or `dm:{a}:{b}`.
    channel: String,
    /// 1 to 4000 characters, surrounding white space trimmed.
    #[schema(min_length = 1, max_length = 4000)]
    text: String,
}

impl Command for PostMessage {
    fn validate(&self) -> Result<(), Error> {
        channel(&self.channel)?;
        text(&self.text).map(drop)
    }
}

/// `PATCH /messages/{messageId}`: new text for one of the caller's
/// messages.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EditMessage {
    /// The message.
    message_id: i64,
    /// 1 to 4000 characters, surrounding white space trimmed.
    #[schema(min_length = 1, max_length = 4000)]
    text: String,
}

impl Command for EditMessage {
    fn validate(&self) -> Result<(), Error> {
        text(&self.text).map(drop)
    }
}

/// `DELETE /messages/{messageId}`: removes one of the caller's messages
/// from its channel's history.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteMessage {
    /// The message.
    message_id: i64,
}

impl Command for DeleteMessage {}

/// `GET /channels/{channel}/messages?after=&limit=`: a page of a
/// channel's history.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListMessages {
    /// `board:{id}` or `dm:{a}:{b}`.
    channel: String,
    /// Only messages with a larger id (default: from the first).
    after: Option<i64>,
    /// At most this many, 1 to 100 (default 50).
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

impl Query for ListMessages {
    type Output = Page;

    fn validate(&self) -> Result<(), Error> {
        channel(&self.channel)?;
        crate::request::limit(self.limit, "chat").map(drop)
    }
}

/// A page of a channel's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page {
    /// Messages in ascending id order.
    items: Vec<MessageView>,
    /// The cursor of the next page (the last id here) when more may
    /// follow, else null.
    next: Option<i64>,
}

/// A message as the history shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageView {
    /// Time-ordered id.
    id: i64,
    /// Its channel.
    channel: String,
    /// Its author.
    author: i64,
    /// Its text.
    text: String,
    /// Whether it was edited.
    edited: bool,
    /// When it was posted, Unix milliseconds.
    created_at: i64,
}

impl MessageView {
    fn from_row(row: &Row) -> Result<Self, Error> {
        Ok(Self {
            id: row.int(0)?,
            channel: row.text(1)?,
            author: row.int(2)?,
            text: row.text(3)?,
            edited: row.int(4)? != 0,
            created_at: row.int(5)?,
        })
    }
}

/// Stores the message and publishes `MessagePosted`, in one transaction
/// (the event is staged in the outbox and relayed after the commit).
pub(super) async fn post_message<B: Sql>(
    command: PostMessage,
    mut tx: Tx<B>,
    boards: BoardsClient,
    Res(events): Res<Publisher>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let author = caller(&ctx)?;
    let channel = channel(&command.channel)?;
    let text = text(&command.text)?;
    enter(&boards, channel, author).await?;
    let now = crate::request::now_ms();
    // The channel is stored as printed, so both spellings of a direct
    // channel are one history.
    let name = channel.to_string();
    B::execute(
        &mut tx,
        "INSERT INTO messages (id, channel, author, text, edited, deleted, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, 0, $5, $5)",
        args![command.id, &name, author, text, now],
    )
    .await?;
    events
        .publish(&MessagePosted {
            message_id: command.id,
            channel: name,
            author,
            text: text.to_owned(),
        })
        .await?;
    Ok(())
}

/// Replaces the text of one of the caller's messages and marks it edited.
pub(super) async fn edit_message<B: Sql>(
    command: EditMessage,
    mut tx: Tx<B>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let author = caller(&ctx)?;
    let text = text(&command.text)?;
    // The write comes first, so SQLite takes its write lock at once.
    let changed = B::execute(
        &mut tx,
        "UPDATE messages SET text = $1, edited = 1, updated_at = $2 \
         WHERE id = $3 AND author = $4 AND deleted = 0",
        args![text, crate::request::now_ms(), command.message_id, author],
    )
    .await?;
    if changed == 0 {
        return Err(refusal::<B>(&mut tx, command.message_id).await);
    }
    Ok(())
}

/// Deletes one of the caller's messages (it stays in the table, marked,
/// and leaves the history).
pub(super) async fn delete_message<B: Sql>(
    command: DeleteMessage,
    mut tx: Tx<B>,
    ctx: MessageContext,
) -> Result<(), Error> {
    let author = caller(&ctx)?;
    let changed = B::execute(
        &mut tx,
        "UPDATE messages SET deleted = 1, updated_at = $1 WHERE id = $2 AND author = $3 AND deleted = 0",
        args![crate::request::now_ms(), command.message_id, author],
    )
    .await?;
    if changed == 0 {
        return Err(refusal::<B>(&mut tx, command.message_id).await);
    }
    Ok(())
}

/// Why a change of message `id` by its author changed nothing: it does not
/// exist or was deleted (404), or it is someone else's (403).
async fn refusal<B: Sql>(tx: &mut Tx<B>, id: i64) -> Error {
    let rows = match B::fetch(tx, "SELECT deleted FROM messages WHERE id = $1", args![id]).await {
        Ok(rows) => rows,
        Err(error) => return error,
    };
    match rows.first().map(|row| row.int(0)) {
        Some(Ok(0)) => Error::forbidden(
            "chat.not_the_author",
            "only its author may change a message",
        ),
        Some(Err(error)) => error,
        Some(Ok(_)) | None => {
            Error::not_found("chat.message_not_found", format!("no message {id}"))
        }
    }
}

/// The channel's messages after the cursor, ascending, deleted ones left
/// out.
pub(super) async fn list_messages<B: Sql>(
    query: ListMessages,
    Res(pool): Res<Pool<B::Db>>,
    boards: BoardsClient,
    ctx: MessageContext,
) -> Result<Page, Error> {
    let reader = caller(&ctx)?;
    let channel = channel(&query.channel)?;
    let limit = crate::request::limit(query.limit, "chat")?;
    enter(&boards, channel, reader).await?;
    // One more than asked tells whether another page follows.
    let rows = B::query(
        &pool,
        "SELECT id, channel, author, text, edited, created_at FROM messages \
         WHERE channel = $1 AND deleted = 0 AND id > $2 ORDER BY id LIMIT $3",
        args![channel.to_string(), query.after.unwrap_or(0), limit + 1],
    )
    .await?;
    let mut items = rows
        .iter()
        .map(MessageView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more {
        items.last().map(|m| m.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The text trimmed, when it has 1 to 4000 characters.
fn text(text: &str) -> Result<&str, Error> {
    let trimmed = text.trim();
    let length = trimmed.chars().count();
    if (1..=MAX_TEXT).contains(&length) {
        Ok(trimmed)
    } else {
        Err(Error::invalid_input(
            "chat.invalid_text",
            format!("`text` must have 1 to {MAX_TEXT} characters besides surrounding white space"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("  hi \n").ok(), Some("hi"));
        assert!(text("   ").is_err());
        assert!(text("").is_err());
        assert!(text(&"é".repeat(MAX_TEXT)).is_ok());
        assert!(text(&"é".repeat(MAX_TEXT + 1)).is_err());
    }
}
