//! Log lines: human or JSON, with service, trace and correlation fields, and a
//! filter that can change at runtime.

use std::fmt;
use std::sync::Arc;

use mamey_core::MessageContext;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The subscriber below the OpenTelemetry layer.
pub(crate) type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
/// The OpenTelemetry layer, absent (and free) when tracing is off. It is not
/// behind a reload layer: those hide the layer from the span extensions API
/// (`OpenTelemetrySpanExt`), which propagation needs.
pub(crate) type OtelSlot = Option<OpenTelemetryLayer<Filtered, SdkTracer>>;
/// The subscriber user layers and the formatter sit on.
pub type Base = Layered<OtelSlot, Filtered>;

/// A layer of the application's own, composed into mamey's subscriber.
pub type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// Who is logging: written on every line.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceFields {
    pub(crate) service: String,
    pub(crate) instance_id: String,
    pub(crate) version: String,
}

/// Changes the log filter of a running process.
///
/// ```
/// # fn demo(level: &mamey_observability::LogLevel) -> Result<(), mamey_observability::LogLevelError> {
/// level.set("info,my_crate::orders=debug")?;
/// assert_eq!(level.current(), "info,my_crate::orders=debug");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLevel")
            .field("current", &self.current())
            .finish()
    }
}

/// A log filter that could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogLevelError {
    /// The directive is not valid `RUST_LOG` syntax.
    #[error("invalid log filter `{directive}`: {reason}")]
    Invalid {
        /// What was given.
        directive: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The subscriber that owns the filter is gone.
    #[error("the log subscriber is gone")]
    Gone,
}

impl LogLevel {
    /// Replaces the filter, e.g. `"debug"` or `"info,sqlx=warn"`.
    ///
    /// # Errors
    /// [`LogLevelError::Invalid`] for a malformed directive; the old filter
    /// stays.
    pub fn set(&self, directive: &str) -> Result<(), LogLevelError> {
        let filter = parse_filter(directive)?;
        self.handle.reload(filter).map_err(|_| LogLevelError::Gone)
    }

    /// The filter in force.
    #[must_use]
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }
}

pub(crate) fn parse_filter(directive: &str) -> Result<EnvFilter, LogLevelError> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(directive)
        .map_err(|e| LogLevelError::Invalid {
            directive: directive.to_owned(),
            reason: e.to_string(),
        })
}

/// How lines are written, decided once per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    Human { ansi: bool },
    Json,
    Off,
}

/// Builds the subscriber: filter → OpenTelemetry → formatter → user layers.
pub(crate) fn build_subscriber<W>(
    filter: EnvFilter,
    tracer: Option<SdkTracer>,
    lines: Lines,
    fields: ServiceFields,
    writer: W,
    user_layers: Vec<BoxedLayer>,
) -> (impl Subscriber + Send + Sync + 'static, LogLevel)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, filter_handle) = reload::Layer::new(filter);
    let otel: OtelSlot = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let fields = Arc::new(fields);
    let mut layers: Vec<BoxedLayer> = Vec::with_capacity(user_layers.len() + 1);
    match lines {
        Lines::Json => layers.push(Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines { fields })
                .with_writer(writer),
        )),
        Lines::Human { ansi } => layers.push(Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(DefaultFields::new())
                .event_format(HumanLines { ansi })
                .with_ansi(ansi)
                .with_writer(writer),
        )),
        Lines::Off => {}
    }
    layers.extend(user_layers);
    let subscriber = Registry::default().with(filter).with(otel).with(layers);
    let level = LogLevel {
        handle: filter_handle,
    };
    (subscriber, level)
}

/// Trace and span ids of the active OpenTelemetry span, if it is sampled or
/// came from a caller.
fn trace_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// JSON lines: `timestamp`, `level`, `target`, `message`, the event's
/// fields, `span` and the fields of the spans in scope, service fields,
/// `trace_id`/`span_id`, `correlation_id`/`message_id`.
struct JsonLines {
    fields: Arc<ServiceFields>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut visitor = JsonVisitor(&mut line);
        event.record(&mut visitor);

        if let Some(scope) = ctx.event_scope() {
            let mut spans = Map::new();
            let mut innermost = None;
            for span in scope.from_root() {
                innermost = Some(span.name());
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    spans.extend(map);
                }
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::String(name.to_owned()));
            }
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Object(spans));
            }
        }

        let f = &self.fields;
        line.insert("service".into(), Value::String(f.service.clone()));
        line.insert("instance_id".into(), Value::String(f.instance_id.clone()));
        line.insert("version".into(), Value::String(f.version.clone()));
        if let Some((trace_id, span_id)) = trace_ids() {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        MessageContext::with_current(|mc| {
            if let Some(mc) = mc {
                line.insert(
                    "correlation_id".into(),
                    Value::String(mc.correlation_id.clone()),
                );
                line.insert("message_id".into(), Value::String(mc.message_id.clone()));
            }
        });
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

/// `2026-01-01T00:00:00.000000Z  INFO target: message k=v span{fields} trace_id=… correlation_id=…`
struct HumanLines {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for HumanLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let meta = event.metadata();
        let level = *meta.level();
        let colour = match level {
            tracing::Level::ERROR => "\x1b[31m",
            tracing::Level::WARN => "\x1b[33m",
            tracing::Level::INFO => "\x1b[32m",
            tracing::Level::DEBUG => "\x1b[34m",
            tracing::Level::TRACE => "\x1b[35m",
        };
        if self.ansi {
            write!(writer, " {colour}{level:>5}\x1b[0m {}: ", meta.target())?;
        } else {
            write!(writer, " {level:>5} {}: ", meta.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, " {}", span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
            }
        }
        if let Some((trace_id, _)) = trace_ids() {
            write!(writer, " trace_id={trace_id}")?;
        }
        MessageContext::with_current(|mc| match mc {
            Some(mc) => write!(writer, " correlation_id={}", mc.correlation_id),
            None => Ok(()),
        })?;
        writeln!(writer)
    }
}
