//! The `[limits]` table: bounds on what one client may make the proxy hold.
//!
//! The older limits (`max_body_bytes`, `max_header_bytes`, `header_read_timeout`,
//! `idle_timeout`) stay in `[proxy]`, where existing configurations have them.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Bounds on one client's requests, connections and streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Most header fields in one request head; past it: 431.
    pub max_headers: usize,
    /// Deepest JSON nesting (arrays and objects) accepted in a message; past it: 400.
    pub max_json_depth: usize,
    /// Most client connections one shard serves at once; past it new ones get 503.
    pub max_connections: usize,
    /// Most streams one session holds at once (GET streams and POSTs in flight); past it: 429.
    pub max_streams_per_session: usize,
    /// Time for a request body to arrive once its head has; past it: 408.
    pub request_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_headers: 64,
            max_json_depth: 128,
            max_connections: 1024,
            max_streams_per_session: 32,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[limits]` as serde sees it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_headers: Option<Spanned<usize>>,
    max_json_depth: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    max_streams_per_session: Option<Spanned<usize>>,
    #[serde(default, deserialize_with = "optional_duration")]
    request_timeout: Option<Duration>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration::deserialize(d).map(Some)
}

/// Checks `[limits]`; errors carry the span of the value at fault.
pub(super) fn check(raw: RawLimits) -> Result<LimitsConfig, (Range<usize>, String)> {
    let d = LimitsConfig::default();
    let bounded =
        |v: Option<Spanned<usize>>, name: &str, min: usize, max: usize, default: usize| match v {
            None => Ok(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err((
                s.span(),
                format!(
                    "{name} = {} is out of range; use {min} to {max}",
                    s.get_ref()
                ),
            )),
        };
    Ok(LimitsConfig {
        max_headers: bounded(raw.max_headers, "max_headers", 8, 1024, d.max_headers)?,
        max_json_depth: bounded(
            raw.max_json_depth,
            "max_json_depth",
            8,
            10_000,
            d.max_json_depth,
        )?,
        max_connections: bounded(
            raw.max_connections,
            "max_connections",
            1,
            1_000_000,
            d.max_connections,
        )?,
        max_streams_per_session: bounded(
            raw.max_streams_per_session,
            "max_streams_per_session",
            1,
            100_000,
            d.max_streams_per_session,
        )?,
        request_timeout: raw.request_timeout.unwrap_or(d.request_timeout),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::from_toml_str(text, "t.toml")
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn limits_defaults_and_ranges() {
        let c = Config::from_toml_str("", "t.toml").expect("valid");
        assert_eq!(c.limits, crate::config::limits::LimitsConfig::default());
        let c = Config::from_toml_str(
            "[limits]\nmax_json_depth = 16\nrequest_timeout = \"5s\"\nmax_connections = 2\n",
            "t.toml",
        )
        .expect("valid");
        assert_eq!(c.limits.max_json_depth, 16);
        assert_eq!(c.limits.max_connections, 2);
        assert_eq!(c.limits.request_timeout, std::time::Duration::from_secs(5));
        let e = error("[limits]\nmax_headers = 2\n");
        assert!(
            e.starts_with("t.toml:2:15") && e.contains("8 to 1024"),
            "{e}"
        );
        let e = error("[limits]\nrequest_timeout = \"0s\"\n");
        assert!(e.contains("t.toml:2"), "{e}");
    }
}
