//! Handler middleware: tower layers over [`HandlerService`].
//!
//! The built-in layers are [`TracingLayer`] (a span per dispatch),
//! [`LoggingLayer`] (one event per outcome), [`ValidationLayer`] (runs the
//! message's `validate` before the handler) and [`MetricsLayer`] (reports
//! kind, name, outcome and duration to a [`HandlerMetrics`] sink). Write your
//! own with [`from_fn`]:
//!
//! ```
//! use mamey_core::cqrs::middleware::from_fn;
//! use mamey_core::cqrs::{Dispatcher, Envelope, Next};
//!
//! let audit = from_fn(|envelope: Envelope, next: Next| async move {
//!     println!("handling {} {}", envelope.kind(), envelope.name());
//!     next.run(envelope).await
//! });
//! let dispatcher = Dispatcher::builder().layer(audit).build();
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::Instrument;

use super::{Envelope, HandlerService, MessageKind, Next, Reply};
use crate::{Error, ErrorKind, MessageContext};

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
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        HandlerService::new(FnService {
            f: self.f.clone(),
            inner,
        })
    }
}

/// The service a [`FnLayer`] makes: the function with the rest of the chain.
#[derive(Clone)]
struct FnService<F> {
    f: F,
    inner: HandlerService,
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

/// Opens a `tracing` span per dispatch, named `handle` with fields
/// `message.kind`, `message.name`, `message.id`, `correlation_id` and
/// `handler`, so every log line a handler writes carries them. A failure on
/// the service's side (internal, unavailable) marks the span as an error
/// (`otel.status_code = "ERROR"`); a caller's mistake (invalid input, not
/// found, …) does not, following OpenTelemetry's server-span convention.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer;

impl Layer<HandlerService> for TracingLayer {
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        from_fn(|envelope: Envelope, next: Next| {
            let span = MessageContext::with_current(|ctx| {
                let (id, correlation) = ctx.map_or(("", ""), |c| {
                    (c.message_id.as_str(), c.correlation_id.as_str())
                });
                tracing::info_span!(
                    "handle",
                    message.kind = envelope.kind().as_str(),
                    message.name = envelope.name(),
                    message.id = id,
                    correlation_id = correlation,
                    handler = envelope.handler(),
                    otel.status_code = tracing::field::Empty,
                    otel.status_description = tracing::field::Empty,
                )
            });
            async move {
                let result = next.run(envelope).instrument(span.clone()).await;
                if let Err(error) = &result
                    && matches!(error.kind(), ErrorKind::Internal | ErrorKind::Unavailable)
                {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_description", error.code());
                }
                result
            }
        })
        .layer(inner)
    }
}

/// Logs the outcome of every dispatch: `debug` on success, `warn` for
/// caller errors (invalid input, not found, …), `error` for internal and
/// unavailable failures — with the duration.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingLayer;

impl Layer<HandlerService> for LoggingLayer {
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        from_fn(|envelope: Envelope, next: Next| async move {
            let (kind, name) = (envelope.kind(), envelope.name());
            let started = Instant::now();
            let result = next.run(envelope).await;
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            match &result {
                Ok(_) => tracing::debug!(%kind, name, elapsed_us, "handled"),
                Err(e) if matches!(e.kind(), ErrorKind::Internal | ErrorKind::Unavailable) => {
                    tracing::error!(%kind, name, elapsed_us, error = %e, "handler failed");
                }
                Err(e) => tracing::warn!(%kind, name, elapsed_us, error = %e, "handler rejected"),
            }
            result
        })
        .layer(inner)
    }
}

/// Runs the message's `validate` (see [`Command::validate`](super::Command::validate))
/// and returns its error without calling the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationLayer;

impl Layer<HandlerService> for ValidationLayer {
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        from_fn(|envelope: Envelope, next: Next| async move {
            envelope.validate()?;
            next.run(envelope).await
        })
        .layer(inner)
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
    /// How long middleware below this layer and the handler took.
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

/// Reports every dispatch to a [`HandlerMetrics`] sink.
#[derive(Clone)]
pub struct MetricsLayer {
    sink: Arc<dyn HandlerMetrics>,
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// Reports to `sink`.
    pub fn new(sink: impl HandlerMetrics) -> Self {
        Self {
            sink: Arc::new(sink),
        }
    }
}

impl Layer<HandlerService> for MetricsLayer {
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        let sink = Arc::clone(&self.sink);
        from_fn(move |envelope: Envelope, next: Next| {
            let sink = Arc::clone(&sink);
            async move {
                let (kind, name) = (envelope.kind(), envelope.name());
                let handler = envelope.handler_shared();
                let started = Instant::now();
                let result = next.run(envelope).await;
                sink.record(&HandlerOutcome {
                    kind,
                    name,
                    handler: &handler,
                    error: result.as_ref().err().map(Error::kind),
                    duration: started.elapsed(),
                });
                result
            }
        })
        .layer(inner)
    }
}
