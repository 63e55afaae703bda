//! [`Handler`]: what the dispatcher accepts as a handler — an async
//! function of the message and its [extractors](super::extract), or a type
//! implementing [`CommandHandler`], [`QueryHandler`] or [`EventHandler`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::extract::HandlerArg;
use super::{Command, CommandHandler, Event, EventHandler, Query, QueryHandler};
use crate::{Error, MissingResource, Resources};

/// Something the dispatcher can call with a message `M`: an async function
/// or closure `(M, A1, …, An) -> Result<Output, Error>` whose further
/// arguments (up to 16) are [`HandlerArg`]s, or a handler type.
///
/// `Args` only tells the implementations apart; it is always inferred.
///
/// ```
/// use mamey_core::cqrs::{Command, Dispatcher, Res};
/// use mamey_core::{Error, MessageContext};
///
/// struct Ping;
/// impl Command for Ping {}
///
/// async fn ping(_: Ping, Res(greeting): Res<&'static str>, ctx: MessageContext) -> Result<(), Error> {
///     println!("{greeting} from {}", ctx.message_id);
///     Ok(())
/// }
///
/// let mut resources = mamey_core::Resources::new();
/// resources.insert("hello");
/// let dispatcher = Dispatcher::builder().command(ping).build_with(&resources)?;
/// # Ok::<(), mamey_core::cqrs::DispatcherError>(())
/// ```
pub trait Handler<M, Args>: Send + Sync + Sized + 'static {
    /// What a call returns on success: `()` for commands and events, the
    /// query's output for queries.
    type Output: Send + 'static;

    /// Resolves the handler's [`FromResources`](super::FromResources)
    /// arguments once, giving the function the dispatcher calls.
    ///
    /// # Errors
    /// [`MissingResource`] for the first argument whose resource is not
    /// registered.
    fn bind(self, resources: &Resources) -> Result<BoundHandler<M, Self::Output>, MissingResource>;
}

/// A handler with its arguments resolved: a call takes the message and
/// returns one boxed future.
pub struct BoundHandler<M, O> {
    call: Arc<dyn Fn(M) -> BoxFuture<'static, Result<O, Error>> + Send + Sync>,
}

impl<M, O> BoundHandler<M, O> {
    /// Wraps the function the dispatcher calls per message.
    pub fn new<F>(call: F) -> Self
    where
        F: Fn(M) -> BoxFuture<'static, Result<O, Error>> + Send + Sync + 'static,
    {
        Self {
            call: Arc::new(call),
        }
    }

    /// Calls the handler with `message`.
    pub fn call(&self, message: M) -> BoxFuture<'static, Result<O, Error>> {
        (self.call)(message)
    }
}

impl<M, O> Clone for BoundHandler<M, O> {
    fn clone(&self) -> Self {
        Self {
            call: Arc::clone(&self.call),
        }
    }
}

impl<M, O> fmt::Debug for BoundHandler<M, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundHandler").finish_non_exhaustive()
    }
}

impl<F, Fut, M, O> Handler<M, ()> for F
where
    F: Fn(M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, Error>> + Send + 'static,
    M: Send + 'static,
    O: Send + 'static,
{
    type Output = O;

    fn bind(self, _: &Resources) -> Result<BoundHandler<M, O>, MissingResource> {
        Ok(BoundHandler::new(move |message: M| {
            Box::pin(self(message)) as BoxFuture<'static, _>
        }))
    }
}

macro_rules! impl_handler {
    ($(($arg:ident, $via:ident, $state:ident)),+) => {
        impl<F, Fut, M, O, $($arg, $via,)+> Handler<M, ($(($via, $arg),)+)> for F
        where
            F: Fn(M, $($arg,)+) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<O, Error>> + Send + 'static,
            M: Send + 'static,
            O: Send + 'static,
            $($arg: HandlerArg<$via>,)+
        {
            type Output = O;

            fn bind(self, resources: &Resources) -> Result<BoundHandler<M, O>, MissingResource> {
                $(let $state = <$arg as HandlerArg<$via>>::resolve(resources)?;)+
                // The handler and what was resolved, shared by every call;
                // a call's one box holds the extractions and the handler's
                // future.
                let shared = Arc::new((self, $($state,)+));
                let name = super::short_type_name::<F>();
                let scoped = false $(|| <$arg as HandlerArg<$via>>::CALL_SCOPE)+;
                Ok(BoundHandler::new(move |message: M| {
                    let shared = Arc::clone(&shared);
                    let call = async move {
                        let (handler, $($state,)+) = &*shared;
                        $(let $state = <$arg as HandlerArg<$via>>::extract($state).await?;)+
                        handler(message, $($state,)+).await
                    };
                    // In a call scope of its own when an argument asks: it
                    // may share values with what the handler calls and
                    // finish its work (commit, roll back) once the handler
                    // has returned.
                    if scoped {
                        Box::pin(super::call::scoped(name, call)) as BoxFuture<'static, _>
                    } else {
                        Box::pin(call) as BoxFuture<'static, _>
                    }
                }))
            }
        }
    };
}

/// Implements [`Handler`] for every arity from one argument up to all of
/// the listed ones: `(A1)`, `(A1, A2)`, …
macro_rules! impl_handlers {
    (@each [$($done:tt),+]) => {
        impl_handler!($($done),+);
    };
    (@each [$($done:tt),+] $next:tt $(, $rest:tt)*) => {
        impl_handler!($($done),+);
        impl_handlers!(@each [$($done,)+ $next] $($rest),*);
    };
    ($first:tt $(, $rest:tt)*) => {
        impl_handlers!(@each [$first] $($rest),*);
    };
}

impl_handlers!(
    (A1, V1, s1),
    (A2, V2, s2),
    (A3, V3, s3),
    (A4, V4, s4),
    (A5, V5, s5),
    (A6, V6, s6),
    (A7, V7, s7),
    (A8, V8, s8),
    (A9, V9, s9),
    (A10, V10, s10),
    (A11, V11, s11),
    (A12, V12, s12),
    (A13, V13, s13),
    (A14, V14, s14),
    (A15, V15, s15),
    (A16, V16, s16)
);

/// Marks a type implementing [`CommandHandler`].
#[derive(Debug)]
pub enum ViaCommandHandler {}

/// Marks a type implementing [`QueryHandler`].
#[derive(Debug)]
pub enum ViaQueryHandler {}

/// Marks a type implementing [`EventHandler`].
#[derive(Debug)]
pub enum ViaEventHandler {}

impl<C: Command, T: CommandHandler<C>> Handler<C, ViaCommandHandler> for T {
    type Output = ();

    fn bind(self, _: &Resources) -> Result<BoundHandler<C, ()>, MissingResource> {
        let handler = Arc::new(self);
        Ok(BoundHandler::new(move |command: C| {
            let handler = Arc::clone(&handler);
            Box::pin(async move { handler.handle(command).await }) as BoxFuture<'static, _>
        }))
    }
}

impl<Q: Query, T: QueryHandler<Q>> Handler<Q, ViaQueryHandler> for T {
    type Output = Q::Output;

    fn bind(self, _: &Resources) -> Result<BoundHandler<Q, Q::Output>, MissingResource> {
        let handler = Arc::new(self);
        Ok(BoundHandler::new(move |query: Q| {
            let handler = Arc::clone(&handler);
            Box::pin(async move { handler.handle(query).await }) as BoxFuture<'static, _>
        }))
    }
}

impl<E: Event, T: EventHandler<E>> Handler<E, ViaEventHandler> for T {
    type Output = ();

    fn bind(self, _: &Resources) -> Result<BoundHandler<E, ()>, MissingResource> {
        let handler = Arc::new(self);
        Ok(BoundHandler::new(move |event: E| {
            let handler = Arc::clone(&handler);
            Box::pin(async move { handler.handle(event).await }) as BoxFuture<'static, _>
        }))
    }
}
