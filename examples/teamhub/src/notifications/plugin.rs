//! The live plug-in: provides the [`Hub`] of this replica's sockets, the
//! [`Backplane`] and [`Presence`]; while the service runs, puts what the
//! backplane brings in each board's order ([`Sequencer`]) and hands it to
//! the sockets of its recipients (and, with Redis, refreshes the presence
//! keys); when the service begins to stop, closes every socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use mamey_core::{BoxError, InitContext, Plugin, Requirement, StartContext};
use mamey_persistence::redis::RedisClient;
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;

use super::backplane::{Backplane, LiveBatch, Received, Subscription};
use super::hub::Hub;
use super::presence::{Presence, REFRESH};
use super::sequencer::Sequencer;

/// How often held batches are checked for having waited out
/// [`HOLD`](super::sequencer::HOLD): the most a released batch is late by.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Which backplane the replicas share.
#[derive(Debug)]
enum Kind {
    /// The embedded system's in-process channel.
    Local(broadcast::Sender<Bytes>),
    /// Redis pub/sub: the `RedisClient` of a `Redis` plug-in added before.
    Redis,
}

/// The live plug-in (name `live`).
#[derive(Debug)]
pub(crate) struct Live {
    kind: Kind,
    hub: Hub,
    /// Set in `init`.
    parts: Option<(Backplane, Presence)>,
}

impl Live {
    /// Over the embedded system's in-process backplane.
    pub(crate) fn local(backplane: broadcast::Sender<Bytes>) -> Self {
        Self::new(Kind::Local(backplane))
    }

    /// Over Redis pub/sub and presence keys.
    pub(crate) fn redis() -> Self {
        Self::new(Kind::Redis)
    }

    fn new(kind: Kind) -> Self {
        Self {
            kind,
            hub: Hub::default(),
            parts: None,
        }
    }
}

impl Plugin for Live {
    fn name(&self) -> &'static str {
        "live"
    }

    fn requires(&self) -> Vec<Requirement> {
        match self.kind {
            Kind::Local(_) => Vec::new(),
            Kind::Redis => vec![Requirement::of::<RedisClient>().hint("add `Redis` before `Live`")],
        }
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let hub = self.hub.clone();
        let (backplane, presence) = match &self.kind {
            Kind::Local(sender) => (
                Backplane::Local(sender.clone()),
                Presence::Local(hub.clone()),
            ),
            Kind::Redis => {
                let redis = ctx.resource::<RedisClient>()?;
                let instance: Arc<str> = ctx.app().instance_id.as_str().into();
                (
                    Backplane::Redis(redis.clone()),
                    Presence::Redis {
                        hub: hub.clone(),
                        redis,
                        instance,
                    },
                )
            }
        };
        ctx.provide(hub)?;
        ctx.provide(backplane.clone())?;
        ctx.provide(presence.clone())?;
        self.parts = Some((backplane, presence));
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let Some((backplane, presence)) = self.parts.clone() else {
            return Err("the live plug-in was not initialised".into());
        };
        let subscription = backplane.subscribe().await?;
        let (hub, token) = (self.hub.clone(), ctx.shutdown_token());
        ctx.spawn("live-fan-in", async move {
            tokio::select! {
                () = token.cancelled() => Ok(()),
                failed = fan_in(subscription, &hub) => failed,
            }
        });
        if let Presence::Redis { .. } = presence {
            let token = ctx.shutdown_token();
            ctx.spawn("presence-refresh", async move {
                let mut every = tokio::time::interval(REFRESH);
                loop {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        _ = every.tick() => presence.refresh().await,
                    }
                }
            });
        }
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), BoxError> {
        // Sockets are not requests: the web API's drain does not wait for
        // them. Closing them first lets clients reconnect elsewhere.
        self.hub.close();
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        self.hub.close();
        Ok(())
    }
}

/// Hands each batch the backplane brings, in its board's order, to the
/// sockets of its recipients on this replica; returns when the backplane
/// closes.
async fn fan_in(mut subscription: Subscription, hub: &Hub) -> Result<(), BoxError> {
    let mut sequencer = Sequencer::default();
    let mut ticks = tokio::time::interval(EXPIRY_TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let ready = tokio::select! {
            _ = ticks.tick() => sequencer.expire(Instant::now()),
            received = subscription.next() => match received {
                Some(Received::Batch(batch)) => sequencer.accept(batch, Instant::now()),
                Some(Received::Gap(why)) => {
                    tracing::warn!(%why, "live notifications were missed; clients catch up from /feed");
                    continue;
                }
                None => return Err("the live backplane closed".into()),
            },
        };
        for batch in ready {
            deliver(hub, batch)?;
        }
    }
}

/// Queues each item of `batch` on its recipient's sockets here, if any.
fn deliver(hub: &Hub, batch: LiveBatch) -> Result<(), serde_json::Error> {
    for item in batch.items {
        if hub.is_connected(item.user_id) {
            let frame = serde_json::to_string(&item.notification)?;
            hub.deliver(item.user_id, &Utf8Bytes::from(frame));
        }
    }
    Ok(())
}
