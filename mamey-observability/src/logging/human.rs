//! Human log lines: `time LEVEL target: message k=v span{…} …`.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mamey_core::MessageContext;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::{ServiceFields, trace_ids};

/// `2026-01-01T00:00:00.000000Z  INFO target: message k=v span{fields} service=… trace_id=… correlation_id=…`
/// (`service` once several services share the subscriber).
pub(super) struct HumanLines {
    pub(super) ansi: bool,
    pub(super) fields: Arc<ServiceFields>,
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
pub(super) struct HumanFields;

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
