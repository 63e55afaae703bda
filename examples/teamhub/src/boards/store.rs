//! Boards' tables — workspaces, members, boards (each with its event
//! sequence), cards and comments — as statements that run on a connection:
//! the handler's transaction (`&mut tx`) for writes, a pooled connection
//! for reads.
//!
//! A write locks what it changes with its first statement (`lock_*`), so
//! that SQLite takes its write lock at once (a transaction that reads
//! first and writes later fails as busy when another writer holds it) and
//! Postgres serialises the changes of one board or workspace (row lock).

use mamey_core::Error;

use crate::args;
use crate::contracts::CardSnapshot;
use crate::sql::{Conn, Row, Sql};

/// A card as events carry it, with its board's workspace.
const SELECT_CARD: &str = "SELECT c.id, c.board_id, b.workspace_id, c.parent_id, c.title, \
     c.description, c.assignee, c.labels, c.story_points, c.due, c.list \
     FROM cards c JOIN boards b ON b.id = c.board_id";

/// A board's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BoardRow {
    /// The board.
    pub(super) id: i64,
    /// Its workspace.
    pub(super) workspace_id: i64,
    /// Its name.
    pub(super) name: String,
    /// The sequence number of its last event.
    pub(super) seq: i64,
}

/// A comment's row, with the board of its card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommentRow {
    /// The comment.
    pub(super) id: i64,
    /// Its card.
    pub(super) card_id: i64,
    /// The card's board.
    pub(super) board_id: i64,
    /// The board's workspace.
    pub(super) workspace_id: i64,
    /// Its author.
    pub(super) author: i64,
    /// Its text.
    pub(super) text: String,
    /// When it was written, Unix milliseconds.
    pub(super) created_at: i64,
}

fn card_from(row: &Row) -> Result<CardSnapshot, Error> {
    let labels = row.text(7)?;
    Ok(CardSnapshot {
        id: row.int(0)?,
        board_id: row.int(1)?,
        workspace_id: row.int(2)?,
        parent_id: row.opt_int(3)?,
        title: row.text(4)?,
        description: row.text(5)?,
        assignee: row.opt_int(6)?,
        labels: serde_json::from_str(&labels).map_err(|e| {
            Error::internal(format!("the labels of a card are not a JSON list: {e}"))
        })?,
        story_points: row.opt_int(8)?,
        due: row.opt_text(9)?,
        list: row.text(10)?,
    })
}

fn labels_json(labels: &[String]) -> Result<String, Error> {
    serde_json::to_string(labels)
        .map_err(|e| Error::internal(format!("cannot write labels as JSON: {e}")))
}

/// Locks workspace `id` for a change (its `updated_at` is set); `false`
/// when there is none.
pub(super) async fn lock_workspace<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<bool, Error> {
    let changed = B::execute(
        conn,
        "UPDATE workspaces SET updated_at = $2 WHERE id = $1",
        args![id, crate::request::now_ms()],
    )
    .await?;
    Ok(changed > 0)
}

/// Locks board `id` for a change; its workspace, or `None` when there is
/// no such board.
pub(super) async fn lock_board<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<Option<i64>, Error> {
    let rows = B::fetch(
        conn,
        "UPDATE boards SET seq = seq WHERE id = $1 RETURNING workspace_id",
        args![id],
    )
    .await?;
    rows.first().map(|row| row.int(0)).transpose()
}

/// Locks the board of card `id` for a change of the card; `None` when
/// there is no such card.
pub(super) async fn lock_board_of_card<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
) -> Result<Option<i64>, Error> {
    let rows = B::fetch(
        conn,
        "UPDATE boards SET seq = seq WHERE id = (SELECT board_id FROM cards WHERE id = $1) \
         RETURNING id",
        args![id],
    )
    .await?;
    rows.first().map(|row| row.int(0)).transpose()
}

/// Takes the next event number of board `id` (locked before).
pub(super) async fn next_seq<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<i64, Error> {
    let rows = B::fetch(
        conn,
        "UPDATE boards SET seq = seq + 1 WHERE id = $1 RETURNING seq",
        args![id],
    )
    .await?;
    rows.first()
        .map(|row| row.int(0))
        .transpose()?
        .ok_or_else(|| Error::internal(format!("board {id} went away inside its transaction")))
}

/// Whether `user` is a member of workspace `workspace`.
pub(super) async fn is_member<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
    user: i64,
) -> Result<bool, Error> {
    let rows = B::fetch(
        conn,
        "SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND user_id = $2",
        args![workspace, user],
    )
    .await?;
    Ok(rows.first().map(|row| row.int(0)).transpose()?.unwrap_or(0) > 0)
}

/// The members of workspace `workspace`, in the order they joined.
pub(super) async fn members<B: Sql>(conn: &mut Conn<B>, workspace: i64) -> Result<Vec<i64>, Error> {
    B::fetch(
        conn,
        "SELECT user_id FROM members WHERE workspace_id = $1 ORDER BY joined_at, user_id",
        args![workspace],
    )
    .await?
    .iter()
    .map(|row| row.int(0))
    .collect()
}

/// The name of workspace `id`, if there is one.
pub(super) async fn workspace_name<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
) -> Result<Option<String>, Error> {
    let rows = B::fetch(conn, "SELECT name FROM workspaces WHERE id = $1", args![id]).await?;
    rows.first().map(|row| row.text(0)).transpose()
}

/// The boards of workspace `workspace`, oldest first.
pub(super) async fn boards_of<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
) -> Result<Vec<BoardRow>, Error> {
    B::fetch(
        conn,
        "SELECT id, workspace_id, name, seq FROM boards WHERE workspace_id = $1 ORDER BY id",
        args![workspace],
    )
    .await?
    .iter()
    .map(board_from)
    .collect()
}

fn board_from(row: &Row) -> Result<BoardRow, Error> {
    Ok(BoardRow {
        id: row.int(0)?,
        workspace_id: row.int(1)?,
        name: row.text(2)?,
        seq: row.int(3)?,
    })
}

/// Board `id`, if there is one.
pub(super) async fn board<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<Option<BoardRow>, Error> {
    let rows = B::fetch(
        conn,
        "SELECT id, workspace_id, name, seq FROM boards WHERE id = $1",
        args![id],
    )
    .await?;
    rows.first().map(board_from).transpose()
}

/// The cards of board `board`, in the order they were made.
pub(super) async fn cards_of<B: Sql>(
    conn: &mut Conn<B>,
    board: i64,
) -> Result<Vec<CardSnapshot>, Error> {
    let sql = format!("{SELECT_CARD} WHERE c.board_id = $1 ORDER BY c.id");
    B::fetch(conn, &sql, args![board])
        .await?
        .iter()
        .map(card_from)
        .collect()
}

/// Card `id`, if there is one.
pub(super) async fn card<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
) -> Result<Option<CardSnapshot>, Error> {
    let sql = format!("{SELECT_CARD} WHERE c.id = $1");
    let rows = B::fetch(conn, &sql, args![id]).await?;
    rows.first().map(card_from).transpose()
}

/// Whether `ancestor` is card `card` itself or one of its ancestors
/// (following `parent_id` up from `card`).
pub(super) async fn is_self_or_ancestor<B: Sql>(
    conn: &mut Conn<B>,
    ancestor: i64,
    card: i64,
) -> Result<bool, Error> {
    // UNION (not UNION ALL) keeps the walk finite whatever the rows hold.
    let rows = B::fetch(
        conn,
        "WITH RECURSIVE chain(id) AS ( \
             SELECT CAST($1 AS BIGINT) \
             UNION \
             SELECT c.parent_id FROM cards c JOIN chain ON c.id = chain.id \
             WHERE c.parent_id IS NOT NULL \
         ) \
         SELECT COUNT(*) FROM chain WHERE id = $2",
        args![card, ancestor],
    )
    .await?;
    Ok(rows.first().map(|row| row.int(0)).transpose()?.unwrap_or(0) > 0)
}

/// Adds workspace `id`, named `name`, made by `by`.
pub(super) async fn insert_workspace<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
    name: &str,
    by: i64,
) -> Result<(), Error> {
    let now = crate::request::now_ms();
    B::execute(
        conn,
        "INSERT INTO workspaces (id, name, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
        args![id, name, by, now],
    )
    .await?;
    Ok(())
}

/// Makes `user` a member of `workspace`, added by `by`. Already a member:
/// a conflict (409).
pub(super) async fn insert_member<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
    user: i64,
    by: i64,
) -> Result<(), Error> {
    B::execute(
        conn,
        "INSERT INTO members (workspace_id, user_id, added_by, joined_at) VALUES ($1, $2, $3, $4)",
        args![workspace, user, by, crate::request::now_ms()],
    )
    .await?;
    Ok(())
}

/// Adds board `id` to `workspace`, its first event (`BoardCreated`) being
/// number 1.
pub(super) async fn insert_board<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
    workspace: i64,
    name: &str,
    by: i64,
) -> Result<(), Error> {
    B::execute(
        conn,
        "INSERT INTO boards (id, workspace_id, name, seq, created_by, created_at) \
         VALUES ($1, $2, $3, 1, $4, $5)",
        args![id, workspace, name, by, crate::request::now_ms()],
    )
    .await?;
    Ok(())
}

/// Adds `card`, made by `by`.
pub(super) async fn insert_card<B: Sql>(
    conn: &mut Conn<B>,
    card: &CardSnapshot,
    by: i64,
) -> Result<(), Error> {
    let now = crate::request::now_ms();
    B::execute(
        conn,
        "INSERT INTO cards (id, board_id, parent_id, title, description, assignee, labels, \
         story_points, due, list, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        args![
            card.id,
            card.board_id,
            card.parent_id,
            &card.title,
            &card.description,
            card.assignee,
            labels_json(&card.labels)?,
            card.story_points,
            card.due.clone(),
            &card.list,
            by,
            now
        ],
    )
    .await?;
    Ok(())
}

/// Saves what may change of `card`: everything but its id and board.
pub(super) async fn save_card<B: Sql>(
    conn: &mut Conn<B>,
    card: &CardSnapshot,
) -> Result<(), Error> {
    B::execute(
        conn,
        "UPDATE cards SET parent_id = $2, title = $3, description = $4, assignee = $5, \
         labels = $6, story_points = $7, due = $8, list = $9, updated_at = $10 WHERE id = $1",
        args![
            card.id,
            card.parent_id,
            &card.title,
            &card.description,
            card.assignee,
            labels_json(&card.labels)?,
            card.story_points,
            card.due.clone(),
            &card.list,
            crate::request::now_ms()
        ],
    )
    .await?;
    Ok(())
}

/// Whether card `id` has child cards.
pub(super) async fn has_children<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<bool, Error> {
    let rows = B::fetch(
        conn,
        "SELECT 1 FROM cards WHERE parent_id = $1 LIMIT 1",
        args![id],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// Deletes card `id` and its comments.
pub(super) async fn delete_card<B: Sql>(conn: &mut Conn<B>, id: i64) -> Result<(), Error> {
    B::execute(conn, "DELETE FROM comments WHERE card_id = $1", args![id]).await?;
    B::execute(conn, "DELETE FROM cards WHERE id = $1", args![id]).await?;
    Ok(())
}

/// Adds comment `id` on `card` by `author`.
pub(super) async fn insert_comment<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
    card: i64,
    author: i64,
    text: &str,
) -> Result<(), Error> {
    B::execute(
        conn,
        "INSERT INTO comments (id, card_id, author, text, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![id, card, author, text, crate::request::now_ms()],
    )
    .await?;
    Ok(())
}

/// Comment `id`, if there is one.
pub(super) async fn comment<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
) -> Result<Option<CommentRow>, Error> {
    let rows = B::fetch(
        conn,
        "SELECT m.id, m.card_id, c.board_id, b.workspace_id, m.author, m.text, m.created_at \
         FROM comments m JOIN cards c ON c.id = m.card_id JOIN boards b ON b.id = c.board_id \
         WHERE m.id = $1",
        args![id],
    )
    .await?;
    rows.first()
        .map(|row| {
            Ok(CommentRow {
                id: row.int(0)?,
                card_id: row.int(1)?,
                board_id: row.int(2)?,
                workspace_id: row.int(3)?,
                author: row.int(4)?,
                text: row.text(5)?,
                created_at: row.int(6)?,
            })
        })
        .transpose()
}
