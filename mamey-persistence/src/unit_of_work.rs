//! The unit of work: [`Tx`], a handler argument that is one database
//! transaction per handler call.
//!
//! The transaction begins before the handler runs and ends when it returns:
//! committed when it returns `Ok`, rolled back when it returns an error or
//! panics. While it is open:
//!
//! - messages the handler publishes with the [`Publisher`] are staged in the
//!   transaction's outbox when it commits (when the service has an outbox:
//!   a `PgOutbox` or `SqliteOutbox` resource), so the state change and its
//!   events are saved together or not at all, and the relay sends them after
//!   the commit;
//! - a message consumed from the broker is recorded in the inbox in the same
//!   transaction (when the service has a `PgInbox` or `SqliteInbox`
//!   resource), keyed by service and handler; a redelivery of a message the
//!   handler already applied is acknowledged without running the handler.
//!
//! ```no_run
//! use mamey_core::cqrs::{Command, Res};
//! use mamey_core::Error;
//! use mamey_messaging::{Publisher, message};
//! use mamey_persistence::Tx;
//! use mamey_persistence::postgres::{Postgres, error};
//!
//! struct PlaceOrder { id: i64 }
//! impl Command for PlaceOrder {}
//!
//! #[message(namespace = "orders", event)]
//! #[derive(Clone)]
//! struct OrderPlaced { id: i64 }
//!
//! async fn place_order(cmd: PlaceOrder, mut tx: Tx<Postgres>, Res(events): Res<Publisher>) -> Result<(), Error> {
//!     sqlx::query("INSERT INTO orders (id) VALUES ($1)")
//!         .bind(cmd.id)
//!         .execute(&mut *tx)
//!         .await
//!         .map_err(error)?;
//!     events.publish(&OrderPlaced { id: cmd.id }).await?; // staged, sent after the commit
//!     Ok(())
//! }
//! ```
//!
//! [`Publisher`]: mamey_messaging::Publisher

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use mamey_core::cqrs::{HandlerArg, call};
use mamey_core::{Error, MissingResource, Resources};
use mamey_messaging::{InboxStore, OutboxStore, OutgoingMessage, StoreError, unit_of_work};
use sqlx::{Database, Pool, Transaction};

use crate::sql::error;
use crate::writers::Writers;

/// A boxed future borrowing `'a`.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A database a [`Tx`] can be opened on: the `Postgres` and `Sqlite`
/// plug-ins.
pub trait TxDatabase: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;
    /// Its outbox store.
    type Outbox: Clone + Send + Sync + 'static;
    /// Its inbox store.
    type Inbox: Clone + Send + Sync + 'static;
    /// The statement that opens a unit of work: SQLite's takes the write
    /// lock at once (its writers queue in the process first, see
    /// [`Writers`](crate::writers::Writers)).
    #[doc(hidden)]
    const BEGIN: &'static str;
    /// The queue its writers join before `BEGIN`, when it has one.
    #[doc(hidden)]
    fn writers(resources: &Resources) -> Option<Writers>;

    /// Stages `message` in `outbox` inside `tx`.
    #[doc(hidden)]
    fn stage<'a>(
        outbox: &'a Self::Outbox,
        tx: &'a mut <Self::Db as Database>::Connection,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records in `inbox`, inside `tx`, that `consumer` handled `message_id`.
    #[doc(hidden)]
    fn record<'a>(
        inbox: &'a Self::Inbox,
        tx: &'a mut <Self::Db as Database>::Connection,
        consumer: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

macro_rules! tx_database {
    ($feature:literal, $plugin:ty, $db:ty, $outbox:ty, $inbox:ty, $begin:literal, $writers:expr) => {
        #[cfg(feature = $feature)]
        impl TxDatabase for $plugin {
            type Db = $db;
            type Outbox = $outbox;
            type Inbox = $inbox;
            const BEGIN: &'static str = $begin;

            fn writers(resources: &Resources) -> Option<Writers> {
                $writers(resources)
            }

            fn stage<'a>(
                outbox: &'a Self::Outbox,
                tx: &'a mut <Self::Db as Database>::Connection,
                message: OutgoingMessage,
            ) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(OutboxStore::stage(outbox, tx, message))
            }

            fn record<'a>(
                inbox: &'a Self::Inbox,
                tx: &'a mut <Self::Db as Database>::Connection,
                consumer: &'a str,
                message_id: &'a str,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(InboxStore::record(inbox, tx, consumer, message_id))
            }
        }
    };
}

tx_database!(
    "postgres",
    crate::postgres::Postgres,
    sqlx::Postgres,
    crate::postgres::PgOutbox,
    crate::postgres::PgInbox,
    "BEGIN",
    |_| None
);
tx_database!(
    "sqlite",
    crate::sqlite::Sqlite,
    sqlx::Sqlite,
    crate::sqlite::SqliteOutbox,
    crate::sqlite::SqliteInbox,
    "BEGIN IMMEDIATE",
    |resources: &Resources| resources.get::<Writers>().ok()
);

/// One transaction per handler call: a handler argument, `mut tx:
/// Tx<Postgres>` or `mut tx: Tx<Sqlite>`, used as a connection
/// (`.execute(&mut *tx)`). See the [module docs](self) for what commits
/// with it.
pub struct Tx<D: TxDatabase> {
    open: Option<Transaction<'static, D::Db>>,
    /// Where the transaction goes when the handler is done with it, for the
    /// call's completion to commit or roll back.
    done: Arc<Mutex<Option<Transaction<'static, D::Db>>>>,
}

impl<D: TxDatabase> fmt::Debug for Tx<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl<D: TxDatabase> Deref for Tx<D> {
    type Target = <D::Db as Database>::Connection;

    fn deref(&self) -> &Self::Target {
        match &self.open {
            Some(tx) => tx,
            None => unreachable!("a Tx holds its transaction until it is dropped"),
        }
    }
}

impl<D: TxDatabase> DerefMut for Tx<D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.open {
            Some(tx) => tx,
            None => unreachable!("a Tx holds its transaction until it is dropped"),
        }
    }
}

impl<D: TxDatabase> Drop for Tx<D> {
    fn drop(&mut self) {
        if let Some(tx) = self.open.take() {
            *lock(&self.done) = Some(tx);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks [`Tx`] among handler arguments.
#[derive(Debug)]
pub enum ViaUnitOfWork {}

/// What a [`Tx`] argument resolves once: the pool, and the outbox and inbox
/// when the service has them.
pub struct TxState<D: TxDatabase> {
    pool: Pool<D::Db>,
    outbox: Option<D::Outbox>,
    inbox: Option<D::Inbox>,
    /// The queue of the database's writers (SQLite), joined before `BEGIN`.
    writers: Option<Writers>,
}

impl<D: TxDatabase> fmt::Debug for TxState<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxState")
            .field("outbox", &self.outbox.is_some())
            .field("inbox", &self.inbox.is_some())
            .finish_non_exhaustive()
    }
}

impl<D: TxDatabase> HandlerArg<ViaUnitOfWork> for Tx<D> {
    type State = TxState<D>;
    const CALL_SCOPE: bool = true;

    fn resolve(resources: &Resources) -> Result<TxState<D>, MissingResource> {
        Ok(TxState {
            pool: resources.get::<Pool<D::Db>>()?,
            outbox: resources.get::<D::Outbox>().ok(),
            inbox: resources.get::<D::Inbox>().ok(),
            writers: D::writers(resources),
        })
    }

    async fn extract(state: &TxState<D>) -> Result<Self, Error> {
        let turn = match &state.writers {
            Some(writers) => Some(writers.turn().await?),
            None => None,
        };
        let mut tx = state.pool.begin_with(D::BEGIN).await.map_err(error)?;
        if let (Some(inbox), Some(consumed)) = (&state.inbox, unit_of_work::consumed()) {
            let consumer = format!(
                "{}/{}",
                consumed.service,
                call::handler().unwrap_or("handler")
            );
            if !D::record(inbox, &mut tx, &consumer, &consumed.message_id).await? {
                // The transaction rolls back as it drops.
                return Err(call::already_handled(format!(
                    "`{consumer}` applied message `{}` before",
                    consumed.message_id
                )));
            }
        }
        if state.outbox.is_some() {
            unit_of_work::collect_published();
        }
        let done: Arc<Mutex<Option<Transaction<'static, D::Db>>>> = Arc::default();
        let outbox = state.outbox.clone();
        let finish = Arc::clone(&done);
        call::on_completion(move |ok| async move {
            // The database stays this writer's until the commit or rollback.
            let _turn = turn;
            let tx = lock(&finish).take();
            let Some(mut tx) = tx else {
                return if ok {
                    Err(Error::internal(
                        "the handler's transaction (Tx) was still in use when the handler returned",
                    ))
                } else {
                    Ok(())
                };
            };
            if !ok {
                return tx.rollback().await.map_err(error);
            }
            if let Some(outbox) = &outbox {
                for message in unit_of_work::take_published() {
                    D::stage(outbox, &mut tx, message).await?;
                }
            }
            tx.commit().await.map_err(error)
        });
        Ok(Tx {
            open: Some(tx),
            done,
        })
    }
}
