//! The proxy's Protected Resource Metadata (RFC 9728) and the challenge that points to it.

use crate::config::oauth::OAuthConfig;

/// The metadata document served at `/.well-known/oauth-protected-resource` (+ the path of
/// `public_url`, and the root form), when `path` is one of those and `[auth.oauth]` is set.
pub fn metadata_document(path: &str) -> Option<Vec<u8>> {
    let auth = super::super::running::current();
    let oauth = auth.config.oauth.as_ref()?;
    let served = path == oauth.metadata_path()
        || path == "/.well-known/oauth-protected-resource"
        || path == "/.well-known/oauth-protected-resource/mcp";
    served.then(|| document(oauth))
}

fn document(oauth: &OAuthConfig) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "resource": oauth.public_url,
        "authorization_servers": oauth.issuers,
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-proxy",
    });
    if !oauth.scopes_supported.is_empty() {
        doc["scopes_supported"] = serde_json::json!(oauth.scopes_supported);
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The `resource_metadata` parameter every `WWW-Authenticate` challenge on `/mcp` carries
/// when `[auth.oauth]` is set (MCP authorization, RFC 9728 section 5.1), with `scope`: the
/// scopes `needed` for this request, or else `scopes_supported` (what basic use needs).
pub fn challenge(needed: Option<&str>) -> Option<String> {
    let auth = super::super::running::current();
    let oauth = auth.config.oauth.as_ref()?;
    let mut params = format!(r#"resource_metadata="{}""#, oauth.metadata_url());
    let scope = needed
        .map(str::to_owned)
        .unwrap_or_else(|| oauth.scopes_supported.join(" "));
    if !scope.is_empty() {
        params.push_str(&format!(r#", scope="{scope}""#));
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_the_resource_and_its_authorization_servers() {
        let oauth = OAuthConfig {
            public_url: "https://mcp.example.com/mcp".into(),
            issuers: vec!["https://login.example.com".into()],
            audiences: Vec::new(),
            scopes_supported: vec!["mcp".into()],
            ca_file: None,
            refresh: std::time::Duration::from_secs(60),
            kid_refresh: std::time::Duration::from_secs(5),
            upstreams: Vec::new(),
        };
        let doc: serde_json::Value = serde_json::from_slice(&document(&oauth)).expect("json");
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://login.example.com");
        assert_eq!(doc["scopes_supported"][0], "mcp");
        assert_eq!(doc["bearer_methods_supported"][0], "header");
    }
}
