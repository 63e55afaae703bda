//! [`DeadLetterQueue`]: list the messages of a RabbitMQ dead-letter queue and
//! replay chosen ones to where they were first published (feature
//! `rabbitmq`; public as `mamey_messaging::rabbitmq::DeadLetterQueue`).

use std::fmt;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, DeliveryTag, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::message::Route;
use crate::rabbitmq::{
    ATTEMPT_HEADER, ATTEMPTS_HEADER, DEATH_REASON_HEADER, ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER, confirm_channel, header_text,
};

/// How long a replayed message may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A dead-letter queue (`Q.dlq`, see
/// [`dead_letter_queue`](crate::rabbitmq::dead_letter_queue)), to list and
/// replay its messages.
///
/// Both work with `basic.get` without auto-ack, so a message taken from the
/// queue stays the broker's until this client settles it:
///
/// - [`peek`](Self::peek) takes up to `limit` messages, reads their
///   headers, and gives them all back (`basic.nack`, requeue). RabbitMQ puts
///   a requeued message back at its original position when it can (closer
///   to the head when other consumers took messages meanwhile), so the queue
///   keeps its order; the messages come back marked `redelivered`. While
///   peeked they are invisible to other consumers of the queue.
/// - [`replay`](Self::replay) goes through the messages waiting when it
///   starts, once each. A chosen one is published to its original exchange
///   and routing key ([`ORIGINAL_EXCHANGE_HEADER`],
///   [`ORIGINAL_ROUTING_KEY_HEADER`]) — `mandatory`, with a publisher
///   confirm — and acknowledged in the dead-letter queue only after the
///   broker confirmed the copy. The others are given back at the end.
///
/// A crash or a lost connection at any point gives every unsettled message
/// back to the queue: nothing is lost. The one window is between a replay's
/// confirm and its ack: then the message is both replayed and still in the
/// dead-letter queue, and a later replay sends it again — delivery is
/// at-least-once, as everywhere in mamey.
///
/// ```no_run
/// use mamey_messaging::rabbitmq::{DeadLetterQueue, dead_letter_queue};
///
/// # async fn demo() -> Result<(), mamey_messaging::rabbitmq::DeadLetterError> {
/// let queue = dead_letter_queue("billing/orders.order_placed");
/// let mut dead = DeadLetterQueue::connect("amqp://guest:guest@127.0.0.1:5672/%2f", &queue).await?;
/// for letter in dead.peek(10).await? {
///     println!("{} ({} attempts): {}", letter.message_id, letter.attempts, letter.reason);
/// }
/// let replayed = dead.replay_ids(&["0f8fad5b-d9cb-469f-a165-70867728950e"]).await?;
/// println!("replayed {}", replayed.len());
/// dead.close().await;
/// # Ok(()) }
/// ```
pub struct DeadLetterQueue {
    queue: String,
    connection: Connection,
    /// Takes, acknowledges and gives back messages.
    channel: Channel,
    /// Publishes replays in confirm mode; a separate channel, so that a
    /// replay the broker refuses with a channel error (an exchange that no
    /// longer exists) does not hand back the messages held on `channel`.
    publish: Channel,
}

impl fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// What a dead letter is, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// The AMQP `message_id` (empty when the message had none).
    pub message_id: String,
    /// The AMQP `type` property: the message's name (empty when absent).
    pub message_type: String,
    /// Why it was dead-lettered (`x-death-reason`; empty when absent).
    pub reason: String,
    /// The attempt that failed (`x-attempts`; 0 when absent).
    pub attempts: u32,
    /// Where it was first published (`x-original-exchange`,
    /// `x-original-routing-key`); `None` for a message dead-lettered before
    /// mamey recorded the route, which cannot be replayed.
    pub original: Option<Route>,
    /// Size of the body in bytes.
    pub body_size: usize,
}

/// A dead-letter queue operation failed. Each names the queue; a failed
/// replay also the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The broker could not be reached, the queue does not exist, or the
    /// channel failed.
    #[error("dead-letter queue `{queue}`: {reason}")]
    Queue {
        /// The dead-letter queue.
        queue: String,
        /// What went wrong.
        reason: String,
    },
    /// A chosen message could not be replayed. It and the messages not yet
    /// looked at stay in the dead-letter queue; the ones replayed before it
    /// were acknowledged.
    #[error(
        "cannot replay message `{message_id}` from dead-letter queue `{queue}`: {reason} \
         ({replayed} replayed before it; it and the rest stay in the queue)"
    )]
    Replay {
        /// The dead-letter queue.
        queue: String,
        /// The message's id.
        message_id: String,
        /// Why it could not be replayed.
        reason: String,
        /// How many messages were replayed before this one.
        replayed: usize,
    },
}

impl DeadLetterQueue {
    /// Connects to the broker at `url` (an AMQP URL) and opens `queue`, a
    /// dead-letter queue's full name such as `billing/orders.order_placed.dlq`.
    ///
    /// # Errors
    /// [`DeadLetterError::Queue`] when the broker is unreachable or the queue
    /// does not exist.
    pub async fn connect(url: &str, queue: &str) -> Result<Self, DeadLetterError> {
        let failed = |reason: String| DeadLetterError::Queue {
            queue: queue.to_owned(),
            reason,
        };
        let properties =
            ConnectionProperties::default().with_connection_name("mamey dead letters".into());
        let connection = Connection::connect(url, properties)
            .await
            .map_err(|e| failed(format!("cannot connect to RabbitMQ: {e}")))?;
        let opened = async {
            let channel = connection.create_channel().await?;
            let publish = confirm_channel(&connection).await?;
            Ok::<_, lapin::Error>((channel, publish))
        };
        let (channel, publish) = match opened.await {
            Ok(channels) => channels,
            Err(error) => {
                let _ = connection.close(200, "failed".into()).await;
                return Err(failed(error.to_string()));
            }
        };
        let dead_letters = Self {
            queue: queue.to_owned(),
            connection,
            channel,
            publish,
        };
        if let Err(error) = dead_letters.count().await {
            dead_letters.close().await;
            return Err(error);
        }
        Ok(dead_letters)
    }

    /// The queue's name.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Messages waiting in the queue, not counting ones someone holds
    /// unacknowledged (such as a peek in progress). RabbitMQ answers a count
    /// ahead of requeues it has not done yet, so right after a
    /// [`peek`](Self::peek) the messages it gave back may be missing from
    /// the count for a moment; [`peek`](Self::peek) itself sees them.
    ///
    /// # Errors
    /// [`DeadLetterError::Queue`] when the queue is gone or the channel
    /// failed.
    pub async fn count(&self) -> Result<u32, DeadLetterError> {
        let declared = self
            .channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(declared.message_count())
    }

    /// Up to `limit` dead letters from the head of the queue, which keeps
    /// them: they are taken unacknowledged and given back in their places.
    ///
    /// # Errors
    /// [`DeadLetterError::Queue`] when the channel fails; whatever was taken
    /// goes back to the queue with the channel.
    pub async fn peek(&mut self, limit: usize) -> Result<Vec<DeadLetterSummary>, DeadLetterError> {
        let mut letters = Vec::new();
        let mut held = None;
        while letters.len() < limit {
            let Some((delivery, _)) = self.take().await? else {
                break;
            };
            held = Some(delivery.delivery_tag);
            letters.push(summary(&delivery));
        }
        self.give_back(held).await?;
        Ok(letters)
    }

    /// Replays the dead letters `choose` picks, in queue order, each to its
    /// original exchange and routing key, without the dead-letter headers
    /// and with its attempt count reset; each is acknowledged (removed from
    /// the queue) once the broker has confirmed its replay. Looks at the
    /// messages waiting when it starts, once each; the rest stay in place.
    /// Returns the replayed messages.
    ///
    /// # Errors
    /// [`DeadLetterError::Replay`] at the first message that cannot be
    /// replayed (no original route recorded, no queue bound to the route,
    /// the broker refused it or did not confirm it within 30 s): it and the
    /// messages after it stay in the queue. [`DeadLetterError::Queue`] when
    /// the channel fails.
    pub async fn replay(
        &mut self,
        mut choose: impl FnMut(&DeadLetterSummary) -> bool,
    ) -> Result<Vec<DeadLetterSummary>, DeadLetterError> {
        if !self.publish.status().connected() {
            // Closed by the broker after an earlier replay it refused.
            self.publish = confirm_channel(&self.connection)
                .await
                .map_err(|e| self.failed(&e))?;
        }
        let mut replayed = Vec::new();
        let mut held = None;
        // The messages waiting at the start still to look at, as the first
        // get tells (a message dead-lettered again meanwhile queues behind
        // them). Not `count`: RabbitMQ answers a count ahead of requeues
        // still pending (an earlier peek's), but a get after them.
        let mut left: Option<u32> = None;
        while left != Some(0) {
            let Some((delivery, remaining)) = self.take().await? else {
                break;
            };
            let to_look_at = left.get_or_insert(remaining.saturating_add(1));
            *to_look_at -= 1;
            let letter = summary(&delivery);
            if !choose(&letter) {
                held = Some(delivery.delivery_tag);
                continue;
            }
            if let Err(reason) = self.republish(&delivery, letter.original.as_ref()).await {
                // Back with the ones held before it.
                self.give_back(Some(delivery.delivery_tag)).await?;
                return Err(DeadLetterError::Replay {
                    queue: self.queue.clone(),
                    message_id: letter.message_id,
                    reason,
                    replayed: replayed.len(),
                });
            }
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| self.failed(&e))?;
            replayed.push(letter);
        }
        self.give_back(held).await?;
        Ok(replayed)
    }

    /// Replays the dead letters with these message ids; see
    /// [`DeadLetterQueue::replay`]. An id not in the queue is not an error:
    /// compare the returned messages with the ids asked for.
    ///
    /// # Errors
    /// As [`DeadLetterQueue::replay`].
    pub async fn replay_ids(
        &mut self,
        ids: &[&str],
    ) -> Result<Vec<DeadLetterSummary>, DeadLetterError> {
        self.replay(|letter| ids.contains(&letter.message_id.as_str()))
            .await
    }

    /// Closes the connection; unsettled messages (none, between calls) go
    /// back to the queue.
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    fn failed(&self, error: &lapin::Error) -> DeadLetterError {
        DeadLetterError::Queue {
            queue: self.queue.clone(),
            reason: error.to_string(),
        }
    }

    /// The next message, unacknowledged, and how many wait after it; `None`
    /// when none is waiting.
    async fn take(&self) -> Result<Option<(Delivery, u32)>, DeadLetterError> {
        let got = self
            .channel
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(got.map(|message| (message.delivery, message.message_count)))
    }

    /// Gives back every message held unacknowledged up to `tag`, to its
    /// place in the queue. `basic.nack`, not `basic.reject`: a quorum queue
    /// counts a reject as a failed delivery.
    async fn give_back(&self, tag: Option<DeliveryTag>) -> Result<(), DeadLetterError> {
        let Some(tag) = tag else {
            return Ok(());
        };
        self.channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .map_err(|e| self.failed(&e))
    }

    /// Publishes `delivery` to `route` and waits for the confirm; the error
    /// says why it was not confirmed.
    async fn republish(&self, delivery: &Delivery, route: Option<&Route>) -> Result<(), String> {
        let route = route.ok_or_else(|| {
            format!(
                "it has no `{ORIGINAL_EXCHANGE_HEADER}` and `{ORIGINAL_ROUTING_KEY_HEADER}` headers"
            )
        })?;
        let published = async {
            self.publish
                .basic_publish(
                    route.exchange.as_str().into(),
                    route.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.data,
                    replay_properties(&delivery.properties),
                )
                .await?
                .await
        };
        let unroutable = || {
            format!(
                "no queue is bound to exchange `{}` with routing key `{}`",
                route.exchange, route.routing_key
            )
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, published).await {
            Err(_) => Err(format!(
                "the broker did not confirm it within {CONFIRM_TIMEOUT:?}"
            )),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(unroutable()),
            Ok(Ok(Confirmation::Nack(_))) => Err("the broker refused it (nack)".into()),
        }
    }
}

/// Headers a replay leaves out: mamey's dead-letter and attempt headers, the
/// recorded route (the replay travels it), and RabbitMQ's own death
/// history, all of which describe the failed run, not the new one.
fn is_death_header(key: &str) -> bool {
    [
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        DEATH_REASON_HEADER,
        ORIGINAL_EXCHANGE_HEADER,
        ORIGINAL_ROUTING_KEY_HEADER,
        "x-death",
    ]
    .contains(&key)
        || key.starts_with("x-first-death-")
        || key.starts_with("x-last-death-")
}

/// The properties of a dead letter as replayed: the same ids, type,
/// timestamp and headers (context, trace) without [`is_death_header`]s.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers() else {
        return properties.clone();
    };
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !is_death_header(key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    properties.clone().with_headers(kept)
}

fn summary(delivery: &Delivery) -> DeadLetterSummary {
    let properties = &delivery.properties;
    let headers = properties.headers().clone().unwrap_or_default();
    let text = |key| header_text(&headers, key);
    let short = |value: &Option<lapin::types::ShortString>| {
        value
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    };
    let original = match (
        text(ORIGINAL_EXCHANGE_HEADER),
        text(ORIGINAL_ROUTING_KEY_HEADER),
    ) {
        (Some(exchange), Some(routing_key)) => Some(Route {
            exchange,
            routing_key,
        }),
        _ => None,
    };
    let attempts = match headers.inner().get(ATTEMPTS_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    DeadLetterSummary {
        message_id: short(properties.message_id()),
        message_type: short(properties.kind()),
        reason: text(DEATH_REASON_HEADER).unwrap_or_default(),
        attempts,
        original,
        body_size: delivery.data.len(),
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::ShortString;

    use super::*;

    #[test]
    fn a_replay_drops_the_death_headers_and_keeps_the_rest() {
        let mut headers = FieldTable::default();
        for key in [
            ATTEMPT_HEADER,
            ATTEMPTS_HEADER,
            DEATH_REASON_HEADER,
            ORIGINAL_EXCHANGE_HEADER,
            ORIGINAL_ROUTING_KEY_HEADER,
            "x-death",
            "x-first-death-queue",
            "x-last-death-reason",
            "message_context",
            "traceparent",
        ] {
            headers.insert(key.into(), AMQPValue::LongString("v".into()));
        }
        let properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(headers);
        let replayed = replay_properties(&properties);
        let kept: Vec<&str> = replayed
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(ShortString::as_str).collect())
            .unwrap_or_default();
        assert_eq!(kept, ["message_context", "traceparent"]);
        assert_eq!(
            replayed.message_id().as_ref().map(ShortString::as_str),
            Some("m-1")
        );
    }
}
