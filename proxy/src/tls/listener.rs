//! The client-facing TLS configuration in force, and each shard's acceptor made from it.
//!
//! One process-wide [`Reloadable`] slot (empty while serving plain HTTP); a shard's acceptor is
//! a [`ShardCopy`], remade when a reload changed the slot, so accepting costs one atomic load.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::reloadable::{Reloadable, ShardCopy};
use crate::config::tls::{ListenerTls, TlsError};

/// The listener's current configuration; empty while serving plain HTTP.
static LISTENER: Reloadable<ServerConfig> = Reloadable::new();

thread_local! {
    /// This shard's acceptor, made from the configuration in force.
    static ACCEPTOR: RefCell<ShardCopy<Option<futures_rustls::TlsAcceptor>>> =
        const { RefCell::new(ShardCopy::new(None)) };
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
    let next = tls.map(super::server_config).transpose()?;
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
    match (LISTENER.is_set(), tls) {
        (false, None) => Ok(None),
        (true, Some(tls)) => Ok(Some(Reread {
            config: super::server_config(tls)?,
            cert_file: tls.cert_file.clone(),
        })),
        _ => Err(ReloadError::SchemeChange),
    }
}

fn set(config: Option<Arc<ServerConfig>>) {
    match config {
        Some(config) => LISTENER.replace(config),
        None => LISTENER.clear(),
    }
}

/// This shard's acceptor for a new connection, refreshed when a reload happened.
pub fn acceptor() -> Option<futures_rustls::TlsAcceptor> {
    ACCEPTOR.with(|cell| {
        cell.borrow_mut()
            .refresh(&LISTENER, |config, _| {
                config.map(futures_rustls::TlsAcceptor::from)
            })
            .clone()
    })
}

/// Whether the listener speaks TLS (for the ready line).
pub fn listener_enabled() -> bool {
    LISTENER.is_set()
}
