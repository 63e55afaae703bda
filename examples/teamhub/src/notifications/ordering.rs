//! A board's notifications in `seq` order.
//!
//! Every boards event carries `seq`, the board's own event number. The
//! events arrive on one queue per event type, so `CardMoved` 3 may be
//! handled before `CardCreated` 2 however the broker orders each queue.
//! Two things keep a user's socket in `seq` order:
//!
//! 1. **The cursor** (`board_cursors`): the last `seq` notified per board,
//!    moved in the transaction that writes the feed. An event that is not
//!    the next one fails with a retryable `conflict`, so the broker hands it
//!    back later, by when its predecessor is in. A board's first event is
//!    `BoardCreated`. The cursor lives in the database, so replicas
//!    consuming the same queues agree on it.
//! 2. **The turn**: one board event at a time in this process, from reading
//!    the cursor until its live pushes are out (after the commit). Without
//!    it, event 4 could commit and push between event 3's commit and its
//!    push.
//!
//! An event that never comes (dead-lettered, or published before this
//! service subscribed) must not hold its board up for ever: once a board
//! has waited [`GAP_WAIT`] without moving, the next event that arrives is
//! taken and the gap skipped. An event older than the cursor (it arrived
//! after the gap was skipped) still goes into the feeds, but is not pushed
//! live, so sockets never see a board's `seq` go back.
//!
//! Across replicas the turn is per process: two replicas may push a
//! board's consecutive events in the other order if the second commits and
//! pushes in the moment between the first's commit and its push. The feed
//! (`GET /feed`) is always complete and ordered by id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mamey_core::Error;
use mamey_persistence::Tx;
use tokio::sync::OwnedMutexGuard;

use crate::args;
use crate::sql::Sql;

/// How long a board waits for a missing event before skipping it: long
/// enough for a predecessor that is itself being retried (boards briefly
/// unreachable, a broker reconnecting), short of the retries' ~19 s (`config/notifications.toml`).
pub(crate) const GAP_WAIT: Duration = Duration::from_secs(10);

/// Waits forgotten after this long (their events were dead-lettered).
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Whether a board event comes in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The next event (or the first after a skipped gap): notify and push.
    Next,
    /// Older than the cursor: into the feeds, not pushed live.
    Late,
}

/// The turn of one board event in this process; released when dropped
/// (after the live pushes).
#[derive(Debug)]
pub(crate) struct Turn {
    _held: OwnedMutexGuard<()>,
}

/// Boards with an event waiting for its predecessor: the cursor each
/// waits at (`None`: the board has had no event yet) and since when.
type Waits = HashMap<i64, (Option<i64>, Instant)>;

/// The order keeper of this process: a resource, cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct BoardOrder {
    turn: Arc<tokio::sync::Mutex<()>>,
    waits: Arc<Mutex<Waits>>,
}

impl BoardOrder {
    /// Waits for this process's turn to notify a board event.
    pub(crate) async fn turn(&self) -> Turn {
        Turn {
            _held: Arc::clone(&self.turn).lock_owned().await,
        }
    }

    /// Admits event `seq` of `board_id` and moves the board's cursor to it,
    /// inside `tx`. `opens` says it is the board's first event
    /// (`BoardCreated`).
    ///
    /// # Errors
    /// The event is early: a retryable `conflict`, so it comes back later.
    /// The database failed.
    pub(crate) async fn admit<B: Sql>(
        &self,
        tx: &mut Tx<B>,
        board_id: i64,
        seq: i64,
        opens: bool,
    ) -> Result<Admission, Error> {
        let rows = B::fetch(
            tx,
            "SELECT seq FROM board_cursors WHERE board_id = $1",
            args![board_id],
        )
        .await?;
        let cursor = rows.first().map(|row| row.int(0)).transpose()?;
        match step(cursor, seq, opens) {
            Step::Late => return Ok(Admission::Late),
            Step::Next => {}
            Step::Early if self.waited_out(board_id, cursor) => {
                tracing::warn!(
                    board_id,
                    seq,
                    cursor,
                    "a board's earlier events did not come; skipping them"
                );
            }
            Step::Early => {
                self.wait(board_id, cursor);
                return Err(Error::conflict(
                    "notifications.early",
                    format!("event {seq} of board {board_id} waits for its predecessor"),
                ));
            }
        }
        B::execute(
            tx,
            "INSERT INTO board_cursors (board_id, seq) VALUES ($1, $2) \
             ON CONFLICT (board_id) DO UPDATE SET seq = excluded.seq \
             WHERE board_cursors.seq < excluded.seq",
            args![board_id, seq],
        )
        .await?;
        self.locked().remove(&board_id);
        Ok(Admission::Next)
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `board_id` waits at `cursor` (from now, unless it already
    /// waited there).
    fn wait(&self, board_id: i64, cursor: Option<i64>) {
        let mut waits = self.locked();
        waits.retain(|_, (_, since)| since.elapsed() < FORGET_AFTER);
        match waits.get(&board_id) {
            Some((at, _)) if *at == cursor => {}
            _ => {
                waits.insert(board_id, (cursor, Instant::now()));
            }
        }
    }

    /// Whether `board_id` has waited at `cursor` for [`GAP_WAIT`].
    fn waited_out(&self, board_id: i64, cursor: Option<i64>) -> bool {
        self.locked()
            .get(&board_id)
            .is_some_and(|(at, since)| *at == cursor && since.elapsed() >= GAP_WAIT)
    }
}

/// Where event `seq` stands against the board's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The one expected.
    Next,
    /// A predecessor has not been notified yet.
    Early,
    /// At or behind the cursor.
    Late,
}

fn step(cursor: Option<i64>, seq: i64, opens: bool) -> Step {
    match cursor {
        None if opens => Step::Next,
        None => Step::Early,
        Some(last) if seq <= last => Step::Late,
        Some(last) if seq == last + 1 => Step::Next,
        Some(_) => Step::Early,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_opens_with_board_created_then_counts_up() {
        assert_eq!(step(None, 1, true), Step::Next);
        assert_eq!(step(None, 2, false), Step::Early);
        assert_eq!(step(Some(1), 2, false), Step::Next);
        assert_eq!(step(Some(1), 3, false), Step::Early);
        assert_eq!(step(Some(3), 3, false), Step::Late);
        assert_eq!(step(Some(3), 1, true), Step::Late);
    }

    #[test]
    fn a_wait_runs_from_the_first_early_event_at_a_cursor() {
        let order = BoardOrder::default();
        order.wait(7, Some(2));
        assert!(!order.waited_out(7, Some(2)));
        // Backdate the wait: it has lasted long enough.
        order
            .locked()
            .insert(7, (Some(2), Instant::now() - GAP_WAIT));
        order.wait(7, Some(2));
        assert!(order.waited_out(7, Some(2)));
        // The cursor moved: a new wait.
        assert!(!order.waited_out(7, Some(3)));
        order.wait(7, Some(3));
        assert!(!order.waited_out(7, Some(3)));
    }
}
