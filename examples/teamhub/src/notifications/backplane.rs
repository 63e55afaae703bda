//! The backplane: how a feed item written by the replica that handled its
//! event reaches the replica holding the recipient's socket. Every replica
//! publishes what it wrote and receives what every replica wrote.
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

use super::feed::Notification;

/// The Redis channel, under the key prefix.
const CHANNEL: &str = "live";

/// A feed item on its way to its recipient's sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveMessage {
    /// The recipient.
    pub(crate) user_id: i64,
    /// Their feed item.
    pub(crate) notification: Notification,
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
    /// Publishes `message` to every replica.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub(crate) async fn publish(&self, message: &LiveMessage) -> Result<(), Error> {
        let payload = Bytes::from(serde_json::to_vec(message).map_err(Error::from_source)?);
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
    /// A feed item.
    Message(LiveMessage),
    /// Something could not be read, or some items were missed: why.
    Gap(String),
}

impl Subscription {
    /// The next item, or `None` when the backplane is gone.
    pub(crate) async fn next(&mut self) -> Option<Received> {
        let payload = match self {
            Self::Local(receiver) => match receiver.recv().await {
                Ok(payload) => payload,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Received::Gap(format!(
                        "this replica fell behind and missed {missed} live notifications"
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
            Ok(message) => Received::Message(message),
            Err(error) => Received::Gap(format!("an unreadable live notification: {error}")),
        })
    }
}
