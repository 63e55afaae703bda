//! The transactional outbox and the inbox on MongoDB.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mamey_messaging::{
    InboxStore, OutboxEntry, OutboxStore, OutgoingMessage, Properties, Route, StoreError,
};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, IndexModel};
use tokio::sync::Notify;

use super::database::{DUPLICATE_KEY, MongoDatabase, MongoSession, code};
use super::repository::IndexPlan;

/// The transactional outbox on MongoDB (see
/// [`mamey_messaging::OutboxStore`]). Cheap to clone.
///
/// Stage in the [`MongoSession`] that changes the state; the message
/// becomes visible when it commits, and the relay of this process wakes
/// then (relays of other instances find it at their next poll). The relay
/// claims one document at a time with `findOneAndUpdate`, setting a lease
/// from the server's clock (`$$NOW`) and the claim's token, so relays never
/// send the same message at once and a relay that dies frees its messages
/// when the lease ends. Marking sent, releasing and retrying act only on
/// documents that still carry the token: a relay whose lease ran out
/// touches nothing another relay has claimed since, and learns which
/// messages it lost.
///
/// Outside a transaction (a standalone server) staging is refused unless
/// `mongo.transactions = "off"` accepts that the message and the state
/// change are written one after the other: a crash between them loses the
/// message, or sends one for a change that was not made.
///
/// ```no_run
/// use mamey_core::Error;
/// use mamey_messaging::{OutboxStore, PublishOptions, Publisher, message};
/// use mamey_persistence::mongo::{MongoDatabase, MongoOutbox, Repository};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct Order { id: String, total: i64 }
///
/// #[message(namespace = "orders", event)]
/// #[derive(Clone)]
/// struct OrderPlaced { id: String }
///
/// async fn place(
///     db: &MongoDatabase,
///     orders: &Repository<Order>,
///     outbox: &MongoOutbox,
///     events: &Publisher,
///     order: Order,
/// ) -> Result<(), Error> {
///     let mut tx = db.begin().await?;
///     orders.add_in(&mut tx, &order).await?;
///     let event = events.prepare(&OrderPlaced { id: order.id.clone() }, PublishOptions::default())?;
///     outbox.stage(&mut tx, event).await?;
///     tx.commit().await // the relay wakes and publishes the event
/// }
/// ```
#[derive(Clone)]
pub struct MongoOutbox {
    collection: Collection<Document>,
    outside_transactions: bool,
    staged: Arc<Notify>,
}

impl fmt::Debug for MongoOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoOutbox")
            .field("collection", &self.collection.name())
            .finish_non_exhaustive()
    }
}

impl MongoOutbox {
    /// The outbox in collection `name` of `db`. Its index is created by the
    /// `Mongo` plug-in at start, or by [`create_indexes`](Self::create_indexes).
    #[must_use]
    pub fn new(db: &MongoDatabase, name: &str) -> Self {
        Self {
            collection: db.database().collection(name),
            outside_transactions: db.allows_writes_outside_transactions(),
            staged: Arc::new(Notify::new()),
        }
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.collection.name()
    }

    /// Creates the index the relay's claims use, if missing.
    ///
    /// # Errors
    /// The server failed.
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        self.index_plan().create().await.map_err(|e| {
            StoreError::with_source(format!("creating the indexes of `{}`", self.name()), e)
        })
    }

    pub(crate) fn index_plan(&self) -> IndexPlan {
        IndexPlan {
            collection: self.collection.clone(),
            models: Arc::new(vec![
                IndexModel::builder()
                    .keys(doc! { "sentAt": 1, "seq": 1 })
                    .build(),
            ]),
        }
    }

    /// Messages staged and not yet sent (for tests and dashboards).
    ///
    /// # Errors
    /// The server failed.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        self.collection
            .count_documents(doc! { "sentAt": Bson::Null })
            .await
            .map_err(|e| StoreError::with_source("counting pending messages", e))
    }

    /// Parks a document the claim `token` holds that cannot be read: due
    /// never, with the reason, so it does not come back round after round.
    async fn park(&self, id: Bson, token: &str, reason: String) {
        let update = doc! { "$set": {
            "dueAt": DateTime::MAX, "leasedUntil": Bson::Null, "claim": Bson::Null, "lastError": reason,
        } };
        let held = doc! { "_id": id, "claim": token };
        if let Err(error) = self.collection.update_one(held, update).await {
            tracing::error!(collection = %self.name(), %error, "parking an outbox message failed");
        }
    }

    /// Applies `update` to the messages among `message_ids` that `claim`
    /// holds, clearing the claim; returns the ids it did not hold.
    async fn settle(
        &self,
        claim: &str,
        message_ids: &[String],
        update: Vec<Document>,
        doing: &'static str,
    ) -> Result<Vec<String>, StoreError> {
        let failed = |e| StoreError::with_source(doing, e);
        // Each settlement marks what it settled with an id of its own: an
        // update does not say which documents it matched.
        let settlement = ObjectId::new();
        let done = self
            .collection
            .update_many(
                held_by(claim, message_ids),
                settle_update(update, settlement),
            )
            .await
            .map_err(failed)?;
        if usize::try_from(done.matched_count).is_ok_and(|n| n == message_ids.len()) {
            return Ok(Vec::new());
        }
        // Some were lost. Which ones: those without this settlement's mark
        // (wrong only if another relay claimed, sent and settled one of
        // ours in the moment between the two calls).
        let mut settled = self
            .collection
            .find(doc! { "_id": { "$in": message_ids }, "settlement": settlement })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(failed)?;
        let mut kept = std::collections::HashSet::new();
        while settled.advance().await.map_err(failed)? {
            if let Ok(id) = settled.current().get_str("_id") {
                kept.insert(id.to_owned());
            }
        }
        Ok(message_ids
            .iter()
            .filter(|id| !kept.contains(*id))
            .cloned()
            .collect())
    }
}

impl OutboxStore for MongoOutbox {
    /// The unit of work from [`MongoDatabase::begin`].
    type Transaction<'t> = MongoSession;

    async fn stage(
        &self,
        tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> Result<(), StoreError> {
        require_transaction(
            tx.in_transaction(),
            self.outside_transactions,
            "staging a message",
        )?;
        let id = message.properties.message_id.clone();
        let doc = staged_document(message, ObjectId::new(), DateTime::now());
        match self.collection.insert_one(doc).session(tx.session()).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(DUPLICATE_KEY) => {
                return Err(StoreError::with_source(
                    format!("message id `{id}` is staged already"),
                    e,
                ));
            }
            Err(e) => return Err(StoreError::with_source("staging a message", e)),
        }
        tx.notify_on_commit(&self.staged);
        Ok(())
    }

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
        let token = mamey_core::new_id();
        let mut entries = Vec::with_capacity(batch.min(1000));
        while entries.len() < batch {
            // One document per call: `findOneAndUpdate` is atomic, so two
            // relays never both claim it.
            let claimed = self
                .collection
                .find_one_and_update(claim_filter(), claim_update(lease, &token))
                .sort(doc! { "seq": 1 })
                .return_document(ReturnDocument::After)
                .await
                .map_err(|e| StoreError::with_source("claiming messages", e))?;
            let Some(doc) = claimed else { break };
            match entry(&doc, &token) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
                    tracing::error!(collection = %self.name(), message_id = %id, %error, "outbox document cannot be read; parked");
                    self.park(id, &token, format!("cannot read the document: {error}"))
                        .await;
                }
            }
        }
        Ok(entries)
    }

    async fn mark_sent(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.settle(
            claim,
            message_ids,
            mark_sent_update(),
            "marking messages sent",
        )
        .await
    }

    async fn release(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.settle(claim, message_ids, release_update(), "releasing messages")
            .await
    }

    async fn retry_later(
        &self,
        claim: &str,
        message_id: &str,
        error: &str,
        not_before: SystemTime,
    ) -> Result<bool, StoreError> {
        // Relative to the server's clock, as the claims are.
        let delay = not_before
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let update = settle_update(retry_update(delay, error), ObjectId::new());
        let done = self
            .collection
            .update_one(doc! { "_id": message_id, "claim": claim }, update)
            .await
            .map_err(|e| StoreError::with_source("scheduling a retry", e))?;
        Ok(done.matched_count == 1)
    }

    async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
        let done = self
            .collection
            .delete_many(purge_filter(offset_from_now(before)))
            .await
            .map_err(|e| StoreError::with_source("purging sent messages", e))?;
        Ok(done.deleted_count)
    }

    fn staged(&self) -> Arc<Notify> {
        Arc::clone(&self.staged)
    }
}

/// The inbox on MongoDB (see [`mamey_messaging::InboxStore`]): a document
/// per consumer and message id, `{ _id: { consumer, messageId },
/// processedAt }`, written in the handler's [`MongoSession`]. A duplicate
/// delivery finds it and is skipped; if the unit of work aborts, the
/// document goes with it and the redelivery is applied. Cheap to clone.
///
/// Outside a transaction recording is refused unless `mongo.transactions =
/// "off"` accepts that a message recorded before its handler failed is
/// never applied.
///
/// ```no_run
/// use mamey_core::{Error, MessageContext};
/// use mamey_messaging::InboxStore;
/// use mamey_persistence::mongo::{MongoDatabase, MongoInbox};
///
/// async fn on_paid(db: &MongoDatabase, inbox: &MongoInbox, ctx: &MessageContext) -> Result<(), Error> {
///     let mut tx = db.begin().await?;
///     if !inbox.record(&mut tx, "billing", &ctx.message_id).await? {
///         return Ok(()); // applied before: skip (dropping `tx` aborts it)
///     }
///     // … change the state with `tx` …
///     tx.commit().await
/// }
/// ```
#[derive(Clone)]
pub struct MongoInbox {
    collection: Collection<Document>,
    outside_transactions: bool,
}

impl fmt::Debug for MongoInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoInbox")
            .field("collection", &self.collection.name())
            .finish_non_exhaustive()
    }
}

impl MongoInbox {
    /// The inbox in collection `name` of `db`.
    #[must_use]
    pub fn new(db: &MongoDatabase, name: &str) -> Self {
        Self {
            collection: db.database().collection(name),
            outside_transactions: db.allows_writes_outside_transactions(),
        }
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.collection.name()
    }

    /// Creates the index [`purge`](Self::purge) uses, if missing.
    ///
    /// # Errors
    /// The server failed.
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        self.index_plan().create().await.map_err(|e| {
            StoreError::with_source(format!("creating the indexes of `{}`", self.name()), e)
        })
    }

    pub(crate) fn index_plan(&self) -> IndexPlan {
        IndexPlan {
            collection: self.collection.clone(),
            models: Arc::new(vec![
                IndexModel::builder()
                    .keys(doc! { "processedAt": 1 })
                    .build(),
            ]),
        }
    }

    /// Forgets message ids processed more than `older_than` ago; returns how
    /// many. Keep `older_than` well beyond the longest time a duplicate can
    /// arrive (the broker's redelivery and the publishers' retries).
    ///
    /// # Errors
    /// The server failed.
    pub async fn purge(&self, older_than: Duration) -> Result<u64, StoreError> {
        let before = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let done = self
            .collection
            .delete_many(doc! { "processedAt": { "$lt": DateTime::from_system_time(before) } })
            .await
            .map_err(|e| StoreError::with_source("purging the inbox", e))?;
        Ok(done.deleted_count)
    }
}

impl InboxStore for MongoInbox {
    /// The unit of work from [`MongoDatabase::begin`].
    type Transaction<'t> = MongoSession;

    async fn record(
        &self,
        tx: &mut Self::Transaction<'_>,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        if message_id.is_empty() {
            // Every id-less message would otherwise count as one: the first
            // applied, all later ones skipped.
            return Err(StoreError::new(
                "an empty message id cannot be recorded in the inbox",
            ));
        }
        require_transaction(
            tx.in_transaction(),
            self.outside_transactions,
            "recording a message id",
        )?;
        // An upsert, not an insert: a duplicate key error would abort the
        // transaction. A concurrent unit of work recording the same id
        // meets a write conflict (transient: its message is redelivered and
        // then skipped).
        let done = self
            .collection
            .update_one(
                doc! { "_id": { "consumer": consumer, "messageId": message_id } },
                doc! { "$setOnInsert": { "processedAt": DateTime::now() } },
            )
            .upsert(true)
            .session(tx.session())
            .await;
        match done {
            Ok(done) => Ok(done.upserted_id.is_some()),
            Err(error) if code(&error) == Some(DUPLICATE_KEY) => Ok(false),
            Err(error) => Err(StoreError::with_source("recording a message id", error)),
        }
    }
}

/// Refuses a write outside a transaction, unless `mongo.transactions =
/// "off"` allows it.
fn require_transaction(
    in_transaction: bool,
    outside_allowed: bool,
    doing: &str,
) -> Result<(), StoreError> {
    if in_transaction || outside_allowed {
        return Ok(());
    }
    Err(StoreError::new(format!(
        "{doing} needs a transaction, and MongoDB has none here: it is a standalone server, not a \
         replica set or mongos; run it as a replica set (a single node is enough), or set \
         mongo.transactions = \"off\" to accept writes that are not atomic with the state change"
    )))
}

/// Milliseconds as MongoDB's date arithmetic takes them.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The document of a staged message: due at once (the epoch, whatever the
/// clocks say), never leased or sent. `seq` orders the claims: `ObjectId`s
/// grow with time, and within a process with each id made.
fn staged_document(message: OutgoingMessage, seq: ObjectId, now: DateTime) -> Document {
    let OutgoingMessage {
        route,
        properties,
        body,
    } = message;
    let headers: Vec<Document> = properties
        .headers
        .into_iter()
        // Pairs, not a sub-document: header names may hold `.` or `$`.
        .map(|(name, value)| doc! { "name": name, "value": value })
        .collect();
    doc! {
        "_id": properties.message_id,
        "seq": seq,
        "exchange": route.exchange,
        "routingKey": route.routing_key,
        "correlationId": properties.correlation_id,
        "messageType": properties.message_type,
        "contentType": properties.content_type,
        "persistent": properties.persistent,
        "timestamp": DateTime::from_system_time(properties.timestamp),
        "headers": headers,
        "body": Binary { subtype: BinarySubtype::Generic, bytes: body.to_vec() },
        "stagedAt": now,
        "dueAt": DateTime::from_millis(0),
        "leasedUntil": Bson::Null,
        "claim": Bson::Null,
        "sentAt": Bson::Null,
        "attempts": 0,
        "lastError": Bson::Null,
    }
}

/// Reads a claimed document back into an entry.
fn entry(
    doc: &Document,
    claim: &str,
) -> Result<OutboxEntry, mongodb::bson::document::ValueAccessError> {
    let mut headers = BTreeMap::new();
    for header in doc.get_array("headers")? {
        let header = header
            .as_document()
            .ok_or(mongodb::bson::document::ValueAccessError::UnexpectedType)?;
        headers.insert(
            header.get_str("name")?.to_owned(),
            header.get_str("value")?.to_owned(),
        );
    }
    Ok(OutboxEntry {
        message: OutgoingMessage {
            route: Route {
                exchange: doc.get_str("exchange")?.to_owned(),
                routing_key: doc.get_str("routingKey")?.to_owned(),
            },
            properties: Properties {
                message_id: doc.get_str("_id")?.to_owned(),
                correlation_id: doc.get_str("correlationId")?.to_owned(),
                message_type: doc.get_str("messageType")?.to_owned(),
                timestamp: doc.get_datetime("timestamp")?.to_system_time(),
                content_type: doc.get_str("contentType")?.to_owned(),
                persistent: doc.get_bool("persistent")?,
                headers,
            },
            body: Bytes::copy_from_slice(doc.get_binary_generic("body")?),
        },
        attempts: u32::try_from(doc.get_i32("attempts")?).unwrap_or(0),
        claim: claim.to_owned(),
    })
}

/// Unsent messages that are due and not leased, by the server's clock. A
/// `null` lease compares below any date, so `$lte` covers "never leased"
/// and "lease ended" at once.
fn claim_filter() -> Document {
    doc! {
        "sentAt": Bson::Null,
        "$expr": { "$and": [
            { "$lte": ["$dueAt", "$$NOW"] },
            { "$lte": ["$leasedUntil", "$$NOW"] },
        ] },
    }
}

/// Leases a claimed message for `lease` from the server's now under the
/// claim's `token`, and counts the attempt.
fn claim_update(lease: Duration, token: &str) -> Vec<Document> {
    vec![doc! { "$set": {
        "leasedUntil": { "$add": ["$$NOW", millis(lease)] },
        "claim": { "$literal": token },
        "attempts": { "$add": ["$attempts", 1] },
    } }]
}

/// The messages among `ids` that the claim `token` holds.
fn held_by(token: &str, ids: &[String]) -> Document {
    doc! { "_id": { "$in": ids }, "claim": token }
}

/// `update` (one `$set` stage), and what every settlement does: the lease
/// and the claim cleared, and the settlement's mark.
fn settle_update(mut update: Vec<Document>, settlement: ObjectId) -> Vec<Document> {
    update.push(doc! { "$set": { "leasedUntil": Bson::Null, "claim": Bson::Null, "settlement": settlement } });
    update
}

fn mark_sent_update() -> Vec<Document> {
    vec![doc! { "$set": { "sentAt": "$$NOW" } }]
}

/// Gives a message back untried: the attempt not counted.
fn release_update() -> Vec<Document> {
    vec![doc! { "$set": { "attempts": { "$max": [{ "$subtract": ["$attempts", 1] }, 0] } } }]
}

/// Due again `delay` from the server's now, with the error kept — as a
/// `$literal`, since in an update pipeline a string starting with `$` would
/// be read as a field path.
fn retry_update(delay: Duration, error: &str) -> Vec<Document> {
    vec![doc! { "$set": {
        "dueAt": { "$add": ["$$NOW", millis(delay)] },
        "lastError": { "$literal": error },
    } }]
}

/// How far `time` is from now, in signed milliseconds, to be added to the
/// server's `$$NOW`.
fn offset_from_now(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => millis(ahead),
        Err(behind) => -millis(behind.duration()),
    }
}

/// Messages sent before `$$NOW` + `offset` milliseconds.
fn purge_filter(offset: i64) -> Document {
    doc! {
        "sentAt": { "$type": "date" },
        "$expr": { "$lt": ["$sentAt", { "$add": ["$$NOW", offset] }] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            route: Route {
                exchange: "orders".into(),
                routing_key: "order_placed".into(),
            },
            properties: Properties {
                message_id: "m-1".into(),
                correlation_id: "c-1".into(),
                message_type: "OrderPlaced".into(),
                // Milliseconds: what BSON dates keep.
                timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                content_type: "application/json".into(),
                persistent: true,
                headers: BTreeMap::from([
                    (
                        "message_context".into(),
                        r#"{"correlationId":"c-1"}"#.into(),
                    ),
                    ("x.odd$name".into(), "kept".into()),
                ]),
            },
            body: Bytes::from_static(br#"{"id":"o-1"}"#),
        }
    }

    #[test]
    fn a_staged_message_reads_back_whole() {
        let seq = ObjectId::new();
        let doc = staged_document(message(), seq, DateTime::from_millis(5));
        assert_eq!(doc.get_str("_id"), Ok("m-1"));
        assert_eq!(doc.get_object_id("seq"), Ok(seq));
        assert_eq!(doc.get_str("routingKey"), Ok("order_placed"));
        assert_eq!(doc.get_datetime("dueAt"), Ok(&DateTime::from_millis(0)));
        for unset in ["sentAt", "leasedUntil", "claim", "lastError"] {
            assert_eq!(doc.get(unset), Some(&Bson::Null), "{unset}");
        }
        assert_eq!(doc.get_i32("attempts"), Ok(0));
        assert_eq!(
            doc.get_array("headers").unwrap()[1],
            Bson::Document(doc! { "name": "x.odd$name", "value": "kept" })
        );
        let entry = entry(&doc, "claim-1").unwrap();
        assert_eq!(entry.message, message());
        assert_eq!(entry.attempts, 0);
        assert_eq!(entry.claim, "claim-1");
    }

    #[test]
    fn a_document_missing_a_field_does_not_read() {
        let mut doc = staged_document(message(), ObjectId::new(), DateTime::now());
        doc.remove("exchange");
        assert!(entry(&doc, "c").is_err());
        let mut doc = staged_document(message(), ObjectId::new(), DateTime::now());
        doc.insert("headers", vec![Bson::Int32(1)]);
        assert!(entry(&doc, "c").is_err());
    }

    #[test]
    fn claims_lease_due_unleased_unsent_messages_by_the_server_clock() {
        assert_eq!(
            claim_filter(),
            doc! {
                "sentAt": null,
                "$expr": { "$and": [
                    { "$lte": ["$dueAt", "$$NOW"] },
                    { "$lte": ["$leasedUntil", "$$NOW"] },
                ] },
            }
        );
        assert_eq!(
            claim_update(Duration::from_secs(300), "claim-1"),
            vec![doc! { "$set": {
                "leasedUntil": { "$add": ["$$NOW", 300_000_i64] },
                "claim": { "$literal": "claim-1" },
                "attempts": { "$add": ["$attempts", 1] },
            } }]
        );
    }

    #[test]
    fn settling_needs_the_claim_and_clears_it() {
        let ids = vec!["m-1".to_owned(), "m-2".to_owned()];
        assert_eq!(
            held_by("claim-1", &ids),
            doc! { "_id": { "$in": ["m-1", "m-2"] }, "claim": "claim-1" }
        );
        let settlement = ObjectId::new();
        let cleared =
            doc! { "$set": { "leasedUntil": null, "claim": null, "settlement": settlement } };
        assert_eq!(
            settle_update(mark_sent_update(), settlement),
            vec![doc! { "$set": { "sentAt": "$$NOW" } }, cleared.clone()]
        );
        assert_eq!(
            settle_update(release_update(), settlement),
            vec![
                doc! { "$set": { "attempts": { "$max": [{ "$subtract": ["$attempts", 1] }, 0] } } },
                cleared.clone(),
            ]
        );
        assert_eq!(
            settle_update(
                retry_update(Duration::from_millis(1500), "broker closed"),
                settlement
            ),
            vec![
                doc! { "$set": {
                    "dueAt": { "$add": ["$$NOW", 1500_i64] },
                    "lastError": { "$literal": "broker closed" },
                } },
                cleared,
            ]
        );
    }

    #[test]
    fn an_error_text_is_never_read_as_a_field_path() {
        let update = retry_update(Duration::ZERO, "$attempts");
        let set = update[0].get_document("$set").unwrap();
        assert_eq!(
            set.get_document("lastError"),
            Ok(&doc! { "$literal": "$attempts" })
        );
    }

    #[test]
    fn writes_outside_a_transaction_are_refused_unless_allowed() {
        assert!(require_transaction(true, false, "staging a message").is_ok());
        assert!(require_transaction(false, true, "staging a message").is_ok());
        let refused = require_transaction(false, false, "staging a message").unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("staging a message needs a transaction"),
            "{text}"
        );
        assert!(text.contains("replica set"), "{text}");
        assert!(text.contains("mongo.transactions"), "{text}");
    }

    #[test]
    fn purging_takes_messages_sent_before_the_time_by_the_server_clock() {
        assert_eq!(
            purge_filter(-3_600_000),
            doc! {
                "sentAt": { "$type": "date" },
                "$expr": { "$lt": ["$sentAt", { "$add": ["$$NOW", -3_600_000_i64] }] },
            }
        );
        let an_hour_ago = offset_from_now(SystemTime::now() - Duration::from_secs(3600));
        assert!(
            (-3_600_100..=-3_599_900).contains(&an_hour_ago),
            "{an_hour_ago}"
        );
        let soon = offset_from_now(SystemTime::now() + Duration::from_secs(1));
        assert!((900..=1000).contains(&soon), "{soon}");
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
