//! Pub/sub for a backplane: publish on the shared connection, subscribe on
//! a connection of the subscription's own that survives Redis restarts.

use std::fmt;
use std::task::{Context, Poll};

use ::redis::aio::ConnectionManager;
use ::redis::{Msg, ProtocolVersion, PushInfo, PushKind};
use bytes::Bytes;
use mamey_core::{Error, InServiceScope};
use tokio::sync::mpsc::{self, UnboundedReceiver, error::TrySendError};

use super::{RedisClient, error};

/// Messages a subscription holds for a reader that has not caught up;
/// beyond it, messages are dropped and [`MessagesLost::Lagged`] says so.
const BUFFER: usize = 1024;

/// What a [`ChannelSubscription`] yields.
type Item = Result<ChannelMessage, MessagesLost>;

impl RedisClient {
    /// Publishes `payload` on `channel` (`{prefix}{channel}`); returns how
    /// many subscribers received it. Pub/sub is fire-and-forget: a
    /// subscriber that is not connected at this moment never sees it.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> Result<u64, Error> {
        self.query(
            ::redis::cmd("PUBLISH")
                .arg(self.key(channel))
                .arg(payload.as_ref()),
        )
        .await
    }

    /// Subscribes to `channels` (each `{prefix}{channel}`) on a connection of
    /// the subscription's own, closed when it is dropped. See
    /// [`ChannelSubscription`] for what happens when Redis restarts. Needs
    /// Redis 6 or later (the connection speaks RESP3).
    ///
    /// # Errors
    /// No channel given (invalid input); Redis is unavailable.
    pub async fn subscribe<I>(&self, channels: I) -> Result<ChannelSubscription, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let channels: Vec<String> = channels
            .into_iter()
            .map(|channel| channel.as_ref().to_owned())
            .collect();
        if channels.is_empty() {
            return Err(Error::invalid_input(
                "redis.no_channels",
                "a subscription needs at least one channel",
            ));
        }
        let info = self.inner.client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = super::open(info.set_redis_settings(settings), self.inner.ca.as_deref())
            .map_err(error)?;
        let (pushes_in, pushes) = mpsc::unbounded_channel();
        // The manager sends what arrives to `pushes`, reconnects when the
        // connection drops and subscribes again on the new one.
        let config = self
            .inner
            .config
            .clone()
            .set_push_sender(pushes_in)
            .set_automatic_resubscription();
        let mut manager = self
            .within_deadline(client.get_connection_manager_with_config(config))
            .await?;
        let prefixed: Vec<String> = channels.iter().map(|channel| self.key(channel)).collect();
        self.within_deadline(manager.subscribe(prefixed)).await?;
        let (deliveries, received) = mpsc::channel(BUFFER);
        tokio::spawn(pump(self.clone(), manager, pushes, deliveries).in_current_service());
        Ok(ChannelSubscription { received, channels })
    }
}

/// A message received on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    channel: String,
    payload: Bytes,
}

impl ChannelMessage {
    /// The channel it came on, without the prefix.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// What was published.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

/// A gap in a [`ChannelSubscription`]: messages were published that it
/// will never deliver. The subscription goes on; a backplane should
/// refresh what it derives from the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessagesLost {
    /// The connection was lost (Redis restarted, or the network failed) and
    /// is back, subscribed again; what was published meanwhile is gone.
    #[error(
        "the connection to Redis was lost and is back; messages published meanwhile were not received"
    )]
    Reconnected,
    /// The reader fell more than 1024 messages behind; later ones were
    /// dropped until it caught up.
    #[error("the subscriber fell more than 1024 messages behind; some were dropped")]
    Lagged,
}

/// Messages from subscribed channels, from [`RedisClient::subscribe`].
///
/// Read it with [`recv`](ChannelSubscription::recv) (or
/// [`poll_recv`](ChannelSubscription::poll_recv), to wrap it as a stream,
/// e.g. `futures::stream::poll_fn(move |cx| subscription.poll_recv(cx))`).
/// Dropping it unsubscribes and closes its connection.
///
/// # When Redis restarts
///
/// Redis does not keep pub/sub messages: what is published while a
/// subscriber is disconnected is lost. The subscription reconnects by itself
/// (the backoff of `redis.reconnect_*`, trying until Redis is back, however
/// long that takes), subscribes again, and then yields
/// `Err(`[`MessagesLost::Reconnected`]`)` before the messages that follow,
/// so the reader knows there was a gap. `recv` returns `None` only once the
/// connection machinery itself is gone.
///
/// ```no_run
/// # async fn run(redis: mamey_persistence::redis::RedisClient) -> Result<(), mamey_core::Error> {
/// let mut notifications = redis.subscribe(["orders.updated"]).await?;
/// while let Some(next) = notifications.recv().await {
///     match next {
///         Ok(message) => println!("{}: {:?}", message.channel(), message.payload()),
///         Err(gap) => println!("{gap}: reloading the state"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct ChannelSubscription {
    received: mpsc::Receiver<Item>,
    channels: Vec<String>,
}

impl fmt::Debug for ChannelSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSubscription")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl futures_util::Stream for ChannelSubscription {
    type Item = Result<ChannelMessage, MessagesLost>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().received.poll_recv(cx)
    }
}

impl ChannelSubscription {
    /// The next message, or the news that some were lost; `None` when the
    /// subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<ChannelMessage, MessagesLost>> {
        self.received.recv().await
    }

    /// [`recv`](ChannelSubscription::recv) as a poll. The subscription is
    /// also a [`Stream`](futures_util::Stream) of the same items.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ChannelMessage, MessagesLost>>> {
        self.received.poll_recv(cx)
    }

    /// The channels, without the prefix.
    #[must_use]
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
}

/// Hands the subscription's pushes to its reader until the reader is gone.
async fn pump(
    client: RedisClient,
    mut manager: ConnectionManager,
    mut pushes: UnboundedReceiver<PushInfo>,
    deliveries: mpsc::Sender<Item>,
) {
    let mut lagged = false;
    loop {
        let push = tokio::select! {
            () = deliveries.closed() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        let item = match push.kind {
            PushKind::Message => match message(&client, push) {
                Some(message) => Ok(message),
                None => continue,
            },
            PushKind::Disconnection => {
                tokio::select! {
                    () = deliveries.closed() => return,
                    () = resubscribed(&client, &mut manager) => {}
                }
                Err(MessagesLost::Reconnected)
            }
            _ => continue,
        };
        if lagged {
            match deliveries.try_send(Err(MessagesLost::Lagged)) {
                Ok(()) => lagged = false,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => return,
            }
        }
        match deliveries.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => lagged = true,
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// Waits until the manager has a new connection, subscribed again (it
/// resubscribes before the connection is handed out, so a `PING` that
/// succeeds is the proof). The `PING`s also restart the manager's
/// reconnection after it has used up its attempts.
async fn resubscribed(client: &RedisClient, manager: &mut ConnectionManager) {
    let (min, max) = (
        client.inner.reconnect_min_delay,
        client.inner.reconnect_max_delay,
    );
    let mut delay = min;
    loop {
        let ping = ::redis::cmd("PING");
        match client
            .within_deadline(ping.query_async::<String>(manager))
            .await
        {
            Ok(_) => return,
            Err(error) => tracing::debug!(%error, "redis subscription reconnecting"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
    }
}

/// A pushed message, its channel without the prefix.
fn message(client: &RedisClient, push: PushInfo) -> Option<ChannelMessage> {
    let message = Msg::from_push_info(push)?;
    let channel = message.get_channel_name();
    Some(ChannelMessage {
        channel: channel
            .strip_prefix(client.prefix())
            .unwrap_or(channel)
            .to_owned(),
        payload: Bytes::copy_from_slice(message.get_payload_bytes()),
    })
}
