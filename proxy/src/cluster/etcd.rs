//! A blocking etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/lease/*`, `/v3/watch`), used only on the cluster's own threads.
//!
//! The gateway speaks JSON with keys and values in base64 and 64-bit integers as strings.
//! ureq (blocking, rustls on ring like the rest of the proxy) carries it: no async runtime,
//! no generated gRPC code, no `protoc` at build time.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::config::cluster::ClusterConfig;

/// Why etcd did not answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached, or it answered with an error status.
    #[error("etcd is unreachable ({endpoints}): {detail}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What the last one said.
        detail: String,
    },
    /// An answer that is not what the gateway sends.
    #[error("etcd answered something unexpected: {0}")]
    Protocol(String),
    /// The TLS files of `[cluster]` cannot be used.
    #[error("[cluster] TLS files: {0}")]
    Tls(String),
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// What a range read found, and the store's revision when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The store's revision.
    pub revision: i64,
    /// The keys found.
    pub kvs: Vec<KeyValue>,
}

/// A client of one fleet's etcd (its endpoints tried in turn).
#[derive(Clone)]
pub struct Etcd {
    endpoints: Arc<Vec<String>>,
    /// `etcdctl` with the flags that reach this etcd, for the commands hints show operators.
    etcdctl: Arc<str>,
    current: Arc<AtomicUsize>,
    agent: ureq::Agent,
}

/// How a watch ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The callback asked to stop.
    Stopped,
    /// The stream lived its whole lifetime. Nothing is known of etcd since the last change it
    /// carried: a quiet key and a connection that died silently look the same.
    Expired,
}

/// Time for one request (connect included): etcd answers in milliseconds, so anything
/// slower means it is down or partitioned, and a write waiting on it is refused.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `etcdctl` and the flags that reach the etcd `config` names.
fn etcdctl_for(config: &ClusterConfig) -> String {
    let mut command = format!("etcdctl --endpoints={}", config.etcd.join(","));
    let files = [
        ("cacert", &config.ca_file),
        ("cert", &config.cert_file),
        ("key", &config.key_file),
    ];
    for (flag, file) in files {
        if let Some(file) = file {
            command.push_str(&format!(" --{flag}={}", file.display()));
        }
    }
    command
}

impl Etcd {
    /// A client for `config`'s endpoints; reads the TLS files it names.
    pub fn new(config: &ClusterConfig) -> Result<Etcd, EtcdError> {
        let tls = tls_config(config)?;
        // etcd is reached directly, like upstreams: an HTTP_PROXY meant for other traffic
        // must not carry the fleet's registry.
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(Etcd {
            endpoints: Arc::new(config.etcd.clone()),
            etcdctl: etcdctl_for(config).into(),
            current: Arc::new(AtomicUsize::new(0)),
            agent,
        })
    }

    /// `etcdctl` with the flags that reach this etcd (endpoints, TLS files), so a command
    /// shown to an operator works as printed.
    pub fn etcdctl(&self) -> &str {
        &self.etcdctl
    }

    fn unreachable(&self, detail: String) -> EtcdError {
        EtcdError::Unreachable {
            endpoints: self.endpoints.join(", "),
            detail,
        }
    }

    /// POSTs `body` to `path` on the current endpoint, moving to the next one when it cannot
    /// be reached; the answer's JSON.
    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let text = body.to_string();
        let mut last = String::new();
        for _ in 0..self.endpoints.len() {
            let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
            let url = format!("{}{path}", self.endpoints[i].trim_end_matches('/'));
            match self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&text)
            {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let answer = response
                        .body_mut()
                        .read_to_string()
                        .map_err(|e| self.unreachable(format!("{url}: {e}")))?;
                    if status != 200 {
                        return Err(self.unreachable(format!("{url}: HTTP {status}: {answer}")));
                    }
                    return serde_json::from_str(&answer)
                        .map_err(|e| EtcdError::Protocol(format!("{url}: {e}")));
                }
                Err(e) => {
                    last = format!("{url}: {e}");
                    self.current.store(i + 1, Ordering::Relaxed);
                }
            }
        }
        Err(self.unreachable(last))
    }

    /// The key `key`, or every key under it when `prefix`.
    pub fn range(&self, key: &str, prefix: bool) -> Result<Range, EtcdError> {
        let mut body = json!({"key": B64.encode(key)});
        if prefix {
            body["range_end"] = B64.encode(prefix_end(key)).into();
        }
        let answer = self.call("/v3/kv/range", &body)?;
        let kvs = match answer.get("kvs").and_then(Value::as_array) {
            Some(kvs) => kvs.iter().map(key_value).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Range {
            revision: header_revision(&answer),
            kvs,
        })
    }

    /// Puts `value` at `key` if the key was last changed at `mod_revision` (0: if it does not
    /// exist). `Ok(Ok(revision))` when written; `Ok(Err(current))` when the key has moved on.
    pub fn put_if_revision(
        &self,
        key: &str,
        value: &[u8],
        mod_revision: i64,
    ) -> Result<Result<i64, Range>, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{"key": k, "result": "EQUAL", "target": "MOD",
                         "mod_revision": mod_revision.to_string()}],
            "success": [{"request_put": {"key": k, "value": B64.encode(value)}}],
            "failure": [{"request_range": {"key": k}}],
        });
        let answer = self.call("/v3/kv/txn", &body)?;
        if answer.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Ok(header_revision(&answer)));
        }
        let kvs = answer
            .pointer("/responses/0/response_range/kvs")
            .and_then(Value::as_array)
            .map(|kvs| kvs.iter().map(key_value).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(Err(Range {
            revision: header_revision(&answer),
            kvs,
        }))
    }

    /// Puts `value` at `key` under `lease` if the key does not exist; whether it was put.
    pub fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": B64.encode(value), "lease": lease.to_string()}}],
        });
        let answer = self.call("/v3/kv/txn", &body)?;
        Ok(answer.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// The store's current revision.
    pub fn revision(&self) -> Result<i64, EtcdError> {
        // A range of one absent key answers with the header alone.
        let answer = self.call(
            "/v3/kv/range",
            &json!({"key": B64.encode("\0"), "limit": "1"}),
        )?;
        Ok(header_revision(&answer))
    }

    /// Compacts the store's history up to `revision`; false when it was compacted past it
    /// already (by another member, or etcd's own auto-compaction).
    pub fn compact(&self, revision: i64) -> Result<bool, EtcdError> {
        match self.call(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string()}),
        ) {
            Ok(_) => Ok(true),
            Err(EtcdError::Unreachable { detail, .. })
                if detail.contains("required revision has been compacted") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Puts `value` at `key` under `lease`.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let body =
            json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()});
        self.call("/v3/kv/put", &body).map(drop)
    }

    /// A new lease of `ttl` seconds; its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        int(answer.get("ID")).ok_or_else(|| EtcdError::Protocol(format!("lease grant: {answer}")))
    }

    /// Renews `lease`; false when etcd no longer has it (it expired).
    pub fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self.call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))?;
        Ok(int(answer.pointer("/result/TTL")).unwrap_or(0) > 0)
    }

    /// Ends `lease` and deletes its keys.
    pub fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map(drop)
    }

    /// Watches `key` from `start_revision` on for at most `lifetime`: `each` gets every change
    /// (the new value, or `None` when deleted, and its revision) until the lifetime is over,
    /// `each` returns false, or the stream breaks (an error).
    pub fn watch(
        &self,
        key: &str,
        start_revision: i64,
        lifetime: Duration,
        mut each: impl FnMut(Option<Vec<u8>>, i64) -> bool,
    ) -> Result<WatchEnd, EtcdError> {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        let url = format!("{}/v3/watch", self.endpoints[i].trim_end_matches('/'));
        let body = json!({"create_request": {"key": B64.encode(key),
                          "start_revision": start_revision.to_string()}});
        // The lifetime bounds the whole exchange, the stream's reads included: a read on a
        // connection that died without a FIN or RST would otherwise block for ever.
        let response = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(lifetime))
            .timeout_connect(Some(REQUEST_TIMEOUT))
            .build()
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| {
                self.current.store(i + 1, Ordering::Relaxed);
                self.unreachable(format!("{url}: {e}"))
            })?;
        if response.status().as_u16() != 200 {
            return Err(self.unreachable(format!("{url}: HTTP {}", response.status())));
        }
        let reader = response.into_body().into_reader();
        // The gateway writes one JSON object per message, back to back.
        for message in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
            let message = match message {
                Ok(message) => message,
                Err(e) if e.is_io() => {
                    let e = std::io::Error::from(e);
                    if timed_out(&e) {
                        return Ok(WatchEnd::Expired);
                    }
                    return Err(self.unreachable(format!("{url}: {e}")));
                }
                Err(e) => return Err(self.unreachable(format!("{url}: {e}"))),
            };
            let Some(result) = message.get("result") else {
                return Err(EtcdError::Protocol(format!("watch: {message}")));
            };
            if result.get("canceled").and_then(Value::as_bool) == Some(true) {
                return Err(EtcdError::Protocol(format!("watch cancelled: {result}")));
            }
            for event in result
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kv = event.get("kv").map(key_value).transpose()?;
                let Some(kv) = kv else { continue };
                let deleted = event.get("type").and_then(Value::as_str) == Some("DELETE");
                let value = (!deleted).then_some(kv.value);
                if !each(value, kv.mod_revision) {
                    return Ok(WatchEnd::Stopped);
                }
            }
        }
        Err(self.unreachable(format!("{url}: the watch stream ended")))
    }
}

/// Whether reading a stream failed because its time was up: ureq reports its own deadline as
/// an `io::Error` wrapping `ureq::Error::Timeout`, a socket's as `TimedOut`.
fn timed_out(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || matches!(
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>()),
            Some(ureq::Error::Timeout(_))
        )
}

/// The key just past every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 field, which the gateway writes as a string (or leaves out when zero).
fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn header_revision(answer: &Value) -> i64 {
    int(answer.pointer("/header/revision")).unwrap_or(0)
}

fn key_value(kv: &Value) -> Result<KeyValue, EtcdError> {
    let bytes = |field: &str| -> Result<Vec<u8>, EtcdError> {
        match kv.get(field).and_then(Value::as_str) {
            Some(s) => B64
                .decode(s)
                .map_err(|e| EtcdError::Protocol(format!("{field}: {e}"))),
            None => Ok(Vec::new()),
        }
    };
    Ok(KeyValue {
        key: String::from_utf8_lossy(&bytes("key")?).into_owned(),
        value: bytes("value")?,
        mod_revision: int(kv.get("mod_revision")).unwrap_or(0),
        lease: int(kv.get("lease")).unwrap_or(0),
    })
}

/// The TLS settings `[cluster]` names: its CA bundle and client certificate, if any.
fn tls_config(config: &ClusterConfig) -> Result<ureq::tls::TlsConfig, EtcdError> {
    let read = |path: &std::path::Path| {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| EtcdError::Tls(format!("{}: {e}", path.display())))?;
        Ok::<_, EtcdError>(bytes)
    };
    let certs =
        |path: &std::path::Path| -> Result<Vec<ureq::tls::Certificate<'static>>, EtcdError> {
            let pem = read(path)?;
            let mut out = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(c) =
                    item.map_err(|e| EtcdError::Tls(format!("{}: {e}", path.display())))?
                {
                    out.push(c);
                }
            }
            if out.is_empty() {
                return Err(EtcdError::Tls(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
            Ok(out)
        };
    let mut builder = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &config.ca_file {
        builder = builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs(ca)?));
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let key_pem = read(key)?;
        let key = ureq::tls::PrivateKey::from_pem(&key_pem)
            .map_err(|e| EtcdError::Tls(format!("{}: {e}", key.display())))?;
        builder = builder.client_cert(Some(ureq::tls::ClientCert::new_with_certs(
            &certs(cert)?,
            key,
        )));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcdctl_shown_reaches_the_configured_etcd() {
        let mut config =
            ClusterConfig::on(vec!["https://e1:2379".into(), "https://e2:2379".into()]);
        assert_eq!(
            etcdctl_for(&config),
            "etcdctl --endpoints=https://e1:2379,https://e2:2379"
        );
        config.ca_file = Some("/etc/ca.pem".into());
        config.cert_file = Some("/etc/me.pem".into());
        config.key_file = Some("/etc/me.key".into());
        assert_eq!(
            etcdctl_for(&config),
            "etcdctl --endpoints=https://e1:2379,https://e2:2379 --cacert=/etc/ca.pem \
             --cert=/etc/me.pem --key=/etc/me.key"
        );
    }

    #[test]
    fn a_prefix_ends_just_past_its_last_key() {
        assert_eq!(prefix_end("/p/"), b"/p0".to_vec());
        assert_eq!(int(Some(&json!("42"))), Some(42));
        assert_eq!(int(None), None);
    }

    /// An etcd that created the watch and then went silent (its connection held open): the
    /// watch ends as expired when its lifetime is over, not as an outage, and not never.
    #[test]
    fn a_silent_watch_stream_expires_after_its_lifetime() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let created = r#"{"result":{"header":{"revision":"7"},"created":true}}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{created}\r\n",
                created.len()
            );
            // Silent from here on, the connection held until the watch has ended.
            let _ = done_rx.recv();
        });
        let etcd = Etcd::new(&ClusterConfig::on(vec![url])).expect("client");
        let mut changes = 0;
        let end = etcd.watch("/k", 8, Duration::from_millis(300), |_, _| {
            changes += 1;
            true
        });
        let _ = done_tx.send(());
        let _ = server.join();
        assert_eq!(end.expect("no outage"), WatchEnd::Expired);
        assert_eq!(changes, 0);
    }
}
