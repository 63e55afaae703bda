//! The in-process dispatcher and the type-erased envelope its middleware sees.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, join_all};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{Command, CommandHandler, Event, EventHandler, Query, QueryHandler, short_type_name};
use crate::{Error, MessageContext};

/// What a handler returns, type-erased: `()` for commands and events,
/// `Q::Output` for queries. Middleware may inspect it with `downcast_ref`.
pub type Reply = Box<dyn Any + Send>;

/// A handler with its middleware, as a type-erased tower service. Layers
/// given to [`DispatcherBuilder::layer`] wrap services of this type.
///
/// The chain is built once and shared: cloning a `HandlerService` is a
/// reference-count increment, whatever the depth of the chain, and a call
/// boxes one future per layer.
#[derive(Clone)]
pub struct HandlerService {
    inner: Arc<dyn ErasedService>,
}

impl fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerService").finish_non_exhaustive()
    }
}

impl HandlerService {
    /// Erases `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Envelope, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(service),
        }
    }

    /// Runs the chain on `envelope`; the service is always ready.
    pub(crate) fn dispatch(&self, envelope: Envelope) -> BoxFuture<'static, Result<Reply, Error>> {
        self.inner.call(envelope)
    }
}

impl Service<Envelope> for HandlerService {
    type Response = Reply;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Each call clones the wrapped service and waits for it to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, envelope: Envelope) -> Self::Future {
        self.inner.call(envelope)
    }
}

/// A service shared behind an `Arc`: called through `&self` by calling a
/// clone, the way tower services are shared.
trait ErasedService: Send + Sync {
    fn call(&self, envelope: Envelope) -> BoxFuture<'static, Result<Reply, Error>>;
}

impl<S> ErasedService for S
where
    S: Service<Envelope, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, envelope: Envelope) -> BoxFuture<'static, Result<Reply, Error>> {
        Box::pin(self.clone().oneshot(envelope))
    }
}

/// Which kind of message an [`Envelope`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A [`Command`].
    Command,
    /// A [`Query`].
    Query,
    /// An [`Event`].
    Event,
}

impl MessageKind {
    /// `"command"`, `"query"` or `"event"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Query => "query",
            Self::Event => "event",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message on its way to one handler, as middleware sees it.
///
/// The [`MessageContext`] of the dispatch is current while middleware and
/// handler run: read it with [`MessageContext::current`].
pub struct Envelope {
    kind: MessageKind,
    name: &'static str,
    handler: Arc<str>,
    message: Box<dyn ErasedMessage>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Command, query or event.
    #[must_use]
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message's name (see [`Command::name`]).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The name of the handler it is going to: its type name, or
    /// `"<Message> handler"` for a closure.
    #[must_use]
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The handler's name, shared (no copy), for middleware that outlives
    /// the envelope.
    pub(crate) fn handler_shared(&self) -> Arc<str> {
        Arc::clone(&self.handler)
    }

    /// The message, if it is a `T`.
    #[must_use]
    pub fn message<T: 'static>(&self) -> Option<&T> {
        self.message.as_any().downcast_ref()
    }

    /// Runs the message's own `validate`.
    ///
    /// # Errors
    /// Whatever the message's `validate` returns.
    pub fn validate(&self) -> Result<(), Error> {
        self.message.validate()
    }

    fn into_message<T: 'static>(self) -> Result<T, Error> {
        let name = self.name;
        self.message
            .into_any()
            .downcast::<T>()
            .map(|m| *m)
            .map_err(|_| {
                Error::internal(format!("dispatcher routed `{name}` to the wrong handler"))
            })
    }
}

trait ErasedMessage: Send {
    fn validate(&self) -> Result<(), Error>;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

struct Payload<M> {
    message: M,
    validate: fn(&M) -> Result<(), Error>,
}

impl<M: Send + 'static> ErasedMessage for Payload<M> {
    fn validate(&self) -> Result<(), Error> {
        (self.validate)(&self.message)
    }
    fn as_any(&self) -> &dyn Any {
        &self.message
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.message)
    }
}

/// The rest of the middleware chain, handed to a [`from_fn`](super::middleware::from_fn)
/// middleware.
#[derive(Clone)]
pub struct Next {
    pub(crate) inner: HandlerService,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// Passes the envelope on to the next middleware or the handler.
    ///
    /// # Errors
    /// Whatever the rest of the chain returns.
    pub async fn run(self, envelope: Envelope) -> Result<Reply, Error> {
        self.inner.dispatch(envelope).await
    }
}

/// A configuration mistake found while building a [`Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatcherError {
    /// A command or query got a second handler.
    #[error("{kind} `{message}` already has a handler; a {kind} is handled by exactly one handler")]
    DuplicateHandler {
        /// Command or query.
        kind: MessageKind,
        /// The message's name.
        message: &'static str,
    },
}

type LayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

struct Route {
    service: HandlerService,
    handler: Arc<str>,
}

/// A handler's name: its type name, or `"<Message> handler"` for closures,
/// whose type names (`{{closure}}`) say nothing.
fn handler_name<H>(message: &str) -> Arc<str> {
    let name = short_type_name::<H>();
    if name.contains("{{closure}}") {
        Arc::from(format!("{message} handler"))
    } else {
        Arc::from(name)
    }
}

impl Route {
    fn new<F, Fut>(handler: Arc<str>, call: F) -> Self
    where
        F: Fn(Envelope) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        Self {
            service: HandlerService::new(service_fn(call)),
            handler,
        }
    }
}

/// Registers handlers and middleware, then builds a [`Dispatcher`].
#[derive(Default)]
pub struct DispatcherBuilder {
    layers: Vec<LayerFn>,
    commands: HashMap<TypeId, Route>,
    queries: HashMap<TypeId, Route>,
    events: HashMap<TypeId, Vec<Route>>,
    errors: Vec<DispatcherError>,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("layers", &self.layers.len())
            .field("commands", &self.commands.len())
            .field("queries", &self.queries.len())
            .field("events", &self.events.len())
            .finish()
    }
}

impl DispatcherBuilder {
    /// No handlers, no middleware.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a middleware layer around every handler.
    ///
    /// The first layer added is the outermost: it sees the envelope first and
    /// the result last, like [`tower::ServiceBuilder`].
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service:
            Service<Envelope, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as Service<Envelope>>::Future: Send + 'static,
    {
        self.add_layer(layer);
        self
    }

    /// [`DispatcherBuilder::layer`] for a builder behind `&mut`.
    pub fn add_layer<L>(&mut self, layer: L) -> &mut Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service:
            Service<Envelope, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as Service<Envelope>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            HandlerService::new(layer.layer(inner))
        }));
        self
    }

    /// Registers the handler of command `C`.
    #[must_use]
    pub fn command<C: Command, H: CommandHandler<C>>(mut self, handler: H) -> Self {
        self.add_command(handler);
        self
    }

    /// [`DispatcherBuilder::command`] for a builder behind `&mut`.
    pub fn add_command<C: Command, H: CommandHandler<C>>(&mut self, handler: H) -> &mut Self {
        let handler = Arc::new(handler);
        let route = Route::new(handler_name::<H>(C::name()), move |envelope: Envelope| {
            let handler = Arc::clone(&handler);
            async move {
                let command = envelope.into_message::<C>()?;
                handler.handle(command).await?;
                Ok(Box::new(()) as Reply)
            }
        });
        if self.commands.insert(TypeId::of::<C>(), route).is_some() {
            self.errors.push(DispatcherError::DuplicateHandler {
                kind: MessageKind::Command,
                message: C::name(),
            });
        }
        self
    }

    /// Registers the handler of query `Q`.
    #[must_use]
    pub fn query<Q: Query, H: QueryHandler<Q>>(mut self, handler: H) -> Self {
        self.add_query(handler);
        self
    }

    /// [`DispatcherBuilder::query`] for a builder behind `&mut`.
    pub fn add_query<Q: Query, H: QueryHandler<Q>>(&mut self, handler: H) -> &mut Self {
        let handler = Arc::new(handler);
        let route = Route::new(handler_name::<H>(Q::name()), move |envelope: Envelope| {
            let handler = Arc::clone(&handler);
            async move {
                let query = envelope.into_message::<Q>()?;
                let output = handler.handle(query).await?;
                Ok(Box::new(output) as Reply)
            }
        });
        if self.queries.insert(TypeId::of::<Q>(), route).is_some() {
            self.errors.push(DispatcherError::DuplicateHandler {
                kind: MessageKind::Query,
                message: Q::name(),
            });
        }
        self
    }

    /// Subscribes a handler to event `E`; an event may have any number.
    #[must_use]
    pub fn event<E: Event, H: EventHandler<E>>(mut self, handler: H) -> Self {
        self.add_event(handler);
        self
    }

    /// [`DispatcherBuilder::event`] for a builder behind `&mut`.
    pub fn add_event<E: Event, H: EventHandler<E>>(&mut self, handler: H) -> &mut Self {
        let handler = Arc::new(handler);
        let route = Route::new(handler_name::<H>(E::name()), move |envelope: Envelope| {
            let handler = Arc::clone(&handler);
            async move {
                let event = envelope.into_message::<E>()?;
                handler.handle(event).await?;
                Ok(Box::new(()) as Reply)
            }
        });
        self.events
            .entry(TypeId::of::<E>())
            .or_default()
            .push(route);
        self
    }

    /// Wraps every handler in the middleware and freezes the routes.
    ///
    /// # Errors
    /// [`DispatcherError::DuplicateHandler`] when a command or query got two
    /// handlers.
    pub fn build(self) -> Result<Dispatcher, DispatcherError> {
        let dispatcher = Dispatcher::unbuilt();
        self.build_into(&dispatcher)?;
        Ok(dispatcher)
    }

    /// Builds into a dispatcher handed out before the build (the service puts
    /// one in [`Resources`](crate::Resources) before plug-ins initialise, so
    /// handlers can capture it to dispatch further messages).
    pub(crate) fn build_into(self, target: &Dispatcher) -> Result<(), DispatcherError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let wrap = |route: Route| Route {
            service: self
                .layers
                .iter()
                .rev()
                .fold(route.service, |inner, layer| layer(inner)),
            handler: route.handler,
        };
        let commands = self
            .commands
            .into_iter()
            .map(|(k, r)| (k, wrap(r)))
            .collect();
        let queries = self
            .queries
            .into_iter()
            .map(|(k, r)| (k, wrap(r)))
            .collect();
        let events = self
            .events
            .into_iter()
            .map(|(k, routes)| (k, routes.into_iter().map(wrap).collect()))
            .collect();
        // A fresh dispatcher is only ever built once.
        let _ = target.routes.set(Routes {
            commands,
            queries,
            events,
        });
        Ok(())
    }
}

struct Routes {
    commands: HashMap<TypeId, Route>,
    queries: HashMap<TypeId, Route>,
    events: HashMap<TypeId, Vec<Route>>,
}

/// Sends commands and queries to their handler and publishes events to every
/// subscriber, through the middleware. Cheap to clone.
///
/// Each dispatch runs in the current [`MessageContext`], or in a new root
/// context when there is none.
///
/// In a service, the dispatcher is a resource from the start: a plug-in can
/// take it (`ctx.resource::<Dispatcher>()`) during `init` and capture it in a
/// handler that dispatches further messages. Dispatching before the service
/// has finished building fails with `dispatch.not_ready`.
#[derive(Clone)]
pub struct Dispatcher {
    routes: Arc<OnceLock<Routes>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Dispatcher");
        match self.routes.get() {
            Some(routes) => s
                .field("commands", &routes.commands.len())
                .field("queries", &routes.queries.len())
                .field("events", &routes.events.len())
                .finish(),
            None => s.field("built", &false).finish(),
        }
    }
}

impl Dispatcher {
    /// A builder with no handlers and no middleware.
    #[must_use]
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::new()
    }

    pub(crate) fn unbuilt() -> Self {
        Self {
            routes: Arc::new(OnceLock::new()),
        }
    }

    fn routes(&self) -> Result<&Routes, Error> {
        self.routes.get().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Unavailable,
                "dispatch.not_ready",
                "the dispatcher is used before the service finished building",
            )
        })
    }

    /// Whether command `C` has a handler.
    #[must_use]
    pub fn handles_command<C: Command>(&self) -> bool {
        self.routes()
            .is_ok_and(|r| r.commands.contains_key(&TypeId::of::<C>()))
    }

    /// Whether query `Q` has a handler.
    #[must_use]
    pub fn handles_query<Q: Query>(&self) -> bool {
        self.routes()
            .is_ok_and(|r| r.queries.contains_key(&TypeId::of::<Q>()))
    }

    /// The number of handlers subscribed to event `E`.
    #[must_use]
    pub fn event_handlers<E: Event>(&self) -> usize {
        self.routes()
            .map_or(0, |r| r.events.get(&TypeId::of::<E>()).map_or(0, Vec::len))
    }

    /// Sends `command` to its handler.
    ///
    /// # Errors
    /// The handler's or a middleware's error, or an internal error with code
    /// `dispatch.no_handler` when `C` has no handler.
    pub async fn send<C: Command>(&self, command: C) -> Result<(), Error> {
        let Some(route) = self.routes()?.commands.get(&TypeId::of::<C>()) else {
            return Err(no_handler(MessageKind::Command, C::name()));
        };
        let envelope = envelope(MessageKind::Command, C::name(), route, command, C::validate);
        in_context(route.service.dispatch(envelope)).await?;
        Ok(())
    }

    /// Asks `query` of its handler.
    ///
    /// # Errors
    /// The handler's or a middleware's error, or `dispatch.no_handler`.
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, Error> {
        let Some(route) = self.routes()?.queries.get(&TypeId::of::<Q>()) else {
            return Err(no_handler(MessageKind::Query, Q::name()));
        };
        let envelope = envelope(MessageKind::Query, Q::name(), route, query, Q::validate);
        let reply = in_context(route.service.dispatch(envelope)).await?;
        reply.downcast::<Q::Output>().map(|o| *o).map_err(|_| {
            Error::internal(format!(
                "a middleware replaced the reply of query `{}`",
                Q::name()
            ))
        })
    }

    /// Delivers `event` to every subscribed handler, concurrently.
    ///
    /// An event with no subscribers is not an error. Every handler runs even
    /// when another fails.
    ///
    /// # Errors
    /// When one handler fails, its error. When several fail, an error of the
    /// first failure's kind with code `dispatch.event_handlers_failed` whose
    /// message names each failed handler and its error.
    pub async fn publish<E: Event>(&self, event: E) -> Result<(), Error> {
        let Some(routes) = self.routes()?.events.get(&TypeId::of::<E>()) else {
            return Ok(());
        };
        // One handler, the common case: no clone, no joining.
        if let [route] = routes.as_slice() {
            let envelope = envelope(MessageKind::Event, E::name(), route, event, E::validate);
            return in_context(route.service.dispatch(envelope))
                .await
                .map(|_| ());
        }
        let calls = routes.iter().map(|route| {
            let envelope = envelope(
                MessageKind::Event,
                E::name(),
                route,
                event.clone(),
                E::validate,
            );
            let call = route.service.dispatch(envelope);
            async move { (&route.handler, call.await) }
        });
        let results = in_context(join_all(calls)).await;
        let mut failures: Vec<(&Arc<str>, Error)> = results
            .into_iter()
            .filter_map(|(handler, result)| result.err().map(|e| (handler, e)))
            .collect();
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0).1),
            n => {
                let kind = failures[0].1.kind();
                let detail: Vec<String> = failures
                    .iter()
                    .map(|(handler, error)| format!("{handler}: {error}"))
                    .collect();
                Err(Error::new(
                    kind,
                    "dispatch.event_handlers_failed",
                    format!(
                        "{n} of {} handlers of event `{}` failed: {}",
                        routes.len(),
                        E::name(),
                        detail.join("; ")
                    ),
                ))
            }
        }
    }
}

fn envelope<M: Send + 'static>(
    kind: MessageKind,
    name: &'static str,
    route: &Route,
    message: M,
    validate: fn(&M) -> Result<(), Error>,
) -> Envelope {
    Envelope {
        kind,
        name,
        handler: Arc::clone(&route.handler),
        message: Box::new(Payload { message, validate }),
    }
}

fn no_handler(kind: MessageKind, name: &str) -> Error {
    Error::new(
        crate::ErrorKind::Internal,
        "dispatch.no_handler",
        format!("no handler is registered for {kind} `{name}`"),
    )
}

/// Runs `future` in the current message context, or a new root one.
async fn in_context<F: Future>(future: F) -> F::Output {
    if MessageContext::with_current(|c| c.is_some()) {
        future.await
    } else {
        MessageContext::new().scope(future).await
    }
}
