//! What dispatcher middleware sees: the type-erased [`Envelope`], the
//! [`Reply`], and the [`HandlerService`] that tower layers wrap.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Service, ServiceExt};

use crate::{BoxError, Error, ErrorKind};

/// What a handler returns, type-erased: `()` for commands and events,
/// `Q::Output` for queries. Middleware may inspect it with `downcast_ref`.
pub type Reply = Box<dyn Any + Send>;

/// Which kind of message an [`Envelope`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A [`Command`](super::Command).
    Command,
    /// A [`Query`](super::Query).
    Query,
    /// An [`Event`](super::Event).
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
/// The [`MessageContext`](crate::MessageContext) of the dispatch is current
/// while middleware and handler run: read it with
/// [`MessageContext::current`](crate::MessageContext::current).
pub struct Envelope {
    kind: MessageKind,
    name: &'static str,
    handler: Arc<str>,
    message: Box<dyn Any + Send>,
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
    pub(crate) fn new<M: Send + 'static>(
        kind: MessageKind,
        name: &'static str,
        handler: Arc<str>,
        message: M,
    ) -> Self {
        Self {
            kind,
            name,
            handler,
            message: Box::new(message),
        }
    }

    /// Command, query or event.
    #[must_use]
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message's name (see [`Command::name`](super::Command::name)).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The name of the handler it is going to: its type or function name, or
    /// `"<Message> handler"` for a closure.
    #[must_use]
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The message, if it is a `T`.
    #[must_use]
    pub fn message<T: 'static>(&self) -> Option<&T> {
        self.message.downcast_ref()
    }

    pub(crate) fn into_message<T: 'static>(self) -> Result<T, Error> {
        let name = self.name;
        self.message.downcast::<T>().map(|m| *m).map_err(|_| {
            Error::internal(format!("dispatcher routed `{name}` to the wrong handler"))
        })
    }
}

/// A handler with the middleware inside it, as one type-erased tower
/// service: what [`DispatcherBuilder::layer`](super::DispatcherBuilder::layer)
/// layers wrap.
///
/// Each layer is erased once, when the dispatcher is built. Readiness
/// passes through (a `LoadShedLayer` sees the `ConcurrencyLimitLayer`
/// added after it), so, the tower way, each call works on its own clone of
/// the chain: a box per layer for the clone and one for its future.
#[derive(Clone)]
pub struct HandlerService {
    inner: BoxCloneSyncService<Envelope, Reply, Error>,
}

impl fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerService").finish_non_exhaustive()
    }
}

impl HandlerService {
    /// Erases `service`. Its errors become mamey [`Error`]s: an `Error`
    /// stays itself, tower's timeout is `dispatch.timeout` and tower's load
    /// shedding `dispatch.overloaded` (both [`ErrorKind::Unavailable`]),
    /// anything else is internal.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Envelope, Response = Reply> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(
                service.map_err(|error: S::Error| from_layer_error(error.into())),
            ),
        }
    }

    /// Runs the chain on `envelope`: waits for readiness, then calls.
    pub(crate) fn dispatch(&self, envelope: Envelope) -> Oneshot<Self, Envelope> {
        self.clone().oneshot(envelope)
    }
}

impl Service<Envelope> for HandlerService {
    type Response = Reply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Reply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, envelope: Envelope) -> Self::Future {
        self.inner.call(envelope)
    }
}

/// The one place where the errors of tower middleware become mamey errors.
pub(crate) fn from_layer_error(error: BoxError) -> Error {
    let error = match error.downcast::<Error>() {
        Ok(error) => return *error,
        Err(error) => error,
    };
    if error.is::<tower::timeout::error::Elapsed>() {
        return Error::new(
            ErrorKind::Unavailable,
            "dispatch.timeout",
            "the handler did not finish within the dispatcher's timeout",
        )
        .with_source(error);
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return Error::new(
            ErrorKind::Unavailable,
            "dispatch.overloaded",
            "the handler is at its concurrency limit; try again later",
        )
        .with_source(error);
    }
    Error::from_source(error)
}

/// The rest of the middleware chain, handed to a
/// [`from_fn`](super::middleware::from_fn) middleware.
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
