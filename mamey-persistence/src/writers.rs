//! SQLite's one writer, queued in the process.
//!
//! SQLite lets one connection write at a time. A connection that finds the
//! database locked waits in SQLite's busy handler, which polls: it sleeps
//! 1, 2, 5, 10, 15, 20 … ms between tries, so under concurrent writes a
//! request waits milliseconds for a lock held for microseconds (profiled
//! under teamhub's load: some 480 such sleeps a second at 1 000 requests a
//! second, and the slowest requests 20 ms). The `Sqlite` plug-in provides a
//! [`Writers`] resource instead: a first-come, first-served queue that the
//! unit of work ([`Tx`](crate::Tx)) and the outbox and inbox stores join
//! before they write, so writers of one process hand the database on at
//! once. Other processes writing the same file still meet the busy handler
//! (`sqlite.busy_timeout`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mamey_core::Error;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The queue of a database's writers in this process; clones share it.
#[derive(Clone)]
pub struct Writers {
    turn: Arc<Mutex<()>>,
    wait: Duration,
}

impl fmt::Debug for Writers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writers")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// A writer's turn: the database is this writer's until it is dropped.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] OwnedMutexGuard<()>);

impl Writers {
    /// A queue whose writers wait at most `wait` for their turn (the
    /// database's `busy_timeout`).
    #[must_use]
    pub fn new(wait: Duration) -> Self {
        Self {
            turn: Arc::new(Mutex::new(())),
            wait,
        }
    }

    /// Waits for this writer's turn, in order of arrival.
    ///
    /// # Errors
    /// Unavailable (retried by consumers) when the turn does not come
    /// within the wait: a writer holds the database that long, or the
    /// caller already holds a turn (a handler with a `Tx` waiting on
    /// another write to the same database).
    pub async fn turn(&self) -> Result<Turn, Error> {
        tokio::time::timeout(self.wait, Arc::clone(&self.turn).lock_owned())
            .await
            .map(Turn)
            .map_err(|_| {
                Error::unavailable(
                    "db.busy",
                    format!(
                        "the database stayed locked by another writer for {} ms",
                        self.wait.as_millis()
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_take_turns_in_order_and_give_up_after_the_wait() {
        let writers = Writers::new(Duration::from_millis(50));
        let first = writers.turn().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for n in 0..3 {
            let (writers, order) = (writers.clone(), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let _turn = Writers {
                    wait: Duration::from_secs(5),
                    ..writers
                }
                .turn()
                .await
                .unwrap();
                order.lock().unwrap().push(n);
            }));
            tokio::task::yield_now().await;
        }
        // Held: a writer that may wait only 50 ms gives up.
        let refused = writers.turn().await.unwrap_err();
        assert_eq!(refused.code(), "db.busy");
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }
}
