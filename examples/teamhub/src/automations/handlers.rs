//! The events automations consumes, and what it does with each: keep its
//! projection, decide with the [rules](super::rules), and send boards the
//! commands they call for. Each handler runs in one transaction (`Tx`)
//! with its message's inbox record, its projection update and the
//! commands it sends (staged in the outbox): a redelivered event is
//! skipped, and a failed one leaves nothing behind.
//!
//! Events arrive on one queue per type, so a card's events may come out of
//! order, or about a card automations has never seen (made before it
//! started). Each event carries the card as it is after the change and the
//! board's `seq`: the projection takes the snapshot when its `seq` is
//! newer than what it has, and keeps what it has otherwise. A deleted card
//! stays in the projection as a tombstone: an event about it that arrives
//! after `CardDeleted` is logged and skipped, never brings it back.

use mamey_core::cqrs::Res;
use mamey_core::{Error, ErrorKind};
use mamey_messaging::Publisher;
use mamey_persistence::Tx;

use super::projection::{self, BoardRules};
use super::rules::{self, Action, Card, Change, Facts, Family};
use crate::boards::BoardsClient;
use crate::contracts::{
    AssignCard, BoardCreated, CardAssigned, CardCreated, CardDeleted, CardMoved, CardSnapshot,
    CardUpdated, DONE, MemberAdded, UpdateCard,
};
use crate::sql::{Conn, Sql};

/// A new board: its rules start, all on.
pub(super) async fn on_board_created<B: Sql>(
    event: BoardCreated,
    mut tx: Tx<B>,
) -> Result<(), Error> {
    projection::open_board::<B>(&mut tx, event.board_id, event.workspace_id).await?;
    tracing::info!(board = event.board_id, "rules on for a new board");
    Ok(())
}

/// A new member of a workspace: one more to assign cards to in turn.
pub(super) async fn on_member_added<B: Sql>(
    event: MemberAdded,
    mut tx: Tx<B>,
) -> Result<(), Error> {
    projection::add_member::<B>(&mut tx, event.workspace_id, event.user_id).await
}

/// A new card.
pub(super) async fn on_card_created<B: Sql>(
    event: CardCreated,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    boards: BoardsClient,
) -> Result<(), Error> {
    let change = Changed {
        change: Change::Created,
        card: &event.card,
        seq: event.seq,
    };
    apply::<B>(&mut tx, &events, &boards, change).await
}

/// A card moved.
pub(super) async fn on_card_moved<B: Sql>(
    event: CardMoved,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    boards: BoardsClient,
) -> Result<(), Error> {
    let change = Changed {
        change: Change::Moved,
        card: &event.card,
        seq: event.seq,
    };
    apply::<B>(&mut tx, &events, &boards, change).await
}

/// A card's assignee changed.
pub(super) async fn on_card_assigned<B: Sql>(
    event: CardAssigned,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    boards: BoardsClient,
) -> Result<(), Error> {
    let change = Changed {
        change: Change::Assigned {
            by_automation: event.by == 0,
        },
        card: &event.card,
        seq: event.seq,
    };
    apply::<B>(&mut tx, &events, &boards, change).await
}

/// A card's fields changed.
pub(super) async fn on_card_updated<B: Sql>(
    event: CardUpdated,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    boards: BoardsClient,
) -> Result<(), Error> {
    let change = Changed {
        change: Change::Updated,
        card: &event.card,
        seq: event.seq,
    };
    apply::<B>(&mut tx, &events, &boards, change).await
}

/// A card was deleted: its parent's family goes on without it.
pub(super) async fn on_card_deleted<B: Sql>(
    event: CardDeleted,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
    boards: BoardsClient,
) -> Result<(), Error> {
    let change = Changed {
        change: Change::Deleted,
        card: &event.card,
        seq: event.seq,
    };
    apply::<B>(&mut tx, &events, &boards, change).await
}

/// A card event, as the rules see it.
#[derive(Debug, Clone, Copy)]
struct Changed<'a> {
    change: Change,
    card: &'a CardSnapshot,
    seq: i64,
}

/// Updates the projection from the event, decides, and sends the
/// commands.
async fn apply<B: Sql>(
    conn: &mut Conn<B>,
    events: &Publisher,
    boards: &BoardsClient,
    changed: Changed<'_>,
) -> Result<(), Error> {
    let Changed { change, card, seq } = changed;
    let board = projection::open_board::<B>(conn, card.board_id, card.workspace_id).await?;
    let known = projection::card::<B>(conn, card.id).await?;
    let (before, after) = match known {
        Some(seen) if seen.deleted => {
            tracing::warn!(
                card = card.id,
                seq,
                deleted_at = seen.seq,
                event = ?change,
                "an event about a card deleted since; skipped"
            );
            return Ok(());
        }
        known if change == Change::Deleted => {
            let after = Card::from(card);
            projection::delete_card::<B>(conn, &after, seq).await?;
            (known.map(|seen| seen.card), after)
        }
        Some(seen) if seq <= seen.seq => {
            tracing::info!(
                card = card.id,
                seq,
                known_seq = seen.seq,
                "an event older than what automations knows of the card; deciding on what it knows"
            );
            (Some(seen.card.clone()), seen.card)
        }
        known => {
            if known.is_none() && change != Change::Created {
                tracing::info!(
                    card = card.id,
                    seq,
                    "a card automations had not seen (made before it started?); taking it from the event"
                );
            }
            let after = Card::from(card);
            projection::save_card::<B>(conn, &after, seq).await?;
            (known.map(|seen| seen.card), after)
        }
    };
    let families = families::<B>(conn, boards, before.as_ref(), &after).await?;
    let facts = Facts {
        change,
        before: before.as_ref(),
        after: &after,
        families: &families,
    };
    for action in rules::decide(board.rules, &facts) {
        send::<B>(conn, events, boards, card, board, action).await?;
    }
    Ok(())
}

/// The families a change of `after` touches: its parent's and its former
/// parent's, and its own when its points changed.
async fn families<B: Sql>(
    conn: &mut Conn<B>,
    boards: &BoardsClient,
    before: Option<&Card>,
    after: &Card,
) -> Result<Vec<Family>, Error> {
    let mut parents = vec![];
    for parent in [after.parent_id, before.and_then(|b| b.parent_id)]
        .into_iter()
        .flatten()
    {
        if !parents.contains(&parent) {
            parents.push(parent);
        }
    }
    let mut families = Vec::with_capacity(parents.len() + 1);
    for id in parents {
        if let Some(parent) = parent::<B>(conn, boards, id).await? {
            let children = projection::children::<B>(conn, id).await?;
            families.push(Family { parent, children });
        }
    }
    if before.is_some_and(|b| b.story_points != after.story_points) {
        let children = projection::children::<B>(conn, after.id).await?;
        if !children.is_empty() {
            families.push(Family {
                parent: after.clone(),
                children,
            });
        }
    }
    Ok(families)
}

/// Parent card `id`: from the projection, or, when automations has not
/// seen it, from boards (and kept). `None` when boards does not know it
/// either (deleted): its family is left alone.
async fn parent<B: Sql>(
    conn: &mut Conn<B>,
    boards: &BoardsClient,
    id: i64,
) -> Result<Option<Card>, Error> {
    if let Some(seen) = projection::card::<B>(conn, id).await? {
        return Ok((!seen.deleted).then_some(seen.card));
    }
    match boards.card(id).await {
        Ok(snapshot) => {
            let card = Card::from(&snapshot);
            projection::save_card::<B>(conn, &card, 0).await?;
            Ok(Some(card))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            tracing::warn!(
                card = id,
                "a parent card boards does not know; its family is left alone"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Sends boards the command `action` calls for, in the transaction's
/// outbox.
async fn send<B: Sql>(
    conn: &mut Conn<B>,
    events: &Publisher,
    boards: &BoardsClient,
    card: &CardSnapshot,
    board: BoardRules,
    action: Action,
) -> Result<(), Error> {
    match action {
        Action::AssignInTurn { card: id } => {
            let Some(members) = members::<B>(conn, boards, card).await? else {
                return Ok(());
            };
            let Some(user) = rules::next_in_turn(&members, board.last_assignee) else {
                tracing::warn!(
                    card = id,
                    "a board without members; the card stays unassigned"
                );
                return Ok(());
            };
            projection::set_last_assignee::<B>(conn, card.board_id, user).await?;
            events
                .publish(&AssignCard {
                    card_id: id,
                    assignee: Some(user),
                    reason: "round-robin".to_owned(),
                })
                .await?;
        }
        Action::Unassign { card: id } => {
            events
                .publish(&AssignCard {
                    card_id: id,
                    assignee: None,
                    reason: "done".to_owned(),
                })
                .await?;
        }
        Action::MoveToDone { card: id } => {
            events
                .publish(&UpdateCard {
                    card_id: id,
                    list: Some(DONE.to_owned()),
                    story_points: None,
                    reason: "children-done".to_owned(),
                })
                .await?;
        }
        Action::SetPoints { card: id, points } => {
            events
                .publish(&UpdateCard {
                    card_id: id,
                    list: None,
                    story_points: Some(points),
                    reason: "sum-points".to_owned(),
                })
                .await?;
        }
    }
    tracing::info!(?action, "automation asks boards");
    Ok(())
}

/// The members of `card`'s workspace: from the projection once it has the
/// whole list, else from boards (and kept). `None` when boards does not
/// know the board (deleted).
async fn members<B: Sql>(
    conn: &mut Conn<B>,
    boards: &BoardsClient,
    card: &CardSnapshot,
) -> Result<Option<Vec<i64>>, Error> {
    if let Some(members) = projection::members::<B>(conn, card.workspace_id).await? {
        return Ok(Some(members));
    }
    match boards.members(card.board_id).await {
        Ok(members) => {
            projection::record_members::<B>(conn, members.workspace_id, &members.user_ids).await?;
            projection::members::<B>(conn, members.workspace_id).await
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            tracing::warn!(
                board = card.board_id,
                "a board boards does not know; the card stays unassigned"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}
