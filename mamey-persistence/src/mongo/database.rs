//! The database resource, units of work on it, what the server is, and
//! driver errors as mamey errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, ClientSession, Database};
use tokio::sync::Notify;

use super::config::{MongoConfig, Transactions};

/// The service's database: the driver's client and database, what the
/// server is, and whether units of work run in transactions. The `Mongo`
/// plug-in provides it; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct MongoDatabase {
    client: Client,
    database: Database,
    topology: Topology,
    mode: Transactions,
}

impl fmt::Debug for MongoDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoDatabase")
            .field("database", &self.database.name())
            .field("topology", &self.topology)
            .field("transactions", &self.transactions())
            .finish_non_exhaustive()
    }
}

impl MongoDatabase {
    /// Connects as the plug-in does, for tools and tests: checks `config`,
    /// asks the server what it is (`hello`), retrying until
    /// `connect_timeout`, and uses `mongo.database` or `service` made
    /// valid (see [`database_name`](super::database_name)).
    ///
    /// # Errors
    /// A configuration problem naming its key, or no server within
    /// `connect_timeout`, or `transactions = "on"` and a server without them.
    pub async fn connect(
        config: &MongoConfig,
        service: &str,
    ) -> Result<Self, mamey_core::BoxError> {
        open(config, service)
            .await
            .map_err(|problem| match problem {
                Problem::Config(key, message) => format!("config key `{key}`: {message}").into(),
                Problem::Connect(message) => message.into(),
            })
    }

    /// The driver's database, for what the repositories do not cover
    /// (aggregations, raw commands).
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The driver's client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What the server is, as found at start.
    #[must_use]
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether [`begin`](Self::begin) starts a transaction: the server has
    /// them and `mongo.transactions` is not `off`.
    #[must_use]
    pub fn transactions(&self) -> bool {
        self.mode != Transactions::Off && self.topology.supports_transactions()
    }

    /// Whether the outbox and inbox may write outside a transaction
    /// (`mongo.transactions = "off"`).
    #[cfg(feature = "outbox")]
    pub(crate) fn allows_writes_outside_transactions(&self) -> bool {
        self.mode == Transactions::Off
    }

    /// Begins a unit of work: a session, in a transaction when
    /// [`transactions`](Self::transactions) is true. Pass it to the
    /// repositories' `*_in` methods, `MongoOutbox::stage` and
    /// `MongoInbox::record`, then
    /// [`commit`](MongoSession::commit) it. Dropped without a commit, its
    /// transaction is aborted.
    ///
    /// # Errors
    /// The server is unavailable.
    pub async fn begin(&self) -> Result<MongoSession, mamey_core::Error> {
        let mut session = self.client.start_session().await.map_err(error)?;
        let transaction = self.transactions();
        if transaction {
            session.start_transaction().await.map_err(error)?;
        }
        Ok(MongoSession {
            session,
            transaction,
            on_commit: Vec::new(),
        })
    }
}

/// A unit of work on MongoDB, from [`MongoDatabase::begin`]: a session, in
/// a transaction when the server has them (see
/// [`in_transaction`](Self::in_transaction)).
pub struct MongoSession {
    session: ClientSession,
    transaction: bool,
    /// Woken after the commit: the outbox's relay, when a message was staged.
    on_commit: Vec<Arc<Notify>>,
}

impl fmt::Debug for MongoSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSession")
            .field("in_transaction", &self.transaction)
            .finish_non_exhaustive()
    }
}

impl MongoSession {
    /// Whether the writes made in this session commit together. When not
    /// (`mongo.transactions = "off"`), each write is applied at once.
    #[must_use]
    pub fn in_transaction(&self) -> bool {
        self.transaction
    }

    /// The driver's session, for driver calls in this unit of work:
    /// `collection.insert_one(doc).session(tx.session())`.
    pub fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// Commits the transaction (nothing to commit outside one), then wakes
    /// the outbox relay if a message was staged.
    ///
    /// # Errors
    /// The commit failed; a transient failure (a write conflict, an
    /// election) is unavailable, so a consumed message is redelivered and
    /// its handler runs again.
    pub async fn commit(mut self) -> Result<(), mamey_core::Error> {
        if self.transaction {
            self.session.commit_transaction().await.map_err(error)?;
        }
        for staged in &self.on_commit {
            staged.notify_one();
        }
        Ok(())
    }

    /// Aborts the transaction: nothing written in it stays. Outside a
    /// transaction the writes are already applied.
    ///
    /// # Errors
    /// The server could not be told; it aborts the transaction itself when
    /// the session times out.
    pub async fn abort(mut self) -> Result<(), mamey_core::Error> {
        if self.transaction {
            self.session.abort_transaction().await.map_err(error)?;
        }
        Ok(())
    }

    #[cfg(feature = "outbox")]
    pub(crate) fn notify_on_commit(&mut self, staged: &Arc<Notify>) {
        if !self.on_commit.iter().any(|n| Arc::ptr_eq(n, staged)) {
            self.on_commit.push(Arc::clone(staged));
        }
    }
}

/// What the server is, from its `hello` reply. Transactions need a replica
/// set or a sharded cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// A single `mongod`: no transactions.
    Standalone,
    /// A member of the replica set `name` (a single-node set counts).
    ReplicaSet {
        /// The set's name (`setName`).
        name: String,
    },
    /// A `mongos` router of a sharded cluster.
    Sharded,
}

impl Topology {
    /// Reads a `hello` (or legacy `isMaster`) reply: `msg: "isdbgrid"` is a
    /// `mongos`, a `setName` a replica set member, anything else a
    /// standalone server.
    #[must_use]
    pub fn from_hello(reply: &Document) -> Self {
        if reply.get_str("msg") == Ok("isdbgrid") {
            Self::Sharded
        } else if let Ok(name) = reply.get_str("setName") {
            Self::ReplicaSet {
                name: name.to_owned(),
            }
        } else {
            Self::Standalone
        }
    }

    /// Whether the server runs transactions.
    #[must_use]
    pub fn supports_transactions(&self) -> bool {
        !matches!(self, Self::Standalone)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone => f.write_str("a standalone server"),
            Self::ReplicaSet { name } => write!(f, "replica set `{name}`"),
            Self::Sharded => f.write_str("a sharded cluster (mongos)"),
        }
    }
}

/// Why the database could not be opened.
pub(crate) enum Problem {
    /// A configuration key, and what it expects.
    Config(&'static str, String),
    /// The server could not be reached or refused.
    Connect(String),
}

/// Opens the database `config` names: checks it, builds the client, asks
/// the server what it is (retrying until `connect_timeout`), and applies
/// `transactions`.
pub(crate) async fn open(config: &MongoConfig, service: &str) -> Result<MongoDatabase, Problem> {
    if let Some((key, message)) = config.problem() {
        return Err(Problem::Config(key, message));
    }
    let url = config.url.expose();
    let mut options = match ClientOptions::parse(url).await {
        Ok(options) => options,
        Err(e) => {
            return Err(Problem::Config(
                "mongo.url",
                format!("expected a URL like mongodb://user@host:27017 ({})", e.kind),
            ));
        }
    };
    options.max_pool_size = Some(config.max_pool_size);
    options.min_pool_size = Some(config.min_pool_size);
    options.connect_timeout = Some(config.connect_timeout);
    options.server_selection_timeout = Some(config.server_selection_timeout);
    options.max_idle_time = Some(config.max_idle_time);
    if options.app_name.is_none() {
        options.app_name = Some(service.to_owned());
    }
    let name = config.database_name(service);
    let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
    let target = format!("{}/{name}", hosts.join(","));
    let client = Client::with_options(options)
        .map_err(|e| Problem::Config("mongo.url", e.kind.to_string()))?;
    let reply = hello(&client, config.connect_timeout)
        .await
        .map_err(|e| Problem::Connect(format!("cannot connect to MongoDB at {target}: {e}")))?;
    let topology = Topology::from_hello(&reply);
    let database = MongoDatabase {
        database: client.database(&name),
        client,
        topology,
        mode: config.transactions,
    };
    match (
        config.transactions,
        database.topology.supports_transactions(),
    ) {
        (Transactions::On, false) => {
            return Err(Problem::Config(
                "mongo.transactions",
                format!(
                    "`on` needs a replica set or mongos, and MongoDB at {target} is a standalone \
                     server: run it as a replica set (a single node is enough: `--replSet rs0` \
                     and `rs.initiate()`), or set `auto` or `off`"
                ),
            ));
        }
        (Transactions::Auto, false) => tracing::warn!(
            %target,
            "MongoDB is a standalone server: no transactions, so the outbox and inbox refuse to \
             write (they would not be atomic with the state change); run MongoDB as a replica set \
             (a single node is enough), or set mongo.transactions = \"off\" to accept that"
        ),
        _ => {}
    }
    tracing::info!(%target, topology = %database.topology, transactions = database.transactions(), "connected to MongoDB");
    Ok(database)
}

/// Asks the server what it is, retrying with backoff within `timeout` while
/// no server can be selected (one starting beside the service); other
/// failures (authentication, TLS) are final.
async fn hello(client: &Client, timeout: Duration) -> Result<Document, String> {
    let admin = client.database("admin");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let reply = tokio::time::timeout_at(deadline, admin.run_command(doc! { "hello": 1 }));
        let error = match reply.await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(format!(
                    "no answer within {timeout:?} (mongo.connect_timeout)"
                ));
            }
        };
        let transient = matches!(
            *error.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
        );
        if !transient {
            return Err(error.to_string());
        }
        if tokio::time::Instant::now() + backoff >= deadline {
            return Err(format!(
                "{error} (still failing after {timeout:?}, mongo.connect_timeout)"
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// MongoDB's duplicate key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// The server's error code, where the error carries one.
pub(crate) fn code(error: &mongodb::error::Error) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        _ => None,
    }
}

/// Maps a driver error onto mamey's error model, for handlers: a duplicate
/// key is a conflict; a lost connection, no server to select, or an error
/// the driver labels transient (a write conflict in a transaction, an
/// election) is unavailable, so it is retried; anything else internal. The
/// driver's text stays in the source, for logs.
///
/// ```
/// use mamey_core::ErrorKind;
/// use mamey_persistence::mongo::error;
///
/// let lost = mongodb::error::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// assert_eq!(error(lost).kind(), ErrorKind::Unavailable);
/// ```
#[must_use]
pub fn error(error: mongodb::error::Error) -> mamey_core::Error {
    let (kind, code, message) = classify(&error);
    mamey_core::Error::new(kind, code, message).with_source(error)
}

/// The kind, code and message [`error`] gives a driver error.
pub(crate) fn classify(
    error: &mongodb::error::Error,
) -> (mamey_core::ErrorKind, &'static str, &'static str) {
    use mamey_core::ErrorKind as Kind;
    use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
    let unavailable = matches!(
        *error.kind,
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || error.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || error.contains_label(RETRYABLE_WRITE_ERROR);
    if code(error) == Some(DUPLICATE_KEY) {
        (
            Kind::Conflict,
            "db.conflict",
            "conflicts with existing data",
        )
    } else if unavailable {
        (
            Kind::Unavailable,
            "db.unavailable",
            "the database is unavailable",
        )
    } else {
        (Kind::Internal, "internal", "database error")
    }
}

#[cfg(test)]
mod tests {
    use mamey_core::ErrorKind as Kind;
    use mongodb::bson;

    use super::*;

    #[test]
    fn a_standalone_server_has_no_transactions() {
        // mongod 7 without --replSet.
        let reply = doc! {
            "isWritablePrimary": true, "topologyVersion": { "counter": 0_i64 },
            "maxBsonObjectSize": 16_777_216, "maxWireVersion": 21, "ok": 1.0,
        };
        let topology = Topology::from_hello(&reply);
        assert_eq!(topology, Topology::Standalone);
        assert!(!topology.supports_transactions());
        assert_eq!(topology.to_string(), "a standalone server");
    }

    #[test]
    fn a_replica_set_member_has_them() {
        let primary = doc! {
            "isWritablePrimary": true, "secondary": false, "setName": "rs0", "setVersion": 1,
            "hosts": ["mongo:27017"], "primary": "mongo:27017", "me": "mongo:27017", "ok": 1.0,
        };
        let topology = Topology::from_hello(&primary);
        assert_eq!(topology, Topology::ReplicaSet { name: "rs0".into() });
        assert!(topology.supports_transactions());
        // A secondary names its set too.
        let secondary =
            doc! { "isWritablePrimary": false, "secondary": true, "setName": "rs0", "ok": 1.0 };
        assert!(Topology::from_hello(&secondary).supports_transactions());
    }

    #[test]
    fn a_mongos_has_them() {
        let reply =
            doc! { "isWritablePrimary": true, "msg": "isdbgrid", "maxWireVersion": 21, "ok": 1.0 };
        let topology = Topology::from_hello(&reply);
        assert_eq!(topology, Topology::Sharded);
        assert!(topology.supports_transactions());
        // Some other `msg` is not a mongos.
        assert_eq!(
            Topology::from_hello(&doc! { "msg": "hi", "ok": 1.0 }),
            Topology::Standalone
        );
    }

    fn write_error(code: i32) -> mongodb::error::Error {
        let failure: mongodb::error::WriteError =
            bson::from_document(doc! { "code": code, "errmsg": "E11000 duplicate key" }).unwrap();
        ErrorKind::Write(WriteFailure::WriteError(failure)).into()
    }

    #[test]
    fn driver_errors_map_onto_the_error_model() {
        let duplicate = error(write_error(DUPLICATE_KEY));
        assert_eq!(duplicate.kind(), Kind::Conflict);
        assert_eq!(duplicate.code(), "db.conflict");

        let io = mongodb::error::Error::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert_eq!(error(io).kind(), Kind::Unavailable);

        let command: mongodb::error::CommandError =
            bson::from_document(doc! { "code": 2, "codeName": "BadValue", "errmsg": "bad" })
                .unwrap();
        let bad = error(ErrorKind::Command(command).into());
        assert_eq!(bad.kind(), Kind::Internal);
        // The driver's text is kept for the log, not shown to callers.
        assert!(
            !bad.public_message().contains("bad"),
            "{}",
            bad.public_message()
        );
        assert!(std::error::Error::source(&bad).is_some());
        assert_eq!(code(&write_error(121)), Some(121));
    }
}
