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
