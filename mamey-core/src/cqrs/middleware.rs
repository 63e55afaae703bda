//! Dispatcher middleware: ordinary tower layers over [`HandlerService`].
//!
//! Every dispatch already gets, built in and in this order from the
//! outside: a `handle` tracing span, the outcome logged, the outcome
//! reported to the [`HandlerMetrics`] sinks, then the layers added with
//! [`DispatcherBuilder::layer`](super::DispatcherBuilder::layer) (the first
//! added is the outermost), then the message's own `validate`, then the
//! handler. With no layers added, a dispatch boxes the handler's future and
//! nothing else.
//!
//! Any tower layer whose service takes an [`Envelope`], answers a [`Reply`]
//! and fails with an error convertible to [`BoxError`](crate::BoxError) fits: tower's
//! `TimeoutLayer`, `ConcurrencyLimitLayer`, `LoadShedLayer`, or your own.
//! Their errors become mamey errors in one place (see [`HandlerService::new`]).
//! Write a small one with [`from_fn`]:
//!
//! ```
//! use mamey_core::cqrs::middleware::from_fn;
//! use mamey_core::cqrs::{Dispatcher, Envelope, Next};
//! use std::time::Duration;
//!
//! let audit = from_fn(|envelope: Envelope, next: Next| async move {
//!     println!("handling {} {}", envelope.kind(), envelope.name());
//!     next.run(envelope).await
//! });
//! let dispatcher = Dispatcher::builder()
//!     .layer(audit)
//!     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
//!     .build()?;
//! # Ok::<(), mamey_core::cqrs::DispatcherError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{Envelope, HandlerService, MessageKind, Next, Reply};
use crate::{Error, ErrorKind};

/// A middleware made from an async function of the envelope and the rest of
/// the chain. See the [module docs](self).
pub fn from_fn<F, Fut>(f: F) -> FnLayer<F>
where
    F: Fn(Envelope, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    FnLayer { f }
}

/// The layer [`from_fn`] returns.
#[derive(Clone)]
pub struct FnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnLayer").finish_non_exhaustive()
    }
}

impl<F, Fut> Layer<HandlerService> for FnLayer<F>
where
    F: Fn(Envelope, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    type Service = FnService<F>;

    fn layer(&self, inner: HandlerService) -> FnService<F> {
        FnService {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service a [`FnLayer`] makes: the function with the rest of the chain.
#[derive(Clone)]
pub struct FnService<F> {
    f: F,
    inner: HandlerService,
}

impl<F> fmt::Debug for FnService<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnService").finish_non_exhaustive()
    }
}

impl<F, Fut> Service<Envelope> for FnService<F>
where
    F: Fn(Envelope, Next) -> Fut,
    Fut: Future<Output = Result<Reply, Error>>,
{
    type Response = Reply;
    type Error = Error;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, envelope: Envelope) -> Fut {
        (self.f)(
            envelope,
            Next {
                inner: self.inner.clone(),
            },
        )
    }
}

/// One finished dispatch, as reported to [`HandlerMetrics`].
#[derive(Debug, Clone, Copy)]
pub struct HandlerOutcome<'a> {
    /// Command, query or event.
    pub kind: MessageKind,
    /// The message's name (bounded: one per message type).
    pub name: &'a str,
    /// The handler's name.
    pub handler: &'a str,
    /// `None` on success, else the error's kind.
    pub error: Option<ErrorKind>,
    /// How long the layers, validation and the handler took.
    pub duration: Duration,
}

/// A sink for handler RED metrics (rate, errors, duration); implemented by
/// the observability crate for Prometheus.
pub trait HandlerMetrics: Send + Sync + 'static {
    /// Records one finished dispatch.
    fn record(&self, outcome: &HandlerOutcome<'_>);
}

impl<T: HandlerMetrics> HandlerMetrics for Arc<T> {
    fn record(&self, outcome: &HandlerOutcome<'_>) {
        T::record(self, outcome);
    }
}
