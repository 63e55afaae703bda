//! A board's live batches in `seq` order, restored where they are received.
//!
//! boards numbers a board's events 1, 2, 3, ... without gaps (`BoardCreated`
//! is 1), but notifications handles them out of that order: each event type
//! has its own queue, replicas compete for them, and a failed event comes
//! back later while its successors go on. So the handlers never wait; each
//! replica's fan-in puts what the backplane brings through a [`Sequencer`]
//! before it reaches the sockets:
//!
//! - a batch without a board (a member added, a chat message) goes at once;
//! - a board's next batch goes at once, with the held ones that follow it;
//! - a batch ahead of the next is held until the ones before it come;
//! - a batch behind the next (its gap was skipped, or it is a repeat) goes at
//!   once: late rather than lost;
//! - a batch held for [`HOLD`] goes anyway, with every held batch before it:
//!   the missing ones are skipped (logged at info) and go late if they come.
//!
//! A board unseen is expected to start at 1; one idle for [`FORGET_AFTER`]
//! is forgotten, so memory follows the active boards, and starts again as
//! unseen.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::backplane::{BoardSeq, LiveBatch};

/// How long a batch waits for the ones before it. Longer than a
/// redelivery after a brief outage (a failed event comes back within about
/// 3 s: `config/notifications.toml`), so a board's events stay in order
/// when one of them fails for a moment; short enough that a live feed does
/// not stall visibly when one never comes.
pub(crate) const HOLD: Duration = Duration::from_secs(5);

/// A board without a batch for this long is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The order keeper of one replica's fan-in. Pure: the caller says what
/// time it is.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    boards: HashMap<i64, Board>,
}

/// Where one board stands.
#[derive(Debug)]
struct Board {
    /// The `seq` delivered next.
    next: i64,
    /// Batches ahead of `next`, by `seq`, with when each came.
    held: BTreeMap<i64, (Instant, LiveBatch)>,
    /// When the board's last batch came.
    last_seen: Instant,
}

impl Board {
    /// Moves the held batches that now follow in order to `ready`.
    fn flush(&mut self, ready: &mut Vec<LiveBatch>) {
        while let Some((_, batch)) = self.held.remove(&self.next) {
            ready.push(batch);
            self.next = self.next.saturating_add(1);
        }
    }
}

impl Sequencer {
    /// Takes `batch`, received at `now`; returns the batches to deliver
    /// now, in order.
    pub(crate) fn accept(&mut self, batch: LiveBatch, now: Instant) -> Vec<LiveBatch> {
        let Some(BoardSeq { board_id, seq }) = batch.board else {
            return vec![batch];
        };
        let board = self.boards.entry(board_id).or_insert_with(|| Board {
            next: 1,
            held: BTreeMap::new(),
            last_seen: now,
        });
        board.last_seen = now;
        if seq < board.next {
            tracing::debug!(board_id, seq, next = board.next, "a late board event");
            return vec![batch];
        }
        if seq > board.next {
            // A repeat of a held batch is the same batch: held once.
            board.held.entry(seq).or_insert((now, batch));
            return Vec::new();
        }
        let mut ready = vec![batch];
        board.next = seq.saturating_add(1);
        board.flush(&mut ready);
        ready
    }

    /// Releases what has been held for [`HOLD`] at `now`, skipping the
    /// gaps before it, and forgets boards idle for [`FORGET_AFTER`];
    /// returns the batches to deliver now, in each board's order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<LiveBatch> {
        let mut ready = Vec::new();
        for (&board_id, board) in &mut self.boards {
            let Some(due) = board
                .held
                .iter()
                .rev()
                .find(|(_, (since, _))| now.duration_since(*since) >= HOLD)
                .map(|(&seq, _)| seq)
            else {
                continue;
            };
            let later = board.held.split_off(&due.saturating_add(1));
            let released = std::mem::replace(&mut board.held, later);
            let held = i64::try_from(released.len()).unwrap_or(i64::MAX);
            tracing::info!(
                board_id,
                expected = board.next,
                released_through = due,
                missing = due
                    .saturating_sub(board.next)
                    .saturating_add(1)
                    .saturating_sub(held),
                "a board's live events did not all come in time; skipping the missing ones, \
                 which go late if they come"
            );
            ready.extend(released.into_values().map(|(_, batch)| batch));
            board.next = due.saturating_add(1);
            board.flush(&mut ready);
        }
        self.boards
            .retain(|_, board| now.duration_since(board.last_seen) < FORGET_AFTER);
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(board_id: i64, seq: i64) -> LiveBatch {
        LiveBatch {
            board: Some(BoardSeq { board_id, seq }),
            items: Vec::new(),
        }
    }

    fn seqs(batches: &[LiveBatch]) -> Vec<i64> {
        batches
            .iter()
            .map(|batch| batch.board.map_or(0, |board| board.seq))
            .collect()
    }

    #[test]
    fn batches_in_order_go_at_once() {
        let (mut sequencer, now) = (Sequencer::default(), Instant::now());
        for seq in 1..=3 {
            assert_eq!(seqs(&sequencer.accept(batch(7, seq), now)), [seq]);
        }
        // Boards are apart.
        assert_eq!(seqs(&sequencer.accept(batch(8, 1), now)), [1]);
    }

    #[test]
    fn an_early_batch_waits_for_the_ones_before_it() {
        let (mut sequencer, now) = (Sequencer::default(), Instant::now());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), now)), [1]);
        assert!(sequencer.accept(batch(7, 4), now).is_empty());
        assert!(sequencer.accept(batch(7, 3), now).is_empty());
        assert_eq!(seqs(&sequencer.accept(batch(7, 2), now)), [2, 3, 4]);
        assert_eq!(seqs(&sequencer.accept(batch(7, 5), now)), [5]);
    }

    #[test]
    fn an_unseen_board_starts_at_one() {
        let (mut sequencer, now) = (Sequencer::default(), Instant::now());
        assert!(sequencer.accept(batch(7, 2), now).is_empty());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), now)), [1, 2]);
    }

    #[test]
    fn late_and_repeated_batches_go_at_once_and_a_held_one_is_held_once() {
        let (mut sequencer, now) = (Sequencer::default(), Instant::now());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), now)), [1]);
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), now)), [1]);
        assert!(sequencer.accept(batch(7, 3), now).is_empty());
        assert!(sequencer.accept(batch(7, 3), now).is_empty());
        assert_eq!(seqs(&sequencer.accept(batch(7, 2), now)), [2, 3]);
    }

    #[test]
    fn batches_without_a_board_are_never_held() {
        let (mut sequencer, now) = (Sequencer::default(), Instant::now());
        let lone = LiveBatch {
            board: None,
            items: Vec::new(),
        };
        assert_eq!(sequencer.accept(lone.clone(), now), [lone]);
        assert!(sequencer.expire(now + FORGET_AFTER).is_empty());
    }

    #[test]
    fn a_gap_is_skipped_once_a_batch_has_waited_the_hold_time() {
        let (mut sequencer, start) = (Sequencer::default(), Instant::now());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), start)), [1]);
        // 2 never comes; 4 comes later than 3, 6 later still.
        assert!(sequencer.accept(batch(7, 3), start).is_empty());
        let second = start + Duration::from_secs(1);
        assert!(sequencer.accept(batch(7, 4), second).is_empty());
        assert!(sequencer.accept(batch(7, 6), start + HOLD).is_empty());
        assert!(sequencer.expire(start + HOLD / 2).is_empty());
        // 3 has waited: 3 and 4, which follows it, go; 6 waits for 5.
        assert_eq!(seqs(&sequencer.expire(start + HOLD)), [3, 4]);
        assert_eq!(seqs(&sequencer.accept(batch(7, 5), second + HOLD)), [5, 6]);
        // 2 comes after all: late, not lost.
        assert_eq!(seqs(&sequencer.accept(batch(7, 2), second + HOLD)), [2]);
        assert_eq!(seqs(&sequencer.accept(batch(7, 7), second + HOLD)), [7]);
    }

    #[test]
    fn a_batch_that_waited_releases_the_ones_held_before_it() {
        let (mut sequencer, start) = (Sequencer::default(), Instant::now());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), start)), [1]);
        assert!(sequencer.accept(batch(7, 5), start).is_empty());
        let later = start + Duration::from_secs(2);
        assert!(sequencer.accept(batch(7, 3), later).is_empty());
        assert!(sequencer.accept(batch(7, 8), later).is_empty());
        // 5 has waited; 3, held for less, goes before it; 8 stays held.
        assert_eq!(seqs(&sequencer.expire(start + HOLD)), [3, 5]);
        assert!(sequencer.accept(batch(7, 7), later).is_empty());
        assert_eq!(seqs(&sequencer.accept(batch(7, 6), later)), [6, 7, 8]);
    }

    #[test]
    fn an_idle_board_is_forgotten() {
        let (mut sequencer, start) = (Sequencer::default(), Instant::now());
        assert_eq!(seqs(&sequencer.accept(batch(7, 1), start)), [1]);
        assert_eq!(seqs(&sequencer.accept(batch(8, 1), start)), [1]);
        let later = start + FORGET_AFTER / 2;
        assert_eq!(seqs(&sequencer.accept(batch(8, 2), later)), [2]);
        assert!(sequencer.expire(start + FORGET_AFTER).is_empty());
        assert_eq!(sequencer.boards.keys().collect::<Vec<_>>(), [&8]);
        // Forgotten, board 7 is unseen again: it expects 1.
        assert!(
            sequencer
                .accept(batch(7, 2), later + FORGET_AFTER)
                .is_empty()
        );
        assert_eq!(sequencer.boards[&7].next, 1);
    }
}
