//! The JSON shape of a log line, written straight into the line's buffer.
//!
//! One line per event: `{"timestamp":…,"level":…,<the event's fields>,"target":…,"span":{<the
//! request span's fields>,"name":…}}`, the shape of `tracing-subscriber`'s JSON format with a
//! flattened event and the current span. That format keeps a span's fields as a JSON object in a
//! string and parses it again for every event in the span and for every field recorded later (the
//! request's account); here a span's fields are kept as the members of an object without its
//! braces, so an event copies them and a later field is appended, with nothing parsed.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A span's fields as the members of a JSON object: `"a":1,"b":"x"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut members = Members::new(&mut current.fields, first);
        fields.record(&mut members);
        members.result
    }
}

/// One JSON object per event (see the module's comment).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

impl<S> FormatEvent<S, SpanFields> for JsonLine
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate (some dependencies use it) carry their level and target in
        // fields; this gives them back as metadata.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut members = Members::new(&mut writer, false);
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<SpanFields>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes fields as JSON object members, each preceded by a comma unless it is the first.
struct Members<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Members<'a, W> {
    fn new(out: &'a mut W, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Writes `"name":` and then the value with `value`, unless an earlier write failed.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        // Fields the `log` crate's events carry as metadata (see `normalized_metadata`).
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            write_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities; like serde_json, those are written as null.
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value` as a JSON string.
fn write_string<W: Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string (RFC 8259 §7).
struct Escaped<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The lines `emit` logs, each parsed as JSON (a line that is not JSON fails the test).
    fn lines(emit: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(SpanFields)
            .event_format(JsonLine)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    #[test]
    fn an_event_in_a_span_carries_the_span_fields_and_those_recorded_later() {
        let lines = lines(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "req_1",
                method = %"GET",
                account_id = tracing::field::Empty,
            );
            span.in_scope(|| tracing::info!(status = 200u16, "before the account"));
            span.record("account_id", "acct_1");
            span.in_scope(|| {
                tracing::info!(
                    status = 404u16,
                    latency_ms = 1.5,
                    ok = false,
                    "request answered"
                );
            });
            tracing::warn!(delta = -3i64, "outside");
        });
        assert_eq!(lines.len(), 3);
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "before the account");
        assert_eq!(first["status"], 200);
        assert_eq!(
            first["span"],
            json!({"request_id": "req_1", "method": "GET", "name": "request"})
        );
        assert!(first["target"].as_str().unwrap().contains("log_format"));
        let timestamp = first["timestamp"].as_str().unwrap();
        assert!(
            timestamp.starts_with("20") && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        let answered = &lines[1];
        assert_eq!(answered["message"], "request answered");
        assert_eq!(answered["status"], 404);
        assert_eq!(answered["latency_ms"], 1.5);
        assert_eq!(answered["ok"], false);
        assert_eq!(
            answered["span"],
            json!({"request_id": "req_1", "method": "GET", "account_id": "acct_1", "name": "request"})
        );
        assert_eq!(lines[2]["level"], "WARN");
        assert_eq!(lines[2]["delta"], -3);
        assert!(lines[2].get("span").is_none());
    }

    #[test]
    fn strings_are_escaped_and_non_numbers_are_null() {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀 </script>";
        let lines = lines(|| {
            let span = tracing::info_span!("fields only added", first = tracing::field::Empty);
            span.record("first", awkward);
            span.in_scope(|| {
                tracing::error!(
                    text = awkward,
                    debug = ?awkward,
                    nan = f64::NAN,
                    infinite = f64::INFINITY,
                    "{awkward}"
                );
            });
        });
        let line = &lines[0];
        assert_eq!(line["message"], awkward);
        assert_eq!(line["text"], awkward);
        assert_eq!(line["debug"], format!("{awkward:?}"));
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["infinite"], Value::Null);
        assert_eq!(line["span"]["first"], awkward);
        assert_eq!(line["span"]["name"], "fields only added");
    }

    #[test]
    fn a_span_without_fields_still_names_itself() {
        let lines = lines(|| {
            tracing::info_span!("quiet").in_scope(|| tracing::debug!("hidden by the level"));
            tracing::info_span!("quiet").in_scope(|| tracing::info!("shown"));
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["span"], json!({"name": "quiet"}));
    }
}
