//! The `[tls]` table (the client-facing listener) and a server's `tls = { ... }` (upstream HTTPS).
//!
//! The files a setting names are checked when the configuration is read, through [`TlsFiles`]:
//! the TLS layer (`tls::RustlsFiles`) builds the very rustls configuration the proxy will use,
//! so a missing file, a key that does not match its certificate or a CA file with no certificate
//! is refused at start (or at reload) with the line of the setting at fault. This module reads
//! no file itself. Relative paths are relative to the proxy's working directory.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Located;

/// Lowest TLS version accepted or offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
}

/// TLS on the client-facing listener: clients must speak `https://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this PEM file (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Lowest version accepted.
    pub min_version: TlsVersion,
}

/// TLS settings for a server's `https://` replicas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// PEM file of the CAs trusted for this server instead of the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented to the server (mTLS); needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Lowest version offered.
    pub min_version: TlsVersion,
}

/// A TLS setting that cannot be used; `field` names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{field} {path:?}: {message}")]
pub struct TlsError {
    /// The configuration key (`cert_file`, `ca_file`, ...).
    pub field: &'static str,
    /// The file it names.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl TlsError {
    /// The setting `field`, naming `path`, cannot be used because of `message`.
    pub fn new(field: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
        TlsError {
            field,
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Whether the files a TLS setting names make a working configuration. The TLS layer answers
/// (by building it); the configuration places the answer at the line of the key at fault.
pub trait TlsFiles {
    /// Checks the listener's `[tls]` files.
    fn check_listener(&self, tls: &ListenerTls) -> Result<(), TlsError>;
    /// Checks a server's `tls = { ... }` files (`None`: the built-in roots).
    fn check_upstream(&self, tls: &UpstreamTls) -> Result<(), TlsError>;
}

/// Reads no file: for configuration text checked only for what it says
/// ([`Config::from_toml_str`](super::Config::from_toml_str)).
pub(super) struct FilesNotRead;

impl TlsFiles for FilesNotRead {
    fn check_listener(&self, _: &ListenerTls) -> Result<(), TlsError> {
        Ok(())
    }

    fn check_upstream(&self, _: &UpstreamTls) -> Result<(), TlsError> {
        Ok(())
    }
}

/// `[tls]` as serde sees it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerTls {
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
    min_version: Option<Spanned<String>>,
}

/// A server's `tls = { ... }` as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    ca_file: Option<Spanned<String>>,
    client_cert_file: Option<Spanned<String>>,
    client_key_file: Option<Spanned<String>>,
    min_version: Option<Spanned<String>>,
}

fn version(v: &Option<Spanned<String>>) -> Result<TlsVersion, Located> {
    match v.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("1.3", _)) => Ok(TlsVersion::Tls13),
        Some(("1.2", _)) => Ok(TlsVersion::Tls12),
        Some((other, span)) => Err((
            Some(span),
            format!(
                "min_version \"{other}\" is not supported; use \"1.3\" (the default) or \"1.2\""
            ),
        )),
    }
}

fn path(v: &Option<Spanned<String>>) -> Option<PathBuf> {
    v.as_ref().map(|s| PathBuf::from(s.get_ref()))
}

/// Span of the field a [`TlsError`] names.
fn span_of(field: &str, fields: &[(&str, &Option<Spanned<String>>)]) -> Option<Range<usize>> {
    fields
        .iter()
        .find(|(name, _)| *name == field)
        .and_then(|(_, v)| v.as_ref().map(|s| s.span()))
}

/// Checks `[tls]`; `table` is the span of the whole table, for "missing" errors.
pub(super) fn listener(
    raw: Option<Spanned<RawListenerTls>>,
    files: &dyn TlsFiles,
) -> Result<Option<ListenerTls>, Located> {
    let Some(raw) = raw else { return Ok(None) };
    let table = raw.span();
    let raw = raw.into_inner();
    let (Some(cert), Some(key)) = (&raw.cert_file, &raw.key_file) else {
        return Err((
            Some(table),
            "[tls] needs both cert_file and key_file (PEM files); remove [tls] to serve plain HTTP"
                .into(),
        ));
    };
    let tls = ListenerTls {
        cert_file: PathBuf::from(cert.get_ref()),
        key_file: PathBuf::from(key.get_ref()),
        client_ca_file: path(&raw.client_ca_file),
        min_version: version(&raw.min_version)?,
    };
    files.check_listener(&tls).map_err(|e| {
        let fields = [
            ("cert_file", &raw.cert_file),
            ("key_file", &raw.key_file),
            ("client_ca_file", &raw.client_ca_file),
        ];
        (span_of(e.field, &fields), format!("[tls] {e}"))
    })?;
    Ok(Some(tls))
}

/// Checks a server's `tls = { ... }`; `any_https` says whether it has an `https://` replica.
pub(super) fn upstream(
    name: &str,
    raw: Option<Spanned<RawUpstreamTls>>,
    any_https: bool,
    files: &dyn TlsFiles,
) -> Result<Option<UpstreamTls>, Located> {
    let Some(raw) = raw else { return Ok(None) };
    let table = raw.span();
    if !any_https {
        return Err((
            Some(table),
            format!("server \"{name}\" has tls settings but no https:// url; use https:// or remove tls"),
        ));
    }
    let raw = raw.into_inner();
    if raw.client_cert_file.is_some() != raw.client_key_file.is_some() {
        return Err((
            Some(table),
            format!("server \"{name}\": client_cert_file and client_key_file go together; set both or neither"),
        ));
    }
    let tls = UpstreamTls {
        ca_file: path(&raw.ca_file),
        client_cert_file: path(&raw.client_cert_file),
        client_key_file: path(&raw.client_key_file),
        min_version: version(&raw.min_version)?,
    };
    files.check_upstream(&tls).map_err(|e| {
        let fields = [
            ("ca_file", &raw.ca_file),
            ("client_cert_file", &raw.client_cert_file),
            ("client_key_file", &raw.client_key_file),
        ];
        (
            span_of(e.field, &fields).or(Some(table)),
            format!("server \"{name}\": {e}"),
        )
    })?;
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::from_toml_str(text, "t.toml")
            .expect_err("should be refused")
            .to_string()
    }

    /// Refuses every file setting, blaming `field`, as the TLS layer would.
    struct Refuses(&'static str);

    impl TlsFiles for Refuses {
        fn check_listener(&self, tls: &ListenerTls) -> Result<(), TlsError> {
            Err(TlsError::new(self.0, &tls.cert_file, "refused"))
        }

        fn check_upstream(&self, _: &UpstreamTls) -> Result<(), TlsError> {
            Err(TlsError::new(self.0, Path::new("x.pem"), "refused"))
        }
    }

    fn refused(text: &str, field: &'static str) -> String {
        Config::from_toml_str_checked(text, "t.toml", &Refuses(field))
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn listener_errors_are_located() {
        let e = error("[tls]\ncert_file = \"/nonexistent/cert.pem\"\n");
        assert!(e.starts_with("t.toml:1:1"), "{e}");
        assert!(e.contains("needs both cert_file and key_file"), "{e}");
        let e = error("[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nmin_version = \"1.1\"\n");
        assert!(e.starts_with("t.toml:4:15") && e.contains("\"1.3\""), "{e}");
        let e = error("[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nverify = true\n");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_file_the_tls_layer_refuses_is_located_at_its_key() {
        let text = "[tls]\ncert_file = \"a.pem\"\nkey_file = \"b.pem\"\n";
        assert!(
            Config::from_toml_str(text, "t.toml").is_ok(),
            "no file is read"
        );
        let e = refused(text, "key_file");
        assert!(
            e.starts_with("t.toml:3:12: [tls] key_file \"a.pem\": refused"),
            "{e}"
        );
        let text =
            "[[servers]]\nname = \"a\"\nurl = \"https://h/mcp\"\ntls = { ca_file = \"c.pem\" }\n";
        let e = refused(text, "ca_file");
        assert!(e.starts_with("t.toml:4:19: server \"a\": ca_file"), "{e}");
        // A key the table does not set: the table itself.
        let e = refused(text, "client_key_file");
        assert!(e.starts_with("t.toml:4:7"), "{e}");
    }

    #[test]
    fn upstream_errors_are_located() {
        let e = error(
            "[[servers]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\ntls = { ca_file = \"x.pem\" }\n",
        );
        assert!(
            e.starts_with("t.toml:4:7") && e.contains("no https:// url"),
            "{e}"
        );
        let e = error(
            "[[servers]]\nname = \"a\"\nurl = \"https://127.0.0.1:1/mcp\"\ntls = { client_cert_file = \"c.pem\" }\n",
        );
        assert!(e.contains("go together"), "{e}");
        // No tls table: the built-in roots, accepted without any file.
        let c = Config::from_toml_str(
            "[[servers]]\nname = \"a\"\nurl = \"https://example.com/mcp\"\n",
            "t.toml",
        )
        .expect("valid");
        assert!(c.servers[0].tls.is_none());
    }
}
