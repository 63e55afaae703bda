//! What automations keeps of boards, in its own tables (it never writes
//! boards'): each board's rules and round-robin turn, the cards it has seen
//! (with the `seq` of the event that last set each), and workspaces'
//! members. Every function runs in the handler's transaction.

use mamey_core::Error;

use super::rules::{Card, Rules};
use crate::args;
use crate::contracts::CardSnapshot;
use crate::sql::{Conn, Row, Sql};

/// A board's rules and whose turn it was last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BoardRules {
    /// Which rules are on.
    pub(super) rules: Rules,
    /// The member the last card went to in turn.
    pub(super) last_assignee: Option<i64>,
}

impl From<&CardSnapshot> for Card {
    fn from(card: &CardSnapshot) -> Self {
        Self {
            id: card.id,
            board_id: card.board_id,
            parent_id: card.parent_id,
            list: card.list.clone(),
            story_points: card.story_points,
            assignee: card.assignee,
        }
    }
}

/// Opens board `board` of `workspace` for a change: makes its rules row
/// (every rule on) if it has none, and locks it, so that the events of one
/// board are applied one at a time (the write comes first, so SQLite takes
/// its write lock at once, and Postgres holds the row until the commit).
pub(super) async fn open_board<B: Sql>(
    conn: &mut Conn<B>,
    board: i64,
    workspace: i64,
) -> Result<BoardRules, Error> {
    let rows = B::fetch(
        conn,
        "INSERT INTO rules (board_id, workspace_id) VALUES ($1, $2) \
         ON CONFLICT (board_id) DO UPDATE SET events = rules.events + 1 \
         RETURNING round_robin, parent_done, sum_points, unassign_done, last_assignee",
        args![board, workspace],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::internal(format!("the rules of board {board} were not returned")))?;
    Ok(BoardRules {
        rules: Rules {
            round_robin: row.int(0)? != 0,
            parent_done: row.int(1)? != 0,
            sum_points: row.int(2)? != 0,
            unassign_done: row.int(3)? != 0,
        },
        last_assignee: row.opt_int(4)?,
    })
}

/// Records that the last card of `board` in turn went to `user`.
pub(super) async fn set_last_assignee<B: Sql>(
    conn: &mut Conn<B>,
    board: i64,
    user: i64,
) -> Result<(), Error> {
    B::execute(
        conn,
        "UPDATE rules SET last_assignee = $2 WHERE board_id = $1",
        args![board, user],
    )
    .await?;
    Ok(())
}

fn card_from(row: &Row) -> Result<Card, Error> {
    Ok(Card {
        id: row.int(0)?,
        board_id: row.int(1)?,
        parent_id: row.opt_int(2)?,
        list: row.text(3)?,
        story_points: row.opt_int(4)?,
        assignee: row.opt_int(5)?,
    })
}

/// A card as automations last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    /// The card.
    pub(super) card: Card,
    /// The board's `seq` of the event it was last set from (`0`: read from
    /// boards directly).
    pub(super) seq: i64,
    /// Whether boards deleted it.
    pub(super) deleted: bool,
}

/// Card `id`, if automations has seen it.
pub(super) async fn card<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<Option<Seen>, Error> {
    let rows = B::fetch(
        conn,
        "SELECT id, board_id, parent_id, list, story_points, assignee, seq, deleted \
         FROM cards WHERE id = $1",
        args![id],
    )
    .await?;
    rows.first()
        .map(|row| {
            Ok(Seen {
                card: card_from(row)?,
                seq: row.int(6)?,
                deleted: row.int(7)? != 0,
            })
        })
        .transpose()
}

/// Stores `card` as set by the event numbered `seq` of its board (`0`:
/// read from boards directly, older than any event).
pub(super) async fn save_card<B: Sql>(
    conn: &mut Conn<B>,
    card: &Card,
    seq: i64,
) -> Result<(), Error> {
    B::execute(
        conn,
        "INSERT INTO cards (id, board_id, parent_id, list, story_points, assignee, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET parent_id = excluded.parent_id, list = excluded.list, \
         story_points = excluded.story_points, assignee = excluded.assignee, seq = excluded.seq",
        args![
            card.id,
            card.board_id,
            card.parent_id,
            &card.list,
            card.story_points,
            card.assignee,
            seq
        ],
    )
    .await?;
    Ok(())
}

/// Stores `card` as deleted by the event numbered `seq`: a tombstone,
/// whatever automations knew of it.
pub(super) async fn delete_card<B: Sql>(
    conn: &mut Conn<B>,
    card: &Card,
    seq: i64,
) -> Result<(), Error> {
    save_card::<B>(conn, card, seq).await?;
    B::execute(
        conn,
        "UPDATE cards SET deleted = 1 WHERE id = $1",
        args![card.id],
    )
    .await?;
    Ok(())
}

/// The children of card `parent` (not deleted).
pub(super) async fn children<B: Sql>(conn: &mut Conn<B>, parent: i64) -> Result<Vec<Card>, Error> {
    B::fetch(
        conn,
        "SELECT id, board_id, parent_id, list, story_points, assignee FROM cards \
         WHERE parent_id = $1 AND deleted = 0 ORDER BY id",
        args![parent],
    )
    .await?
    .iter()
    .map(card_from)
    .collect()
}

/// Adds `user` to the members of `workspace` (again: nothing).
pub(super) async fn add_member<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
    user: i64,
) -> Result<(), Error> {
    B::execute(
        conn,
        "INSERT INTO members (workspace_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        args![workspace, user],
    )
    .await?;
    Ok(())
}

/// The members of `workspace`, once automations has had the whole list
/// from boards (see [`record_members`]); `None` before.
pub(super) async fn members<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
) -> Result<Option<Vec<i64>>, Error> {
    let known = B::fetch(
        conn,
        "SELECT COUNT(*) FROM member_lists WHERE workspace_id = $1",
        args![workspace],
    )
    .await?;
    if known
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .unwrap_or(0)
        == 0
    {
        return Ok(None);
    }
    let members = B::fetch(
        conn,
        "SELECT user_id FROM members WHERE workspace_id = $1 ORDER BY user_id",
        args![workspace],
    )
    .await?
    .iter()
    .map(|row| row.int(0))
    .collect::<Result<_, _>>()?;
    Ok(Some(members))
}

/// Records `users`, boards' whole list of `workspace`'s members; from
/// then on `MemberAdded` keeps it whole.
pub(super) async fn record_members<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
    users: &[i64],
) -> Result<(), Error> {
    for user in users {
        add_member::<B>(conn, workspace, *user).await?;
    }
    B::execute(
        conn,
        "INSERT INTO member_lists (workspace_id, recorded_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        args![workspace, crate::request::now_ms()],
    )
    .await?;
    Ok(())
}
