//! [`RabbitMqBroker`]: the RabbitMQ backend over lapin (feature `rabbitmq`).
//!
//! Topology per subscription queue `Q` (all durable, declared idempotently
//! at subscribe):
//!
//! - the namespace's topic exchange, and `Q` bound to it by routing key;
//! - `Q.retry.{n}` for each retry `n`, with `x-message-ttl` = the retry
//!   delay of attempt `n` and dead-lettering back to `Q` through the default
//!   exchange — so a message waiting for its retry is not held unacked, and
//!   one delay per queue means no head-of-line blocking;
//! - `Q.dlq`, where messages that cannot succeed go with headers
//!   `x-death-reason`, `x-attempts`, `x-original-exchange` and
//!   `x-original-routing-key`; [`DeadLetterQueue`] lists them and replays
//!   chosen ones to their original route.
//!
//! Publishing uses a few channels in confirm mode, a bounded window of
//! unconfirmed messages, `mandatory` (an unroutable message is an error)
//! and persistent delivery. The connection recovers by itself (lapin's
//! auto-recovery replays topology and consumers); a publish interrupted by a
//! connection loss is retried once recovered, within the publish timeout, or
//! reported as failed — never dropped silently. A delivery is acknowledged
//! only after its handler succeeded (or after its retry / dead-letter copy
//! was confirmed), so a connection lost mid-handling means redelivery.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use mamey_core::InServiceScope;
use mamey_core::config::{ConfigSection, Secret};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, Disposition, PublishError, SubscribeError, Subscription, handle_delivery,
};
use crate::message::{Delivery, OutgoingMessage, Properties, Route};

/// Header with the attempt number of a redelivered message.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header with the reason a message was dead-lettered.
pub const DEATH_REASON_HEADER: &str = "x-death-reason";
/// Header with the number of attempts a dead-lettered message had.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// Header with the exchange a message was published to, on its retry and
/// dead-letter copies (which travel through the default exchange): where
/// [`DeadLetterQueue::replay`] sends it back.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
/// Header with the routing key a message was published with, on its retry
/// and dead-letter copies; see [`ORIGINAL_EXCHANGE_HEADER`].
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";

pub use crate::dead_letters::{DeadLetterError, DeadLetterQueue, DeadLetterSummary};

/// The `rabbitmq` section.
///
/// ```toml
/// [rabbitmq]
/// url = "amqp://guest:guest@127.0.0.1:5672/%2f"
/// prefetch = 256
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// AMQP URL (it may hold a password, so it never prints).
    /// Default: `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: Secret<String>,
    /// Unacknowledged deliveries per consumer. Default: `256`.
    pub prefetch: u16,
    /// Channels publishing in parallel. Default: `2`.
    pub publish_channels: usize,
    /// Published but unconfirmed messages at most; publishers wait beyond.
    /// Default: `1024`.
    pub max_unconfirmed: usize,
    /// How long one publish may take, including waiting for a lost
    /// connection to recover. Default: `30s`.
    #[serde(with = "mamey_core::config::duration")]
    pub publish_timeout: Duration,
    /// Fail publishes no queue is bound to. Default: `true`.
    pub mandatory: bool,
    /// How long the first connection may take before the service fails to
    /// start. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            prefetch: 256,
            publish_channels: 2,
            max_unconfirmed: 1024,
            publish_timeout: Duration::from_secs(30),
            mandatory: true,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ConfigSection for RabbitMqConfig {
    const KEY: &'static str = "rabbitmq";
}

/// The RabbitMQ broker. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RabbitMqBroker {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    /// Publishing channels; one closed by the broker (e.g. a channel-level
    /// error) is replaced on next use.
    /// Shared, not cloned per publish: a lapin `Channel` clone is a dozen
    /// reference counts.
    publish: Vec<std::sync::RwLock<Arc<Channel>>>,
    /// Exchanges declared by publishers (declaring is idempotent; a publish
    /// to a missing exchange would close the channel).
    declared: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Held while an exchange is declared, so that concurrent first
    /// publishes declare it once rather than once each.
    declaring: tokio::sync::Mutex<()>,
    /// Set once `close` has drained the consumers; publishing fails after.
    closed: std::sync::atomic::AtomicBool,
    next: AtomicUsize,
    window: Semaphore,
    consumers: std::sync::Mutex<Vec<(Channel, ShortString)>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    config: RabbitMqConfig,
}

impl fmt::Debug for RabbitMqBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqBroker")
            .field("connected", &self.inner.connection.status().connected())
            .finish_non_exhaustive()
    }
}

/// The broker could not be reached or set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to RabbitMQ: {0}")]
pub struct ConnectError(String);

impl RabbitMqBroker {
    /// Connects, opens the publishing channels in confirm mode, and enables
    /// automatic recovery.
    ///
    /// # Errors
    /// [`ConnectError`] when the broker is unreachable or refuses.
    pub async fn connect(config: RabbitMqConfig, name: &str) -> Result<Self, ConnectError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .enable_auto_recover();
        let connection = tokio::time::timeout(
            config.connect_timeout,
            Connection::connect(config.url.expose(), properties),
        )
        .await
        .map_err(|_| {
            ConnectError(format!(
                "no connection within {:?} (rabbitmq.connect_timeout)",
                config.connect_timeout
            ))
        })?
        .map_err(|e| ConnectError(e.to_string()))?;
        let mut publish = Vec::with_capacity(config.publish_channels.max(1));
        for _ in 0..config.publish_channels.max(1) {
            let channel = confirm_channel(&connection)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            publish.push(std::sync::RwLock::new(Arc::new(channel)));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                publish,
                declared: std::sync::RwLock::new(std::collections::HashSet::new()),
                declaring: tokio::sync::Mutex::new(()),
                closed: std::sync::atomic::AtomicBool::new(false),
                next: AtomicUsize::new(0),
                window: Semaphore::new(config.max_unconfirmed.max(1)),
                consumers: std::sync::Mutex::new(Vec::new()),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                config,
            }),
        })
    }

    /// A publishing channel (round robin), replacing one the broker closed
    /// while the connection itself is up.
    async fn channel(&self) -> Result<Arc<Channel>, PublishError> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.publish.len();
        let current = Arc::clone(&read(&self.inner.publish[i]));
        if current.status().connected() || !self.inner.connection.status().connected() {
            return Ok(current);
        }
        tracing::info!("replacing a publishing channel the broker closed");
        let fresh = confirm_channel(&self.inner.connection)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let fresh = Arc::new(fresh);
        *write(&self.inner.publish[i]) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Declares `exchange` (topic, durable) once before the first publish.
    async fn ensure_exchange(&self, channel: &Channel, exchange: &str) -> Result<(), PublishError> {
        if exchange.is_empty() || read(&self.inner.declared).contains(exchange) {
            return Ok(());
        }
        let _declaring = self.inner.declaring.lock().await;
        if read(&self.inner.declared).contains(exchange) {
            return Ok(());
        }
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                PublishError::Unavailable(format!("declaring exchange `{exchange}`: {e}"))
            })?;
        write(&self.inner.declared).insert(exchange.to_owned());
        Ok(())
    }

    /// Publishes raw and waits for the confirm, retrying once the connection
    /// has recovered, within the publish timeout. `properties` makes the
    /// properties of each attempt (lapin takes them by value; building them
    /// again is cheaper than cloning a header table for every publish).
    async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: impl Fn() -> BasicProperties,
    ) -> Result<(), PublishError> {
        let _permit = self
            .inner
            .window
            .acquire()
            .await
            .map_err(|_| PublishError::Closed)?;
        let deadline = tokio::time::Instant::now() + self.inner.config.publish_timeout;
        loop {
            let channel = self.channel().await?;
            self.ensure_exchange(&channel, exchange).await?;
            let attempt = async {
                channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions {
                            mandatory,
                            ..BasicPublishOptions::default()
                        },
                        body,
                        properties(),
                    )
                    .await?
                    .await
            };
            let outcome = tokio::time::timeout_at(deadline, attempt)
                .await
                .map_err(|_| PublishError::Unavailable("publish timed out".into()))?;
            match outcome {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => return Ok(()),
                Ok(Confirmation::Ack(Some(returned))) => {
                    // lapin keeps its own record of the return (the whole
                    // message, body and all) below the default log level;
                    // this line names it without the payload.
                    let message_id = returned
                        .delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map_or("", ShortString::as_str);
                    tracing::warn!(
                        exchange,
                        routing_key,
                        message_id,
                        body_bytes = body.len(),
                        "the broker returned an unroutable message"
                    );
                    return Err(PublishError::Unroutable(Route {
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                    }));
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(PublishError::Unavailable(
                        "the broker refused the message (nack)".into(),
                    ));
                }
                Err(error) if !self.inner.closed.load(Ordering::Acquire) => {
                    tracing::warn!(%error, "publish interrupted; waiting for the connection to recover");
                    let recovered =
                        tokio::time::timeout_at(deadline, channel.wait_for_recovery(error)).await;
                    match recovered {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return Err(PublishError::Unavailable(error.to_string())),
                        Err(_) => {
                            return Err(PublishError::Unavailable(
                                "the connection did not recover within the publish timeout".into(),
                            ));
                        }
                    }
                }
                Err(error) => return Err(PublishError::Unavailable(error.to_string())),
            }
        }
    }

    /// Declares exchange, queue, retry queues and dead-letter queue of a
    /// subscription.
    async fn declare(&self, channel: &Channel, subscription: &Subscription) -> Result<(), String> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                subscription.binding.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                format!(
                    "declaring exchange `{}`: {e}",
                    subscription.binding.exchange
                )
            })?;
        let queue = &subscription.queue;
        declare_queue(channel, queue, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                subscription.binding.exchange.as_str().into(),
                subscription.binding.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("binding `{queue}`: {e}"))?;
        for attempt in 1..=subscription.retry.max_retries {
            let ttl =
                u32::try_from(subscription.retry.delay(attempt).as_millis()).unwrap_or(u32::MAX);
            let mut arguments = FieldTable::default();
            arguments.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.as_str().into()),
            );
            declare_queue(channel, &retry_queue(queue, attempt), arguments).await?;
        }
        declare_queue(channel, &dead_letter_queue(queue), FieldTable::default()).await
    }

    /// Handles one delivery and settles it.
    async fn process(
        self,
        subscription: Arc<Subscription>,
        mut delivery: lapin::message::Delivery,
    ) {
        let mut ours = from_amqp(&mut delivery);
        // The header comes from outside: past the last retry means
        // "exhausted" (dead-lettered on failure), never a retry queue that
        // does not exist.
        ours.attempt = ours.attempt.min(subscription.retry.max_retries + 1);
        let (attempt, message_id, body) = (
            ours.attempt,
            ours.properties.message_id.clone(),
            ours.body.clone(),
        );
        let (_, disposition) = handle_delivery(&subscription, ours).await;
        self.settle(
            &subscription,
            delivery,
            (attempt, &message_id, &body),
            disposition,
        )
        .await;
    }

    /// Acts on a handled delivery: ack, copy to a retry queue, or copy to the
    /// dead-letter queue — the copy confirmed before the original is acked.
    async fn settle(
        &self,
        subscription: &Subscription,
        delivery: lapin::message::Delivery,
        (attempt, message_id, body): (u32, &str, &bytes::Bytes),
        disposition: Disposition,
    ) {
        let copy = match &disposition {
            Disposition::Ack => None,
            Disposition::Retry(_) => Some((
                retry_queue(&subscription.queue, attempt),
                vec![(ATTEMPT_HEADER, AMQPValue::LongUInt(attempt + 1))],
            )),
            Disposition::DeadLetter(reason) => {
                tracing::warn!(queue = %subscription.queue, message_id, %reason, "message dead-lettered");
                Some((
                    dead_letter_queue(&subscription.queue),
                    death_headers(reason, attempt),
                ))
            }
        };
        if let Some((queue, extra)) = copy {
            let original = original_route(&delivery, &subscription.queue);
            let properties = with_headers(
                &delivery.properties,
                extra.into_iter().chain(original.clone()),
            );
            let mut moved = self
                .publish_raw("", &queue, true, body, || properties.clone())
                .await;
            if let (Err(error), Disposition::Retry(_)) = (&moved, &disposition) {
                // A retry queue that is gone (deleted by hand, say): the
                // message goes to the dead-letter queue, not round a
                // requeue loop.
                tracing::error!(%queue, %error, message_id, "could not move the message to its retry queue; dead-lettering it");
                let reason =
                    format!("could not move the message to the retry queue `{queue}`: {error}");
                let properties = with_headers(
                    &delivery.properties,
                    death_headers(&reason, attempt).into_iter().chain(original),
                );
                let dead_letters = dead_letter_queue(&subscription.queue);
                moved = self
                    .publish_raw("", &dead_letters, true, body, || properties.clone())
                    .await;
            }
            if let Err(error) = moved {
                // Not acked, so the broker delivers it again: nothing lost.
                tracing::error!(%queue, %error, "could not move the message; requeueing it");
                // Not at once: a broker refusing the copy would otherwise
                // bounce the message in a tight loop.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return;
            }
        }
        if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
            // The channel is gone; the broker redelivers (at-least-once).
            tracing::warn!(%error, "ack failed; the message will be delivered again");
        }
    }
}

/// The headers a dead-letter copy gets besides its original route.
fn death_headers(reason: &str, attempt: u32) -> Vec<(&'static str, AMQPValue)> {
    vec![
        (DEATH_REASON_HEADER, AMQPValue::LongString(reason.into())),
        (ATTEMPTS_HEADER, AMQPValue::LongUInt(attempt)),
    ]
}

/// `properties` with `extra` headers added (replacing ones of the same name).
fn with_headers(
    properties: &BasicProperties,
    extra: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (key, value) in extra {
        headers.insert(key.into(), value);
    }
    properties.clone().with_headers(headers)
}

/// The route a delivery was first published to, as the original-route
/// headers of its copies: its own route, unless it is back from a retry
/// queue (delivered through the default exchange with the queue's name as
/// routing key), whose copy carries the route of the first delivery.
fn original_route(
    delivery: &lapin::message::Delivery,
    queue: &str,
) -> [(&'static str, AMQPValue); 2] {
    let carried = |key| {
        delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| header_text(headers, key))
    };
    let from_retry =
        delivery.exchange.as_str().is_empty() && delivery.routing_key.as_str() == queue;
    let (exchange, routing_key) = match (
        carried(ORIGINAL_EXCHANGE_HEADER),
        carried(ORIGINAL_ROUTING_KEY_HEADER),
    ) {
        (Some(exchange), Some(routing_key)) if from_retry => (exchange, routing_key),
        _ => (
            delivery.exchange.as_str().to_owned(),
            delivery.routing_key.as_str().to_owned(),
        ),
    };
    [
        (
            ORIGINAL_EXCHANGE_HEADER,
            AMQPValue::LongString(exchange.into()),
        ),
        (
            ORIGINAL_ROUTING_KEY_HEADER,
            AMQPValue::LongString(routing_key.into()),
        ),
    ]
}

fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn declare_queue(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), String> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent") {
                format!(
                    "queue `{queue}` exists with different arguments ({text}); delete it or \
                     align the configuration"
                )
            } else {
                format!("declaring queue `{queue}`: {text}")
            }
        })
}

/// The retry queue for messages whose attempt `attempt` failed.
#[must_use]
pub fn retry_queue(queue: &str, attempt: u32) -> String {
    format!("{queue}.retry.{attempt}")
}

/// The dead-letter queue of `queue`.
#[must_use]
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

fn to_amqp(properties: &Properties) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in &properties.headers {
        headers.insert(
            key.as_str().into(),
            AMQPValue::LongString(value.as_str().into()),
        );
    }
    let timestamp = properties
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    BasicProperties::default()
        .with_message_id(properties.message_id.as_str().into())
        .with_correlation_id(properties.correlation_id.as_str().into())
        .with_type(properties.message_type.as_str().into())
        .with_content_type(properties.content_type.as_str().into())
        .with_timestamp(timestamp)
        .with_delivery_mode(if properties.persistent { 2 } else { 1 })
        .with_headers(headers)
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Our view of a delivery; takes the body out of `delivery` (no copy).
fn from_amqp(delivery: &mut lapin::message::Delivery) -> Delivery {
    let p = &delivery.properties;
    let short = |v: &Option<ShortString>| {
        v.as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    };
    let mut headers = BTreeMap::new();
    let mut attempt = 1;
    if let Some(table) = p.headers() {
        for (key, value) in table.inner() {
            if key.as_str() == ATTEMPT_HEADER {
                attempt = match value {
                    AMQPValue::LongUInt(n) => *n,
                    AMQPValue::LongLongInt(n) => u32::try_from((*n).max(1)).unwrap_or(u32::MAX),
                    AMQPValue::LongInt(n) => u32::try_from((*n).max(1)).unwrap_or(u32::MAX),
                    _ => 1,
                }
                // Attempts count from 1; a crafted 0 or negative is the first.
                .max(1);
            } else if let Some(text) = text(value) {
                headers.insert(key.as_str().to_owned(), text);
            }
        }
    }
    Delivery {
        route: Route {
            exchange: delivery.exchange.as_str().to_owned(),
            routing_key: delivery.routing_key.as_str().to_owned(),
        },
        properties: Properties {
            message_id: short(p.message_id()),
            correlation_id: short(p.correlation_id()),
            message_type: short(p.kind()),
            timestamp: p
                .timestamp()
                .map_or(UNIX_EPOCH, |s| UNIX_EPOCH + Duration::from_secs(s)),
            content_type: short(p.content_type()),
            persistent: *p.delivery_mode() == Some(2),
            headers,
        },
        body: bytes::Bytes::from(std::mem::take(&mut delivery.data)),
        attempt,
    }
}

impl Broker for RabbitMqBroker {
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            // Handlers still finishing during close may publish.
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(PublishError::Closed);
            }
            self.publish_raw(
                &message.route.exchange,
                &message.route.routing_key,
                self.inner.config.mandatory,
                &message.body,
                || to_amqp(&message.properties),
            )
            .await
        }
        .boxed()
    }

    fn subscribe(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), SubscribeError>> {
        async move {
            let failed = |reason: String| SubscribeError {
                queue: subscription.queue.clone(),
                reason,
            };
            let channel = self
                .inner
                .connection
                .create_channel()
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.declare(&channel, &subscription).await.map_err(failed)?;
            channel
                .basic_qos(self.inner.config.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| failed(e.to_string()))?;
            let tag: ShortString = format!("mamey-{}", mamey_core::new_id()).into();
            let mut consumer = channel
                .basic_consume(
                    subscription.queue.as_str().into(),
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
            if let Ok(mut consumers) = self.inner.consumers.lock() {
                consumers.push((channel.clone(), tag));
            }
            // One task per consumer drives up to `concurrency` handlers at
            // once (no task per message); on stop it takes no new delivery
            // and finishes the ones in flight.
            let broker = self.clone();
            let subscription = Arc::new(subscription);
            let limit = subscription.concurrency.max(1);
            let consume = async move {
                let mut in_flight = FuturesUnordered::new();
                loop {
                    tokio::select! {
                        biased;
                        Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                        () = broker.inner.stop.cancelled() => break,
                        next = consumer.next(), if in_flight.len() < limit => match next {
                            None => break,
                            Some(Ok(delivery)) => {
                                in_flight.push(broker.clone().process(Arc::clone(&subscription), delivery));
                            }
                            Some(Err(error)) => {
                                tracing::warn!(queue = %subscription.queue, %error, "consumer interrupted; waiting for recovery");
                                if channel.wait_for_recovery(error).await.is_err() {
                                    break;
                                }
                            }
                        },
                    }
                }
                while in_flight.next().await.is_some() {}
            };
            // In the subscribing service's scope: its handlers' logs and
            // metrics are its own.
            self.inner.tasks.spawn(consume.in_current_service());
            Ok(())
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.inner.stop.cancel();
            let consumers = self
                .inner
                .consumers
                .lock()
                .map(|mut c| std::mem::take(&mut *c))
                .unwrap_or_default();
            for (channel, tag) in &consumers {
                let _ = channel
                    .basic_cancel(tag.clone(), BasicCancelOptions::default())
                    .await;
            }
            // In-flight handlers finish and settle their messages.
            self.inner.tasks.close();
            self.inner.tasks.wait().await;
            self.inner.closed.store(true, Ordering::Release);
            let _ = self
                .inner
                .connection
                .close(200, "service stopping".into())
                .await;
        }
        .boxed()
    }

    fn is_connected(&self) -> bool {
        self.inner.connection.status().connected()
    }
}

/// Header values as text, for inspecting raw deliveries (tests, tools).
#[must_use]
pub fn header_text(table: &FieldTable, key: &str) -> Option<String> {
    table.inner().get(key).and_then(text)
}
