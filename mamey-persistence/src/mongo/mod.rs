//! MongoDB (feature `mongo`): the [`Mongo`] plug-in, typed repositories,
//! and the transactional outbox and inbox on MongoDB.
//!
//! The plug-in connects at init (the service does not start without its
//! database: it asks the server what it is with `hello`, retrying until
//! `mongo.connect_timeout`), provides a [`MongoDatabase`] — the driver's
//! client and the service's database, cheap to clone — registers a `mongo`
//! readiness check (`ping` within `mongo.ping_timeout`), and provides a
//! [`Repository`] for each type declared with [`Mongo::repository`], and on
//! request a [`MongoOutbox`] and a [`MongoInbox`]. When it starts it
//! creates the indexes those declare, before the plug-ins added after it
//! start (so before an HTTP server accepts requests).
//!
//! ```no_run
//! use mamey_core::cqrs::{Command, Res};
//! use mamey_core::{Error, Service};
//! use mamey_persistence::mongo::{Mongo, Repository};
//! use mongodb::bson::doc;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Order { id: String, customer_id: String, total: i64 }
//!
//! struct PlaceOrder(Order);
//! impl Command for PlaceOrder {}
//!
//! async fn place_order(cmd: PlaceOrder, Res(orders): Res<Repository<Order>>) -> Result<(), Error> {
//!     orders.add(&cmd.0).await // a duplicate id is a conflict
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Service::builder("orders") // database `orders` on mongodb://127.0.0.1:27017
//!     // `Repository<Order>` on collection `orders`, with an index made at start.
//!     .plugin(Mongo::new().repository_with::<Order>(|orders| orders.index(doc! { "customerId": 1 }, false)))
//!     .handlers(|h| { h.command(place_order); })
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! With the `outbox` feature (on by default), `Mongo::new().outbox().inbox()`
//! adds the stores, and `Messaging::new(broker).outbox::<MongoOutbox>()`
//! the relay; [`MongoOutbox`] shows a handler staging an event with a state
//! change.
//!
//! # Configuration
//!
//! Section `mongo` ([`MongoConfig`]), with its defaults:
//!
//! ```toml
//! [mongo]
//! url = "mongodb://127.0.0.1:27017"  # a secret: never printed
//! # database = "orders"              # default: app.name, made a valid name
//! max_pool_size = 10
//! min_pool_size = 0
//! connect_timeout = "10s"
//! server_selection_timeout = "5s"
//! max_idle_time = "10m"
//! ping_timeout = "2s"
//! transactions = "auto"              # "on" | "off"
//! outbox_collection = "mamey_outbox"
//! inbox_collection = "mamey_inbox"
//! ```
//!
//! # Units of work and transactions
//!
//! [`MongoDatabase::begin`] returns a [`MongoSession`]; pass it to the
//! repositories' `*_in` methods, [`MongoOutbox`]'s `stage` and
//! [`MongoInbox`]'s `record`, then [`commit`](MongoSession::commit) it.
//! MongoDB has multi-document transactions only on a replica set (a single
//! node is enough) or behind `mongos`, so the plug-in asks the server at
//! start (`setName` in the `hello` reply, or `msg: "isdbgrid"`):
//!
//! - `transactions = "auto"` (default): a session is a transaction where
//!   the server has them. On a standalone server the service starts with a
//!   warning, and the outbox and inbox **refuse** to write (a
//!   [`StoreError`](mamey_messaging::StoreError) that says why): staging
//!   outside a transaction is not atomic with the state change, and mamey
//!   does not weaken that promise silently.
//! - `"on"`: the service does not start without transactions
//!   (`config key mongo.transactions: …`).
//! - `"off"`: no transactions; each write applies at once, and the outbox
//!   and inbox accept it. The guarantee is weaker, and the order of the
//!   writes decides what a crash between them does: state then `stage` —
//!   the change without its message; `stage` then state — a message for a
//!   change that was not made; `record` then the handler's writes — a
//!   message never applied. Use it for development on a standalone server.
//!
//! # Guarantees and limits
//!
//! - The outbox is at-least-once, as on Postgres: the relay claims one
//!   document at a time with `findOneAndUpdate` and a lease taken from the
//!   server's clock (`$$NOW`), so two relays never send a message at the
//!   same time and the hosts' clocks do not matter; a relay that dies frees its claims
//!   when the lease ends; a relay slower than its lease may send a message
//!   another relay sends too (keep `messaging.outbox.lease` well above a
//!   round). Messages are claimed in staging order per process (`seq`, an
//!   `ObjectId`), and by second across processes.
//! - The relay of this process wakes when a session that staged commits;
//!   relays of other instances find the message at their next poll
//!   (`messaging.outbox.interval`). There is no change stream.
//! - A claim of `batch` messages is `batch` round trips.
//! - In a transaction, MongoDB aborts on a write conflict; the error is
//!   unavailable (retried), so a consumed message is redelivered.
//! - Written for MongoDB 4.4 or later: the claims use update pipelines and
//!   `$$NOW` (4.2), and a transaction may create the collection it writes
//!   to (4.4; the plug-in creates its collections with their indexes at
//!   start anyway).
//! - Repositories rename no fields (see [`Repository`]): document types
//!   declare `#[serde(rename_all = "camelCase")]`.

// The outbox and inbox exist with feature `outbox` only; the links to them
// are for the default build.
#![cfg_attr(not(feature = "outbox"), allow(rustdoc::broken_intra_doc_links))]

mod config;
mod database;
#[cfg(feature = "outbox")]
mod outbox;
mod repository;

use std::fmt;

use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, InitContext, Plugin, ResourceConflict, StartContext};
use mongodb::bson::doc;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{MongoConfig, Transactions, database_name};
pub use database::{MongoDatabase, MongoSession, Topology, error};
#[cfg(feature = "outbox")]
pub use outbox::{MongoInbox, MongoOutbox};
pub use repository::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, Repository, Sort};

use database::{Problem, open};
use repository::IndexPlan;

/// Provides one repository at init, and says which indexes it needs.
type Declaration = Box<
    dyn FnOnce(&MongoDatabase, &mut InitContext<'_>) -> Result<IndexPlan, ResourceConflict> + Send,
>;

/// The MongoDB plug-in (section `mongo`). Provides a [`MongoDatabase`], a
/// [`Repository`] per declared type, and (feature `outbox`) a
/// `MongoOutbox` / `MongoInbox` when asked for.
#[derive(Default)]
pub struct Mongo {
    outbox: bool,
    inbox: bool,
    repositories: Vec<Declaration>,
    indexes: Vec<IndexPlan>,
    database: Option<MongoDatabase>,
}

impl fmt::Debug for Mongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mongo")
            .field("outbox", &self.outbox)
            .field("inbox", &self.inbox)
            .field("repositories", &self.repositories.len())
            .finish_non_exhaustive()
    }
}

impl Mongo {
    /// The plug-in, providing the database.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also provides a [`Repository<T>`] on the collection named after `T`
    /// (see [`Repository`] for the conventions).
    #[must_use]
    pub fn repository<T>(self) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.repository_with::<T>(|repository| repository)
    }

    /// Also provides a [`Repository<T>`], as `configure` sets it up from
    /// the conventional one: another collection
    /// ([`named`](Repository::named)), indexes ([`index`](Repository::index)),
    /// created when the plug-in starts.
    #[must_use]
    pub fn repository_with<T>(
        mut self,
        configure: impl FnOnce(Repository<T>) -> Repository<T> + Send + 'static,
    ) -> Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.repositories.push(Box::new(move |database, ctx| {
            let repository = configure(Repository::<T>::new(database));
            let plan = repository.index_plan();
            ctx.provide(repository)?;
            Ok(plan)
        }));
        self
    }

    /// Also provides a [`MongoOutbox`] on `mongo.outbox_collection`.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn outbox(mut self) -> Self {
        self.outbox = true;
        self
    }

    /// Also provides a [`MongoInbox`] on `mongo.inbox_collection`.
    #[cfg(feature = "outbox")]
    #[must_use]
    pub fn inbox(mut self) -> Self {
        self.inbox = true;
        self
    }
}

impl Plugin for Mongo {
    fn name(&self) -> &'static str {
        "mongo"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<MongoConfig>()?;
        let service = ctx.app().name.clone();
        let database = match open(&config, &service).await {
            Ok(database) => database,
            Err(Problem::Config(key, message)) => {
                return Err(ctx.config().invalid(key, message).into());
            }
            Err(Problem::Connect(message)) => return Err(message.into()),
        };
        for declare in self.repositories.drain(..) {
            self.indexes.push(declare(&database, ctx)?);
        }
        #[cfg(feature = "outbox")]
        if self.outbox {
            let outbox = MongoOutbox::new(&database, &config.outbox_collection);
            self.indexes.push(outbox.index_plan());
            ctx.provide(outbox)?;
        }
        #[cfg(feature = "outbox")]
        if self.inbox {
            let inbox = MongoInbox::new(&database, &config.inbox_collection);
            self.indexes.push(inbox.index_plan());
            ctx.provide(inbox)?;
        }
        ctx.provide(database.clone())?;
        let db = database.database().clone();
        ctx.health().register_with_timeout(
            "mongo",
            &[Probe::Ready],
            config.ping_timeout,
            move || {
                let db = db.clone();
                async move {
                    match db.run_command(doc! { "ping": 1 }).await {
                        Ok(_) => HealthStatus::healthy(),
                        Err(error) => HealthStatus::unhealthy(format!("mongo: {error}")),
                    }
                }
            },
        );
        self.database = Some(database);
        Ok(())
    }

    async fn start(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
        for plan in &self.indexes {
            plan.create().await.map_err(|e| {
                format!(
                    "creating the indexes of MongoDB collection `{}`: {e}",
                    plan.collection.name()
                )
            })?;
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        if let Some(database) = self.database.take() {
            database.client().clone().shutdown().immediate(true).await;
        }
        Ok(())
    }
}
