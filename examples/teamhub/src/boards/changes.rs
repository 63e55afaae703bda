//! The changes of a card that both the REST API and the automations'
//! commands make. Each runs in the caller's transaction, on a card whose
//! board was locked by [`open`]: it saves the card, takes the board's next
//! event number and publishes the event (staged in the outbox, sent after
//! the commit). A change that changes nothing saves and publishes nothing,
//! so a repeated command is harmless and a board's event numbers have no
//! gaps.

use mamey_core::Error;
use mamey_messaging::Publisher;

use super::store;
use crate::contracts::{CardAssigned, CardMoved, CardSnapshot, CardUpdated};
use crate::sql::{Conn, Sql};

/// The `by` of the changes automations ask for.
pub(super) const AUTOMATION: i64 = 0;

/// Locks the board of card `id` and reads the card; `None` when there is
/// no such card.
pub(super) async fn open<B: Sql>(
    conn: &mut Conn<B>,
    id: i64,
) -> Result<Option<CardSnapshot>, Error> {
    if store::lock_board_of_card::<B>(conn, id).await?.is_none() {
        return Ok(None);
    }
    store::card::<B>(conn, id).await
}

/// Gives `card` to `assignee` (`None`: nobody) and publishes
/// `CardAssigned`.
pub(super) async fn assign<B: Sql>(
    conn: &mut Conn<B>,
    events: &Publisher,
    card: CardSnapshot,
    assignee: Option<i64>,
    by: i64,
) -> Result<(), Error> {
    if card.assignee == assignee {
        tracing::debug!(card = card.id, "already assigned so; nothing to do");
        return Ok(());
    }
    let previous = card.assignee;
    let card = CardSnapshot { assignee, ..card };
    store::save_card::<B>(conn, &card).await?;
    let seq = store::next_seq::<B>(conn, card.board_id).await?;
    events
        .publish(&CardAssigned {
            card,
            previous,
            seq,
            by,
        })
        .await?;
    Ok(())
}

/// Moves `card` to `list` (a valid list) and publishes `CardMoved`;
/// returns the card as moved.
pub(super) async fn move_to<B: Sql>(
    conn: &mut Conn<B>,
    events: &Publisher,
    card: CardSnapshot,
    list: &str,
    by: i64,
) -> Result<CardSnapshot, Error> {
    if card.list == list {
        tracing::debug!(card = card.id, list, "already in that list; nothing to do");
        return Ok(card);
    }
    let from = card.list.clone();
    let card = CardSnapshot {
        list: list.to_owned(),
        ..card
    };
    store::save_card::<B>(conn, &card).await?;
    let seq = store::next_seq::<B>(conn, card.board_id).await?;
    events
        .publish(&CardMoved {
            card: card.clone(),
            from,
            seq,
            by,
        })
        .await?;
    Ok(card)
}

/// Saves `after`, the new fields of `before` (title, description, labels,
/// story points, due date, parent), and publishes `CardUpdated`.
pub(super) async fn update<B: Sql>(
    conn: &mut Conn<B>,
    events: &Publisher,
    before: &CardSnapshot,
    after: CardSnapshot,
    by: i64,
) -> Result<(), Error> {
    if *before == after {
        tracing::debug!(card = before.id, "the card is so already; nothing to do");
        return Ok(());
    }
    store::save_card::<B>(conn, &after).await?;
    let seq = store::next_seq::<B>(conn, after.board_id).await?;
    events
        .publish(&CardUpdated {
            card: after,
            seq,
            by,
        })
        .await?;
    Ok(())
}
