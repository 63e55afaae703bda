//! Carrying trace context and mamey's correlation ids across process
//! boundaries: W3C `traceparent`/`tracestate`, W3C `baggage`, and
//! `x-correlation-id`, `x-request-id`, `x-causation-id`.
//!
//! Transports call [`inject`] on outgoing headers and [`extract`] on
//! incoming ones, through the small [`Carrier`] trait implemented for
//! [`http::HeaderMap`], string maps, tonic metadata (feature `grpc`) and AMQP
//! field tables (feature `amqp`).
//!
//! ```
//! use mamey_core::MessageContext;
//! use mamey_observability::propagation::{extract, inject_context};
//!
//! // Sending side: `inject(&mut headers)` does this with the current contexts.
//! let sent = MessageContext::new().with_correlation_id("order-42");
//! let mut headers = http::HeaderMap::new();
//! inject_context(&sent, &opentelemetry::Context::current(), &mut headers);
//!
//! // Receiving side.
//! let received = extract(&headers);
//! assert_eq!(received.context.correlation_id, "order-42");
//! assert_eq!(received.context.causation_id.as_deref(), Some(sent.message_id.as_str()));
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use mamey_core::{MessageContext, TraceContext};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The OpenTelemetry context type, re-exported so transports need no direct
/// dependency on `opentelemetry`.
pub use opentelemetry::Context as OtelContext;

/// Header carrying the correlation id.
pub const CORRELATION_ID: &str = "x-correlation-id";
/// Header carrying the id of this request or message.
pub const REQUEST_ID: &str = "x-request-id";
/// Header in which Convey's API gateway sends its correlation context as
/// JSON (see [`mamey_core::correlation`]).
pub const CORRELATION_CONTEXT: &str = "correlation-context";
/// The largest `correlation-context` header read, in bytes; a larger one
/// is ignored.
pub const MAX_CORRELATION_CONTEXT: usize = 8 * 1024;
/// Header carrying the id of the message that caused this one.
pub const CAUSATION_ID: &str = "x-causation-id";

/// Somewhere headers can be read from and written to.
pub trait Carrier {
    /// The value of `key` (lower-case), if present and text.
    fn get(&self, key: &str) -> Option<Cow<'_, str>>;
    /// Sets `key` to `value`, replacing what was there.
    fn set(&mut self, key: &str, value: String);
}

/// The headers every inbound request is read for, parsed once: looking a
/// header up by `&str` parses and lower-cases the name on each call.
static KNOWN_HEADERS: [http::HeaderName; 7] = [
    http::HeaderName::from_static("traceparent"),
    http::HeaderName::from_static("tracestate"),
    http::HeaderName::from_static("baggage"),
    http::HeaderName::from_static(REQUEST_ID),
    http::HeaderName::from_static(CORRELATION_ID),
    http::HeaderName::from_static(CAUSATION_ID),
    http::HeaderName::from_static(CORRELATION_CONTEXT),
];

impl Carrier for http::HeaderMap {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        let value = match KNOWN_HEADERS.iter().find(|name| name.as_str() == key) {
            Some(name) => http::HeaderMap::get(self, name),
            None => http::HeaderMap::get(self, key),
        };
        value.and_then(|v| v.to_str().ok()).map(Cow::Borrowed)
    }
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.insert(name, value);
        }
    }
}

impl Carrier for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, key).map(|v| Cow::Borrowed(v.as_str()))
    }
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

impl Carrier for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        HashMap::get(self, key).map(|v| Cow::Borrowed(v.as_str()))
    }
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

#[cfg(feature = "grpc")]
impl Carrier for tonic::metadata::MetadataMap {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        tonic::metadata::MetadataMap::get(self, key)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    }
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
            value.parse(),
        ) {
            self.insert(key, value);
        }
    }
}

#[cfg(feature = "amqp")]
impl Carrier for amq_protocol_types::FieldTable {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        use amq_protocol_types::AMQPValue;
        match self.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
            AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
            _ => None,
        }
    }
    fn set(&mut self, key: &str, value: String) {
        self.insert(
            key.into(),
            amq_protocol_types::AMQPValue::LongString(value.into()),
        );
    }
}

struct AsInjector<'a, C: ?Sized>(&'a mut C);

impl<C: Carrier + ?Sized> Injector for AsInjector<'_, C> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

struct AsExtractor<'a, C: ?Sized>(&'a C);

impl<C: Carrier + ?Sized> Extractor for AsExtractor<'_, C> {
    fn get(&self, key: &str) -> Option<&str> {
        // The extractor API lends `&str`; carriers that own decoded values
        // (AMQP tables) are read through `get_owned` below instead.
        match self.0.get(key)? {
            Cow::Borrowed(s) => Some(s),
            Cow::Owned(_) => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Reads the W3C headers into an owned map first when the carrier cannot
/// lend them (e.g. AMQP long strings are bytes).
fn w3c_headers<C: Carrier + ?Sized>(carrier: &C) -> BTreeMap<String, String> {
    ["traceparent", "tracestate", "baggage"]
        .into_iter()
        .filter_map(|k| carrier.get(k).map(|v| (k.to_owned(), v.into_owned())))
        .collect()
}

/// W3C trace context, then baggage — without a composite's allocations on
/// every message.
struct W3c;

impl W3c {
    fn inject(otel: &OtelContext, injector: &mut dyn Injector) {
        TraceContextPropagator::new().inject_context(otel, injector);
        BaggagePropagator::new().inject_context(otel, injector);
    }

    fn extract(extractor: &dyn Extractor) -> OtelContext {
        let otel = TraceContextPropagator::new().extract(extractor);
        BaggagePropagator::new().extract_with_context(&otel, extractor)
    }
}

/// Writes the current trace context (the active span) and the current
/// [`MessageContext`]'s ids into `carrier`.
///
/// Outside a message context only the trace headers are written.
pub fn inject<C: Carrier + ?Sized>(carrier: &mut C) {
    let otel = opentelemetry::Context::current();
    match MessageContext::current() {
        Some(ctx) => inject_context(&ctx, &otel, carrier),
        None => W3c::inject(&otel, &mut AsInjector(carrier)),
    }
}

/// Writes `otel`'s trace context and `ctx`'s ids into `carrier`. When `otel`
/// has no valid span (tracing disabled), the trace context `ctx` arrived with
/// is passed on unchanged, so a trace is not broken by a service that does
/// not record it.
///
/// The receiver's work is caused by this one: `x-causation-id` is set to
/// `ctx.message_id`, and `x-correlation-id` to `ctx.correlation_id`.
pub fn inject_context<C: Carrier + ?Sized>(
    ctx: &MessageContext,
    otel: &opentelemetry::Context,
    carrier: &mut C,
) {
    if otel.span().span_context().is_valid() {
        W3c::inject(otel, &mut AsInjector(carrier));
    } else if let Some(trace) = &ctx.trace {
        carrier.set("traceparent", trace.traceparent.clone());
        if let Some(state) = &trace.tracestate {
            carrier.set("tracestate", state.clone());
        }
    }
    carrier.set(CORRELATION_ID, ctx.correlation_id.clone());
    carrier.set(CAUSATION_ID, ctx.message_id.clone());
}

/// What [`extract`] read from a carrier.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The context for the work that starts here: a new message id (or the
    /// caller's `x-request-id`), the caller's correlation id (or the new
    /// message id), causation id and trace context.
    pub context: MessageContext,
    /// The remote span context and baggage, for
    /// [`Extracted::set_parent`] or other OpenTelemetry instrumentation.
    pub otel: opentelemetry::Context,
}

impl Extracted {
    /// Makes `span` a child of the remote span, so the trace continues.
    ///
    /// Create `span` inside [`MessageContext::scope`] of
    /// [`Extracted::context`]: the plug-in's head sampler reads the caller's
    /// sampling decision from the current context when the span is created.
    pub fn set_parent(&self, span: &tracing::Span) {
        continue_trace(span, &self.otel);
    }
}

/// Makes `span` a child of the remote span in `otel`, if there is one (see
/// [`Extracted::set_parent`]).
pub fn continue_trace(span: &tracing::Span, otel: &OtelContext) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if otel.span().span_context().is_valid() {
        // Fails only when the span is already started elsewhere, or is not
        // recorded (unsampled); then nothing is to be continued.
        let _ = span.set_parent(otel.clone());
    }
}

/// Reads trace context and ids from `carrier`.
pub fn extract<C: Carrier + ?Sized>(carrier: &C) -> Extracted {
    let (trace, otel, baggage) = extract_trace(carrier);
    let message_id = carrier
        .get(REQUEST_ID)
        .map(Cow::into_owned)
        .filter(|id| valid_id(id))
        .unwrap_or_else(mamey_core::new_id);
    // Convey's gateway sends its correlation context as JSON: its
    // correlation id and unmapped fields are taken (the ids' own headers
    // win); its `user` never is — a header anyone can send proves no
    // identity, the caller's token does.
    let convey = carrier
        .get(CORRELATION_CONTEXT)
        .filter(|json| json.len() <= MAX_CORRELATION_CONTEXT)
        .and_then(|json| mamey_core::correlation::read(&json).ok());
    let correlation_id = carrier
        .get(CORRELATION_ID)
        .map(Cow::into_owned)
        .filter(|id| valid_id(id))
        .or_else(|| {
            convey
                .as_ref()
                .map(|c| c.correlation_id.clone())
                .filter(|id| valid_id(id))
        })
        .unwrap_or_else(|| message_id.clone());
    let causation_id = carrier
        .get(CAUSATION_ID)
        .map(Cow::into_owned)
        .filter(|id| valid_id(id));
    let mut headers = BTreeMap::new();
    if let Some(baggage) = baggage {
        headers.insert("baggage".to_owned(), baggage);
    }
    let context = MessageContext {
        message_id,
        correlation_id,
        causation_id,
        identity: None,
        trace,
        headers,
        passthrough: convey.map(|c| c.passthrough).unwrap_or_default(),
    };
    Extracted { context, otel }
}

/// Reads only the W3C headers: the trace context to pass on (when
/// `traceparent` is well-formed), the OpenTelemetry context for a parent
/// span, and the raw `baggage`. For transports that carry the ids their own
/// way (AMQP's `message_context` header).
pub fn extract_trace<C: Carrier + ?Sized>(
    carrier: &C,
) -> (Option<TraceContext>, OtelContext, Option<String>) {
    let owned = w3c_headers(carrier);
    // Without trace headers both propagators answer the current context.
    let otel = if owned.is_empty() {
        OtelContext::current()
    } else {
        W3c::extract(&AsExtractor(&owned))
    };
    // Passed on verbatim later, so only well-formed values are kept.
    let trace = owned
        .get("traceparent")
        .filter(|tp| valid_traceparent(tp))
        .map(|tp| TraceContext {
            traceparent: tp.clone(),
            tracestate: owned
                .get("tracestate")
                .filter(|ts| ts.len() <= 512 && ts.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .cloned(),
        });
    (trace, otel, owned.get("baggage").cloned())
}

/// `version-traceid-parentid-flags` as W3C Trace Context defines it:
/// `00-` + 32 + `-` + 16 + `-` + 2 lower-case hex digits, ids not all zero.
fn valid_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// Ids come from outside: keep them short and printable so they cannot
/// flood logs or break header encodings.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_convey_correlation_context_header_gives_ids_and_fields_but_no_identity() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CORRELATION_CONTEXT,
            http::HeaderValue::from_static(
                r#"{"correlationId":"c-7","resourceId":"r-1","user":{"id":"admin","isAuthenticated":true,"role":"admin"}}"#,
            ),
        );
        let extracted = extract(&headers);
        assert_eq!(extracted.context.correlation_id, "c-7");
        assert_eq!(extracted.context.passthrough["resourceId"], "r-1");
        assert_eq!(extracted.context.identity, None);
        // The id's own header wins; junk is ignored.
        headers.insert(CORRELATION_ID, http::HeaderValue::from_static("c-8"));
        assert_eq!(extract(&headers).context.correlation_id, "c-8");
        let mut junk = http::HeaderMap::new();
        junk.insert(
            CORRELATION_CONTEXT,
            http::HeaderValue::from_static("{not json"),
        );
        let extracted = extract(&junk);
        assert_eq!(
            extracted.context.correlation_id,
            extracted.context.message_id
        );
        assert!(extracted.context.passthrough.is_empty());
    }

    #[test]
    fn ids_round_trip_through_a_header_map() {
        let ctx = MessageContext::new().with_correlation_id("corr-1");
        let mut headers = http::HeaderMap::new();
        inject_context(&ctx, &opentelemetry::Context::new(), &mut headers);
        let got = extract(&headers);
        assert_eq!(got.context.correlation_id, "corr-1");
        assert_eq!(
            got.context.causation_id.as_deref(),
            Some(ctx.message_id.as_str())
        );
        assert_ne!(got.context.message_id, ctx.message_id);
    }

    #[test]
    fn a_request_id_becomes_the_message_id_and_default_correlation() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("req-7"));
        let got = extract(&headers);
        assert_eq!(got.context.message_id, "req-7");
        assert_eq!(got.context.correlation_id, "req-7");
    }

    #[test]
    fn hostile_ids_are_replaced() {
        let mut headers = BTreeMap::new();
        headers.insert(CORRELATION_ID.to_owned(), "x".repeat(10_000));
        headers.insert(REQUEST_ID.to_owned(), "has space".to_owned());
        let got = extract(&headers);
        assert!(got.context.correlation_id.len() <= 128);
        assert_ne!(got.context.message_id, "has space");
    }

    #[test]
    fn malformed_trace_headers_are_dropped() {
        for bad in [
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let mut incoming = BTreeMap::new();
            incoming.insert("traceparent".to_owned(), bad.to_owned());
            assert!(extract(&incoming).context.trace.is_none(), "{bad}");
        }
    }

    #[test]
    fn a_received_traceparent_is_passed_on_when_not_recording() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut incoming = BTreeMap::new();
        incoming.insert("traceparent".to_owned(), traceparent.to_owned());
        let got = extract(&incoming);
        assert_eq!(
            got.context.trace.as_ref().map(|t| t.traceparent.as_str()),
            Some(traceparent)
        );
        let mut outgoing = BTreeMap::new();
        inject_context(&got.context, &opentelemetry::Context::new(), &mut outgoing);
        assert_eq!(outgoing["traceparent"], traceparent);
    }
}
