//! The [`Broker`] contract every backend implements, subscriptions, and the
//! retry / dead-letter decision they share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::message::{Delivery, OutgoingMessage, Route};

/// Why a message could not be published. Nothing is dropped silently: every
/// failure reaches the caller (or the outbox, which retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No queue is bound to the route and the message was mandatory.
    #[error("no queue is bound to exchange `{}` with routing key `{}`", .0.exchange, .0.routing_key)]
    Unroutable(Route),
    /// The message could not be encoded.
    #[error("cannot encode `{message}`: {reason}")]
    Encode {
        /// The message's name.
        message: String,
        /// The codec's error.
        reason: String,
    },
    /// The broker is unreachable or refused (negative confirm, closed channel).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker was closed.
    #[error("the broker is closed")]
    Closed,
}

impl From<PublishError> for mamey_core::Error {
    fn from(error: PublishError) -> Self {
        let kind = match &error {
            PublishError::Encode { .. } => mamey_core::ErrorKind::Internal,
            _ => mamey_core::ErrorKind::Unavailable,
        };
        mamey_core::Error::new(kind, "messaging.publish_failed", error.to_string())
            .with_source(error)
    }
}

/// A subscription could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot subscribe queue `{queue}`: {reason}")]
pub struct SubscribeError {
    /// The queue.
    pub queue: String,
    /// Why, e.g. a queue declared elsewhere with other arguments.
    pub reason: String,
}

/// How handling a delivery failed.
#[derive(Debug)]
pub enum Failure {
    /// The body could not be decoded: dead-lettered at once, never retried.
    Decode(String),
    /// The handler failed; retried if the error is retryable and attempts
    /// remain.
    Handler(mamey_core::Error),
    /// The handler did not finish within the subscription's timeout.
    Timeout(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(reason) => write!(f, "cannot decode the message: {reason}"),
            Self::Handler(error) => write!(f, "handler failed: {error}"),
            Self::Timeout(after) => write!(f, "handler timed out after {after:?}"),
        }
    }
}

/// Handles one delivery; a backend calls it and acts on the result.
pub type DeliveryHandler =
    Arc<dyn Fn(Delivery) -> BoxFuture<'static, Result<(), Failure>> + Send + Sync>;

/// Retry settings of a subscription (`messaging.retry`).
///
/// Attempt `n` (n ≥ 1) that fails with a retryable error is delivered again
/// after `initial_delay × multiplier^(n-1)`, at most `max_delay`, until
/// `max_retries` retries have failed; then the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt. Default: `3`.
    pub max_retries: u32,
    /// Delay before the first retry. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub initial_delay: Duration,
    /// Growth of the delay per retry. Default: `2.0`.
    pub multiplier: f64,
    /// Longest delay. Default: `60s`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before delivering attempt `attempt + 1`, after attempt
    /// `attempt` (1-based) failed.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exponent);
        Duration::try_from_secs_f64(self.initial_delay.as_secs_f64() * factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// What a backend does with a delivery after the handler ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Acknowledge: done.
    Ack,
    /// Deliver again after this delay (without holding the message unacked).
    Retry(Duration),
    /// Move to the dead-letter queue with this reason.
    DeadLetter(String),
}

impl Disposition {
    /// The decision for `attempt` (1-based) ending with `result`: decode
    /// errors and non-retryable handler errors (invalid input, unauthorized,
    /// forbidden, not found) dead-letter at once; retryable ones retry until
    /// the policy is exhausted.
    #[must_use]
    pub fn decide(result: &Result<(), Failure>, attempt: u32, policy: &RetryPolicy) -> Self {
        let failure = match result {
            Ok(()) => return Self::Ack,
            Err(failure) => failure,
        };
        let retryable = match failure {
            Failure::Decode(_) => false,
            Failure::Handler(error) => error.kind().is_retryable(),
            Failure::Timeout(_) => true,
        };
        if !retryable {
            return Self::DeadLetter(failure.to_string());
        }
        if attempt > policy.max_retries {
            return Self::DeadLetter(format!("{failure} (after {attempt} attempts)"));
        }
        Self::Retry(policy.delay(attempt))
    }
}

/// What a backend needs to consume one queue.
#[derive(Clone)]
pub struct Subscription {
    /// The queue (by convention `{service}/{exchange}.{routing_key}`).
    pub queue: String,
    /// The binding: messages published to this exchange with this routing
    /// key (topic patterns `*` and `#` allowed) reach the queue.
    pub binding: Route,
    /// The message's name (see [`Message`](crate::Message)): the `message`
    /// label of the consumed-message metrics, one per subscription.
    pub message: &'static str,
    /// The handler.
    pub handler: DeliveryHandler,
    /// Retries and dead-lettering.
    pub retry: RetryPolicy,
    /// Deliveries handled at once. Default: 16.
    pub concurrency: usize,
    /// Longest a handler may run before the attempt counts as failed.
    pub handler_timeout: Duration,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("queue", &self.queue)
            .field("binding", &self.binding)
            .field("message", &self.message)
            .field("retry", &self.retry)
            .field("concurrency", &self.concurrency)
            .field("handler_timeout", &self.handler_timeout)
            .finish_non_exhaustive()
    }
}

/// A message broker backend: the in-process [`MemoryBroker`](crate::MemoryBroker)
/// or RabbitMQ.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `message`; returns once the broker has it (confirmed).
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<(), PublishError>>;

    /// Declares the queue and binding and starts consuming.
    fn subscribe(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), SubscribeError>>;

    /// Stops consuming and waits for in-flight handlers; publishing fails
    /// with [`PublishError::Closed`] afterwards.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Whether the broker is reachable now (readiness).
    fn is_connected(&self) -> bool {
        true
    }
}

/// Whether `routing_key` matches the topic `pattern` (words separated by
/// `.`; `*` matches one word, `#` zero or more).
#[must_use]
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.first(), key.first()) {
            (None, None) => true,
            (Some(&"#"), _) => {
                matches(&pattern[1..], key) || (!key.is_empty() && matches(pattern, &key[1..]))
            }
            (Some(&"*"), Some(_)) => matches(&pattern[1..], &key[1..]),
            (Some(p), Some(k)) if p == k => matches(&pattern[1..], &key[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&pattern, &key)
}

/// Runs a subscription's handler under its timeout, decides what becomes of
/// the delivery, and records `messages_consumed_total` /
/// `message_handling_duration_seconds` by the subscription's message name
/// and outcome. A panic
/// counts as a failed (retryable) attempt, so it neither loses the message
/// nor kills the consumer.
pub(crate) async fn handle_delivery(
    subscription: &Subscription,
    delivery: Delivery,
) -> (Result<(), Failure>, Disposition) {
    use futures_util::FutureExt;
    use mamey_observability::metrics::{MessageOutcome, record_message_consumed};
    use std::panic::AssertUnwindSafe;

    let attempt = delivery.attempt;
    let started = std::time::Instant::now();
    let handling = AssertUnwindSafe((subscription.handler)(delivery)).catch_unwind();
    let result = match tokio::time::timeout(subscription.handler_timeout, handling).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Failure::Handler(mamey_core::Error::internal(
            "the handler panicked",
        ))),
        Err(_) => Err(Failure::Timeout(subscription.handler_timeout)),
    };
    let disposition = Disposition::decide(&result, attempt, &subscription.retry);
    let outcome = match disposition {
        Disposition::Ack => MessageOutcome::Handled,
        Disposition::Retry(_) => MessageOutcome::Retried,
        Disposition::DeadLetter(_) => MessageOutcome::DeadLettered,
    };
    // Labelled by the subscription's type, never by the delivery's own `type`:
    // a publisher must not be able to grow the number of series.
    record_message_consumed(subscription.message, outcome, started.elapsed());
    (result, disposition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("order_created", "order_created"));
        assert!(!topic_matches("order_created", "order_deleted"));
        assert!(topic_matches("orders.*", "orders.created"));
        assert!(!topic_matches("orders.*", "orders.created.eu"));
        assert!(topic_matches("orders.#", "orders.created.eu"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#.eu", "orders.created.eu"));
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        let policy = RetryPolicy {
            max_retries: 5,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn decisions() {
        let policy = RetryPolicy::default();
        let unavailable = || {
            Err(Failure::Handler(mamey_core::Error::unavailable(
                "db", "down",
            )))
        };
        assert_eq!(Disposition::decide(&Ok(()), 1, &policy), Disposition::Ack);
        assert!(matches!(
            Disposition::decide(&unavailable(), 1, &policy),
            Disposition::Retry(_)
        ));
        assert!(matches!(
            Disposition::decide(&unavailable(), 4, &policy),
            Disposition::DeadLetter(reason) if reason.ends_with("(after 4 attempts)")
        ));
        let invalid = Err(Failure::Handler(mamey_core::Error::invalid_input(
            "x", "bad",
        )));
        assert!(matches!(
            Disposition::decide(&invalid, 1, &policy),
            Disposition::DeadLetter(_)
        ));
        let undecodable = Err(Failure::Decode("expected value at line 1".into()));
        assert_eq!(
            Disposition::decide(&undecodable, 1, &policy),
            Disposition::DeadLetter("cannot decode the message: expected value at line 1".into())
        );
    }
}
