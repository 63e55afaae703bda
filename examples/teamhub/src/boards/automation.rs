//! The commands automations sends to boards over the broker — `AssignCard`
//! and `UpdateCard` — and their handlers. Each runs in one transaction
//! with the inbox record of its message (the `Tx` argument: a redelivered
//! command is acknowledged without running again) and publishes its event
//! with `by: 0`.
//!
//! A command about a card that is gone, or that names an assignee who is
//! not a member, is obsolete rather than wrong: automations decided on a
//! projection that may lag. The handler logs a warning and returns `Ok`,
//! so the message is acknowledged. Returning the `not_found` error instead
//! would dead-letter it at once (mamey-messaging dead-letters `not_found`,
//! `invalid_input`, `unauthorized` and `forbidden` without retrying, and
//! retries `unavailable`, `internal` and `conflict`), leaving dead letters
//! nobody needs to replay. A command that cannot be valid (a list that
//! does not exist, negative points) is a bug of the sender: it fails as
//! `invalid_input` and is dead-lettered for someone to look at.

use mamey_core::Error;
use mamey_core::cqrs::Res;
use mamey_messaging::Publisher;
use mamey_persistence::Tx;

use super::changes::{self, AUTOMATION, open};
use super::{fields, store};
use crate::contracts::{AssignCard, CardSnapshot, UpdateCard};
use crate::sql::Sql;

/// Assigns (or unassigns) the card as the automation decided.
pub(super) async fn assign_card<B: Sql>(
    command: AssignCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    let Some(card) = open::<B>(&mut tx, command.card_id).await? else {
        tracing::warn!(card = command.card_id, reason = %command.reason, "an automation assigns a card that does not exist; dropped");
        return Ok(());
    };
    if let Some(assignee) = command.assignee
        && !store::is_member::<B>(&mut tx, card.workspace_id, assignee).await?
    {
        tracing::warn!(
            card = card.id,
            assignee,
            reason = %command.reason,
            "an automation assigns a card to someone outside its workspace; dropped"
        );
        return Ok(());
    }
    tracing::info!(card = card.id, assignee = ?command.assignee, reason = %command.reason, "automation assigns a card");
    changes::assign::<B>(&mut tx, &events, card, command.assignee, AUTOMATION).await
}

/// Moves the card and sets its story points as the automation decided:
/// `CardMoved` and `CardUpdated`, each with its own event number, for what
/// changed.
pub(super) async fn update_card<B: Sql>(
    command: UpdateCard,
    mut tx: Tx<B>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    let list = command.list.as_deref().map(fields::list).transpose()?;
    let points = command.story_points.map(fields::story_points).transpose()?;
    let Some(card) = open::<B>(&mut tx, command.card_id).await? else {
        tracing::warn!(card = command.card_id, reason = %command.reason, "an automation updates a card that does not exist; dropped");
        return Ok(());
    };
    tracing::info!(card = card.id, list, story_points = points, reason = %command.reason, "automation updates a card");
    let card = match list {
        Some(list) => changes::move_to::<B>(&mut tx, &events, card, list, AUTOMATION).await?,
        None => card,
    };
    if let Some(points) = points {
        let after = CardSnapshot {
            story_points: Some(points),
            ..card.clone()
        };
        changes::update::<B>(&mut tx, &events, &card, after, AUTOMATION).await?;
    }
    Ok(())
}
