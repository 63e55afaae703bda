//! Log lines: human or JSON, with service, trace and correlation fields, and a
//! filter that can change at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mamey_core::ServiceScope;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

mod human;
mod json;

use human::{HumanFields, HumanLines};
use json::{JsonLines, JsonMembers};

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::Ordering;
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
