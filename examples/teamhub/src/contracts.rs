//! The messages the services exchange over the broker: each service's
//! events, and the commands boards accepts. On the wire they follow Convey's
//! conventions (exchange per namespace, camelCase fields).
//!
//! Every boards event carries `seq`, the board's own sequence number,
//! incremented in the transaction that made the change: consumers (and the
//! tests) can tell the order of a board's events whatever path they took.

use mamey_messaging::message;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The list a card is in. Boards have three, in this order.
pub const LISTS: [&str; 3] = ["todo", "doing", "done"];

/// The list that means "finished".
pub const DONE: &str = "done";

/// A card as events carry it: its state after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardSnapshot {
    /// The card.
    pub id: i64,
    /// Its board.
    pub board_id: i64,
    /// The board's workspace.
    pub workspace_id: i64,
    /// The card it is a child of.
    pub parent_id: Option<i64>,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// The user it is assigned to.
    pub assignee: Option<i64>,
    /// Labels.
    pub labels: Vec<String>,
    /// Story points.
    pub story_points: Option<i64>,
    /// Due date, `YYYY-MM-DD`.
    pub due: Option<String>,
    /// `todo`, `doing` or `done`.
    pub list: String,
}

/// identity: a user signed up.
#[message(namespace = "identity", event)]
#[derive(Debug, Clone)]
pub struct UserSignedUp {
    /// The new user.
    pub user_id: i64,
    /// Display name (what `@mentions` use).
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// boards: a user joined a workspace.
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct MemberAdded {
    /// The workspace.
    pub workspace_id: i64,
    /// Who joined.
    pub user_id: i64,
    /// Who added them.
    pub by: i64,
}

/// boards: a board was created (automations starts its rules for it).
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct BoardCreated {
    /// The board.
    pub board_id: i64,
    /// Its workspace.
    pub workspace_id: i64,
    /// Its name.
    pub name: String,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who created it.
    pub by: i64,
}

/// boards: a card was created.
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CardCreated {
    /// The card as created.
    pub card: CardSnapshot,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who created it.
    pub by: i64,
}

/// boards: a card moved to another list.
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CardMoved {
    /// The card after the move.
    pub card: CardSnapshot,
    /// The list it left.
    pub from: String,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who moved it (`0`: an automation).
    pub by: i64,
}

/// boards: a card was deleted (with its comments). A card with children
/// cannot be: they are moved away or deleted first.
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CardDeleted {
    /// The card as it was.
    pub card: CardSnapshot,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who deleted it.
    pub by: i64,
}

/// boards: a card's assignee changed (`None`: unassigned).
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CardAssigned {
    /// The card after the change.
    pub card: CardSnapshot,
    /// Its assignee before.
    pub previous: Option<i64>,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who assigned it (`0`: an automation).
    pub by: i64,
}

/// boards: a card's fields changed (title, description, labels, story
/// points, due date).
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CardUpdated {
    /// The card after the change.
    pub card: CardSnapshot,
    /// The board's sequence number of this event.
    pub seq: i64,
    /// Who changed it (`0`: an automation).
    pub by: i64,
}

/// boards: a comment on a card.
#[message(namespace = "boards", event)]
#[derive(Debug, Clone)]
pub struct CommentAdded {
    /// The comment.
    pub comment_id: i64,
    /// The card.
    pub card_id: i64,
    /// The card's board.
    pub board_id: i64,
    /// The author.
    pub author: i64,
    /// The text.
    pub text: String,
    /// The board's sequence number of this event.
    pub seq: i64,
}

/// A command to boards: set a card's assignee (`None` unassigns). Sent by
/// automations.
#[message(namespace = "boards", command)]
#[derive(Debug, Clone)]
pub struct AssignCard {
    /// The card.
    pub card_id: i64,
    /// The new assignee.
    pub assignee: Option<i64>,
    /// Why, for the log and the feed (`round-robin`, `done`).
    pub reason: String,
}

/// A command to boards: change a card as a rule decided. Fields left `None`
/// stay as they are.
#[message(namespace = "boards", command)]
#[derive(Debug, Clone)]
pub struct UpdateCard {
    /// The card.
    pub card_id: i64,
    /// Move it to this list.
    pub list: Option<String>,
    /// Set its story points.
    pub story_points: Option<i64>,
    /// Why (`children-done`, `sum-points`).
    pub reason: String,
}

/// chat: a message was posted in a channel.
#[message(namespace = "chat", event)]
#[derive(Debug, Clone)]
pub struct MessagePosted {
    /// The message's time-ordered id.
    pub message_id: i64,
    /// `board:{id}` or `dm:{a}:{b}` (a < b).
    pub channel: String,
    /// The author.
    pub author: i64,
    /// The text.
    pub text: String,
}

/// A channel name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The channel of a board: its members.
    Board(i64),
    /// A direct conversation between two users (lower id first).
    Direct(i64, i64),
}

impl Channel {
    /// Parses `board:{id}` or `dm:{a}:{b}`; a direct channel's ids are put
    /// in order, so both spellings name one channel.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(id) = name.strip_prefix("board:") {
            return id.parse().ok().filter(|id| *id > 0).map(Self::Board);
        }
        let (a, b) = name.strip_prefix("dm:")?.split_once(':')?;
        let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
        (a > 0 && b > 0 && a != b).then(|| Self::Direct(a.min(b), a.max(b)))
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Board(id) => write!(f, "board:{id}"),
            Self::Direct(a, b) => write!(f, "dm:{a}:{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_and_print_one_way() {
        assert_eq!(Channel::parse("board:7"), Some(Channel::Board(7)));
        assert_eq!(Channel::parse("dm:9:3"), Some(Channel::Direct(3, 9)));
        assert_eq!(
            Channel::parse("dm:3:9").map(|c| c.to_string()),
            Some("dm:3:9".into())
        );
        for bad in [
            "", "board:", "board:-1", "board:x", "dm:3", "dm:3:3", "dm:a:b", "room:1",
        ] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
    }
}
