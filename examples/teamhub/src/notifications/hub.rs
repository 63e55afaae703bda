//! The live connections of this replica: user id → the queues of that
//! user's sockets.
//!
//! Each socket has a bounded queue ([`QUEUE`] frames). Delivery never
//! waits: a socket whose queue is full is dropped from the registry (its
//! task sends what is queued, then closes it with "try again later"), so
//! one slow client never holds up the others. The client reconnects and
//! reads what it missed from `/feed?after=`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch};

/// Frames a socket may have queued before it counts as too slow.
const QUEUE: usize = 64;

/// The registry: a resource, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sockets: Mutex<HashMap<i64, Vec<Socket>>>,
    next_id: AtomicU64,
    /// `true` once the service stops: every socket closes.
    closing: watch::Sender<bool>,
}

#[derive(Debug)]
struct Socket {
    id: u64,
    frames: mpsc::Sender<Utf8Bytes>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                sockets: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                closing: watch::Sender::new(false),
            }),
        }
    }
}

impl Hub {
    fn sockets(&self) -> MutexGuard<'_, HashMap<i64, Vec<Socket>>> {
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a socket of `user`; `None` once the service is stopping.
    pub(crate) fn connect(&self, user: i64) -> Option<Connection> {
        let closing = self.inner.closing.subscribe();
        if *closing.borrow() {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, frames) = mpsc::channel(QUEUE);
        self.sockets()
            .entry(user)
            .or_default()
            .push(Socket { id, frames: sender });
        Some(Connection {
            hub: self.clone(),
            user,
            id,
            frames,
            closing,
        })
    }

    /// Queues `frame` on every socket of `user`; a socket whose queue is
    /// full is dropped. Returns how many sockets took it.
    pub(crate) fn deliver(&self, user: i64, frame: &Utf8Bytes) -> usize {
        let mut sockets = self.sockets();
        let Some(theirs) = sockets.get_mut(&user) else {
            return 0;
        };
        theirs.retain(|socket| match socket.frames.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(
                    user,
                    socket = socket.id,
                    "a live socket fell behind; closing it"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let delivered = theirs.len();
        if theirs.is_empty() {
            sockets.remove(&user);
        }
        delivered
    }

    /// Whether `user` has a socket on this replica.
    pub(crate) fn is_connected(&self, user: i64) -> bool {
        self.sockets().contains_key(&user)
    }

    /// The users with a socket on this replica.
    pub(crate) fn users(&self) -> Vec<i64> {
        self.sockets().keys().copied().collect()
    }

    /// Closes every socket and refuses new ones: the service is stopping.
    pub(crate) fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    fn disconnect(&self, user: i64, id: u64) {
        let mut sockets = self.sockets();
        if let Some(theirs) = sockets.get_mut(&user) {
            theirs.retain(|socket| socket.id != id);
            if theirs.is_empty() {
                sockets.remove(&user);
            }
        }
    }
}

/// One registered socket: its frames, and the stop signal. Leaves the
/// registry when dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    hub: Hub,
    user: i64,
    id: u64,
    frames: mpsc::Receiver<Utf8Bytes>,
    closing: watch::Receiver<bool>,
}

impl Connection {
    /// The user.
    pub(crate) fn user(&self) -> i64 {
        self.user
    }

    /// The next frame to send; `None` when the socket was dropped for
    /// being too slow.
    pub(crate) async fn frame(&mut self) -> Option<Utf8Bytes> {
        self.frames.recv().await
    }

    /// Completes once the service is stopping.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.clone();
        async move {
            // An error means the hub is gone: stopping too.
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.disconnect(self.user, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_reach_every_socket_of_their_user_only() {
        let hub = Hub::default();
        let (mut a1, mut a2, mut b) = (
            hub.connect(1).unwrap(),
            hub.connect(1).unwrap(),
            hub.connect(2).unwrap(),
        );
        assert_eq!(hub.deliver(1, &Utf8Bytes::from("x")), 2);
        assert_eq!(a1.frame().await.as_deref(), Some("x"));
        assert_eq!(a2.frame().await.as_deref(), Some("x"));
        assert!(b.frames.try_recv().is_err());
        drop(a1);
        drop(a2);
        assert!(!hub.is_connected(1));
        assert_eq!(hub.users(), [2]);
        assert_eq!(hub.deliver(1, &Utf8Bytes::from("y")), 0);
    }

    #[tokio::test]
    async fn a_slow_socket_is_dropped_without_holding_up_the_others() {
        let hub = Hub::default();
        let mut slow = hub.connect(1).unwrap();
        let mut quick = hub.connect(1).unwrap();
        for n in 0..QUEUE {
            assert_eq!(hub.deliver(1, &Utf8Bytes::from(n.to_string())), 2);
            assert!(quick.frame().await.is_some());
        }
        assert_eq!(hub.deliver(1, &Utf8Bytes::from("one too many")), 1);
        assert_eq!(quick.frame().await.as_deref(), Some("one too many"));
        for _ in 0..QUEUE {
            assert!(slow.frame().await.is_some());
        }
        assert_eq!(slow.frame().await, None);
    }

    #[tokio::test]
    async fn closing_wakes_sockets_and_refuses_new_ones() {
        let hub = Hub::default();
        let socket = hub.connect(1).unwrap();
        hub.close();
        socket.closing().await;
        assert!(hub.connect(1).is_none());
    }
}
