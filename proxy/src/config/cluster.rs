//! The `[cluster]` table: run as one member of a fleet of proxies sharing a registry in etcd.
//!
//! Absent, the proxy is a single instance (its registry in `[proxy] state_dir`). Present, the
//! registry lives under `prefix` in etcd and the instance registers itself there (see
//! `docs/architecture.md`, "A fleet on etcd").

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Where the fleet's etcd is and how this member presents itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://` or `https://`), tried in turn.
    pub etcd: Vec<String>,
    /// Key prefix every key of this fleet lives under; ends with `/`.
    pub prefix: String,
    /// Where other members reach this one (`http://host:port`); `None`: the listen address
    /// (the hostname and port when listening on every address).
    pub advertise: Option<String>,
    /// This member's name; `None`: hostname and listen port.
    pub name: Option<String>,
    /// CA bundle (PEM) that signs etcd's certificate; `None`: the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Time-to-live of this member's lease: how long after it dies it is still listed.
    pub lease_ttl: Duration,
    /// How often the leader compacts etcd's history (keeping one period of it); `None`: never
    /// (etcd's own `--auto-compaction-retention`, or an operator, does it).
    pub compact_every: Option<Duration>,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/mcp-proxy/";

impl ClusterConfig {
    /// A cluster on `etcd` with every other setting at its default (`--cluster-etcd`).
    pub fn on(etcd: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            etcd,
            prefix: DEFAULT_PREFIX.to_owned(),
            advertise: None,
            name: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            lease_ttl: Duration::from_secs(5),
            compact_every: None,
        }
    }
}

/// `[cluster]` as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    etcd: Spanned<Vec<String>>,
    prefix: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    ca_file: Option<String>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    lease_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    compact_every: Option<Duration>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration::deserialize(d).map(Some)
}

/// Checks an etcd endpoint: an `http://` or `https://` URL with a host.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("etcd endpoint \"{url}\" must start with http:// or https://, e.g. \"http://127.0.0.1:2379\"")
        })?;
    if rest.trim_end_matches('/').is_empty() || rest.trim_end_matches('/').contains('/') {
        return Err(format!(
            "etcd endpoint \"{url}\" must be a scheme, host and port only, e.g. \"http://127.0.0.1:2379\""
        ));
    }
    Ok(())
}

/// Checks `[cluster]`; errors carry the span of the value at fault.
pub(super) fn check(raw: RawCluster) -> Result<ClusterConfig, (Option<Range<usize>>, String)> {
    let span = raw.etcd.span();
    let etcd = raw.etcd.into_inner();
    if etcd.is_empty() {
        return Err((
            Some(span),
            "etcd lists no endpoint; write etcd = [\"http://127.0.0.1:2379\"]".into(),
        ));
    }
    for url in &etcd {
        check_endpoint(url).map_err(|m| (Some(span.clone()), m))?;
    }
    let mut config = ClusterConfig::on(etcd);
    if let Some(prefix) = raw.prefix {
        let (span, mut p) = (prefix.span(), prefix.into_inner());
        if !p.starts_with('/') {
            return Err((
                Some(span),
                format!("prefix \"{p}\" must start with /, e.g. \"/mcp-proxy/\""),
            ));
        }
        if !p.ends_with('/') {
            p.push('/');
        }
        config.prefix = p;
    }
    if let Some(advertise) = raw.advertise {
        let (span, a) = (advertise.span(), advertise.into_inner());
        if !(a.starts_with("http://") || a.starts_with("https://")) {
            return Err((
                Some(span),
                format!("advertise \"{a}\" must be a URL other members reach this one at, e.g. \"http://10.0.0.5:8080\""),
            ));
        }
        config.advertise = Some(a.trim_end_matches('/').to_owned());
    }
    if let Some(name) = raw.name {
        let (span, n) = (name.span(), name.into_inner());
        if n.is_empty() || n.contains('/') || n.chars().any(char::is_whitespace) {
            return Err((
                Some(span),
                format!("name \"{n}\" must be non-empty, without / or blanks, e.g. \"proxy-1\""),
            ));
        }
        config.name = Some(n);
    }
    if let (Some(cert), None) = (&raw.cert_file, &raw.key_file) {
        return Err((
            Some(cert.span()),
            "cert_file needs key_file: name the client certificate's private key too".into(),
        ));
    }
    config.ca_file = raw.ca_file.map(PathBuf::from);
    config.cert_file = raw.cert_file.map(|c| PathBuf::from(c.into_inner()));
    config.key_file = raw.key_file.map(PathBuf::from);
    if let Some(ttl) = raw.lease_ttl {
        if !(Duration::from_secs(2)..=Duration::from_secs(60)).contains(&ttl) {
            return Err((
                None,
                "[cluster] lease_ttl must be between \"2s\" and \"60s\"".into(),
            ));
        }
        config.lease_ttl = ttl;
    }
    if let Some(every) = raw.compact_every {
        if every < Duration::from_secs(1) {
            return Err((
                None,
                "[cluster] compact_every must be at least \"1s\" (e.g. \"5m\"), or left out to \
                 never compact"
                    .into(),
            ));
        }
        config.compact_every = Some(every);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml_str(text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_one_instance_and_present_fills_the_defaults() {
        assert_eq!(parse("").expect("empty").cluster, None);
        let c = parse("[cluster]\netcd = [\"http://10.0.0.9:2379\", \"https://e2:2379/\"]\n")
            .expect("cluster")
            .cluster
            .expect("some");
        assert_eq!(c.etcd.len(), 2);
        assert_eq!(c.prefix, "/mcp-proxy/");
        assert_eq!((c.name, c.advertise), (None, None));
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.compact_every, None);
        let c = parse(
            "[cluster]\netcd = [\"http://e:2379\"]\nprefix = \"/fleet\"\nname = \"p1\"\n\
             advertise = \"http://10.0.0.5:8080/\"\nlease_ttl = \"3s\"\ncompact_every = \"5m\"\n",
        )
        .expect("cluster")
        .cluster
        .expect("some");
        assert_eq!(c.prefix, "/fleet/");
        assert_eq!(c.advertise.as_deref(), Some("http://10.0.0.5:8080"));
        assert_eq!(c.lease_ttl, Duration::from_secs(3));
        assert_eq!(c.compact_every, Some(Duration::from_secs(300)));
    }

    #[test]
    fn bad_values_are_refused_with_the_fix() {
        for (text, says) in [
            (
                "[cluster]\netcd = [\"http://e:2379\"]\ncompact_every = \"500ms\"\n",
                "compact_every must be at least",
            ),
            (
                "[cluster]\netcd = []\n",
                "write etcd = [\"http://127.0.0.1:2379\"]",
            ),
            (
                "[cluster]\netcd = [\"127.0.0.1:2379\"]\n",
                "must start with http://",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379/v3\"]\n",
                "scheme, host and port only",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\nprefix = \"x\"\n",
                "must start with /",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\nname = \"a b\"\n",
                "without / or blanks",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\nadvertise = \"10.0.0.5:8080\"\n",
                "e.g. \"http://10.0.0.5:8080\"",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\ncert_file = \"c.pem\"\n",
                "cert_file needs key_file",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\nlease_ttl = \"1h\"\n",
                "between \"2s\" and \"60s\"",
            ),
            (
                "[cluster]\netcd = [\"http://e:2379\"]\netcd_urls = 1\n",
                "etcd_urls",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
