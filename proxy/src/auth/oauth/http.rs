//! The blocking HTTPS client of the `oauth-keys` thread: `ureq` 3 (the one the cluster layer
//! uses too) on rustls and ring, with the issuers' CA bundle when one is configured.
//!
//! Statuses are read here rather than turned into errors by the client, so an authorization
//! server's error body (RFC 6749 section 5.2) can be shown: it names what was refused and
//! holds no secret.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// How long one HTTPS exchange with an issuer may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body is kept for the log.
const ERROR_BODY_CHARS: usize = 300;

/// The thread's client, trusting `ca_file`'s CAs when given, else the built-in web roots.
pub(super) fn agent(ca_file: Option<&Path>) -> Result<ureq::Agent, String> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = ca_file {
        tls = tls.root_certs(RootCerts::new_with_certs(&ca_certs(path)?));
    }
    Ok(ureq::Agent::config_builder()
        // Issuers are reached directly, like upstreams; an HTTP_PROXY meant for other
        // traffic does not carry the proxy's client secrets.
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(FETCH_TIMEOUT))
        // A JWKS or token endpoint behind a redirect is unusual; never follow one elsewhere.
        .max_redirects(0)
        .tls_config(tls.build())
        .build()
        .new_agent())
}

fn ca_certs(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) =
            item.map_err(|e| format!("ca_file {}: {e}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// A JSON document and the response's `Cache-Control`.
pub(super) struct JsonReply {
    pub doc: Value,
    pub cache_control: Option<String>,
}

/// GETs `url` as JSON.
pub(super) fn get_json(agent: &ureq::Agent, url: &str) -> Result<JsonReply, String> {
    let response = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    read_json(url, response).map_err(|e| format!("GET {url}: {e}"))
}

/// POSTs `form` (application/x-www-form-urlencoded) to `url`, reading a JSON answer.
pub(super) fn post_form(
    agent: &ureq::Agent,
    url: &str,
    form: &[(&str, &str)],
) -> Result<JsonReply, String> {
    let response = agent
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().copied())
        .map_err(|e| e.to_string())?;
    read_json(url, response)
}

fn read_json(
    url: &str,
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<JsonReply, String> {
    let status = response.status();
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string();
    if !status.is_success() {
        let body: String = text
            .unwrap_or_default()
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        return Err(if body.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {body}", status.as_u16())
        });
    }
    let text = text.map_err(|e| e.to_string())?;
    let doc = serde_json::from_str(&text).map_err(|e| format!("{url} is not JSON: {e}"))?;
    Ok(JsonReply { doc, cache_control })
}
