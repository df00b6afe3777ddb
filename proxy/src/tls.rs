//! TLS with rustls (ring provider) over glommio sockets, for both sides of the proxy.
//!
//! # Listener
//! The client-facing rustls configuration lives in one process-wide slot with a generation
//! number. Each shard keeps its own copy of the acceptor and compares generations (one atomic
//! load) when it accepts a connection, so the hot path takes no lock; a reload (SIGHUP, admin
//! `reload`) builds the new configuration first and swaps it in only if it is valid. New
//! connections then get the new certificate; connections already open keep the one they
//! negotiated.
//!
//! # Upstreams
//! Each server's `https://` replicas share one client configuration: the built-in Mozilla roots
//! (`webpki-roots`, chosen over the system store so the proxy verifies the same way in a scratch
//! container as on a workstation, and needs no file at run time) or the server's own `ca_file`,
//! plus an optional client certificate. TLS 1.3 only unless `min_version = "1.2"`.
//!
//! Both sides offer ALPN `http/1.1`, the only protocol the proxy speaks.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::tls::{ListenerTls, TlsVersion, UpstreamTls};

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
    fn new(field: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
        TlsError {
            field,
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

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

/// The listener's current configuration; `None` while serving plain HTTP.
static LISTENER: RwLock<Option<Arc<ServerConfig>>> = RwLock::new(None);
/// Bumped on every install, so shards notice a new certificate without taking the lock.
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This shard's copy of the acceptor and the generation it was made from.
    static ACCEPTOR: RefCell<(u64, Option<futures_rustls::TlsAcceptor>)> =
        const { RefCell::new((0, None)) };
}

/// Why a listener configuration was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A file is missing or unusable.
    #[error(transparent)]
    Invalid(#[from] TlsError),
    /// The reload would switch between HTTP and HTTPS, which clients would not follow.
    #[error("adding or removing [tls] takes effect at the next restart; the listener keeps its current scheme")]
    SchemeChange,
}

/// Installs the listener's TLS configuration at start (`None`: plain HTTP).
pub fn install_listener(tls: Option<&ListenerTls>) -> Result<(), TlsError> {
    let next = tls.map(server_config).transpose()?;
    set(next);
    Ok(())
}

/// A listener certificate re-read by a reload and checked, not yet in force.
pub struct Reread {
    config: Arc<ServerConfig>,
    cert_file: std::path::PathBuf,
}

impl Reread {
    /// Puts the re-read certificate in force for the connections accepted from now on.
    pub fn install(self) {
        set(Some(self.config));
        log::info!(
            "reload: TLS certificate re-read from {}",
            self.cert_file.display()
        );
    }
}

/// Re-reads the listener's files for a reload without putting them in force (`None`: a plain
/// listener, nothing to read); on error the running configuration is kept.
pub fn reread_listener(tls: Option<&ListenerTls>) -> Result<Option<Reread>, ReloadError> {
    let running = LISTENER.read().map(|l| l.is_some()).unwrap_or(false);
    match (running, tls) {
        (false, None) => Ok(None),
        (true, Some(tls)) => Ok(Some(Reread {
            config: server_config(tls)?,
            cert_file: tls.cert_file.clone(),
        })),
        _ => Err(ReloadError::SchemeChange),
    }
}

fn set(config: Option<Arc<ServerConfig>>) {
    match LISTENER.write() {
        Ok(mut slot) => *slot = config,
        // A panic while holding the lock cannot leave a half-written Option; take it back.
        Err(poisoned) => *poisoned.into_inner() = config,
    }
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// This shard's acceptor for a new connection, refreshed when a reload happened.
pub fn acceptor() -> Option<futures_rustls::TlsAcceptor> {
    let generation = GENERATION.load(Ordering::Acquire);
    ACCEPTOR.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != generation {
            let config = LISTENER.read().ok().and_then(|l| l.clone());
            *cached = (generation, config.map(futures_rustls::TlsAcceptor::from));
        }
        cached.1.clone()
    })
}

/// Whether the listener speaks TLS (for the ready line).
pub fn listener_enabled() -> bool {
    LISTENER.read().map(|l| l.is_some()).unwrap_or(false)
}

/// Connects TLS over an established TCP connection to `host` (a DNS name or an IP address).
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> io::Result<UpstreamStream> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server name {host:?}: {e}"),
        )
    })?;
    let stream = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(UpstreamStream::Tls(Box::new(stream)))
}

/// A connection to an upstream: plain TCP or TLS over it.
pub enum UpstreamStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsRawFd for UpstreamStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UpstreamStream::Plain(s) => s.as_raw_fd(),
            UpstreamStream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_close(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Serves one accepted client connection: the per-shard connection limit, then TLS when the
/// listener has it (the handshake bounded by `header_read_timeout`), then HTTP.
pub async fn serve(shard: Rc<crate::shard::Shard>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Some(_slot) =
        crate::endpoint::limits::connection_slot(crate::endpoint::limits::max_connections())
    else {
        crate::endpoint::limits::refuse_connection(tcp, acceptor().is_some()).await;
        return;
    };
    let _open = crate::metrics::Connection::open();
    // Counted below TLS: the byte counters measure the wire.
    let counted = crate::metrics::Counted::new(tcp);
    match acceptor() {
        None => crate::endpoint::http::serve_connection(shard, counted).await,
        Some(acceptor) => {
            let limit = crate::endpoint::limits::connection_limits().header_read_timeout;
            let handshake =
                glommio::timer::timeout(limit, async { Ok(acceptor.accept(counted).await) }).await;
            match handshake {
                Ok(Ok(stream)) => crate::endpoint::http::serve_connection(shard, stream).await,
                Ok(Err(e)) => log::debug!("TLS handshake failed: {e}"),
                Err(_) => log::debug!("TLS handshake not finished within {limit:?}"),
            }
        }
    }
}
