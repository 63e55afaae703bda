//! Live pushes after the commit.
//!
//! A consumer handler writes the feed rows inside its unit of work (`Tx`),
//! with the inbox record. The live push must follow the commit: pushed
//! before, a rollback (or a failed commit) would leave sockets holding
//! items the feed never got. mamey's call scope runs completions in the
//! order they were registered, each told whether the call has succeeded so
//! far: `Tx` registers its commit as the handler's arguments are
//! extracted, so a completion the handler registers runs after the commit,
//! told whether it committed. That is the after-commit hook.
//!
//! With several replicas consuming one queue, the broker gives an event to
//! exactly one of them; that replica pushes what it committed, to every
//! replica through the backplane. A crash between the commit and the push
//! loses only the push: the inbox has the event, so it is not handled
//! again, and the feed has the items, which a reconnecting client reads
//! with `/feed?after=`. No `pushed` flag or per-replica high-water mark is
//! needed.

use mamey_core::cqrs::call;

use super::backplane::{Backplane, LiveMessage};
use super::feed::Addressed;
use super::ordering::Turn;

/// Publishes `items` on the backplane once the current handler's
/// transaction has committed (nothing if it rolls back), then gives up
/// `turn`, the board's turn in this process, if it holds one: held until
/// the commit, the next board event reads the cursor this one moved.
pub(crate) fn after_commit(backplane: Backplane, items: Vec<Addressed>, turn: Option<Turn>) {
    if items.is_empty() && turn.is_none() {
        return;
    }
    let registered = call::on_completion(move |committed| async move {
        if committed {
            for Addressed {
                user_id,
                notification,
            } in items
            {
                let id = notification.id;
                let message = LiveMessage {
                    user_id,
                    notification,
                };
                if let Err(error) = backplane.publish(&message).await {
                    // The feed has it; only the live push is lost.
                    tracing::warn!(user_id, id, %error, "a live notification could not be pushed");
                }
            }
        }
        drop(turn);
        Ok(())
    });
    if !registered {
        tracing::error!("live pushes need a handler call with a unit of work; skipped");
    }
}
