//! Commands, queries, events, their handlers, and the in-process
//! [`Dispatcher`].
//!
//! - A [`Command`] asks the service to change something; exactly one
//!   [`CommandHandler`] handles it.
//! - A [`Query`] asks for data; exactly one [`QueryHandler`] answers it.
//! - An [`Event`] says something happened; every subscribed [`EventHandler`]
//!   gets it.
//!
//! Handlers are async closures or types implementing the handler traits.
//! Every dispatch runs through the dispatcher's middleware, which are tower
//! [`Layer`](tower::Layer)s over [`HandlerService`] — the same layers wrap
//! work that arrives over HTTP, gRPC or a message broker, because all of it
//! ends up in the dispatcher.
//!
//! ```
//! use mamey_core::cqrs::{Command, Dispatcher, Event, Query};
//! use mamey_core::Error;
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
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dispatcher = Dispatcher::builder()
//!     .command(|cmd: CreateOrder| async move { println!("creating {}", cmd.id); Ok(()) })
//!     .query(|q: GetOrder| async move { Ok(Some(format!("order {}", q.id))) })
//!     .event(|e: OrderCreated| async move { println!("created {}", e.id); Ok(()) })
//!     .build()?;
//!
//! dispatcher.send(CreateOrder { id: 7 }).await?;
//! assert_eq!(dispatcher.query(GetOrder { id: 7 }).await?, Some("order 7".into()));
//! dispatcher.publish(OrderCreated { id: 7 }).await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod dispatcher;
pub mod middleware;

use std::future::Future;

use crate::Error;

pub use dispatcher::{
    Dispatcher, DispatcherBuilder, DispatcherError, Envelope, HandlerService, MessageKind, Next,
    Reply,
};

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

    /// Checks the command before any handler sees it (run by
    /// [`ValidationLayer`](middleware::ValidationLayer)).
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

/// Handles one command type. Implemented for async closures `Fn(C) -> Fut`.
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Handles `command`.
    fn handle(&self, command: C) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Answers one query type. Implemented for async closures `Fn(Q) -> Fut`.
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// Answers `query`.
    fn handle(&self, query: Q) -> impl Future<Output = Result<Q::Output, Error>> + Send;
}

/// Handles one event type. Implemented for async closures `Fn(E) -> Fut`.
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Handles `event`.
    fn handle(&self, event: E) -> impl Future<Output = Result<(), Error>> + Send;
}

impl<C, F, Fut> CommandHandler<C> for F
where
    C: Command,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    fn handle(&self, command: C) -> impl Future<Output = Result<(), Error>> + Send {
        self(command)
    }
}

impl<Q, F, Fut> QueryHandler<Q> for F
where
    Q: Query,
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Q::Output, Error>> + Send,
{
    fn handle(&self, query: Q) -> impl Future<Output = Result<Q::Output, Error>> + Send {
        self(query)
    }
}

impl<E, F, Fut> EventHandler<E> for F
where
    E: Event,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    fn handle(&self, event: E) -> impl Future<Output = Result<(), Error>> + Send {
        self(event)
    }
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
