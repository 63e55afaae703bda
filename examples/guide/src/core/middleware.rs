//! Middleware: metrics sinks, tower layers, `from_fn`.

use mamey_core::InitContext;

// ANCHOR: metrics
use std::time::Duration;

use mamey_core::cqrs::middleware::{HandlerMetrics, HandlerOutcome};

/// Logs every dispatch that takes longer than `threshold`.
#[derive(Debug)]
pub struct SlowHandlers {
    threshold: Duration,
}

impl HandlerMetrics for SlowHandlers {
    fn record(&self, outcome: &HandlerOutcome<'_>) {
        if outcome.duration > self.threshold {
            tracing::warn!(
                kind = %outcome.kind,
                name = outcome.name,
                handler = outcome.handler,
                failed = outcome.error.is_some(),
                duration = ?outcome.duration,
                "slow handler"
            );
        }
    }
}

/// Adds the sink, in a plug-in's `init`.
pub fn report_slow_handlers(ctx: &mut InitContext<'_>) {
    ctx.dispatcher().metrics(SlowHandlers {
        threshold: Duration::from_millis(500),
    });
}
// ANCHOR_END: metrics

// ANCHOR: layers
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;

/// Bounds every handler, in a plug-in's `init`.
pub fn bound_handlers(ctx: &mut InitContext<'_>) {
    ctx.dispatcher()
        .layer(TimeoutLayer::new(Duration::from_secs(5))) // outermost
        .layer(LoadShedLayer::new()) // refuse at once when …
        .layer(ConcurrencyLimitLayer::new(64)); // … 64 calls are running
}
// ANCHOR_END: layers

// ANCHOR: from_fn
use mamey_core::cqrs::middleware::from_fn;
use mamey_core::cqrs::{Envelope, MessageKind, Next};
use mamey_core::{Error, MessageContext};

/// Commands need an authenticated caller.
pub fn require_caller(ctx: &mut InitContext<'_>) {
    let require_caller = from_fn(|envelope: Envelope, next: Next| async move {
        let signed_in =
            MessageContext::with_current(|ctx| ctx.is_some_and(|c| c.identity.is_some()));
        if envelope.kind() == MessageKind::Command && !signed_in {
            return Err(Error::unauthorized("auth.required", "sign in first"));
        }
        next.run(envelope).await
    });

    ctx.dispatcher().layer(require_caller);
}
// ANCHOR_END: from_fn
