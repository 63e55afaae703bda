//! The behaviour every outbox and inbox store must show, written once and
//! run against each (`tests/stores.rs`: the in-memory stores of
//! mamey-messaging, Postgres and SQLite), as mamey-messaging's broker suite
//! is run against each broker: claims, leases and their tokens, releases,
//! retries, purging, two relays on one outbox — also with a lease shorter
//! than a publish — and the inbox.
//!
//! A store plugs in with a [`Fixture`] and [`store_suite!`], which writes
//! one `#[tokio::test]` per case.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mamey_messaging::{
    Broker, InboxStore, MemoryBroker, OutboxEntry, OutboxRelay, OutboxStore, OutgoingMessage,
    PublishError, PublishOptions, RelayConfig, RelayRound, RetryPolicy, StoreError, SubscribeError,
    Subscription,
};
use tokio::sync::Notify;

use crate::common::{Paid, eventually, publisher, record_deliveries};

/// A lease no test outlives.
const HOUR: Duration = Duration::from_secs(3600);

/// A store under test: a fresh one per test, with tables of its own,
/// removed when the fixture is dropped (also when the test fails).
pub trait Fixture: Sized {
    /// The outbox store.
    type Outbox: OutboxStore + Clone;
    /// The inbox store.
    type Inbox: InboxStore + Clone;
    /// Whether staging and recording join a transaction that can roll back
    /// (the in-memory stores take effect at once).
    const TRANSACTIONAL: bool;

    /// A new store, or `None` when its server is away and not required (the
    /// test then passes, having printed why it skipped).
    fn fresh() -> impl Future<Output = Option<Self>>;
    /// An outbox on the store's table, as another instance of the service
    /// would have it (its own pool, where the store has one).
    fn outbox(&self) -> impl Future<Output = Self::Outbox>;
    /// The inbox.
    fn inbox(&self) -> Self::Inbox;
    /// Stages `messages` with `outbox` in one transaction, committed if
    /// `commit`, else rolled back.
    fn stage(
        &self,
        outbox: &Self::Outbox,
        messages: Vec<OutgoingMessage>,
        commit: bool,
    ) -> impl Future<Output = Result<(), StoreError>>;
    /// Records `message_id` for `consumer` in a transaction of its own,
    /// committed if `commit`, else rolled back.
    fn record(
        &self,
        inbox: &Self::Inbox,
        consumer: &str,
        message_id: &str,
        commit: bool,
    ) -> impl Future<Output = Result<bool, StoreError>>;
    /// Messages staged and not yet sent.
    fn pending(&self) -> impl Future<Output = u64>;
}

/// One `#[tokio::test]` per case of the suite, on the fixture `$store`.
macro_rules! store_suite {
    ($store:ty) => {
        $crate::store_suite::store_suite!(@cases $store;
            claims_go_oldest_first_and_hold_their_rows_for_the_lease,
            a_rolled_back_transaction_stages_and_records_nothing,
            staging_a_message_id_twice_fails,
            released_messages_are_due_at_once_with_their_attempt_given_back,
            a_claim_that_outlived_its_lease_cannot_settle_rows_claimed_since,
            a_claim_whose_lease_ran_out_settles_rows_nobody_claimed_since,
            a_failed_publish_is_kept_and_retried_after_its_delay,
            sent_messages_are_purged_and_unsent_ones_kept,
            a_round_ends_at_a_closed_broker_and_releases_what_it_did_not_try,
            two_relays_never_send_the_same_message,
            two_relays_with_a_lease_shorter_than_a_publish_never_both_mark_a_message,
            the_inbox_records_each_message_once_per_consumer,
        );
    };
    (@cases $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(store) =
                    <$store as $crate::store_suite::Fixture>::fresh().await
                {
                    $crate::store_suite::$case(&store).await;
                }
            }
        )*
    };
}
pub(crate) use store_suite;

/// `count` messages as a handler prepares them.
fn messages(count: u32) -> Vec<OutgoingMessage> {
    let publisher = publisher(&MemoryBroker::new());
    (0..count)
        .map(|invoice| {
            publisher
                .prepare(&Paid { invoice }, PublishOptions::default())
                .unwrap()
        })
        .collect()
}

fn ids_of(messages: &[OutgoingMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.properties.message_id.clone())
        .collect()
}

fn claimed_ids(entries: &[OutboxEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.message.properties.message_id.clone())
        .collect()
}

/// The message a claim returned is the one staged; stores keep the
/// timestamp to the millisecond.
fn assert_same_message(claimed: &OutgoingMessage, staged: &OutgoingMessage) {
    let mut expected = staged.clone();
    expected.properties.timestamp = claimed.properties.timestamp;
    assert_eq!(*claimed, expected);
    let drift = match claimed
        .properties
        .timestamp
        .duration_since(staged.properties.timestamp)
    {
        Ok(later) => later,
        Err(earlier) => earlier.duration(),
    };
    assert!(
        drift < Duration::from_millis(1),
        "timestamp moved {drift:?}"
    );
}

/// Stages `messages` in one committed transaction.
async fn stage<F: Fixture>(store: &F, outbox: &F::Outbox, messages: &[OutgoingMessage]) {
    store.stage(outbox, messages.to_vec(), true).await.unwrap();
}

pub async fn claims_go_oldest_first_and_hold_their_rows_for_the_lease<F: Fixture>(store: &F) {
    let outbox = store.outbox().await;
    let staged = messages(3);
    stage(store, &outbox, &staged).await;

    let first = outbox.claim(2, HOUR).await.unwrap();
    assert_eq!(claimed_ids(&first), ids_of(&staged[..2]), "oldest first");
    let rest = outbox.claim(10, HOUR).await.unwrap();
    assert_eq!(claimed_ids(&rest), ids_of(&staged[2..]));
    for (entry, staged) in first.iter().chain(&rest).zip(&staged) {
        assert_same_message(&entry.message, staged);
        assert_eq!(entry.attempts, 1, "each claim counts an attempt");
    }
    // One token per claim, a new one for each.
    assert!(!first[0].claim.is_empty());
    assert_eq!(first[0].claim, first[1].claim);
    assert_ne!(first[0].claim, rest[0].claim);

    assert!(outbox.claim(10, HOUR).await.unwrap().is_empty(), "held");
    let another = store.outbox().await;
    assert!(
        another.claim(10, HOUR).await.unwrap().is_empty(),
        "held from another instance too"
    );
    assert_eq!(store.pending().await, 3);
}

pub async fn a_rolled_back_transaction_stages_and_records_nothing<F: Fixture>(store: &F) {
    if !F::TRANSACTIONAL {
        // Nothing to roll back: staging and recording take effect at once.
        return;
    }
    let outbox = store.outbox().await;
    store.stage(&outbox, messages(2), false).await.unwrap();
    assert_eq!(store.pending().await, 0);
    assert!(outbox.claim(10, HOUR).await.unwrap().is_empty());
    let staged = messages(1);
    stage(store, &outbox, &staged).await;
    assert_eq!(store.pending().await, 1);
    assert_eq!(
        claimed_ids(&outbox.claim(10, HOUR).await.unwrap()),
        ids_of(&staged)
    );

    let inbox = store.inbox();
    assert!(store.record(&inbox, "billing", "m-1", false).await.unwrap());
    assert!(
        store.record(&inbox, "billing", "m-1", true).await.unwrap(),
        "rolled back with the handler's work: the redelivery is applied"
    );
    assert!(!store.record(&inbox, "billing", "m-1", true).await.unwrap());
}

pub async fn staging_a_message_id_twice_fails<F: Fixture>(store: &F) {
    let outbox = store.outbox().await;
    let staged = messages(1);
    stage(store, &outbox, &staged).await;
    let error = store
        .stage(&outbox, staged.clone(), true)
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with("outbox/inbox store: "),
        "{error}"
    );
    assert_eq!(store.pending().await, 1);
}

pub async fn released_messages_are_due_at_once_with_their_attempt_given_back<F: Fixture>(
    store: &F,
) {
    let outbox = store.outbox().await;
    let staged = messages(2);
    let ids = ids_of(&staged);
    stage(store, &outbox, &staged).await;
    let first = outbox.claim(10, HOUR).await.unwrap();
    assert_eq!(
        outbox.release(&first[0].claim, &ids).await.unwrap(),
        Vec::<String>::new()
    );

    let again = outbox.claim(10, HOUR).await.unwrap();
    assert_eq!(claimed_ids(&again), ids, "due at once, in staging order");
    assert!(again.iter().all(|e| e.attempts == 1), "{again:?}");
    assert_eq!(
        outbox.release(&first[0].claim, &ids).await.unwrap(),
        ids,
        "a released claim is spent"
    );
    assert_eq!(
        outbox.release(&again[0].claim, &ids[..1]).await.unwrap(),
        Vec::<String>::new()
    );
    let last = outbox.claim(10, HOUR).await.unwrap();
    assert_eq!(claimed_ids(&last), ids[..1], "the other one is still held");
}

/// The double-send window: a relay whose lease has run out must not settle
/// what another relay has claimed since.
pub async fn a_claim_that_outlived_its_lease_cannot_settle_rows_claimed_since<F: Fixture>(
    store: &F,
) {
    let (outbox, other) = (store.outbox().await, store.outbox().await);
    let staged = messages(2);
    let ids = ids_of(&staged);
    stage(store, &outbox, &staged).await;
    let stale = outbox.claim(10, Duration::from_millis(1)).await.unwrap();
    let stale = stale[0].claim.clone();
    let mut current = Vec::new();
    eventually("another claim once the lease ran out", async || {
        current = other.claim(10, HOUR).await.unwrap();
        !current.is_empty()
    })
    .await;
    assert_eq!(claimed_ids(&current), ids);
    assert!(current.iter().all(|e| e.attempts == 2));
    let claim = current[0].claim.clone();
    assert_ne!(claim, stale);

    assert_eq!(outbox.mark_sent(&stale, &ids).await.unwrap(), ids);
    assert_eq!(outbox.release(&stale, &ids).await.unwrap(), ids);
    let error = "broker unavailable";
    let later = SystemTime::now() + HOUR;
    assert!(
        !outbox
            .retry_later(&stale, &ids[0], error, later)
            .await
            .unwrap()
    );
    // Untouched: still held by the current claim, and not sent.
    assert!(outbox.claim(10, HOUR).await.unwrap().is_empty());
    assert_eq!(store.pending().await, 2);

    assert_eq!(
        other.mark_sent(&claim, &ids).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.pending().await, 0);
    assert_eq!(
        other.mark_sent(&claim, &ids).await.unwrap(),
        ids,
        "marked once: settling spends the claim"
    );
}

pub async fn a_claim_whose_lease_ran_out_settles_rows_nobody_claimed_since<F: Fixture>(store: &F) {
    let outbox = store.outbox().await;
    let staged = messages(2);
    let ids = ids_of(&staged);
    stage(store, &outbox, &staged).await;
    let claimed = outbox.claim(10, Duration::from_millis(1)).await.unwrap();
    // Not a wait for an outcome: the lease is certainly over after this.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let claim = &claimed[0].claim;
    assert_eq!(
        outbox.mark_sent(claim, &ids[..1]).await.unwrap(),
        Vec::<String>::new(),
        "a late mark counts while no other claim took the row"
    );
    let later = SystemTime::now() + HOUR;
    assert!(
        outbox
            .retry_later(claim, &ids[1], "x", later)
            .await
            .unwrap()
    );
    assert_eq!(store.pending().await, 1);
    assert!(
        outbox.claim(10, HOUR).await.unwrap().is_empty(),
        "one sent, one due in an hour"
    );
}

pub async fn a_failed_publish_is_kept_and_retried_after_its_delay<F: Fixture>(store: &F) {
    let broker = MemoryBroker::new(); // nothing bound yet: publishes fail
    let outbox = store.outbox().await;
    let staged = messages(1);
    stage(store, &outbox, &staged).await;
    let relay = OutboxRelay::new(
        Arc::new(outbox),
        Arc::new(broker.clone()),
        RelayConfig {
            retry: RetryPolicy {
                initial_delay: Duration::from_secs(1),
                ..RetryPolicy::default()
            },
            ..RelayConfig::default()
        },
    );
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed), (0, 1));
    assert_eq!(store.pending().await, 1, "kept, not dropped");
    assert_eq!(
        relay.round().await.unwrap(),
        RelayRound::default(),
        "not due before its delay"
    );

    let received = record_deliveries(&broker).await;
    eventually("the retried publish", async || {
        relay.round().await.unwrap().sent == 1
    })
    .await;
    eventually("the delivery", async || received.lock().unwrap().len() == 1).await;
    assert_eq!(*received.lock().unwrap(), ids_of(&staged));
    assert_eq!(store.pending().await, 0);
}

pub async fn sent_messages_are_purged_and_unsent_ones_kept<F: Fixture>(store: &F) {
    let outbox = store.outbox().await;
    let staged = messages(3);
    stage(store, &outbox, &staged).await;
    let claimed = outbox.claim(2, HOUR).await.unwrap();
    let sent = claimed_ids(&claimed);
    assert!(
        outbox
            .mark_sent(&claimed[0].claim, &sent)
            .await
            .unwrap()
            .is_empty()
    );
    let an_hour_ago = SystemTime::now() - HOUR;
    assert_eq!(outbox.purge_sent(an_hour_ago).await.unwrap(), 0);
    let soon = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(outbox.purge_sent(soon).await.unwrap(), 2);
    assert_eq!(store.pending().await, 1);
    assert_eq!(
        claimed_ids(&outbox.claim(10, HOUR).await.unwrap()),
        ids_of(&staged[2..])
    );
}

pub async fn a_round_ends_at_a_closed_broker_and_releases_what_it_did_not_try<F: Fixture>(
    store: &F,
) {
    let outbox = store.outbox().await;
    let staged = messages(3);
    stage(store, &outbox, &staged).await;
    // Each clone of the in-process broker has its own lifecycle: close the
    // relay's.
    let closed = MemoryBroker::new();
    closed.close().await;
    let relay = OutboxRelay::new(
        Arc::new(outbox.clone()),
        Arc::new(closed),
        RelayConfig::default(),
    );
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed, round.released), (0, 1, 2));
    // The two it did not try are due again at once, their attempt given
    // back; the one that failed waits for its retry delay.
    let again: Vec<(String, u32)> = outbox
        .claim(10, HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.message.properties.message_id, e.attempts))
        .collect();
    let expected: Vec<(String, u32)> = ids_of(&staged[1..]).into_iter().map(|id| (id, 1)).collect();
    assert_eq!(again, expected);
    assert_eq!(store.pending().await, 3, "nothing dropped");
}

/// Runs rounds of `relay` until the store has nothing pending; what they
/// did, added up.
async fn drain<F: Fixture, S: OutboxStore>(store: &F, relay: &OutboxRelay<S>) -> RelayRound {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut total = RelayRound::default();
    loop {
        let round = relay.round().await.unwrap();
        total.sent += round.sent;
        total.failed += round.failed;
        total.released += round.released;
        total.lost += round.lost;
        if store.pending().await == 0 {
            return total;
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained");
        if round == RelayRound::default() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub async fn two_relays_never_send_the_same_message<F: Fixture>(store: &F) {
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let (a, b) = (store.outbox().await, store.outbox().await);
    let staged = messages(200);
    stage(store, &a, &staged).await;
    let config = RelayConfig {
        batch: 7,
        ..RelayConfig::default()
    };
    let relay =
        |outbox| OutboxRelay::new(Arc::new(outbox), Arc::new(broker.clone()), config.clone());
    let (a, b) = (relay(a), relay(b));
    let (a, b) = tokio::join!(drain(store, &a), drain(store, &b));
    assert_eq!(a.sent + b.sent, 200);
    assert_eq!((a.failed + b.failed, a.lost + b.lost), (0, 0));
    eventually("every message", async || {
        received.lock().unwrap().len() >= 200
    })
    .await;
    let mut got = received.lock().unwrap().clone();
    got.sort();
    let mut want = ids_of(&staged);
    want.sort();
    assert_eq!(got, want, "each message exactly once");
}

/// Part of the test below: an outbox that records which messages each
/// `mark_sent` really marked.
#[derive(Clone)]
struct Marking<S> {
    store: S,
    marked: Arc<Mutex<Vec<String>>>,
}

impl<S: OutboxStore> OutboxStore for Marking<S> {
    type Transaction<'t>
        = S::Transaction<'t>
    where
        Self: 't;

    async fn stage(
        &self,
        tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> Result<(), StoreError> {
        self.store.stage(tx, message).await
    }

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store.claim(batch, lease).await
    }

    async fn mark_sent(&self, claim: &str, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let lost = self.store.mark_sent(claim, ids).await?;
        let marked = ids.iter().filter(|id| !lost.contains(id)).cloned();
        self.marked.lock().unwrap().extend(marked);
        Ok(lost)
    }

    async fn release(&self, claim: &str, ids: &[String]) -> Result<Vec<String>, StoreError> {
        self.store.release(claim, ids).await
    }

    async fn retry_later(
        &self,
        claim: &str,
        message_id: &str,
        error: &str,
        not_before: SystemTime,
    ) -> Result<bool, StoreError> {
        self.store
            .retry_later(claim, message_id, error, not_before)
            .await
    }

    async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.store.purge_sent(before).await
    }

    fn staged(&self) -> Arc<Notify> {
        self.store.staged()
    }
}

/// Part of the test below: a broker whose publish returns only once another
/// relay has delivered the same message — so always after this relay's
/// lease has run out and another claim has taken the message.
struct Outlasting {
    inner: MemoryBroker,
    delivered: Arc<Mutex<Vec<String>>>,
    publishing: Arc<Notify>,
}

impl Broker for Outlasting {
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            self.publishing.notify_one();
            let id = &message.properties.message_id;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while !self.delivered.lock().unwrap().contains(id) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the other relay never delivered {id}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.inner.publish(message).await
        }
        .boxed()
    }

    fn subscribe(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), SubscribeError>> {
        self.inner.subscribe(subscription)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
}

/// Relay `a` publishes more slowly than its lease: each of its publishes
/// lasts until relay `b` has claimed the message after the lease and sent
/// it. The message goes out twice, but `a` marks, releases and reschedules
/// nothing that `b` holds: each message is marked sent once, by one relay.
pub async fn two_relays_with_a_lease_shorter_than_a_publish_never_both_mark_a_message<
    F: Fixture,
>(
    store: &F,
) {
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;
    let marking = async || Marking {
        store: store.outbox().await,
        marked: Arc::default(),
    };
    let (a, b) = (marking().await, marking().await);
    let staged = messages(12);
    stage(store, &a.store, &staged).await;
    let config = RelayConfig {
        batch: 4,
        lease: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    let publishing = Arc::new(Notify::new());
    let slow = Outlasting {
        inner: broker.clone(),
        delivered: Arc::clone(&received),
        publishing: Arc::clone(&publishing),
    };
    let relay_a = OutboxRelay::new(Arc::new(a.clone()), Arc::new(slow), config.clone());
    let relay_b = OutboxRelay::new(Arc::new(b.clone()), Arc::new(broker.clone()), config);
    // `a` claims first; `b` starts once `a` is publishing.
    let (total_a, total_b) = tokio::join!(drain(store, &relay_a), async {
        publishing.notified().await;
        drain(store, &relay_b).await
    });

    let (marked_a, marked_b) = (
        a.marked.lock().unwrap().clone(),
        b.marked.lock().unwrap().clone(),
    );
    let (set_a, set_b): (HashSet<&String>, HashSet<&String>) =
        (marked_a.iter().collect(), marked_b.iter().collect());
    assert!(
        set_a.is_disjoint(&set_b),
        "both relays marked {:?}",
        set_a.intersection(&set_b).collect::<Vec<_>>()
    );
    let mut marked: Vec<String> = marked_a.iter().chain(&marked_b).cloned().collect();
    marked.sort();
    let mut want = ids_of(&staged);
    want.sort();
    assert_eq!(marked, want, "each message marked sent exactly once");
    assert_eq!(total_a.sent + total_b.sent, 12, "{total_a:?} {total_b:?}");
    assert!(
        total_a.lost >= 1,
        "the slow relay lost its claim: {total_a:?}"
    );
    assert_eq!(total_a.failed + total_b.failed, 0);

    // Each message was published at least once; the overtaken ones twice.
    eventually("every message delivered", async || {
        let received = received.lock().unwrap();
        let unique: HashSet<&String> = received.iter().collect();
        unique.len() == 12 && received.len() > 12
    })
    .await;
    assert_eq!(store.pending().await, 0);
}

pub async fn the_inbox_records_each_message_once_per_consumer<F: Fixture>(store: &F) {
    let inbox = store.inbox();
    assert!(store.record(&inbox, "billing", "m-1", true).await.unwrap());
    assert!(!store.record(&inbox, "billing", "m-1", true).await.unwrap());
    assert!(
        store.record(&inbox, "audit", "m-1", true).await.unwrap(),
        "per consumer"
    );
    assert!(store.record(&inbox, "billing", "m-2", true).await.unwrap());
    let empty = store.record(&inbox, "audit", "", true).await.unwrap_err();
    assert!(empty.to_string().contains("empty message id"), "{empty}");
}
