//! Head sampling: the decision whether a trace is recorded is made when its
//! first span is created, before the OpenTelemetry layer builds any span
//! data — so unsampled work costs that layer nothing.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use mamey_core::MessageContext;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::SamplerKind;

/// The per-layer filter in front of the OpenTelemetry layer.
///
/// - A span created inside another span follows it: recorded when its
///   parent is.
/// - A first span follows the caller's decision when the current
///   [`MessageContext`] carries a `traceparent` and the sampler is
///   `parent_ratio`; otherwise `always`, `never`, or a draw at `ratio`.
/// - Events never reach the layer (logs carry the trace id instead).
///
/// Transports must therefore create their server/consumer span *inside* the
/// message context they extracted, so the caller's decision is seen.
#[derive(Debug, Clone, Copy)]
pub struct HeadSampler {
    pub(crate) kind: SamplerKind,
    pub(crate) ratio: f64,
}

impl HeadSampler {
    fn first_span(&self) -> bool {
        let remote = MessageContext::with_current(|ctx| {
            ctx.and_then(|c| c.trace.as_ref())
                .and_then(|t| t.traceparent.rsplit('-').next())
                .and_then(|flags| u8::from_str_radix(flags, 16).ok())
                .map(|flags| flags & 1 == 1)
        });
        match (self.kind, remote) {
            (SamplerKind::Always, _) => true,
            (SamplerKind::Never, _) => false,
            (SamplerKind::ParentRatio, Some(sampled)) => sampled,
            (SamplerKind::Ratio | SamplerKind::ParentRatio, _) => draw() < self.ratio,
        }
    }
}

impl<S> Filter<S> for HeadSampler
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !meta.is_span() {
            return false;
        }
        match cx.current_span().id() {
            // `cx.span` sees only spans this filter enabled.
            Some(parent) => cx.span(parent).is_some(),
            None => self.first_span(),
        }
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the standard library's random hasher keys.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    hasher.finish() | 1
}

/// A uniform draw in [0, 1) (xorshift64*; statistical quality is all a
/// sampling decision needs).
fn draw() -> f64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        #[allow(clippy::cast_precision_loss)] // 53 bits fit an f64 exactly
        let value = bits as f64 / (1_u64 << 53) as f64;
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough() {
        let n = 100_000;
        let below = (0..n).filter(|_| draw() < 0.1).count();
        let share = f64::from(u32::try_from(below).unwrap()) / f64::from(n);
        assert!((0.09..0.11).contains(&share), "{share}");
    }

    #[tokio::test]
    async fn a_first_span_follows_the_callers_flag_under_parent_ratio() {
        let sampler = HeadSampler {
            kind: SamplerKind::ParentRatio,
            ratio: 0.0,
        };
        let sampled = MessageContext::new().with_trace(mamey_core::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        });
        assert!(sampled.scope(async { sampler.first_span() }).await);
        let unsampled = MessageContext::new().with_trace(mamey_core::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
            tracestate: None,
        });
        assert!(!unsampled.scope(async { sampler.first_span() }).await);
        assert!(!sampler.first_span(), "ratio 0 without a caller");
    }
}
