//! Log output: human text, JSON lines or logfmt, with configured secrets redacted.
//!
//! Every record carries its time, level, target (the module), the shard that wrote it (or the
//! thread's name outside shards) and the message, then any structured fields the call site attached
//! (`log::warn!(server = name; "...")`), such as `server`, `session` or `request`.
//!
//! Secrets: every configured upstream header value (and the credential after an
//! `Authorization` scheme such as `Bearer `) is replaced by `[redacted]` wherever it would
//! appear in a message or a field, so an upstream error that echoes a header, or a debug
//! line that prints a configuration, never writes one.

use std::fmt::Write as _;

use log::kv::{Key, Value, VisitSource};
use log::Record;

use crate::config::logging::LogFormat;
use crate::config::Config;

/// The values never to write: configured upstream header values.
pub fn secrets_of(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (_, value) in config.servers.iter().flat_map(|s| s.headers().iter()) {
        let value = value.trim();
        out.push(value.to_owned());
        // "Bearer abc": the credential alone may show up too.
        if let Some((_, credential)) = value.split_once(' ') {
            out.push(credential.trim().to_owned());
        }
    }
    // Very short values would redact ordinary words; nobody uses them as secrets.
    out.retain(|s| s.len() >= 4);
    // Longest first, so a value is redacted whole before its credential part.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Installs the logger. `filter` is an env_logger filter; `RUST_LOG`, when set, overrides
/// it unless `force` (a command-line `--log-level`). `file_filter` is `[proxy] log_level` as the
/// file says it (a reload that changes it changes the filter: see [`super::log_filter`]).
pub fn init(
    format: LogFormat,
    filter: Option<&str>,
    force: bool,
    file_filter: Option<&str>,
    secrets: Vec<String>,
) {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match (filter, env.as_deref()) {
        (Some(f), _) if force => f,
        (_, Some(env)) => env,
        (Some(f), None) => f,
        (None, None) => super::log_filter::DEFAULT_FILTER,
    };
    super::log_filter::install(format, filter, file_filter, secrets);
}

/// One record as a line (with its newline).
pub fn render(format: LogFormat, ts: &str, record: &Record<'_>, secrets: &[String]) -> String {
    let message = redact(&record.args().to_string(), secrets);
    // Shard threads say which shard they are; other threads give their name.
    let (where_key, where_value) = match super::shard() {
        Some(shard) => ("shard", shard.to_string()),
        None => (
            "thread",
            std::thread::current().name().unwrap_or("main").to_owned(),
        ),
    };
    let mut fields = Fields(Vec::new());
    let _ = record.key_values().visit(&mut fields);
    let fields: Vec<(String, String)> = fields
        .0
        .into_iter()
        .map(|(k, v)| (k, redact(&v, secrets)))
        .collect();
    let level = record.level().as_str().to_ascii_lowercase();
    let mut out = String::with_capacity(128 + message.len());
    // Structured formats write the same pairs: the record's own, then its key-values.
    let base = [
        ("ts", ts),
        ("level", level.as_str()),
        ("target", record.target()),
        (where_key, where_value.as_str()),
        ("msg", message.as_str()),
    ];
    let all = || {
        base.iter()
            .map(|(k, v)| (*k, *v))
            .chain(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    match format {
        LogFormat::Text => {
            let _ = write!(
                out,
                "{ts} {:<5} {} [{where_key} {where_value}] ",
                record.level(),
                record.target()
            );
            text_escaped(&mut out, &message);
            for (k, v) in &fields {
                out.push(' ');
                logfmt_pair(&mut out, k, v);
            }
        }
        LogFormat::Json => {
            out.push('{');
            for (i, (k, v)) in all().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&mut out, k);
                out.push(':');
                json_string(&mut out, v);
            }
            out.push('}');
        }
        LogFormat::Logfmt => {
            for (i, (k, v)) in all().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                logfmt_pair(&mut out, k, v);
            }
        }
    }
    out.push('\n');
    out
}

/// Structured fields of a record, as text.
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.as_str().to_owned(), value.to_string()));
        Ok(())
    }
}

/// `text` with every secret replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

/// Whether `c` must not reach a log raw: a C0 control but tab (a newline or carriage return
/// would forge a line, ESC starts a terminal sequence), DEL, or a C1 control (U+0080..U+009F,
/// which some terminals also obey).
fn is_escaped_control(c: char) -> bool {
    c != '\t' && c.is_control()
}

/// `s` for the text format: control characters as `\n`, `\r` or `\xHH`, the rest as is, so
/// text from outside (a child's stderr, an upstream's error) stays on its own line and never
/// drives the terminal.
fn text_escaped(out: &mut String, s: &str) {
    if !s.chars().any(is_escaped_control) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_escaped_control(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn logfmt_pair(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        out.push_str(value);
    } else {
        // Same escapes as JSON strings: what logfmt parsers accept.
        json_string(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat, secrets: &[String]) -> String {
        let kvs: &[(&str, &str)] = &[("server", "alpha"), ("note", "Bearer s3cr3t-token")];
        let record = Record::builder()
            .args(format_args!("upstream said \"Bearer s3cr3t-token\" is bad"))
            .level(log::Level::Warn)
            .target("mcp_proxy::mcp::routing")
            .key_values(&kvs)
            .build();
        render(format, "2026-01-01T00:00:00.000Z", &record, secrets)
    }

    #[test]
    fn formats_carry_fields_and_redact_secrets() {
        let mut config = Config::default();
        config.servers.push(crate::config::ServerConfig {
            name: "alpha".into(),
            prefix: "alpha".into(),
            transport: crate::config::Transport::Http {
                replicas: vec![crate::config::ReplicaConfig {
                    url: crate::config::UpstreamUrl::parse("http://127.0.0.1:1/mcp").unwrap(),
                    weight: 1,
                    drain: false,
                }],
                headers: vec![("Authorization".into(), "Bearer s3cr3t-token".into())],
            },
            balance: Default::default(),
            timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            tags: Vec::new(),
            tls: None,
            era: Default::default(),
        });
        let secrets = secrets_of(&config);
        for format in [LogFormat::Text, LogFormat::Json, LogFormat::Logfmt] {
            let out = line(format, &secrets);
            assert!(!out.contains("s3cr3t"), "{format:?}: {out}");
            assert!(out.contains("[redacted]"), "{format:?}: {out}");
            assert!(out.contains("alpha"), "{format:?}: {out}");
            assert!(out.ends_with('\n'));
        }
        let json = line(LogFormat::Json, &secrets);
        assert!(json.starts_with(r#"{"ts":"2026-01-01T00:00:00.000Z","level":"warn""#));
        assert!(json.contains(r#""server":"alpha""#), "{json}");
        assert!(
            json.contains(r#""msg":"upstream said \"[redacted]\" is bad""#),
            "{json}"
        );
        let logfmt = line(LogFormat::Logfmt, &secrets);
        assert!(logfmt.contains(" server=alpha"), "{logfmt}");
        assert!(
            logfmt.contains("level=warn target=mcp_proxy::mcp::routing"),
            "{logfmt}"
        );
    }

    #[test]
    fn control_characters_never_reach_a_log_raw() {
        let record = Record::builder()
            .args(format_args!("child: a\x1b[31mred\rb\nc\x07d\u{9b}e\tf"))
            .level(log::Level::Info)
            .target("stdio")
            .build();
        let text = render(LogFormat::Text, "T", &record, &[]);
        assert!(
            text.ends_with("child: a\\x1b[31mred\\rb\\nc\\x07d\\x9be\tf\n"),
            "{text}"
        );
        for format in [LogFormat::Text, LogFormat::Json, LogFormat::Logfmt] {
            let out = render(format, "T", &record, &[]);
            let body = out.strip_suffix('\n').unwrap_or(&out);
            assert!(
                !body.chars().any(|c| c.is_control() && c != '\t'),
                "{format:?}: {out:?}"
            );
        }
    }
}
