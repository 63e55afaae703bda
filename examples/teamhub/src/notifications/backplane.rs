//! The backplane: how the feed items written by the replica that handled an
//! event reach the replicas holding the recipients' sockets. Every replica
//! publishes, once per event, a [`LiveBatch`] of what it wrote, and
//! receives every replica's batches.
//!
//! Embedded: the process's broadcast channel ([`Deployment::local_backplane`]).
//! Distributed: Redis pub/sub, channel `live` under the Redis key prefix
//! (`teamhub:live`). Both are fire-and-forget: what a replica misses (not
//! subscribed yet, Redis restarting, a receiver too far behind) is only
//! missing live; the feed has it, and a client that reconnects reads
//! `/feed?after=` from its last id.
//!
//! [`Deployment::local_backplane`]: crate::deploy::Deployment::local_backplane

use bytes::Bytes;
use mamey_core::Error;
use mamey_persistence::redis::{ChannelSubscription, RedisClient};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::feed::Addressed;

/// The Redis channel, under the key prefix.
const CHANNEL: &str = "live";

/// The feed items one event made, on their way to their recipients'
/// sockets: published once, so every replica sees the event once, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveBatch {
    /// For a board's event: its place in the board's order.
    pub(crate) board: Option<BoardSeq>,
    /// The items, each with its recipient (none when nobody is told: a
    /// board's event still takes its place).
    pub(crate) items: Vec<Addressed>,
}

/// A board's event by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BoardSeq {
    /// The board.
    pub(crate) board_id: i64,
    /// The board's number of the event.
    pub(crate) seq: i64,
}

/// Where replicas publish feed items: a resource, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) enum Backplane {
    /// The embedded system's in-process channel.
    Local(broadcast::Sender<Bytes>),
    /// Redis pub/sub.
    Redis(RedisClient),
}

impl Backplane {
    /// Publishes `batch` to every replica.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub(crate) async fn publish(&self, batch: &LiveBatch) -> Result<(), Error> {
        let payload = Bytes::from(serde_json::to_vec(batch).map_err(Error::from_source)?);
        match self {
            // No receiver: no replica has started listening; nothing to do.
            Self::Local(sender) => {
                let _ = sender.send(payload);
            }
            Self::Redis(redis) => {
                redis.publish(CHANNEL, &payload).await?;
            }
        }
        Ok(())
    }

    /// Starts receiving what every replica publishes.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub(crate) async fn subscribe(&self) -> Result<Subscription, Error> {
        Ok(match self {
            Self::Local(sender) => Subscription::Local(sender.subscribe()),
            Self::Redis(redis) => Subscription::Redis(redis.subscribe([CHANNEL]).await?),
        })
    }
}

/// What one replica receives from the backplane.
#[derive(Debug)]
pub(crate) enum Subscription {
    /// From the in-process channel.
    Local(broadcast::Receiver<Bytes>),
    /// From Redis.
    Redis(ChannelSubscription),
}

/// One thing received.
#[derive(Debug)]
pub(crate) enum Received {
    /// One event's items.
    Batch(LiveBatch),
    /// Something could not be read, or some batches were missed: why.
    Gap(String),
}

impl Subscription {
    /// The next batch, or `None` when the backplane is gone. Cancel-safe
    /// (the fan-in polls it beside a ticker): dropped before it completes,
    /// it has taken nothing.
    pub(crate) async fn next(&mut self) -> Option<Received> {
        let payload = match self {
            Self::Local(receiver) => match receiver.recv().await {
                Ok(payload) => payload,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Received::Gap(format!(
                        "this replica fell behind and missed {missed} live batches"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            Self::Redis(subscription) => match subscription.recv().await? {
                Ok(message) => message.payload().clone(),
                Err(lost) => return Some(Received::Gap(lost.to_string())),
            },
        };
        Some(match serde_json::from_slice(&payload) {
            Ok(batch) => Received::Batch(batch),
            Err(error) => Received::Gap(format!("an unreadable live batch: {error}")),
        })
    }
}
