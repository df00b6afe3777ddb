//! The admin API as `mcpctl` calls it: JSON in, JSON out, HTTP statuses turned into failures
//! that say how to fix them.

use std::time::Duration;

use serde_json::Value;

use crate::fail::{Code, Failure};
use crate::http::{self, Url};

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the admin API.
pub struct Admin {
    /// The admin base URL.
    pub url: Url,
    /// The bearer token.
    pub token: Option<String>,
}

impl Admin {
    /// `GET /api/v1/{path}`.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }

    /// Sends `method /api/v1/{path}` with an optional JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let (status, value) = self.send(method, path, body)?;
        self.judge(status, value)
    }

    /// " (did you mean ...?)" with the exposed tools whose names are near `tool`, as the
    /// route API finds them; empty when there are none or the admin API cannot be asked.
    pub fn similar_tools(&self, tool: &str) -> String {
        match self.send("GET", &format!("route?tool={}", crate::encode(tool)), None) {
            Ok((404, value)) => did_you_mean(&value),
            _ => String::new(),
        }
    }

    /// Sends `method /api/v1/{path}` and returns the status and the JSON answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failure> {
        let token = self.token.as_deref().ok_or_else(|| Failure {
            code: Code::Unauthorized,
            message: "no admin token: set MCPCTL_TOKEN_FILE (or --token-file) to the file \
                      mcp-proxy names at start (`mcp-proxy admin token: in FILE`), such as the \
                      proxy's {state_dir}/admin-token, or MCPCTL_TOKEN (or --token) to its \
                      [proxy] admin_token"
                .into(),
        })?;
        let auth = format!("Bearer {token}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        let encoded = body.map(|b| b.to_string());
        if encoded.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let url = self.url.join(&format!("/api/v1/{path}"));
        let response = http::request(
            method,
            &url,
            &headers,
            encoded.as_deref().map(str::as_bytes),
            TIMEOUT,
        )?;
        let value: Value = serde_json::from_slice(&response.body).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&response.body).into_owned())
        });
        Ok((response.status, value))
    }

    /// The answer's value, or the failure its status means.
    fn judge(&self, status: u16, value: Value) -> Result<Value, Failure> {
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let mut message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        message.push_str(&did_you_mean(&value));
        let code = match status {
            401 | 403 => {
                return Err(Failure {
                    code: Code::Unauthorized,
                    message: format!(
                        "the proxy refused the token ({message}); set MCPCTL_TOKEN_FILE to the \
                         file mcp-proxy names at start (`mcp-proxy admin token: in FILE`), or \
                         MCPCTL_TOKEN to its [proxy] admin_token"
                    ),
                })
            }
            404 if value.get("kind").is_none() => {
                return Err(Failure::error(format!(
                    "{} has no admin API ({message}); is MCPCTL_URL the admin address \
                     (`mcp-proxy admin: ...`), not the /mcp one?",
                    self.url.authority
                )))
            }
            404 => Code::NotFound,
            400 => Code::Usage,
            _ => Code::Error,
        };
        Err(Failure { code, message })
    }
}

/// " (did you mean a, b?)" from the `similar` names of a not-found answer; empty when none.
pub fn did_you_mean(answer: &Value) -> String {
    let names = crate::table::strings(&answer["similar"]);
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(", "))
    }
}
