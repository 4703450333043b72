//! Logging setup: logfmt (exporter-toolkit's default) or one JSON object per line, to
//! standard error.
//!
//! Both formats are written here rather than by tracing-subscriber's own `fmt` output (which
//! is neither: `2024-… INFO message key=value`, coloured unless told otherwise) or its
//! `json` feature (a further crate, tracing-serde, for a dozen lines of code). One visitor
//! feeds both, so the two formats carry the same fields.

use crate::config::{LogFormat, LogSettings};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs to standard error as `settings` say. Colour only on a terminal, and not even there
/// when `NO_COLOR` is set (<https://no-color.org>): journald, `docker logs` and a redirected
/// file get plain text that `grep` can search.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    // Checked by the configuration already; a failure here would be a bug, still reported.
    let filter = EnvFilter::builder()
        .parse(&settings.level)
        .map_err(|e| format!("log filter {:?}: {e}", settings.level))?;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line::new(settings.format, colour))
        .try_init();
    Ok(())
}

/// Formats one event as one line.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    format: LogFormat,
    colour: bool,
}

impl Line {
    pub fn new(format: LogFormat, colour: bool) -> Self {
        Self {
            format,
            colour: colour && format == LogFormat::Logfmt,
        }
    }
}

/// A field's value: text, or a number or boolean that JSON can carry as such.
enum Value {
    Text(String),
    Bare(String),
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.pairs
                .push((field.name(), Value::Text(value.to_owned())));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here wrapped in DisplayValue, whose Debug is the Display text.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((field.name(), Value::Text(text)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pairs
            .push((field.name(), Value::Bare(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pairs
            .push((field.name(), Value::Bare(value.to_string())));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pairs
            .push((field.name(), Value::Bare(value.to_string())));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those stay text.
        let value = if value.is_finite() {
            Value::Bare(value.to_string())
        } else {
            Value::Text(value.to_string())
        };
        self.pairs.push((field.name(), value));
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A logfmt value: bare when it can be, else quoted with `\`, `"` and control characters
/// escaped, so that no value can start a new line or a forged `key=`.
fn logfmt_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

impl Line {
    /// The line for an event's level, time and fields, without the newline.
    fn render(&self, level: Level, time: &str, fields: &Fields) -> String {
        let mut out = String::with_capacity(128);
        let level = level_name(level);
        match self.format {
            LogFormat::Logfmt => {
                out.push_str("ts=");
                out.push_str(time);
                out.push_str(" level=");
                if self.colour {
                    let code = match level {
                        "error" => "31",
                        "warn" => "33",
                        "info" => "32",
                        _ => "34",
                    };
                    let _ = write!(out, "\x1b[{code}m{level}\x1b[0m");
                } else {
                    out.push_str(level);
                }
                out.push_str(" msg=");
                logfmt_value(&mut out, &fields.message);
                for (key, value) in &fields.pairs {
                    out.push(' ');
                    out.push_str(key);
                    out.push('=');
                    match value {
                        Value::Text(text) | Value::Bare(text) => logfmt_value(&mut out, text),
                    }
                }
            }
            LogFormat::Json => {
                let _ = write!(
                    out,
                    "{{\"ts\":{},\"level\":\"{level}\",\"msg\":{}",
                    json_string(time),
                    json_string(&fields.message)
                );
                for (key, value) in &fields.pairs {
                    let value = match value {
                        Value::Text(text) => json_string(text),
                        Value::Bare(raw) => raw.clone(),
                    };
                    let _ = write!(out, ",{}:{value}", json_string(key));
                }
                out.push('}');
            }
        }
        out
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{}",
            self.render(*event.metadata().level(), &time, &fields)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(Line::new(format, false))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    fn emit() {
        let address = "127.0.0.1:19100";
        tracing::info!(%address, tls = false, users = 2_u64, "serving metrics at http://{address}/metrics");
        tracing::warn!(error = "a \"quoted\"\nsecond line", "fetch failed");
    }

    #[test]
    fn logfmt_lines_are_key_value_pairs_with_values_quoted_when_needed() {
        let text = logged(LogFormat::Logfmt, emit);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ts=") && !text.contains('\x1b'),
            "{text}"
        );
        assert!(
            lines[0].ends_with(
                " level=info msg=\"serving metrics at http://127.0.0.1:19100/metrics\" address=127.0.0.1:19100 tls=false users=2"
            ),
            "{text}"
        );
        assert!(
            lines[1]
                .ends_with(r#" level=warn msg="fetch failed" error="a \"quoted\"\nsecond line""#),
            "{text}"
        );
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let text = logged(LogFormat::Json, emit);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(
            lines[0]["msg"],
            "serving metrics at http://127.0.0.1:19100/metrics"
        );
        assert_eq!(lines[0]["address"], "127.0.0.1:19100");
        assert_eq!(lines[0]["tls"], false);
        assert_eq!(lines[0]["users"], 2);
        assert_eq!(lines[1]["error"], "a \"quoted\"\nsecond line");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn colour_is_for_logfmt_on_a_terminal_only() {
        let fields = Fields {
            message: "m".into(),
            pairs: Vec::new(),
        };
        let coloured = Line::new(LogFormat::Logfmt, true).render(Level::INFO, "t", &fields);
        assert!(coloured.contains("\x1b[32minfo\x1b[0m"), "{coloured}");
        let json = Line::new(LogFormat::Json, true).render(Level::INFO, "t", &fields);
        assert!(!json.contains('\x1b'), "{json}");
    }
}
