//! The transactional outbox and inbox: publish in the same transaction as the
//! state change, and apply each message once.
//!
//! - A handler stages outgoing messages with [`OutboxStore::stage`] inside
//!   its own database transaction; the [`OutboxRelay`] publishes them after
//!   commit, with broker confirms, and marks them sent. Rows are *claimed*
//!   with a lease before publishing, so several relays (one per service
//!   instance) never send the same row at once; each claim has a token, and
//!   only the claim that holds a row now can settle it (mark it sent, give
//!   it back, schedule its retry), so a relay whose lease ran out cannot
//!   touch a row another relay has claimed since.
//! - A handler records the message id with [`InboxStore::record`] in its
//!   transaction; a redelivered message finds its id there and is skipped.
//!
//! The Postgres stores (`FOR UPDATE SKIP LOCKED`, `LISTEN`/`NOTIFY`) live in
//! mamey-persistence; [`MemoryOutbox`] and [`MemoryInbox`] are the embedded
//! defaults and the reference behaviour.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mamey_core::BoxError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, PublishError, RetryPolicy};
use crate::message::OutgoingMessage;

/// A store failed (connection lost, constraint violated, …): what it was
/// doing, and the error that made it fail, kept as the
/// [`source`](std::error::Error::source) for whoever needs more than the
/// text (e.g. to downcast to a `sqlx::Error` and read its database code).
///
/// Prints as `outbox/inbox store: <message>: <source>`, or
/// `outbox/inbox store: <message>` without a source, so a log line says why.
///
/// ```
/// use std::error::Error as _;
/// use mamey_messaging::StoreError;
///
/// let io = std::io::Error::other("connection reset");
/// let error = StoreError::with_source("claiming messages", io);
/// assert_eq!(error.to_string(), "outbox/inbox store: claiming messages: connection reset");
/// assert_eq!(error.message(), "claiming messages");
/// let source = error.source().and_then(|e| e.downcast_ref::<std::io::Error>());
/// assert_eq!(source.map(ToString::to_string).as_deref(), Some("connection reset"));
///
/// let plain = StoreError::new("an empty message id cannot be recorded");
/// assert!(plain.source().is_none());
/// ```
#[derive(Debug)]
pub struct StoreError {
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl StoreError {
    /// A failure the store found itself, with no underlying error (a
    /// poisoned lock, an argument it refuses).
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A failure of `source` (the database's, the encoder's) while the
    /// store was doing what `message` says, e.g. `"claiming messages"`.
    pub fn with_source(message: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What the store was doing, without the source's text.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbox/inbox store: {}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<StoreError> for mamey_core::Error {
    /// A store failure is worth retrying: the message is redelivered later.
    /// The store error stays the source, and its own source behind it.
    fn from(error: StoreError) -> Self {
        mamey_core::Error::unavailable("messaging.store_failed", error.to_string())
            .with_source(error)
    }
}

/// A staged message the relay has claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The message (its `properties.message_id` identifies the entry).
    pub message: OutgoingMessage,
    /// Publish attempts so far.
    pub attempts: u32,
    /// The token of the claim that returned the entry: random, the same for
    /// every entry of one [`OutboxStore::claim`], and written with the lease.
    /// [`mark_sent`](OutboxStore::mark_sent),
    /// [`release`](OutboxStore::release) and
    /// [`retry_later`](OutboxStore::retry_later) act only while the row
    /// still carries it.
    pub claim: String,
}

/// Where outgoing messages wait until they are published.
///
/// A relay *claims* due messages for a lease, publishes them, and then
/// *settles* each one under its claim: marks it sent, gives it back untried,
/// or schedules a retry. A claim holds its rows until another claim takes
/// them — which happens only once its lease has run out. From then on the
/// first claim's settlements change nothing and report the rows as lost: a
/// relay whose publish outlasted its lease cannot mark, release or
/// reschedule a row another relay is sending. A row is marked sent once, by
/// the claim that holds it; settling clears the claim, so a second
/// settlement under the same token finds the row lost too.
///
/// The in-memory stores are the reference: what they do, every store does
/// (mamey-persistence runs one behaviour suite against each).
pub trait OutboxStore: Send + Sync + 'static {
    /// The caller's transaction (e.g. a `sqlx::Transaction`); staging joins it.
    type Transaction<'t>: Send
    where
        Self: 't;

    /// Stages `message` in `tx`: it becomes visible to the relay only if the
    /// transaction commits. A message id already staged is an error.
    fn stage(
        &self,
        tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims up to `batch` unsent messages that are due, oldest first, for
    /// `lease`: no other claim returns them until the lease expires. Each
    /// claim counts an attempt, and writes a new random token on its rows
    /// ([`OutboxEntry::claim`]).
    fn claim(
        &self,
        batch: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send;

    /// Marks the messages `claim` holds among `message_ids` as sent. Returns
    /// the ids it did not mark because `claim` no longer holds them (another
    /// claim took them after the lease ran out, or they were settled
    /// already): empty when all were marked.
    fn mark_sent(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Gives the messages `claim` holds among `message_ids` back untried:
    /// due at once, as if the claim had not counted an attempt, with their
    /// last error kept. Returns the ids `claim` no longer held, untouched.
    fn release(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Releases a message `claim` holds, to be tried again at `not_before`,
    /// keeping `error`. Returns `false`, changing nothing, when `claim` no
    /// longer holds it.
    fn retry_later(
        &self,
        claim: &str,
        message_id: &str,
        error: &str,
        not_before: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes messages sent before `before`; returns how many.
    fn purge_sent(
        &self,
        before: SystemTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Notified when messages may have been staged (a commit in this
    /// process, a Postgres `NOTIFY` from another): the relay runs a round at
    /// once instead of waiting for its interval.
    fn staged(&self) -> Arc<Notify>;
}

/// Message ids a consumer has processed.
pub trait InboxStore: Send + Sync + 'static {
    /// The handler's transaction; recording joins it.
    type Transaction<'t>: Send
    where
        Self: 't;

    /// Records that `consumer` processed `message_id`. Returns `false` when it
    /// already had: the handler must then skip the message. An empty
    /// `message_id` is an error: every id-less message would otherwise count
    /// as the first one's duplicate.
    fn record(
        &self,
        tx: &mut Self::Transaction<'_>,
        consumer: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A staged message in the [`MemoryOutbox`].
#[derive(Debug)]
struct Row {
    message: OutgoingMessage,
    attempts: u32,
    staged: SystemTime,
    due: SystemTime,
    leased_until: Option<SystemTime>,
    /// The token of the claim holding the row, until it is settled.
    claim: Option<String>,
    sent: Option<SystemTime>,
    last_error: Option<String>,
}

impl Row {
    fn id(&self) -> &str {
        &self.message.properties.message_id
    }

    fn held_by(&self, claim: &str) -> bool {
        self.claim.as_deref() == Some(claim)
    }
}

/// The in-memory outbox: the embedded default and the reference behaviour.
/// Staging needs no transaction (`&mut ()`), and wakes the relay. Clones
/// share the messages; add one with
/// [`ServiceBuilder::resource`](mamey_core::ServiceBuilder::resource) for
/// [`Messaging::outbox`](crate::Messaging::outbox) to find.
#[derive(Clone, Default)]
pub struct MemoryOutbox {
    rows: Arc<Mutex<Vec<Row>>>,
    staged: Arc<Notify>,
}

impl fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOutbox")
            .field("pending", &self.pending())
            .finish()
    }
}

impl MemoryOutbox {
    /// An empty outbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages not yet sent.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.rows().iter().filter(|r| r.sent.is_none()).count()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<Row>> {
        match self.rows.lock() {
            Ok(rows) => rows,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies `settle` to each row of `message_ids` that `claim` holds, and
    /// clears the claim; returns the ids it did not hold.
    fn settle(
        &self,
        claim: &str,
        message_ids: &[String],
        mut settle: impl FnMut(&mut Row),
    ) -> Vec<String> {
        let mut wanted: HashSet<&str> = message_ids.iter().map(String::as_str).collect();
        for row in self.rows().iter_mut() {
            if row.held_by(claim) && wanted.remove(row.id()) {
                settle(row);
                row.claim = None;
                row.leased_until = None;
            }
        }
        message_ids
            .iter()
            .filter(|id| wanted.contains(id.as_str()))
            .cloned()
            .collect()
    }
}

impl OutboxStore for MemoryOutbox {
    type Transaction<'t> = ();

    async fn stage(
        &self,
        _tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> Result<(), StoreError> {
        let now = SystemTime::now();
        {
            let mut rows = self.rows();
            if rows.iter().any(|r| r.id() == message.properties.message_id) {
                return Err(StoreError::new(format!(
                    "message id `{}` is staged already",
                    message.properties.message_id
                )));
            }
            rows.push(Row {
                message,
                attempts: 0,
                staged: now,
                due: now,
                leased_until: None,
                claim: None,
                sent: None,
                last_error: None,
            });
        }
        self.staged.notify_one();
        Ok(())
    }

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
        let now = SystemTime::now();
        let claim = mamey_core::new_id();
        let mut rows = self.rows();
        let mut due: Vec<&mut Row> = rows
            .iter_mut()
            .filter(|r| r.sent.is_none() && r.due <= now && r.leased_until.is_none_or(|l| l <= now))
            .collect();
        due.sort_by_key(|r| r.staged);
        Ok(due
            .into_iter()
            .take(batch)
            .map(|row| {
                row.leased_until = Some(now + lease);
                row.claim = Some(claim.clone());
                row.attempts += 1;
                OutboxEntry {
                    message: row.message.clone(),
                    attempts: row.attempts,
                    claim: claim.clone(),
                }
            })
            .collect())
    }

    async fn mark_sent(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let now = SystemTime::now();
        Ok(self.settle(claim, message_ids, |row| row.sent = Some(now)))
    }

    async fn release(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.settle(claim, message_ids, |row| {
            row.attempts = row.attempts.saturating_sub(1);
        }))
    }

    async fn retry_later(
        &self,
        claim: &str,
        message_id: &str,
        error: &str,
        not_before: SystemTime,
    ) -> Result<bool, StoreError> {
        let lost = self.settle(claim, &[message_id.to_owned()], |row| {
            row.due = not_before;
            row.last_error = Some(error.to_owned());
        });
        Ok(lost.is_empty())
    }

    async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
        let mut rows = self.rows();
        let len = rows.len();
        rows.retain(|r| r.sent.is_none_or(|sent| sent >= before));
        Ok(u64::try_from(len - rows.len()).unwrap_or(u64::MAX))
    }

    fn staged(&self) -> Arc<Notify> {
        Arc::clone(&self.staged)
    }
}

/// The in-memory inbox.
#[derive(Debug, Clone, Default)]
pub struct MemoryInbox {
    processed: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

impl MemoryInbox {
    /// An empty inbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl InboxStore for MemoryInbox {
    type Transaction<'t> = ();

    async fn record(
        &self,
        _tx: &mut Self::Transaction<'_>,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        if message_id.is_empty() {
            return Err(StoreError::new(
                "an empty message id cannot be recorded in the inbox",
            ));
        }
        let mut processed = self
            .processed
            .lock()
            .map_err(|_| StoreError::new("inbox lock poisoned"))?;
        Ok(processed
            .entry(consumer.to_owned())
            .or_default()
            .insert(message_id.to_owned()))
    }
}

/// Settings of an [`OutboxRelay`] (`messaging.outbox` when the relay runs in
/// the [`Messaging`](crate::Messaging) plug-in).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Messages claimed per round. Default: `100`.
    pub batch: usize,
    /// Publishes of a round in flight at once, each awaiting its confirm;
    /// `1` publishes one at a time, in staging order. Default: `64`.
    pub concurrency: usize,
    /// Poll interval when no notification arrives. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub interval: std::time::Duration,
    /// How long a claim holds a message; a relay that dies mid-batch frees
    /// its messages after this. A round stops once half of it has passed;
    /// keep it well above twice the publish timeout, or a publish may
    /// outlast the claim: another relay then claims and sends the message
    /// too, and this relay's settlement of it is refused and logged as a
    /// lost claim. Default: `5m`.
    #[serde(with = "mamey_core::config::duration")]
    pub lease: std::time::Duration,
    /// Delay between publish attempts of one message.
    pub retry: RetryPolicy,
    /// Sent messages are deleted after this long. Default: `1h`.
    #[serde(with = "mamey_core::config::duration")]
    pub keep_sent: std::time::Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            concurrency: 64,
            interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            keep_sent: Duration::from_secs(3600),
        }
    }
}

/// Publishes staged outbox messages to the broker, waking on the store's
/// [`OutboxStore::staged`] notification or every `interval`.
pub struct OutboxRelay<S: OutboxStore> {
    store: Arc<S>,
    broker: Arc<dyn Broker>,
    wake: Arc<Notify>,
    config: RelayConfig,
}

impl<S: OutboxStore> fmt::Debug for OutboxRelay<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one relay round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRound {
    /// Messages the broker confirmed.
    pub sent: usize,
    /// Messages that failed and wait for a later attempt.
    pub failed: usize,
    /// Messages claimed but not tried, released when the round ended early
    /// (broker unavailable or closed, or half the lease gone).
    pub released: usize,
    /// Messages whose claim was lost before the relay could settle them: its
    /// lease ran out and another relay claimed them (see
    /// [`OutboxStore::mark_sent`]). Published or not, they are that relay's
    /// to mark now, and not counted as sent, failed or released here.
    pub lost: usize,
}

impl<S: OutboxStore> OutboxRelay<S> {
    /// A relay from `store` to `broker`.
    pub fn new(store: Arc<S>, broker: Arc<dyn Broker>, config: RelayConfig) -> Self {
        Self {
            wake: store.staged(),
            store,
            broker,
            config,
        }
    }

    /// Claims one batch and publishes it; failed messages are released for a
    /// later attempt with backoff, never dropped.
    ///
    /// The round ends early — releasing the messages it has not tried (see
    /// [`OutboxStore::release`]) — when the broker is unavailable or closed (each further
    /// publish would wait out its timeout), and when half the lease has
    /// passed (so that the claim never runs out while its messages are being
    /// sent, and no other relay sends them too).
    ///
    /// Every settlement is made under the round's claim. When a publish
    /// outlasted the lease and another relay claimed the message meanwhile,
    /// the store refuses it: the message is logged as a lost claim and
    /// counted in [`RelayRound::lost`], not as sent — the other relay marks it.
    ///
    /// # Errors
    /// The store failed. The messages the broker had confirmed are marked
    /// sent first, if the store lets them be.
    pub async fn round(&self) -> Result<RelayRound, StoreError> {
        let started = tokio::time::Instant::now();
        let entries = self
            .store
            .claim(self.config.batch, self.config.lease)
            .await?;
        let mut round = RelayRound::default();
        let mut sent = Claimed::default();
        let mut entries = entries.into_iter();
        let mut store_failure = None;
        // Publishes start in staging order, up to `concurrency` at once;
        // after a broker or store failure, or past half the lease, no more
        // start, and those in flight finish.
        let mut in_flight = FuturesUnordered::new();
        let mut starting = true;
        // Set when the broker is gone: what fails for the same reason after
        // that is given back untried, like what never started.
        let mut broker_down = false;
        let mut untried = Claimed::default();
        loop {
            while starting && in_flight.len() < self.config.concurrency.max(1) {
                // Past half the lease, a publish might outlast the claim.
                if started.elapsed() >= self.config.lease / 2 {
                    starting = false;
                    break;
                }
                let Some(OutboxEntry {
                    message,
                    attempts,
                    claim,
                }) = entries.next()
                else {
                    break;
                };
                let id = message.properties.message_id.clone();
                let publish = self.broker.publish(message);
                in_flight.push(async move { (claim, id, attempts, publish.await) });
            }
            let Some((claim, id, attempts, published)) = in_flight.next().await else {
                break;
            };
            let Err(error) = published else {
                sent.push(claim, id);
                continue;
            };
            let gone = matches!(error, PublishError::Closed | PublishError::Unavailable(_));
            if broker_down && gone {
                untried.push(claim, id);
                continue;
            }
            let delay = self.config.retry.delay(attempts);
            tracing::warn!(message_id = %id, attempts, %error, ?delay, "outbox publish failed; will retry");
            let later = SystemTime::now() + delay;
            match self
                .store
                .retry_later(&claim, &id, &error.to_string(), later)
                .await
            {
                Ok(true) => round.failed += 1,
                Ok(false) => round.lost += lost_claim("retry", &[id]),
                Err(failure) => {
                    store_failure.get_or_insert(failure);
                    starting = false;
                }
            }
            if gone {
                starting = false;
                broker_down = true;
            }
        }
        // What the broker confirmed is marked first, whatever failed since.
        for (claim, ids) in sent.0 {
            let lost = self.store.mark_sent(&claim, &ids).await?;
            round.sent += ids.len() - lost.len();
            round.lost += lost_claim("mark sent", &lost);
        }
        if let Some(failure) = store_failure {
            return Err(failure);
        }
        for entry in entries {
            untried.push(entry.claim, entry.message.properties.message_id);
        }
        for (claim, ids) in untried.0 {
            let lost = self.store.release(&claim, &ids).await?;
            round.released += ids.len() - lost.len();
            round.lost += lost_claim("release", &lost);
        }
        mamey_observability::metrics::record_outbox_round(
            round.sent,
            round.failed,
            round.released,
            round.lost,
        );
        Ok(round)
    }

    /// Runs rounds until `stop`: after each notification, every `interval`,
    /// and at once again while batches come back full. Purges old sent
    /// messages now and then.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_purge = SystemTime::now();
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.round().await {
                Ok(round) if round.sent + round.failed + round.lost >= self.config.batch => {
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "outbox relay round failed"),
            }
            if last_purge.elapsed().unwrap_or_default() >= self.config.interval * 60 {
                last_purge = SystemTime::now();
                let before = SystemTime::now()
                    .checked_sub(self.config.keep_sent)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if let Err(error) = self.store.purge_sent(before).await {
                    tracing::warn!(%error, "purging sent outbox messages failed");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

/// Message ids by the claim that holds them, in the order first seen. A
/// claim returns one token for all its entries, so a round has one group;
/// the relay does not rely on it.
#[derive(Default)]
struct Claimed(Vec<(String, Vec<String>)>);

impl Claimed {
    fn push(&mut self, claim: String, message_id: String) {
        match self.0.iter_mut().find(|(c, _)| *c == claim) {
            Some((_, ids)) => ids.push(message_id),
            None => self.0.push((claim, vec![message_id])),
        }
    }
}

/// Logs the messages a settlement (`what`) found under another claim;
/// returns how many.
fn lost_claim(what: &str, message_ids: &[String]) -> usize {
    if !message_ids.is_empty() {
        tracing::warn!(
            settlement = what,
            message_ids = ?message_ids,
            "outbox claim lost: its lease ran out and another relay claimed these messages, \
             which now settles them (a message published by both reaches consumers twice; \
             the inbox absorbs it); raise messaging.outbox.lease above the longest publish"
        );
    }
    message_ids.len()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset by peer")]
    struct Dropped;

    #[test]
    fn the_source_is_kept_and_reachable() {
        let error = StoreError::with_source("claiming messages", Dropped);
        assert_eq!(
            error.to_string(),
            "outbox/inbox store: claiming messages: connection reset by peer"
        );
        assert_eq!(error.message(), "claiming messages");
        let source = error.source().expect("the source is kept");
        assert!(source.downcast_ref::<Dropped>().is_some(), "{source:?}");

        // Converted for a handler, the chain stays whole:
        // mamey error → store error → the original error.
        let converted = mamey_core::Error::from(error);
        assert_eq!(converted.kind(), mamey_core::ErrorKind::Unavailable);
        assert!(
            converted.to_string().contains("connection reset by peer"),
            "{converted}"
        );
        let store = converted
            .source()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .expect("the store error is the source");
        assert!(
            store
                .source()
                .is_some_and(|e| e.downcast_ref::<Dropped>().is_some())
        );
    }

    #[test]
    fn without_a_source_it_is_the_message() {
        let error = StoreError::new("inbox lock poisoned");
        assert_eq!(error.to_string(), "outbox/inbox store: inbox lock poisoned");
        assert!(error.source().is_none());
    }
}
