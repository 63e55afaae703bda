//! The in-process [`Dispatcher`] and its builder.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::call;
use tower::{Layer, Service, service_fn};
use tracing::Instrument;

use super::envelope::{Envelope, HandlerService, MessageKind, Reply};
use super::handler::{BoundHandler, Handler};
use super::middleware::{HandlerMetrics, HandlerOutcome};
use super::{Command, Event, Query, short_type_name};
use crate::{BoxError, Error, ErrorKind, MessageContext, MissingResource, Resources, ServiceScope};

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
    /// A handler takes a resource that is not registered.
    #[error(
        "the handler `{handler}` of {kind} `{message}` needs resource `{resource}`, which is not registered; add the plug-in that provides it, or provide it with `ServiceBuilder::resource`{}",
        hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    MissingResource {
        /// Command, query or event.
        kind: MessageKind,
        /// The message's name.
        message: &'static str,
        /// The handler's name.
        handler: String,
        /// The type of the missing resource.
        resource: &'static str,
        /// What the resource was needed for, when an extractor said.
        hint: Option<String>,
    },
}

type LayerFn = Box<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

/// Binds one registered handler into the route table.
/// `Sync` too, so that a plug-in's `&InitContext` (which holds the builder)
/// can be held across an `.await` in a `Send` future.
type BindFn = Box<
    dyn FnOnce(&mut Routes, &Resources, &[LayerFn]) -> Result<(), DispatcherError> + Send + Sync,
>;

/// Registers handlers and middleware, then builds a [`Dispatcher`].
///
/// Methods take and return `&mut Self`, so the same calls work on a fresh
/// builder and on the one a plug-in gets from
/// [`InitContext::dispatcher`](crate::InitContext::dispatcher):
///
/// ```
/// use mamey_core::cqrs::{Dispatcher, Event};
///
/// #[derive(Clone)]
/// struct Started;
/// impl Event for Started {}
///
/// let dispatcher = Dispatcher::builder()
///     .event(|_: Started| async { Ok(()) })
///     .build()?;
/// # Ok::<(), mamey_core::cqrs::DispatcherError>(())
/// ```
#[derive(Default)]
pub struct DispatcherBuilder {
    layers: Vec<LayerFn>,
    metrics: Vec<Arc<dyn HandlerMetrics>>,
    handlers: Vec<BindFn>,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("layers", &self.layers.len())
            .field("metrics", &self.metrics.len())
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

/// A handler's name: its type or function name, or `"<Message> handler"`
/// for closures, whose type names (`{{closure}}`) say nothing.
fn handler_name<H>(message: &str) -> Arc<str> {
    let name = short_type_name::<H>();
    if name.contains("{{closure}}") {
        Arc::from(format!("{message} handler"))
    } else {
        Arc::from(name)
    }
}

impl DispatcherBuilder {
    /// No handlers, no middleware.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tower layer around every handler. The first layer added is the
    /// outermost: it sees the envelope first and the result last, like
    /// [`tower::ServiceBuilder`]. See [`middleware`](super::middleware).
    pub fn layer<L>(&mut self, layer: L) -> &mut Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Envelope, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as Service<Envelope>>::Error: Into<BoxError>,
        <L::Service as Service<Envelope>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            HandlerService::new(layer.layer(inner))
        }));
        self
    }

    /// Reports every dispatch (kind, name, handler, outcome, duration) to
    /// `sink`; the observability plug-in adds its Prometheus sink here.
    pub fn metrics(&mut self, sink: impl HandlerMetrics) -> &mut Self {
        self.metrics.push(Arc::new(sink));
        self
    }

    /// Registers the handler of command `C`: an async function of the
    /// command and its [extractors](super::extract), or a
    /// [`CommandHandler`](super::CommandHandler).
    pub fn command<C, A, H>(&mut self, handler: H) -> &mut Self
    where
        C: Command,
        H: Handler<C, A, Output = ()>,
    {
        self.register::<C, (), A, H>(MessageKind::Command, C::name(), C::validate, handler)
    }

    /// Registers the handler of query `Q`.
    pub fn query<Q, A, H>(&mut self, handler: H) -> &mut Self
    where
        Q: Query,
        H: Handler<Q, A, Output = Q::Output>,
    {
        self.register::<Q, Q::Output, A, H>(MessageKind::Query, Q::name(), Q::validate, handler)
    }

    /// Subscribes a handler to event `E`; an event may have any number.
    pub fn event<E, A, H>(&mut self, handler: H) -> &mut Self
    where
        E: Event,
        H: Handler<E, A, Output = ()>,
    {
        self.register::<E, (), A, H>(MessageKind::Event, E::name(), E::validate, handler)
    }

    fn register<M, O, A, H>(
        &mut self,
        kind: MessageKind,
        message: &'static str,
        validate: fn(&M) -> Result<(), Error>,
        handler: H,
    ) -> &mut Self
    where
        M: Send + 'static,
        O: Send + 'static,
        H: Handler<M, A, Output = O>,
    {
        let name = handler_name::<H>(message);
        self.handlers
            .push(Box::new(move |routes, resources, layers| {
                let call = handler
                    .bind(resources)
                    .map_err(
                        |missing: MissingResource| DispatcherError::MissingResource {
                            kind,
                            message,
                            handler: name.to_string(),
                            resource: missing.type_name,
                            hint: missing.hint,
                        },
                    )?;
                let route = Route::new(kind, message, name, validate, call, layers);
                routes.insert(route)
            }));
        self
    }

    /// Builds a dispatcher whose handlers take no resources.
    ///
    /// # Errors
    /// [`DispatcherError::DuplicateHandler`] when a command or query got two
    /// handlers; [`DispatcherError::MissingResource`] when a handler takes a
    /// resource (use [`build_with`](Self::build_with)).
    pub fn build(&mut self) -> Result<Dispatcher, DispatcherError> {
        self.build_with(&Resources::new())
    }

    /// Builds the dispatcher, resolving the handlers'
    /// [`FromResources`](super::FromResources) arguments from `resources`,
    /// each once. The builder is left empty.
    ///
    /// # Errors
    /// [`DispatcherError::DuplicateHandler`] when a command or query got two
    /// handlers; [`DispatcherError::MissingResource`] naming the message,
    /// the handler and the resource when a handler takes one that is not in
    /// `resources`.
    pub fn build_with(&mut self, resources: &Resources) -> Result<Dispatcher, DispatcherError> {
        let dispatcher = Dispatcher::unbuilt();
        self.build_into(&dispatcher, resources, None)?;
        Ok(dispatcher)
    }

    /// Builds into a dispatcher handed out before the build (the service puts
    /// one in [`Resources`] before plug-ins initialise, so handlers can take
    /// it to dispatch further messages). Dispatches run in `scope`, the
    /// service's, whoever calls.
    pub(crate) fn build_into(
        &mut self,
        target: &Dispatcher,
        resources: &Resources,
        scope: Option<ServiceScope>,
    ) -> Result<(), DispatcherError> {
        let layers = std::mem::take(&mut self.layers);
        let mut routes = Routes {
            commands: RouteTable::default(),
            queries: RouteTable::default(),
            events: RouteTable::default(),
            metrics: std::mem::take(&mut self.metrics).into(),
            scope,
        };
        for bind in std::mem::take(&mut self.handlers) {
            bind(&mut routes, resources, &layers)?;
        }
        // A fresh dispatcher is only ever built once.
        let _ = target.routes.set(routes);
        Ok(())
    }
}

/// One handler with what runs around it.
struct Route<M, O> {
    kind: MessageKind,
    name: &'static str,
    handler: Arc<str>,
    validate: fn(&M) -> Result<(), Error>,
    call: BoundHandler<M, O>,
    /// The handler inside the added layers, when there are any.
    layered: Option<HandlerService>,
}

impl<M: Send + 'static, O: Send + 'static> Route<M, O> {
    fn new(
        kind: MessageKind,
        name: &'static str,
        handler: Arc<str>,
        validate: fn(&M) -> Result<(), Error>,
        call: BoundHandler<M, O>,
        layers: &[LayerFn],
    ) -> Self {
        let layered = (!layers.is_empty()).then(|| {
            let inner_call = call.clone();
            let innermost = HandlerService::new(service_fn(move |envelope: Envelope| {
                let call = inner_call.clone();
                async move {
                    let message = envelope.into_message::<M>()?;
                    validate(&message)?;
                    let output = call.call(message).await?;
                    Ok::<Reply, Error>(Box::new(output))
                }
            }));
            layers
                .iter()
                .rev()
                .fold(innermost, |inner, layer| layer(inner))
        });
        Self {
            kind,
            name,
            handler,
            validate,
            call,
            layered,
        }
    }

    /// The dispatch: span, then (timed) layers, validation and handler,
    /// then the outcome logged and reported.
    fn run<'a>(
        &'a self,
        message: M,
        metrics: &'a [Arc<dyn HandlerMetrics>],
    ) -> impl Future<Output = Result<O, Error>> + Send + 'a {
        let span = MessageContext::with_current(|ctx| {
            let (id, correlation) = ctx.map_or(("", ""), |c| {
                (c.message_id.as_str(), c.correlation_id.as_str())
            });
            tracing::info_span!(
                "handle",
                message.kind = self.kind.as_str(),
                message.name = self.name,
                message.id = id,
                correlation_id = correlation,
                handler = &*self.handler,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            )
        });
        async move {
            let started = Instant::now();
            let result = self.handle(message).await;
            // Skipped as handled before (an inbox said so): not a failure.
            let failure = result
                .as_ref()
                .err()
                .filter(|e| !call::is_already_handled(e));
            self.report(failure, started.elapsed(), metrics);
            result
        }
        .instrument(span)
    }

    async fn handle(&self, message: M) -> Result<O, Error> {
        let Some(chain) = &self.layered else {
            (self.validate)(&message)?;
            return self.call.call(message).await;
        };
        let envelope = Envelope::new(self.kind, self.name, Arc::clone(&self.handler), message);
        let reply = chain.dispatch(envelope).await?;
        reply.downcast::<O>().map(|o| *o).map_err(|_| {
            Error::internal(format!(
                "a middleware replaced the reply of {} `{}`",
                self.kind, self.name
            ))
        })
    }

    /// Logs the outcome (`debug` on success, `warn` for the caller's
    /// mistakes, `error` for the service's failures), marks the span of a
    /// failure on the service's side as an error (OpenTelemetry's
    /// server-span convention) and reports to the metric sinks.
    fn report(
        &self,
        error: Option<&Error>,
        elapsed: Duration,
        metrics: &[Arc<dyn HandlerMetrics>],
    ) {
        let (kind, name) = (self.kind, self.name);
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match error {
            None => tracing::debug!(%kind, name, elapsed_us, "handled"),
            Some(e) if matches!(e.kind(), ErrorKind::Internal | ErrorKind::Unavailable) => {
                let span = tracing::Span::current();
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", e.code());
                tracing::error!(%kind, name, elapsed_us, error = %e, "handler failed");
            }
            Some(e) => tracing::warn!(%kind, name, elapsed_us, error = %e, "handler rejected"),
        }
        for sink in metrics {
            sink.record(&HandlerOutcome {
                kind,
                name,
                handler: &self.handler,
                error: error.map(Error::kind),
                duration: elapsed,
            });
        }
    }
}

/// Routes keyed by message type. A `TypeId` is already a hash, so the
/// table uses it as is instead of hashing it again.
type RouteTable = HashMap<TypeId, Box<dyn Any + Send + Sync>, BuildHasherDefault<TypeIdHasher>>;

/// Passes a `TypeId`'s own hash through.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for a `TypeId` (it writes one integer); fold anyway.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write_u128(&mut self, n: u128) {
        // The low half of a `TypeId` is as random as the whole.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.0 = n as u64;
        }
    }
}

/// The routes, each `Route<M, O>` behind `Any` and keyed by `M`'s type.
struct Routes {
    commands: RouteTable,
    queries: RouteTable,
    /// `Vec<Route<E, ()>>` per event type.
    events: RouteTable,
    metrics: Box<[Arc<dyn HandlerMetrics>]>,
    /// The service whose handlers these are: its logs and metrics even when
    /// another service of the process dispatches.
    scope: Option<ServiceScope>,
}

impl Routes {
    fn insert<M: Send + 'static, O: Send + 'static>(
        &mut self,
        route: Route<M, O>,
    ) -> Result<(), DispatcherError> {
        let id = TypeId::of::<M>();
        let (kind, message) = (route.kind, route.name);
        let table = match kind {
            MessageKind::Command => &mut self.commands,
            MessageKind::Query => &mut self.queries,
            MessageKind::Event => {
                let subscribers = self
                    .events
                    .entry(id)
                    .or_insert_with(|| Box::new(Vec::<Route<M, O>>::new()));
                if let Some(subscribers) = subscribers.downcast_mut::<Vec<Route<M, O>>>() {
                    subscribers.push(route);
                }
                return Ok(());
            }
        };
        if table.contains_key(&id) {
            return Err(DispatcherError::DuplicateHandler { kind, message });
        }
        table.insert(id, Box::new(route));
        Ok(())
    }

    fn route<M: 'static, O: 'static>(table: &RouteTable) -> Option<&Route<M, O>> {
        table.get(&TypeId::of::<M>())?.downcast_ref()
    }

    fn subscribers<E: 'static>(&self) -> &[Route<E, ()>] {
        self.events
            .get(&TypeId::of::<E>())
            .and_then(|s| s.downcast_ref::<Vec<Route<E, ()>>>())
            .map_or(&[], Vec::as_slice)
    }
}

/// Sends commands and queries to their handler and publishes events to every
/// subscriber, through the middleware. Cheap to clone.
///
/// Each dispatch runs in the current [`MessageContext`], or in a new root
/// context when there is none.
///
/// In a service, the dispatcher is a resource from the start: a handler can
/// take it (`Res(dispatcher): Res<Dispatcher>`) to dispatch further
/// messages. Dispatching before the service has finished building fails
/// with `dispatch.not_ready`.
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
                ErrorKind::Unavailable,
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
        self.routes().map_or(0, |r| r.subscribers::<E>().len())
    }

    /// Sends `command` to its handler.
    ///
    /// # Errors
    /// The handler's, an extractor's or a middleware's error, or an internal
    /// error with code `dispatch.no_handler` when `C` has no handler.
    pub async fn send<C: Command>(&self, command: C) -> Result<(), Error> {
        let routes = self.routes()?;
        let Some(route) = Routes::route::<C, ()>(&routes.commands) else {
            return Err(no_handler(MessageKind::Command, C::name()));
        };
        in_service(
            routes.scope.as_ref(),
            in_context(route.run(command, &routes.metrics)),
        )
        .await
        .or_else(call::handled_before)
    }

    /// Asks `query` of its handler.
    ///
    /// # Errors
    /// The handler's, an extractor's or a middleware's error, or
    /// `dispatch.no_handler`.
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, Error> {
        let routes = self.routes()?;
        let Some(route) = Routes::route::<Q, Q::Output>(&routes.queries) else {
            return Err(no_handler(MessageKind::Query, Q::name()));
        };
        in_service(
            routes.scope.as_ref(),
            in_context(route.run(query, &routes.metrics)),
        )
        .await
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
        let routes = self.routes()?;
        let subscribers = routes.subscribers::<E>();
        let (last, others) = match subscribers {
            [] => return Ok(()),
            // One handler, the common case: no clone, no joining.
            [route] => {
                return in_service(
                    routes.scope.as_ref(),
                    in_context(route.run(event, &routes.metrics)),
                )
                .await
                .or_else(call::handled_before);
            }
            [others @ .., last] => (last, others),
        };
        let mut deliveries: Vec<(&Route<E, ()>, E)> =
            others.iter().map(|route| (route, event.clone())).collect();
        deliveries.push((last, event));
        let calls = deliveries.into_iter().map(|(route, event)| async move {
            (&route.handler, route.run(event, &routes.metrics).await)
        });
        let results = in_service(routes.scope.as_ref(), in_context(join_all(calls))).await;
        let mut failures: Vec<(&Arc<str>, Error)> = results
            .into_iter()
            .filter_map(|(handler, result)| result.err().map(|e| (handler, e)))
            .filter(|(_, e)| !call::is_already_handled(e))
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
                        subscribers.len(),
                        E::name(),
                        detail.join("; ")
                    ),
                ))
            }
        }
    }
}

fn no_handler(kind: MessageKind, name: &str) -> Error {
    Error::new(
        ErrorKind::Internal,
        "dispatch.no_handler",
        format!("no handler is registered for {kind} `{name}`"),
    )
}

/// Runs `future` in the dispatcher's service scope, when it has one.
async fn in_service<F: Future>(scope: Option<&ServiceScope>, future: F) -> F::Output {
    match scope {
        Some(scope) => scope.clone().scope(future).await,
        None => future.await,
    }
}

/// Runs `future` in the current message context, or a new root one.
async fn in_context<F: Future>(future: F) -> F::Output {
    if MessageContext::with_current(|c| c.is_some()) {
        future.await
    } else {
        MessageContext::new().scope(future).await
    }
}
