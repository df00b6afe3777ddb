//! An upstream session's GET stream: the server's own messages (notifications, requests of
//! its own) for as long as the session lives, and a new session for a lost one that held
//! resource subscriptions, since a client that only listens sends nothing that would open one.

use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{Established, UpstreamSession};
use crate::balance::Traffic;
use crate::upstream::error::UpstreamError;

impl UpstreamSession {
    /// Listens on the upstream's GET stream for as long as this session is alive.
    pub(super) fn start_listener(self: &Rc<Self>, est: &Rc<Established>) {
        if self.sink.is_none() {
            return;
        }
        let Some(session_id) = est.session_id.clone() else {
            return;
        };
        let weak = Rc::downgrade(self);
        let version = est.version.clone();
        let generation = est.generation;
        let replica = est.replica;
        let task = glommio::spawn_local(async move {
            let mut backoff = Duration::from_millis(250);
            let mut last_event_id: Option<String> = None;
            loop {
                let Some(this) = weak.upgrade() else { return };
                if this.current().map(|s| s.generation) != Some(generation) {
                    return;
                }
                let client = this.client.clone();
                let credential = this.authorization().await;
                drop(this);
                let opened = match credential {
                    Ok(credential) => {
                        client
                            .open_stream(
                                replica,
                                &session_id,
                                &version,
                                last_event_id.as_deref(),
                                credential.as_deref(),
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(None) => return,
                    Ok(Some(mut stream)) => {
                        backoff = Duration::from_millis(250);
                        loop {
                            match stream.next().await {
                                Ok(Some(message)) => match weak.upgrade() {
                                    Some(this) => this.deliver(message),
                                    None => return,
                                },
                                Ok(None) => break,
                                Err(e) => {
                                    log::debug!(
                                        "upstream {}: GET stream broke: {e}",
                                        client.name()
                                    );
                                    break;
                                }
                            }
                        }
                        last_event_id = stream.last_event_id().map(str::to_owned);
                    }
                    Err(UpstreamError::SessionLost { .. }) => {
                        if let Some(this) = weak.upgrade() {
                            this.invalidate(generation);
                        }
                        // Otherwise the next request re-opens it; subscriptions cannot wait
                        // for one, since a client that only listens sends none.
                        reopen_for_subscriptions(weak).await;
                        return;
                    }
                    Err(e) => {
                        log::debug!("upstream {}: cannot open GET stream: {e}", client.name())
                    }
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        *self.listener.borrow_mut() = Some(task.detach());
    }
}

/// Opens a new session for a lost one that held resource subscriptions (renewing them, and
/// with them the GET stream that carries their updates), retrying with backoff while the
/// session lives, still holds some and no request has opened one meanwhile.
async fn reopen_for_subscriptions(weak: Weak<UpstreamSession>) {
    let mut pause = Duration::from_millis(250);
    loop {
        let Some(this) = weak.upgrade() else { return };
        if this.subscriptions.is_empty() || this.current().is_some() {
            return;
        }
        log::info!(
            "upstream {}: session lost; opening a new one to keep its resource subscriptions",
            this.client.name()
        );
        match this.established_avoiding(None, Traffic::Background).await {
            Ok(_) => return,
            Err(e) => log::warn!(
                server = this.client.name();
                "upstream {}: cannot open a new session to renew its resource subscriptions: {e}",
                this.client.name()
            ),
        }
        drop(this);
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}
