//! JSON log lines: one object per event, written straight into the line
//! buffer.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use mamey_core::MessageContext;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::{ServiceFields, trace_ids};

/// JSON lines: `timestamp`, `level`, `target`, `message`, the event's
/// fields, `span` and the fields of the spans in scope, service fields,
/// `trace_id`/`span_id`, `correlation_id`/`message_id`. An event field
/// named like a member the line has (a `service` field naming the service
/// called, say) is written as `fields.{name}`, so no key appears twice.
///
/// Written straight into the line buffer with JSON escaping: no intermediate
/// maps, and span fields (already JSON members, from [`JsonMembers`]) are
/// spliced in as they are.
pub(super) struct JsonLines {
    pub(super) fields: Arc<ServiceFields>,
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
pub(super) struct JsonMembers;

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
