//! Who is online: a user with at least one live socket on some replica.
//!
//! Embedded (one replica): the hub itself. Distributed: a Redis key per
//! user, `presence:{userId}` under the key prefix, holding the instance id
//! of a replica with a socket of theirs, with a TTL of [`TTL`]: the replica
//! sets it when a socket opens and every [`REFRESH`] while any is open, and
//! deletes it when their last socket on it closes and the key is still its
//! own. A replica that dies leaves the key to expire; a user connected to
//! two replicas may read as offline until the other's next refresh.
//!
//! `GET /presence/{userId}` → `{online}`.

use std::sync::Arc;
use std::time::Duration;

use mamey_core::Error;
use mamey_core::cqrs::{Query, Res};
use mamey_persistence::redis::RedisClient;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::hub::Hub;

/// How long a presence key lives without a refresh.
pub(crate) const TTL: Duration = Duration::from_secs(30);
/// How often a replica refreshes its users' keys.
pub(crate) const REFRESH: Duration = Duration::from_secs(10);

/// Presence: a resource, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) enum Presence {
    /// This replica's sockets are all there is.
    Local(Hub),
    /// Keys in Redis, shared by the replicas.
    Redis {
        /// This replica's sockets.
        hub: Hub,
        /// The shared keys.
        redis: RedisClient,
        /// This replica, the value of the keys it sets.
        instance: Arc<str>,
    },
}

impl Presence {
    /// Whether `user` has a socket on some replica.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub(crate) async fn is_online(&self, user: i64) -> Result<bool, Error> {
        match self {
            Self::Local(hub) => Ok(hub.is_connected(user)),
            Self::Redis { hub, redis, .. } => {
                Ok(hub.is_connected(user)
                    || redis.cache().get::<String>(&key(user)).await?.is_some())
            }
        }
    }

    /// A socket of `user` opened on this replica.
    pub(crate) async fn arrived(&self, user: i64) {
        if let Self::Redis {
            redis, instance, ..
        } = self
            && let Err(error) = redis.cache().set(&key(user), &**instance, TTL).await
        {
            tracing::warn!(user, %error, "could not record a user as online");
        }
    }

    /// A socket of `user` closed on this replica.
    pub(crate) async fn left(&self, user: i64) {
        let Self::Redis {
            hub,
            redis,
            instance,
        } = self
        else {
            return;
        };
        if hub.is_connected(user) {
            return;
        }
        let cache = redis.cache();
        let key = key(user);
        let outcome = match cache.get::<String>(&key).await {
            Ok(Some(holder)) if *holder == **instance => cache.delete(&key).await.map(drop),
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::warn!(user, %error, "could not record a user as offline");
        }
    }

    /// Refreshes the keys of the users connected to this replica.
    pub(crate) async fn refresh(&self) {
        if let Self::Redis { hub, .. } = self {
            for user in hub.users() {
                self.arrived(user).await;
            }
        }
    }
}

/// A user's presence key, under the Redis key prefix.
fn key(user: i64) -> String {
    format!("presence:{user}")
}

/// `GET /presence/{userId}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetPresence {
    /// The user.
    user_id: i64,
}

impl Query for GetPresence {
    type Output = Online;
}

/// Whether a user is online.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) struct Online {
    /// A live socket of theirs is open.
    online: bool,
}

/// Answers whether the user has a live socket open.
pub(crate) async fn get_presence(
    query: GetPresence,
    Res(presence): Res<Presence>,
) -> Result<Online, Error> {
    Ok(Online {
        online: presence.is_online(query.user_id).await?,
    })
}
