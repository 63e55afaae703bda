//! The MongoDB plug-in, repositories, outbox and inbox against a real
//! server, when `MONGODB_URI` is set (e.g.
//! `mongodb://127.0.0.1:27017/?directConnection=true`); otherwise each such
//! test prints a `SKIPPED` line and passes, whatever
//! `MAMEY_REQUIRE_SERVICES` says: no MongoDB runs on the project's machines.
//! Each test uses a database of its own and drops it at the end.
//!
//! On a replica set the stores are tested in transactions; on a standalone
//! server with `mongo.transactions = "off"`, after checking that `auto`
//! refuses them. The shared store suite (`store_suite/`) runs twice: in
//! transactions (on a replica set or mongos only) and with
//! `transactions = "off"` (on any server).
#![cfg(all(feature = "mongo", feature = "outbox"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod store_suite;

use common::{Paid, eventually, publisher, record_deliveries};

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mamey_core::health::{Probe, Status};
use mamey_core::{ErrorKind, Service, ServiceBuilder};
use mamey_messaging::{
    InboxStore, MemoryBroker, Messaging, OutboxRelay, OutboxStore, OutgoingMessage, PublishOptions,
    RelayConfig,
};
use mamey_persistence::mongo::{
    Mongo, MongoConfig, MongoDatabase, MongoInbox, MongoOutbox, Repository, Sort, Transactions,
};
use mongodb::bson::{Document, doc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    id: String,
    number: u32,
    customer_id: String,
    total: i64,
}

fn order(n: u32) -> Order {
    Order {
        id: format!("o-{n}"),
        number: n,
        customer_id: format!("c-{}", n % 2),
        total: i64::from(n) * 100,
    }
}

/// A MongoDB for one test: the URI, a database name of its own (dropped
/// when this is), and whether the server has transactions.
struct Server {
    uri: String,
    database: String,
    transactions: bool,
}

impl Server {
    /// The server of `MONGODB_URI`, or `None` after a visible `SKIPPED`
    /// line. Written to the process's stderr, not through `eprintln!`, so
    /// that the test harness does not swallow it.
    async fn get(test: &str) -> Option<Self> {
        let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: mongo::{test} needs a MongoDB server; set MONGODB_URI \
                 (e.g. mongodb://127.0.0.1:27017/?directConnection=true) to run it"
            );
            return None;
        };
        let database = format!("mamey_test_{}", mamey_core::new_id().replace('-', ""));
        let mut server = Self {
            uri,
            database,
            transactions: false,
        };
        let probe = MongoDatabase::connect(&server.config(Transactions::Auto), "probe")
            .await
            .unwrap_or_else(|e| panic!("MONGODB_URI is set but MongoDB is unreachable: {e}"));
        server.transactions = probe.transactions();
        Some(server)
    }

    fn config(&self, transactions: Transactions) -> MongoConfig {
        MongoConfig {
            url: self.uri.clone().into(),
            database: Some(self.database.clone()),
            transactions,
            ..MongoConfig::default()
        }
    }

    /// The mode the stores work in on this server: `auto` where it has
    /// transactions, else `off`.
    fn working_mode(&self) -> Transactions {
        if self.transactions {
            Transactions::Auto
        } else {
            Transactions::Off
        }
    }

    async fn connect(&self) -> MongoDatabase {
        MongoDatabase::connect(&self.config(self.working_mode()), "mongo-test")
            .await
            .unwrap()
    }

    /// A service on this server's test database, with `more` variables.
    fn service(&self, more: &[(&str, &str)]) -> ServiceBuilder {
        let mode = if self.transactions { "auto" } else { "off" };
        let vars = [
            ("MAMEY__MONGO__URL", self.uri.as_str()),
            ("MAMEY__MONGO__DATABASE", self.database.as_str()),
            ("MAMEY__MONGO__TRANSACTIONS", mode),
        ];
        test_service(vars.iter().chain(more).copied())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let (uri, database) = (self.uri.clone(), self.database.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                    let _ = client.database(&database).drop().await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// A service for one test: no signal handling, no configuration files,
/// `vars` as its whole environment.
fn test_service<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> ServiceBuilder {
    Service::builder("mongo-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars)
}

async fn build_error(builder: ServiceBuilder) -> String {
    builder.build().await.map(|_| ()).unwrap_err().to_string()
}

fn message(invoice: u32) -> OutgoingMessage {
    publisher(&MemoryBroker::new())
        .prepare(&Paid { invoice }, PublishOptions::default())
        .unwrap()
}

async fn stage(db: &MongoDatabase, outbox: &MongoOutbox, messages: Vec<OutgoingMessage>) {
    let mut tx = db.begin().await.unwrap();
    for message in messages {
        outbox.stage(&mut tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn index_names(db: &MongoDatabase, collection: &str) -> Vec<String> {
    db.database()
        .collection::<Document>(collection)
        .list_index_names()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Without a server
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_url_fails_the_build_naming_the_key() {
    let error = build_error(
        test_service([("MAMEY__MONGO__URL", "http://127.0.0.1:27017")]).plugin(Mongo::new()),
    )
    .await;
    assert!(error.contains("mongo.url"), "{error}");
    assert!(error.contains("MAMEY__MONGO__URL"), "{error}");

    let error =
        build_error(test_service([("MAMEY__MONGO__DATABASE", "shop.eu")]).plugin(Mongo::new()))
            .await;
    assert!(error.contains("mongo.database"), "{error}");
}

#[tokio::test]
async fn an_absent_server_fails_the_build_within_the_connect_timeout() {
    let started = std::time::Instant::now();
    let error = build_error(
        test_service([
            (
                "MAMEY__MONGO__URL",
                "mongodb://127.0.0.1:9/?directConnection=true",
            ),
            ("MAMEY__MONGO__CONNECT_TIMEOUT", "1s"),
            ("MAMEY__MONGO__SERVER_SELECTION_TIMEOUT", "300ms"),
        ])
        .plugin(Mongo::new()),
    )
    .await;
    assert!(
        error.contains("cannot connect to MongoDB at 127.0.0.1:9/mongo-test"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// With a server
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_plugin_provides_the_database_repositories_and_stores_and_creates_indexes() {
    let Some(server) =
        Server::get("the_plugin_provides_the_database_repositories_and_stores_and_creates_indexes")
            .await
    else {
        return;
    };
    let service = server
        .service(&[])
        .plugin(
            Mongo::new()
                .repository_with::<Order>(|orders| orders.index(doc! { "number": 1 }, true))
                .outbox()
                .inbox(),
        )
        .build()
        .await
        .unwrap();
    let db = service.resources().get::<MongoDatabase>().unwrap();
    let orders = service.resources().get::<Repository<Order>>().unwrap();
    assert!(service.resources().get::<MongoOutbox>().is_ok());
    assert!(service.resources().get::<MongoInbox>().is_ok());
    assert_eq!(db.database().name(), server.database);
    assert_eq!(orders.name(), "orders");
    let health = service.health().clone();
    let running = service.start().await.unwrap();
    assert_eq!(health.check(Probe::Ready).await.status, Status::Healthy);

    assert!(
        index_names(&db, "orders")
            .await
            .contains(&"number_1".to_owned())
    );
    assert!(
        index_names(&db, "mamey_outbox")
            .await
            .contains(&"sentAt_1_seq_1".to_owned())
    );
    assert!(
        index_names(&db, "mamey_inbox")
            .await
            .contains(&"processedAt_1".to_owned())
    );
    // The unique index holds.
    orders.add(&order(1)).await.unwrap();
    let twin = Order {
        id: "o-other".into(),
        ..order(1)
    };
    assert_eq!(
        orders.add(&twin).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );

    running.stop().await.unwrap();
}

#[tokio::test]
async fn transactions_follow_the_server() {
    let Some(server) = Server::get("transactions_follow_the_server").await else {
        return;
    };
    let on = server.config(Transactions::On);
    if server.transactions {
        let db = MongoDatabase::connect(&on, "mongo-test").await.unwrap();
        assert!(db.transactions());
        assert!(db.begin().await.unwrap().in_transaction());
    } else {
        let error = MongoDatabase::connect(&on, "mongo-test").await.unwrap_err();
        assert!(error.to_string().contains("mongo.transactions"), "{error}");
        assert!(error.to_string().contains("replica set"), "{error}");
        // `auto` starts, and the stores refuse to write outside a transaction.
        let db = MongoDatabase::connect(&server.config(Transactions::Auto), "mongo-test")
            .await
            .unwrap();
        assert!(!db.transactions());
        let outbox = MongoOutbox::new(&db, "mamey_outbox");
        let inbox = MongoInbox::new(&db, "mamey_inbox");
        let mut tx = db.begin().await.unwrap();
        assert!(!tx.in_transaction());
        let refused = outbox.stage(&mut tx, message(1)).await.unwrap_err();
        assert!(
            refused.to_string().contains("needs a transaction"),
            "{refused}"
        );
        let refused = inbox.record(&mut tx, "billing", "m-1").await.unwrap_err();
        assert!(
            refused.to_string().contains("needs a transaction"),
            "{refused}"
        );
        assert_eq!(outbox.pending().await.unwrap(), 0);
    }
    // `off` never starts one.
    let off = MongoDatabase::connect(&server.config(Transactions::Off), "mongo-test")
        .await
        .unwrap();
    assert!(!off.transactions());
    assert!(!off.begin().await.unwrap().in_transaction());
}

#[tokio::test]
async fn a_repository_keeps_documents_with_convey_conventions() {
    let Some(server) = Server::get("a_repository_keeps_documents_with_convey_conventions").await
    else {
        return;
    };
    let db = server.connect().await;
    let orders = Repository::<Order>::new(&db);
    for n in 1..=25 {
        orders.add(&order(n)).await.unwrap();
    }
    // Stored with `_id` and camelCase names.
    let raw = orders
        .collection()
        .find_one(doc! { "_id": "o-3" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get_str("customerId"), Ok("c-1"));
    assert!(
        !raw.contains_key("id") && !raw.contains_key("customer_id"),
        "{raw}"
    );

    assert_eq!(orders.get("o-3").await.unwrap(), Some(order(3)));
    assert_eq!(orders.get("o-99").await.unwrap(), None);
    assert!(orders.exists(doc! { "customerId": "c-0" }).await.unwrap());
    assert!(!orders.exists(doc! { "customerId": "c-9" }).await.unwrap());
    assert_eq!(
        orders.find(doc! { "id": "o-4" }).await.unwrap(),
        vec![order(4)]
    );
    assert_eq!(
        orders
            .find(doc! { "customerId": "c-0" })
            .await
            .unwrap()
            .len(),
        12
    );

    let page = orders
        .browse(doc! {}, 2, 10, Sort::desc("total"))
        .await
        .unwrap();
    assert_eq!((page.page, page.page_size, page.total), (2, 10, 25));
    assert_eq!(page.total_pages(), 3);
    let numbers: Vec<u32> = page.items.iter().map(|o| o.number).collect();
    assert_eq!(numbers, (6..=15).rev().collect::<Vec<_>>());
    let last = orders
        .browse(doc! { "customerId": "c-1" }, 3, 5, Sort::asc("number"))
        .await
        .unwrap();
    assert_eq!(last.total, 13);
    let numbers: Vec<u32> = last.items.iter().map(|o| o.number).collect();
    assert_eq!(numbers, [21, 23, 25]);

    let mut changed = order(5);
    changed.total = 1;
    assert!(orders.update(&changed).await.unwrap());
    assert_eq!(orders.get("o-5").await.unwrap(), Some(changed));
    assert!(
        !orders.update(&order(77)).await.unwrap(),
        "nothing inserted"
    );
    assert_eq!(orders.get("o-77").await.unwrap(), None);
    assert_eq!(
        orders.add(&order(5)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert!(orders.delete("o-5").await.unwrap());
    assert!(!orders.delete("o-5").await.unwrap());

    // A field added by a newer version is ignored.
    orders
        .collection()
        .update_one(
            doc! { "_id": "o-6" },
            doc! { "$set": { "addedLater": true } },
        )
        .await
        .unwrap();
    assert_eq!(orders.get("o-6").await.unwrap(), Some(order(6)));

    // Units of work: written at commit, or not at all.
    let mut tx = db.begin().await.unwrap();
    orders.add_in(&mut tx, &order(30)).await.unwrap();
    assert_eq!(
        orders.get_in(&mut tx, "o-30").await.unwrap(),
        Some(order(30))
    );
    tx.commit().await.unwrap();
    assert!(orders.exists(doc! { "id": "o-30" }).await.unwrap());
    if db.transactions() {
        let mut tx = db.begin().await.unwrap();
        orders.add_in(&mut tx, &order(31)).await.unwrap();
        assert!(orders.delete_in(&mut tx, "o-30").await.unwrap());
        tx.abort().await.unwrap();
        assert_eq!(orders.get("o-31").await.unwrap(), None);
        assert!(orders.exists(doc! { "id": "o-30" }).await.unwrap());
    }
}

#[tokio::test]
async fn the_outbox_claims_and_settles_under_the_claim() {
    let Some(server) = Server::get("the_outbox_claims_and_settles_under_the_claim").await else {
        return;
    };
    let db = server.connect().await;
    let outbox = MongoOutbox::new(&db, "mamey_outbox");
    outbox.create_indexes().await.unwrap();
    let messages: Vec<OutgoingMessage> = (1..=3).map(message).collect();
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.properties.message_id.clone())
        .collect();
    stage(&db, &outbox, messages.clone()).await;
    assert_eq!(outbox.pending().await.unwrap(), 3);

    // A message id staged twice is an error.
    let mut tx = db.begin().await.unwrap();
    let twice = outbox
        .stage(&mut tx, messages[0].clone())
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("staged already"), "{twice}");
    drop(tx);

    let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
    let claimed_ids: Vec<&str> = claimed
        .iter()
        .map(|e| e.message.properties.message_id.as_str())
        .collect();
    assert_eq!(claimed_ids, ids, "staging order");
    assert_eq!(claimed[0].message, messages[0]);
    assert!(claimed.iter().all(|e| e.attempts == 1));
    let claim = claimed[0].claim.clone();
    assert!(claimed.iter().all(|e| e.claim == claim));
    assert!(
        outbox
            .claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    assert!(
        outbox
            .mark_sent(&claim, &ids[..1])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        outbox.mark_sent(&claim, &ids[..1]).await.unwrap(),
        ids[..1],
        "settled once"
    );
    assert!(outbox.release(&claim, &ids[1..2]).await.unwrap().is_empty());
    assert!(
        outbox
            .retry_later(&claim, &ids[2], "$broker down", SystemTime::now())
            .await
            .unwrap()
    );
    assert!(
        !outbox
            .retry_later(&claim, &ids[2], "again", SystemTime::now())
            .await
            .unwrap()
    );

    let again = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
    let attempts: Vec<(&str, u32)> = again
        .iter()
        .map(|e| (e.message.properties.message_id.as_str(), e.attempts))
        .collect();
    assert_eq!(attempts, [(ids[1].as_str(), 1), (ids[2].as_str(), 2)]);
    let raw = db
        .database()
        .collection::<Document>("mamey_outbox")
        .find_one(doc! { "_id": &ids[2] })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get_str("lastError"), Ok("$broker down"));

    // Sent a while ago by the server's clock: purged.
    assert_eq!(
        outbox
            .purge_sent(SystemTime::now() - Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        outbox
            .purge_sent(SystemTime::now() + Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(outbox.pending().await.unwrap(), 2);
}

#[tokio::test]
async fn a_claim_whose_lease_ran_out_cannot_settle() {
    let Some(server) = Server::get("a_claim_whose_lease_ran_out_cannot_settle").await else {
        return;
    };
    let db = server.connect().await;
    let outbox = MongoOutbox::new(&db, "mamey_outbox");
    let staged = message(1);
    let id = vec![staged.properties.message_id.clone()];
    stage(&db, &outbox, vec![staged]).await;

    let first = outbox.claim(1, Duration::from_millis(200)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = outbox.claim(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    let (stale, current) = (&first[0].claim, &second[0].claim);
    assert_ne!(stale, current);

    assert_eq!(outbox.mark_sent(stale, &id).await.unwrap(), id);
    assert_eq!(outbox.release(stale, &id).await.unwrap(), id);
    assert!(
        !outbox
            .retry_later(stale, &id[0], "late", SystemTime::now())
            .await
            .unwrap()
    );
    assert!(outbox.mark_sent(current, &id).await.unwrap().is_empty());
    assert_eq!(outbox.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn the_relay_publishes_what_a_unit_of_work_committed() {
    let Some(server) = Server::get("the_relay_publishes_what_a_unit_of_work_committed").await
    else {
        return;
    };
    let broker = MemoryBroker::new();
    let received = record_deliveries(&broker).await;

    // A relay made by hand, one round.
    let db = server.connect().await;
    let outbox = MongoOutbox::new(&db, "mamey_outbox");
    let relay = OutboxRelay::new(
        Arc::new(outbox.clone()),
        Arc::new(broker.clone()),
        RelayConfig::default(),
    );
    let first = message(1);
    let first_id = first.properties.message_id.clone();
    stage(&db, &outbox, vec![first]).await;
    let round = relay.round().await.unwrap();
    assert_eq!((round.sent, round.failed, round.lost), (1, 0, 0));
    assert_eq!(outbox.pending().await.unwrap(), 0);

    // The plug-ins' relay. Only the commit wakes it.
    let service = server
        .service(&[("MAMEY__MESSAGING__OUTBOX__INTERVAL", "1h")])
        .plugin(Mongo::new().outbox())
        .plugin(Messaging::new(broker.clone()).outbox::<MongoOutbox>())
        .build()
        .await
        .unwrap();
    let db = service.resources().get::<MongoDatabase>().unwrap();
    let outbox = service.resources().get::<MongoOutbox>().unwrap();
    let running = service.start().await.unwrap();

    if db.transactions() {
        let mut tx = db.begin().await.unwrap();
        outbox.stage(&mut tx, message(9)).await.unwrap();
        drop(tx); // aborted: never staged
    }
    let committed = message(2);
    let committed_id = committed.properties.message_id.clone();
    stage(&db, &outbox, vec![committed]).await;
    eventually("the committed message", async || {
        received.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*received.lock().unwrap(), [first_id, committed_id]);
    eventually("the message marked sent", async || {
        outbox.pending().await.unwrap() == 0
    })
    .await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_inbox_records_each_message_once_per_consumer() {
    let Some(server) = Server::get("the_inbox_records_each_message_once_per_consumer").await else {
        return;
    };
    let db = server.connect().await;
    let inbox = MongoInbox::new(&db, "mamey_inbox");
    inbox.create_indexes().await.unwrap();

    if db.transactions() {
        // Recorded in a unit of work that aborts: not recorded.
        let mut tx = db.begin().await.unwrap();
        assert!(inbox.record(&mut tx, "billing", "m-1").await.unwrap());
        tx.abort().await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    assert!(inbox.record(&mut tx, "billing", "m-1").await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    assert!(
        !inbox.record(&mut tx, "billing", "m-1").await.unwrap(),
        "a duplicate"
    );
    assert!(
        inbox.record(&mut tx, "shipping", "m-1").await.unwrap(),
        "another consumer"
    );
    assert!(inbox.record(&mut tx, "billing", "").await.is_err());
    drop(tx);

    assert_eq!(inbox.purge(Duration::from_secs(3600)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(inbox.purge(Duration::ZERO).await.unwrap() >= 1);
}

// ---------------------------------------------------------------------------
// The shared outbox and inbox suite
// ---------------------------------------------------------------------------

/// The stores on a database of the test's own, in transactions or with
/// `mongo.transactions = "off"`.
struct Stores<const TRANSACTIONS: bool> {
    server: Server,
    db: MongoDatabase,
}

impl<const TRANSACTIONS: bool> store_suite::Fixture for Stores<TRANSACTIONS> {
    type Outbox = MongoOutbox;
    type Inbox = MongoInbox;
    const TRANSACTIONAL: bool = TRANSACTIONS;

    async fn fresh() -> Option<Self> {
        let suite = if TRANSACTIONS {
            "store_suite (in transactions)"
        } else {
            "store_suite (transactions = off)"
        };
        let server = Server::get(suite).await?;
        if TRANSACTIONS && !server.transactions {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: mongo::{suite} needs a replica set or mongos; MONGODB_URI is a \
                 standalone server"
            );
            return None;
        }
        let mode = if TRANSACTIONS {
            Transactions::On
        } else {
            Transactions::Off
        };
        let db = MongoDatabase::connect(&server.config(mode), "mongo-test")
            .await
            .unwrap();
        let stores = Self { server, db };
        stores.outbox().await.create_indexes().await.unwrap();
        stores.inbox().create_indexes().await.unwrap();
        Some(stores)
    }

    /// As another instance has it: a client of its own.
    async fn outbox(&self) -> MongoOutbox {
        let mode = if TRANSACTIONS {
            Transactions::On
        } else {
            Transactions::Off
        };
        let db = MongoDatabase::connect(&self.server.config(mode), "mongo-test")
            .await
            .unwrap();
        MongoOutbox::new(&db, "mamey_outbox")
    }

    fn inbox(&self) -> MongoInbox {
        MongoInbox::new(&self.db, "mamey_inbox")
    }

    async fn stage(
        &self,
        outbox: &MongoOutbox,
        messages: Vec<OutgoingMessage>,
        commit: bool,
    ) -> Result<(), mamey_messaging::StoreError> {
        let mut tx = self.db.begin().await.unwrap();
        for message in messages {
            outbox.stage(&mut tx, message).await?;
        }
        if commit {
            tx.commit().await.unwrap();
        }
        Ok(())
    }

    async fn record(
        &self,
        inbox: &MongoInbox,
        consumer: &str,
        message_id: &str,
        commit: bool,
    ) -> Result<bool, mamey_messaging::StoreError> {
        let mut tx = self.db.begin().await.unwrap();
        let first = inbox.record(&mut tx, consumer, message_id).await?;
        if commit {
            tx.commit().await.unwrap();
        }
        Ok(first)
    }

    async fn pending(&self) -> u64 {
        MongoOutbox::new(&self.db, "mamey_outbox")
            .pending()
            .await
            .unwrap()
    }
}

mod in_transactions {
    use crate::store_suite::store_suite;

    store_suite!(crate::Stores<true>);
}

mod without_transactions {
    use crate::store_suite::store_suite;

    store_suite!(crate::Stores<false>);
}
