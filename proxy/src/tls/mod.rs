//! TLS with rustls (ring provider) over glommio sockets, for both sides of the proxy.
//!
//! - this module builds the rustls configurations from the configuration's files, and checks
//!   them for the configuration loader ([`RustlsFiles`]);
//! - [`listener`]: the client-facing configuration in force (reloadable) and each shard's
//!   acceptor; accepting a connection is the endpoint's (`endpoint::accept`);
//! - [`upstream`]: connecting to an `https://` replica, and the stream it gives.
//!
//! # Listener
//! The client-facing rustls configuration lives in one process-wide reloadable slot
//! (`config::reloadable`). Each shard keeps its own copy of the acceptor and compares
//! generations (one atomic load) when it accepts a connection, so the hot path takes no lock; a
//! reload (SIGHUP, admin `reload`) builds the new configuration first and swaps it in only if it
//! is valid. New connections then get the new certificate; connections already open keep the
//! one they negotiated.
//!
//! # Upstreams
//! Each server's `https://` replicas share one client configuration: the built-in Mozilla roots
//! (`webpki-roots`, chosen over the system store so the proxy verifies the same way in a scratch
//! container as on a workstation, and needs no file at run time) or the server's own `ca_file`,
//! plus an optional client certificate. TLS 1.3 only unless `min_version = "1.2"`.
//!
//! Both sides offer ALPN `http/1.1`, the only protocol the proxy speaks.

pub mod listener;
pub mod upstream;

pub use listener::{install_listener, listener_enabled, reread_listener, ReloadError, Reread};
pub use upstream::{connect, UpstreamStream};

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::tls::{ListenerTls, TlsError, TlsFiles, TlsVersion, UpstreamTls};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12_UP: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        TlsVersion::Tls13 => TLS13_ONLY,
        TlsVersion::Tls12 => TLS12_UP,
    }
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(field, path, format!("cannot read it: {e}")))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(field, path, format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            field,
            path,
            "holds no \"BEGIN CERTIFICATE\" block; give a PEM certificate file",
        ));
    }
    Ok(certs)
}

fn key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError::new(
            field,
            path,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

fn roots(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(field, path)? {
        store
            .add(cert)
            .map_err(|e| TlsError::new(field, path, format!("bad CA certificate: {e}")))?;
    }
    Ok(store)
}

/// Builds the listener's rustls configuration from its files.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("cert_file", &tls.cert_file)?;
    let key = key("key_file", &tls.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls.min_version))
        .map_err(|e| TlsError::new("cert_file", &tls.cert_file, e.to_string()))?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("client_ca_file", ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::new("client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::new(
            "key_file",
            &tls.key_file,
            format!("cannot be used with cert_file (is it that certificate's key?): {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the client configuration for one server's `https://` replicas.
pub fn client_config(tls: Option<&UpstreamTls>) -> Result<Arc<ClientConfig>, TlsError> {
    let default = UpstreamTls::default();
    let tls = tls.unwrap_or(&default);
    let store = match &tls.ca_file {
        Some(ca) => roots("ca_file", ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls.min_version))
        .map_err(|e| TlsError::new("min_version", Path::new(""), e.to_string()))?
        .with_root_certificates(store);
    let mut config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key_path)) => {
            let chain = certs("client_cert_file", cert)?;
            let key = key("client_key_file", key_path)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                TlsError::new(
                    "client_key_file",
                    key_path,
                    format!("cannot be used with client_cert_file: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks TLS file settings for the configuration loader by building the rustls configuration
/// the proxy will use from them: what loads here also serves.
pub struct RustlsFiles;

impl TlsFiles for RustlsFiles {
    fn check_listener(&self, tls: &ListenerTls) -> Result<(), TlsError> {
        server_config(tls).map(drop)
    }

    fn check_upstream(&self, tls: &UpstreamTls) -> Result<(), TlsError> {
        client_config(Some(tls)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::from_toml_str_checked(text, "t.toml", &RustlsFiles)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn unreadable_files_are_refused_at_the_line_of_their_key() {
        let e = error(
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
        );
        assert!(e.starts_with("t.toml:2:13"), "{e}");
        assert!(e.contains("cannot read it"), "{e}");
        let e = error(
            "[[servers]]\nname = \"a\"\nurl = \"https://127.0.0.1:1/mcp\"\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n",
        );
        assert!(e.starts_with("t.toml:4:19") && e.contains("ca_file"), "{e}");
        // No tls table: the built-in roots, accepted without any file.
        assert!(crate::tls::client_config(None).is_ok());
    }
}
