//! Commands, queries, events, their handlers, and the in-process
//! [`Dispatcher`].
//!
//! - A [`Command`] asks the service to change something; exactly one
//!   handler handles it.
//! - A [`Query`] asks for data; exactly one handler answers it.
//! - An [`Event`] says something happened; every subscribed handler gets it.
//!
//! A handler is an async function whose first argument is the message and
//! whose further arguments are [extractors](extract): [`Res<T>`] for a
//! resource (resolved once, when the dispatcher is built), the current
//! [`MessageContext`](crate::MessageContext), or the application's own. A
//! type implementing [`CommandHandler`], [`QueryHandler`] or
//! [`EventHandler`] works too.
//!
//! The path of a dispatch: the current message context (or a new root
//! one), a `handle` span, outcome logs and metrics, the tower layers added
//! with [`DispatcherBuilder::layer`] (see [`middleware`]), the message's
//! `validate`, the extractors, the handler. Work arriving over HTTP, gRPC
//! or a broker ends up here too, so one layer covers all of it.
//!
//! ```
//! use mamey_core::cqrs::{Command, Dispatcher, Event, Query, Res};
//! use mamey_core::{Error, Resources};
//! use std::collections::BTreeMap;
//! use std::sync::{Arc, Mutex};
//!
//! type Orders = Arc<Mutex<BTreeMap<u32, String>>>;
//!
//! struct CreateOrder { id: u32 }
//! impl Command for CreateOrder {}
//!
//! struct GetOrder { id: u32 }
//! impl Query for GetOrder { type Output = Option<String>; }
//!
//! #[derive(Clone)]
//! struct OrderCreated { id: u32 }
//! impl Event for OrderCreated {}
//!
//! async fn create_order(cmd: CreateOrder, Res(orders): Res<Orders>) -> Result<(), Error> {
//!     orders.lock().unwrap().insert(cmd.id, format!("order {}", cmd.id));
//!     Ok(())
//! }
//!
//! async fn get_order(q: GetOrder, Res(orders): Res<Orders>) -> Result<Option<String>, Error> {
//!     Ok(orders.lock().unwrap().get(&q.id).cloned())
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut resources = Resources::new();
//! resources.insert(Orders::default());
//! let dispatcher = Dispatcher::builder()
//!     .command(create_order)
//!     .query(get_order)
//!     .event(|e: OrderCreated| async move { println!("created {}", e.id); Ok(()) })
//!     .build_with(&resources)?;
//!
//! dispatcher.send(CreateOrder { id: 7 }).await?;
//! assert_eq!(dispatcher.query(GetOrder { id: 7 }).await?, Some("order 7".into()));
//! dispatcher.publish(OrderCreated { id: 7 }).await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod call;
mod dispatcher;
mod envelope;
pub mod extract;
mod handler;
pub mod middleware;

use std::future::Future;

use crate::Error;

pub use dispatcher::{Dispatcher, DispatcherBuilder, DispatcherError};
pub use envelope::{Envelope, HandlerService, MessageKind, Next, Reply};
pub use extract::{FromMessageContext, FromResources, HandlerArg, Res};
pub use handler::{BoundHandler, Handler};

/// A request to change state, handled by exactly one [`CommandHandler`].
pub trait Command: Send + 'static {
    /// The name used in logs, metrics and routing. Default: the type's name
    /// without its module path.
    fn name() -> &'static str
    where
        Self: Sized,
    {
        short_type_name::<Self>()
    }

    /// Checks the command before any handler sees it: every dispatch runs
    /// it after the added layers, right before the handler.
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error
    /// with field errors, by convention.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A request for data, answered by exactly one [`QueryHandler`].
pub trait Query: Send + 'static {
    /// What the query returns.
    type Output: Send + 'static;

    /// The name used in logs and metrics. Default: the type's name.
    fn name() -> &'static str
    where
        Self: Sized,
    {
        short_type_name::<Self>()
    }

    /// Checks the query before the handler sees it.
    ///
    /// # Errors
    /// An invalid-input error, by convention.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A fact that happened, delivered to every subscribed [`EventHandler`].
pub trait Event: Clone + Send + Sync + 'static {
    /// The name used in logs, metrics and routing. Default: the type's name.
    fn name() -> &'static str
    where
        Self: Sized,
    {
        short_type_name::<Self>()
    }

    /// Checks the event before handlers see it.
    ///
    /// # Errors
    /// An invalid-input error, by convention.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Handles one command type: a handler written as a type, holding its
/// dependencies. Most handlers are async functions taking
/// [extractors](extract) instead.
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Handles `command`.
    fn handle(&self, command: C) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Answers one query type: a handler written as a type. Most handlers are
/// async functions taking [extractors](extract) instead.
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// Answers `query`.
    fn handle(&self, query: Q) -> impl Future<Output = Result<Q::Output, Error>> + Send;
}

/// Handles one event type: a handler written as a type. Most handlers are
/// async functions taking [extractors](extract) instead.
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Handles `event`.
    fn handle(&self, event: E) -> impl Future<Output = Result<(), Error>> + Send;
}

/// `T`'s name without module paths: `app::orders::CreateOrder` →
/// `CreateOrder`, `Wrapper<app::Inner>` → `Wrapper<app::Inner>` stays
/// readable by stripping only the outer path.
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let generic_start = full.find('<').unwrap_or(full.len());
    let start = full[..generic_start].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    #[allow(dead_code)]
    struct Generic<T>(T);

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<Plain>(), "Plain");
        assert_eq!(short_type_name::<u32>(), "u32");
        assert!(short_type_name::<Generic<Plain>>().starts_with("Generic<"));
    }
}
