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
//! exactly one of them; that replica publishes what it committed as one
//! [`LiveBatch`] on the backplane, which every replica receives and puts in
//! its boards' order (see [`super::sequencer`]). Nothing waits for order
//! here: a handler that fails (boards unreachable) is retried by the broker
//! while the events after it go on.
//!
//! A crash between the commit and the push loses only the push: the inbox
//! has the event, so it is not handled again, and the feed has the items,
//! which a reconnecting client reads with `/feed?after=`; the replicas skip
//! the board's gap once it has held them up for
//! [`HOLD`](super::sequencer::HOLD). No `pushed` flag or per-replica
//! high-water mark is needed.

use mamey_core::cqrs::call;

use super::backplane::{Backplane, LiveBatch};

/// Publishes `batch` on the backplane once the current handler's
/// transaction has committed (nothing if it rolls back). A batch with no
/// items is published only for a board's event, whose place in the board's
/// order it takes.
pub(crate) fn after_commit(backplane: Backplane, batch: LiveBatch) {
    if batch.items.is_empty() && batch.board.is_none() {
        return;
    }
    let registered = call::on_completion(move |committed| async move {
        if committed && let Err(error) = backplane.publish(&batch).await {
            // The feed has the items; only the live push is lost.
            tracing::warn!(board = ?batch.board, items = batch.items.len(), %error,
                "live notifications could not be pushed");
        }
        Ok(())
    });
    if !registered {
        tracing::error!("live pushes need a handler call with a unit of work; skipped");
    }
}
