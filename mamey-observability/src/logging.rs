//! Log lines: human or JSON, with service, trace and correlation fields, and a
//! filter that can change at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mamey_core::{MessageContext, ServiceScope};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::fmt::format::Writer;
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
pub(crate) type OtelSlot = Option<
    tracing_subscriber::filter::Filtered<
        OpenTelemetryLayer<Filtered, SdkTracer>,
        crate::sampling::HeadSampler,
        Filtered,
    >,
>;
/// The subscriber user layers and the formatter sit on.
pub type Base = Layered<OtelSlot, Filtered>;

/// A layer of the application's own, composed into mamey's subscriber.
pub type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// Who is logging when no [`ServiceScope`] is current: the service that
/// built the subscriber. Work of a service runs in its scope, and a line
/// written there names that service instead, so services sharing the
/// process's subscriber keep their own names.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceFields {
    pub(crate) service: String,
    pub(crate) instance_id: String,
    pub(crate) version: String,
    /// Set once a second service shares the subscriber: from then on human
    /// lines name the service too (alone in a process, it goes without
    /// saying).
    pub(crate) shared: Arc<AtomicBool>,
}

impl ServiceFields {
    /// Calls `f` with the service, instance id and version of the line:
    /// the current scope's, else the subscriber's own.
    fn with_current<R>(&self, f: impl FnOnce(&str, &str, &str) -> R) -> R {
        ServiceScope::with_current(|scope| match scope {
            Some(scope) => f(scope.name(), scope.instance_id(), scope.version()),
            None => f(&self.service, &self.instance_id, &self.version),
        })
    }
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

    /// The filter in force, without the `lapin::returned_messages=error`
    /// mamey adds to a filter that does not name that target (see
    /// [`LoggingConfig`](crate::LoggingConfig)): what [`LogLevel::set`] was
    /// given, so that setting it again gives the same filter.
    #[must_use]
    pub fn current(&self) -> String {
        self.handle
            .with_current(|filter| {
                let shown = filter.to_string();
                // Statics (no commas inside) come first in the display, so
                // an item equal to the directive is that static.
                shown
                    .split(',')
                    .filter(|item| *item != QUIET_LAPIN_RETURNS)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    }
}

/// The target under which lapin (the RabbitMQ client) records a message the
/// broker returned (an unroutable `mandatory` publish) at WARN — the whole
/// message: every header, and the body as decimal bytes (a 1 MB body makes a
/// 5 MB line). mamey-messaging logs a return itself, without the payload.
const LAPIN_RETURNS: &str = "lapin::returned_messages";
/// Added to every filter that does not name [`LAPIN_RETURNS`].
const QUIET_LAPIN_RETURNS: &str = "lapin::returned_messages=error";

/// Parses a `RUST_LOG`-style filter, adding [`QUIET_LAPIN_RETURNS`] unless it
/// names [`LAPIN_RETURNS`] (or a target under it). Every filter mamey
/// installs comes through here: `logging.level` and `logging.targets`,
/// `RUST_LOG`, and [`LogLevel::set`].
pub(crate) fn parse_filter(directive: &str) -> Result<EnvFilter, LogLevelError> {
    let invalid = |directive: &str, e: &dyn std::fmt::Display| LogLevelError::Invalid {
        directive: directive.to_owned(),
        reason: e.to_string(),
    };
    let filter = EnvFilter::builder()
        .with_regex(false)
        .parse(directive)
        .map_err(|e| invalid(directive, &e))?;
    if names_target(directive, LAPIN_RETURNS) {
        return Ok(filter);
    }
    let quiet = QUIET_LAPIN_RETURNS
        .parse()
        .map_err(|e| invalid(QUIET_LAPIN_RETURNS, &e))?;
    Ok(filter.add_directive(quiet))
}

/// Whether a directive of `filter` is for `target` or a target under it
/// (`lapin=debug` is not: it is about all of lapin).
fn names_target(filter: &str, target: &str) -> bool {
    filter.split(',').any(|item| {
        let named = item.split(['[', '=']).next().unwrap_or_default().trim();
        named == target
            || named
                .strip_prefix(target)
                .is_some_and(|rest| rest.starts_with("::"))
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
    tracer: Option<(SdkTracer, crate::sampling::HeadSampler)>,
    code_location: bool,
    lines: Lines,
    fields: ServiceFields,
    writer: W,
    user_layers: Vec<BoxedLayer>,
) -> (impl Subscriber + Send + Sync + 'static, LogLevel)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, filter_handle) = reload::Layer::new(filter);
    // Thread ids, busy/idle timings and code locations cost allocations and
    // clock reads on every span, sampled or not; off by default.
    // The head sampler keeps unsampled traces from the layer altogether.
    let otel: OtelSlot = tracer.map(|(tracer, sampler)| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_location(code_location)
            .with_filter(sampler)
    });
    let fields = Arc::new(fields);
    let mut layers: Vec<BoxedLayer> = Vec::with_capacity(user_layers.len() + 1);
    match lines {
        Lines::Json => layers.push(Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonMembers)
                .event_format(JsonLines { fields })
                .with_writer(writer),
        )),
        Lines::Human { ansi } => layers.push(Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(HumanFields)
                .event_format(HumanLines { ansi, fields })
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

/// Trace and span ids of the active OpenTelemetry span when it is sampled:
/// only then does the id lead to a trace the collector has (unsampled work
/// is still tied together by `correlation_id`), and formatting ids for the
/// unsampled majority would cost every log line.
fn trace_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled())
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// JSON lines: `timestamp`, `level`, `target`, `message`, the event's
/// fields, `span` and the fields of the spans in scope, service fields,
/// `trace_id`/`span_id`, `correlation_id`/`message_id`. An event field
/// named like a member the line has (a `service` field naming the service
/// called, say) is written as `fields.{name}`, so no key appears twice.
///
/// Written straight into the line buffer with JSON escaping: no intermediate
/// maps, and span fields (already JSON members, from [`JsonMembers`]) are
/// spliced in as they are.
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
        let w = &mut writer;
        w.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut Writer::new(&mut *w))?;
        let meta = event.metadata();
        write!(w, "\",\"level\":\"{}\",\"target\":", meta.level())?;
        write_str(w, meta.target())?;
        // The members this line will have besides the event's fields: an
        // event field of the same name is written as `fields.{name}`.
        let ids = trace_ids();
        let taken = Members {
            line: true,
            spans: ctx.event_scope().is_some(),
            trace: ids.is_some(),
            context: MessageContext::with_current(|mc| mc.is_some()),
        };
        let mut visitor = JsonVisitor {
            writer: &mut *w,
            result: Ok(()),
            taken,
        };
        event.record(&mut visitor);
        visitor.result?;

        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            let mut first = true;
            for span in scope.from_root() {
                innermost = Some(span.name());
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                // `JsonMembers` stores `,"k":v,...`: splice the members.
                let Some(members) = fields.strip_prefix(',') else {
                    continue;
                };
                w.write_str(if first { ",\"spans\":{" } else { "," })?;
                w.write_str(members)?;
                first = false;
            }
            if !first {
                w.write_char('}')?;
            }
            if let Some(name) = innermost {
                w.write_str(",\"span\":")?;
                write_str(w, name)?;
            }
        }

        self.fields.with_current(|service, instance_id, version| {
            for (key, value) in [
                ("service", service),
                ("instance_id", instance_id),
                ("version", version),
            ] {
                write!(w, ",\"{key}\":")?;
                write_str(w, value)?;
            }
            Ok::<_, fmt::Error>(())
        })?;
        if let Some((trace_id, span_id)) = ids {
            write!(w, ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"")?;
        }
        MessageContext::with_current(|mc| match mc {
            Some(mc) => {
                w.write_str(",\"correlation_id\":")?;
                write_str(w, &mc.correlation_id)?;
                w.write_str(",\"message_id\":")?;
                write_str(w, &mc.message_id)
            }
            None => Ok(()),
        })?;
        w.write_str("}\n")
    }
}

/// Writes `text` as a JSON string.
fn write_str(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(text)?;
    w.write_char('"')
}

/// Escapes what is written through it for a JSON string body.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c.is_control() => "",
                _ => continue,
            };
            self.0.write_str(&text[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&text[start..])
    }
}

/// Span fields as JSON object members, each with a leading comma
/// (`,"k":v,"k2":v2`), written straight into the span's buffer when the span
/// is created or recorded — no map, no second pass when a line is written.
struct JsonMembers;

impl<'w> FormatFields<'w> for JsonMembers {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        // Span fields sit in their own object (`spans`): no name is taken.
        let mut visitor = JsonVisitor {
            writer: &mut writer,
            result: Ok(()),
            taken: Members::default(),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        self.format_fields(current.as_writer(), fields)
    }
}

struct JsonVisitor<'a, W: fmt::Write> {
    writer: &'a mut W,
    result: fmt::Result,
    /// The members this line has besides the event's fields.
    taken: Members,
}

/// Which members a JSON line has besides the event's own fields.
#[derive(Debug, Clone, Copy, Default)]
struct Members {
    /// `timestamp`, `level`, `target`, `service`, `instance_id`, `version`:
    /// every line's.
    line: bool,
    /// `spans`, `span`: inside a span.
    spans: bool,
    /// `trace_id`, `span_id`: in a sampled trace.
    trace: bool,
    /// `correlation_id`, `message_id`: in a message's context.
    context: bool,
}

impl Members {
    fn has(self, name: &str) -> bool {
        match name {
            "timestamp" | "level" | "target" | "service" | "instance_id" | "version" => self.line,
            "spans" | "span" => self.spans,
            "trace_id" | "span_id" => self.trace,
            "correlation_id" | "message_id" => self.context,
            _ => false,
        }
    }
}

impl<W: fmt::Write> JsonVisitor<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        if self.taken.has(name) {
            write!(self.writer, ",\"fields.{name}\":")
        } else {
            write!(self.writer, ",\"{name}\":")
        }
    }

    fn record(&mut self, field: &Field, write: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| write(self.writer));
        }
    }
}

impl<W: fmt::Write> Visit for JsonVisitor<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value:?}")?;
            w.write_char('"')
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, |w| write_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                write!(w, "\"{value}\"")
            }
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |w| write!(w, "{value}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value}")?;
            w.write_char('"')
        });
    }
}

/// `2026-01-01T00:00:00.000000Z  INFO target: message k=v span{fields} service=… trace_id=… correlation_id=…`
/// (`service` once several services share the subscriber).
struct HumanLines {
    ansi: bool,
    fields: Arc<ServiceFields>,
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
        if self.fields.shared.load(Ordering::Relaxed) {
            self.fields.with_current(|service, _, _| {
                writer.write_str(" service=")?;
                ControlEscaped(&mut writer).write_str(service)
            })?;
        }
        if let Some((trace_id, _)) = trace_ids() {
            write!(writer, " trace_id={trace_id}")?;
        }
        MessageContext::with_current(|mc| match mc {
            Some(mc) => {
                // Sent by callers: escaped like every other value.
                writer.write_str(" correlation_id=")?;
                ControlEscaped(&mut writer).write_str(&mc.correlation_id)
            }
            None => Ok(()),
        })?;
        writeln!(writer)
    }
}

/// Event and span fields for human lines: the message as is, then
/// ` key=value`, every value with its control characters escaped
/// ([`ControlEscaped`]), so text a caller sent cannot start a fake line,
/// move the cursor or make the log binary.
struct HumanFields;

impl<'w> FormatFields<'w> for HumanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = HumanVisitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = HumanVisitor {
            writer: &mut writer,
            result: Ok(()),
            first,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct HumanVisitor<'a, W: fmt::Write> {
    writer: &'a mut W,
    result: fmt::Result,
    first: bool,
}

impl<W: fmt::Write> Visit for HumanVisitor<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}")
                .and_then(|()| write!(ControlEscaped(&mut *self.writer), "{value:?}"))
        } else {
            write!(self.writer, "{separator}{}=", field.name())
                .and_then(|()| write!(ControlEscaped(&mut *self.writer), "{value:?}"))
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Strings as they are (no quotes), but escaped.
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// Escapes control characters of what is written through it: `\n`, `\r`,
/// `\t`, and `\u{..}` for the rest (NUL, ESC, …). Everything else passes
/// as it is.
struct ControlEscaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for ControlEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if !c.is_control() {
                continue;
            }
            self.0.write_str(&text[start..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    /// What `filter` lets through of a WARN from lapin's returned-messages
    /// target and one from another lapin target.
    fn shown(filter: &str) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || Sink(Arc::clone(&buffer))
        };
        let (subscriber, _) = build_subscriber(
            parse_filter(filter).unwrap(),
            None,
            false,
            Lines::Human { ansi: false },
            ServiceFields::default(),
            writer,
            Vec::new(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "lapin::returned_messages", "returned payload");
            tracing::warn!(target: "lapin::channels", "channel note");
        });
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lapins_record_of_returns_stays_below_error_unless_named() {
        for filter in [
            "info",
            "debug",
            "trace,lapin=trace",
            "warn,lapin::returned=warn",
        ] {
            let lines = shown(filter);
            assert!(!lines.contains("returned payload"), "{filter}: {lines}");
            assert!(lines.contains("channel note"), "{filter}: {lines}");
        }
        for filter in [
            "info,lapin::returned_messages=warn",
            "info,lapin::returned_messages",
            "lapin::returned_messages::inner=off,info",
        ] {
            assert!(names_target(filter, LAPIN_RETURNS), "{filter}");
        }
        assert!(shown("info,lapin::returned_messages=warn").contains("returned payload"));
    }

    #[test]
    fn human_lines_name_the_service_once_the_subscriber_is_shared() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || Sink(Arc::clone(&buffer))
        };
        let fields = ServiceFields {
            service: "owner".into(),
            ..ServiceFields::default()
        };
        let shared = Arc::clone(&fields.shared);
        let (subscriber, _) = build_subscriber(
            parse_filter("info").unwrap(),
            None,
            false,
            Lines::Human { ansi: false },
            fields,
            writer,
            Vec::new(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("alone");
            shared.store(true, Ordering::Relaxed);
            tracing::info!("owner's own");
            ServiceScope::new("guest", "guest-1", "1.0.0").sync_scope(|| tracing::info!("guest's"));
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let line = |message: &str| {
            text.lines()
                .find(|l| l.contains(message))
                .unwrap_or_else(|| panic!("{message}: {text}"))
                .to_owned()
        };
        assert!(!line("alone").contains("service="), "{text}");
        assert!(line("owner's own").ends_with(" service=owner"), "{text}");
        assert!(line("guest's").ends_with(" service=guest"), "{text}");
    }

    #[test]
    fn an_event_field_named_like_a_line_member_does_not_repeat_its_key() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || Sink(Arc::clone(&buffer))
        };
        let fields = ServiceFields {
            service: "gateway".into(),
            ..ServiceFields::default()
        };
        let (subscriber, _) = build_subscriber(
            parse_filter("info").unwrap(),
            None,
            false,
            Lines::Json,
            fields,
            writer,
            Vec::new(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(service = "boards", level = 3, "calling");
            tracing::info!(message_id = "m-1", "returned");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let line = text.lines().next().unwrap();
        assert_eq!(line.matches("\"service\":").count(), 1, "{line}");
        assert_eq!(line.matches("\"level\":").count(), 1, "{line}");
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["service"], "gateway", "{line}");
        assert_eq!(parsed["fields.service"], "boards", "{line}");
        assert_eq!(parsed["level"], "INFO", "{line}");
        assert_eq!(parsed["fields.level"], 3, "{line}");
        assert_eq!(parsed["message"], "calling", "{line}");
        // Outside a message's context the line has no `message_id` of its
        // own: the event's keeps its name.
        let returned: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(returned["message_id"], "m-1", "{text}");
    }

    #[test]
    fn the_current_filter_is_the_one_given() {
        let (_subscriber, level) = build_subscriber(
            parse_filter("info").unwrap(),
            None,
            false,
            Lines::Off,
            ServiceFields::default(),
            std::io::sink,
            Vec::new(),
        );
        assert_eq!(level.current(), "info");
        level.set("warn,noisy=error").unwrap();
        assert_eq!(level.current(), "noisy=error,warn");
        level.set("info,lapin::returned_messages=warn").unwrap();
        assert_eq!(level.current(), "lapin::returned_messages=warn,info");
    }
}
