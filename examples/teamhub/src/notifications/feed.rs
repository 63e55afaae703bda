//! The per-user feed: one row per recipient of each notification, written
//! in the transaction that records the event in the inbox, and read back
//! with `GET /feed?after=&limit=`.

use mamey_core::cqrs::{Query, Res};
use mamey_core::{Error, MessageContext};
use mamey_persistence::Tx;
use serde::{Deserialize, Serialize};
use sqlx::Pool;
use utoipa::ToSchema;

use crate::sql::{Row, Sql, Value};

/// Feed rows per `INSERT` (8 values each, well under both databases'
/// limits on statement parameters).
const ROWS_PER_INSERT: usize = 100;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `BoardCreated`.
    BoardCreated,
    /// `MemberAdded`.
    MemberAdded,
    /// `CardCreated`.
    CardCreated,
    /// `CardMoved`.
    CardMoved,
    /// `CardAssigned`.
    CardAssigned,
    /// `CardUpdated`.
    CardUpdated,
    /// `CardDeleted`.
    CardDeleted,
    /// `CommentAdded`.
    CommentAdded,
    /// `MessagePosted`.
    MessagePosted,
}

impl Kind {
    const ALL: [Self; 9] = [
        Self::BoardCreated,
        Self::MemberAdded,
        Self::CardCreated,
        Self::CardMoved,
        Self::CardAssigned,
        Self::CardUpdated,
        Self::CardDeleted,
        Self::CommentAdded,
        Self::MessagePosted,
    ];

    /// The name on the wire and in the table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BoardCreated => "board_created",
            Self::MemberAdded => "member_added",
            Self::CardCreated => "card_created",
            Self::CardMoved => "card_moved",
            Self::CardAssigned => "card_assigned",
            Self::CardUpdated => "card_updated",
            Self::CardDeleted => "card_deleted",
            Self::CommentAdded => "comment_added",
            Self::MessagePosted => "message_posted",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One item of a user's feed, as `GET /feed` and the live socket send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Notification {
    /// The feed item's id: time-ordered, the cursor of `/feed?after=`.
    pub(crate) id: i64,
    /// What happened.
    pub(crate) kind: Kind,
    /// The board, for a board's events and a board channel's messages.
    pub(crate) board_id: Option<i64>,
    /// The board's sequence number of the event, for a board's events.
    pub(crate) seq: Option<i64>,
    /// The chat channel, for messages.
    pub(crate) channel: Option<String>,
    /// When the notification was made, Unix milliseconds.
    pub(crate) at: i64,
    /// The event as published (camelCase).
    #[schema(value_type = Object)]
    pub(crate) data: serde_json::Value,
}

/// A notification before it is addressed: what every recipient's row
/// shares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draft {
    kind: Kind,
    board_id: Option<i64>,
    seq: Option<i64>,
    channel: Option<String>,
    data: serde_json::Value,
}

impl Draft {
    /// A notification of `kind` carrying `event`.
    ///
    /// # Errors
    /// The event does not encode as JSON (a bug).
    pub(crate) fn new<E: Serialize>(kind: Kind, event: &E) -> Result<Self, Error> {
        Ok(Self {
            kind,
            board_id: None,
            seq: None,
            channel: None,
            data: serde_json::to_value(event).map_err(Error::from_source)?,
        })
    }

    /// About board `board_id`, its event number `seq` when it has one.
    pub(crate) fn on_board(mut self, board_id: i64, seq: Option<i64>) -> Self {
        self.board_id = Some(board_id);
        self.seq = seq;
        self
    }

    /// In chat channel `channel`.
    pub(crate) fn in_channel(mut self, channel: String) -> Self {
        self.channel = Some(channel);
        self
    }
}

/// A notification and the user it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Addressed {
    /// The recipient.
    pub(crate) user_id: i64,
    /// Their feed item.
    pub(crate) notification: Notification,
}

/// Writes `draft` into the feed of each of `recipients`, inside `tx`;
/// returns the items written.
///
/// # Errors
/// The database failed.
pub(crate) async fn write<B: Sql>(
    tx: &mut Tx<B>,
    draft: &Draft,
    recipients: &[i64],
) -> Result<Vec<Addressed>, Error> {
    let at = crate::request::now_ms();
    let data = draft.data.to_string();
    let written: Vec<Addressed> = recipients
        .iter()
        .map(|&user_id| Addressed {
            user_id,
            notification: Notification {
                id: crate::ids::next(),
                kind: draft.kind,
                board_id: draft.board_id,
                seq: draft.seq,
                channel: draft.channel.clone(),
                at,
                data: draft.data.clone(),
            },
        })
        .collect();
    for chunk in written.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO feed (id, user_id, kind, board_id, seq, channel, created_at, data) VALUES ",
        );
        let mut args: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
        for (row, item) in chunk.iter().enumerate() {
            let first = row * 8;
            if row > 0 {
                sql.push_str(", ");
            }
            let placeholders: Vec<String> =
                (first + 1..=first + 8).map(|n| format!("${n}")).collect();
            sql.push('(');
            sql.push_str(&placeholders.join(", "));
            sql.push(')');
            let n = &item.notification;
            args.extend(crate::args![
                n.id,
                item.user_id,
                n.kind.as_str(),
                n.board_id,
                n.seq,
                n.channel.clone(),
                n.at,
                &data,
            ]);
        }
        B::execute(tx, &sql, args).await?;
    }
    Ok(written)
}

/// `GET /feed?after=&limit=`: the caller's notifications after the cursor.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetFeed {
    /// Only items with a larger id (default: from the first).
    after: Option<i64>,
    /// At most this many, 1 to 100 (default 50).
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

impl Query for GetFeed {
    type Output = FeedPage;

    fn validate(&self) -> Result<(), Error> {
        crate::request::limit(self.limit, "notifications").map(drop)
    }
}

/// A page of a user's feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FeedPage {
    /// Notifications in ascending id order.
    items: Vec<Notification>,
    /// The cursor of the next page (the last id here) when more may
    /// follow, else null.
    next: Option<i64>,
}

/// The caller's feed after the cursor, ascending.
pub(crate) async fn get_feed<B: Sql>(
    query: GetFeed,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<FeedPage, Error> {
    let user = crate::request::caller(&ctx)?;
    let limit = crate::request::limit(query.limit, "notifications")?;
    // One more than asked tells whether another page follows.
    let rows = B::query(
        &pool,
        "SELECT id, kind, board_id, seq, channel, created_at, data FROM feed \
         WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        crate::args![user, query.after.unwrap_or(0), limit + 1],
    )
    .await?;
    let mut items = rows
        .iter()
        .map(notification)
        .collect::<Result<Vec<_>, _>>()?;
    let size = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > size;
    items.truncate(size);
    let next = if more {
        items.last().map(|n| n.id)
    } else {
        None
    };
    Ok(FeedPage { items, next })
}

/// A feed row as a notification.
fn notification(row: &Row) -> Result<Notification, Error> {
    let kind = row.text(1)?;
    Ok(Notification {
        id: row.int(0)?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| Error::internal(format!("unknown notification kind `{kind}`")))?,
        board_id: row.opt_int(2)?,
        seq: row.opt_int(3)?,
        channel: row.opt_text(4)?,
        at: row.int(5)?,
        data: serde_json::from_str(&row.text(6)?).map_err(Error::from_source)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_one_name_each_way() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
        }
        assert_eq!(Kind::parse("user_signed_up"), None);
    }

    #[test]
    fn a_notification_is_camel_case_with_nulls() {
        let draft = Draft::new(Kind::MemberAdded, &serde_json::json!({ "userId": 5 })).unwrap();
        let notification = Notification {
            id: 1,
            kind: draft.kind,
            board_id: draft.board_id,
            seq: draft.seq,
            channel: draft.channel,
            at: 2,
            data: draft.data,
        };
        assert_eq!(
            serde_json::to_value(&notification).unwrap(),
            serde_json::json!({
                "id": 1, "kind": "member_added", "boardId": null, "seq": null,
                "channel": null, "at": 2, "data": { "userId": 5 }
            })
        );
    }
}
