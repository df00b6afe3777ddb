//! Work sent between shards over glommio's channel mesh.
//!
//! The mesh carries one kind of work: a closure that runs on the receiving shard with that
//! shard's context (Seastar's `invoke_on`). [`Mesh::tell`] runs one and forgets it;
//! [`Mesh::ask`] waits for the value it produces; [`Mesh::stream`] receives the values it
//! sends, in order, as they are produced (a streamed reply flows back as the owner writes it).
//! The mesh knows nothing of what the work is: each layer sends its own closures and its own
//! value types, and the same calls could one day reach another instance.
//!
//! Receive loops never wait: each closure runs at once and spawns a task if it has to wait,
//! and values are handed to unbounded local channels, so two shards sending to each other
//! cannot deadlock. A stream the asker stops reading (its client went away) is dropped, and
//! the work producing it is cancelled on its shard.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::task::JoinHandle;

use super::Shard;

/// Capacity of each shard-to-shard channel.
pub const CHANNEL_SIZE: usize = 1024;

/// A value sent back to the asking shard; downcast there to the type its asker expects.
type Value = Box<dyn Any + Send>;

/// The work future a streaming closure returns, boxed on the shard that runs it.
type Running = Pin<Box<dyn Future<Output = ()>>>;

/// Work for another shard: given that shard's context and, when the asker waits for values,
/// where to send them.
type Work = Box<dyn FnOnce(&Rc<Shard>, Option<Route>) -> Option<Running> + Send>;

/// One message between shards.
pub enum Msg {
    /// Run `work` here; values go back to `reply` (the asking shard and its token) if set.
    Run {
        /// The work.
        work: Work,
        /// Where its values go.
        reply: Option<(usize, u64)>,
    },
    /// A value for the asker's `token`.
    Value {
        /// The asker's tag.
        token: u64,
        /// The value.
        value: Value,
    },
    /// No more values for `token`.
    End {
        /// The asker's tag.
        token: u64,
    },
    /// The asker stopped reading `token`: cancel the work producing it.
    Abandon {
        /// The asking shard.
        from: usize,
        /// Its tag.
        token: u64,
    },
}

/// Where the values of one piece of work go: the asking shard and its token.
pub struct Route {
    senders: Rc<Senders<Msg>>,
    to: usize,
    token: u64,
}

/// The sending end of a stream of values back to the asking shard.
pub struct Sender<T> {
    route: Route,
    kind: PhantomData<fn(T)>,
}

impl<T: Send + 'static> Sender<T> {
    /// Sends one value; false when the asking shard is gone.
    pub async fn send(&self, value: T) -> bool {
        let Route { senders, to, token } = &self.route;
        let msg = Msg::Value {
            token: *token,
            value: Box::new(value),
        };
        senders.send_to(*to, msg).await.is_ok()
    }
}

/// The values another shard sends for one [`Mesh::stream`] call, in order. Dropped before
/// the end, it tells that shard to stop producing them.
pub struct Stream<T> {
    shard: Rc<Shard>,
    peer: usize,
    token: u64,
    values: LocalReceiver<Option<Value>>,
    ended: bool,
    kind: PhantomData<T>,
}

impl<T: 'static> Stream<T> {
    /// The next value, or `None` at the end (or when the peer is gone).
    pub async fn next(&mut self) -> Option<T> {
        while !self.ended {
            match self.values.recv().await {
                Some(Some(value)) => match value.downcast::<T>() {
                    Ok(value) => return Some(*value),
                    // Only this module builds values, each for the type its asker named.
                    Err(_) => log::error!("a mesh value of an unexpected type was dropped"),
                },
                _ => self.ended = true,
            }
        }
        None
    }
}

impl<T> Drop for Stream<T> {
    fn drop(&mut self) {
        let mesh = &self.shard.mesh;
        mesh.waiting.borrow_mut().remove(&self.token);
        if !self.ended {
            let (from, token) = (mesh.me, self.token);
            mesh.send_later(self.peer, Msg::Abandon { from, token });
        }
    }
}

/// This shard's end of the mesh.
pub struct Mesh {
    me: usize,
    senders: Option<Rc<Senders<Msg>>>,
    /// Streams this shard reads, by token: `None` marks the end.
    waiting: RefCell<HashMap<u64, LocalSender<Option<Value>>>>,
    /// Work this shard runs for others, by (asking shard, token), so it can be cancelled.
    serving: RefCell<HashMap<(usize, u64), JoinHandle<()>>>,
    next_token: Cell<u64>,
}

impl Mesh {
    /// Shard `me`'s end; `None` senders when this is the only shard.
    pub fn new(me: usize, senders: Option<Senders<Msg>>) -> Mesh {
        Mesh {
            me,
            senders: senders.map(Rc::new),
            waiting: RefCell::new(HashMap::new()),
            serving: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
        }
    }

    fn send_later(&self, peer: usize, msg: Msg) {
        if let Some(senders) = self.senders.clone() {
            glommio::spawn_local(async move {
                if senders.send_to(peer, msg).await.is_err() {
                    log::warn!("shard {peer} is gone; message dropped");
                }
            })
            .detach();
        }
    }

    /// Runs `work` on `peer` without waiting for it (dropped when `peer` is gone). Work that
    /// has to wait spawns its own task there.
    pub fn tell<F>(&self, peer: usize, work: F)
    where
        F: FnOnce(&Rc<Shard>) + Send + 'static,
    {
        let work: Work = Box::new(move |shard, _| {
            work(shard);
            None
        });
        self.send_later(peer, Msg::Run { work, reply: None });
    }

    /// Runs `work` on `peer` and returns the values it sends through the [`Sender`] it is
    /// given, as they come; `None` when `peer` is gone (or this is the only shard).
    pub async fn stream<T, F, Fut>(shard: &Rc<Shard>, peer: usize, work: F) -> Option<Stream<T>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>, Sender<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let mesh = &shard.mesh;
        let senders = mesh.senders.as_ref()?;
        let token = mesh.next_token.get();
        mesh.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_unbounded();
        mesh.waiting.borrow_mut().insert(token, tx);
        let work: Work = Box::new(move |shard, route| {
            let sender = Sender {
                route: route?,
                kind: PhantomData,
            };
            Some(Box::pin(work(shard.clone(), sender)))
        });
        let msg = Msg::Run {
            work,
            reply: Some((mesh.me, token)),
        };
        // From here on, dropping the stream removes `token` and, unless ended, abandons it.
        let mut stream = Stream {
            shard: shard.clone(),
            peer,
            token,
            values: rx,
            ended: false,
            kind: PhantomData,
        };
        if senders.send_to(peer, msg).await.is_err() {
            stream.ended = true;
            return None;
        }
        Some(stream)
    }

    /// Runs `work` on `peer` and returns its value; `None` when `peer` is gone or has not
    /// answered `within` (then the work is cancelled there).
    pub async fn ask<T, F, Fut>(
        shard: &Rc<Shard>,
        peer: usize,
        within: Duration,
        work: F,
    ) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let answer = async {
            let mut stream =
                Mesh::stream(shard, peer, move |shard, sender: Sender<T>| async move {
                    let value = work(shard).await;
                    sender.send(value).await;
                })
                .await?;
            stream.next().await
        };
        let late = async {
            glommio::timer::sleep(within).await;
            None
        };
        futures_lite::future::or(answer, late).await
    }

    /// Starts one receive loop per peer.
    pub fn spawn_receivers(shard: &Rc<Shard>, mut receivers: Receivers<Msg>) {
        for (_peer, rx) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    shard.mesh.receive(&shard, msg);
                }
            })
            .detach();
        }
    }

    fn receive(&self, shard: &Rc<Shard>, msg: Msg) {
        match msg {
            Msg::Run { work, reply: None } => {
                work(shard, None);
            }
            Msg::Run {
                work,
                reply: Some((from, token)),
            } => {
                let Some(senders) = self.senders.clone() else {
                    return;
                };
                let route = Route {
                    senders: senders.clone(),
                    to: from,
                    token,
                };
                let Some(running) = work(shard, Some(route)) else {
                    return;
                };
                let owner = shard.clone();
                let task = glommio::spawn_local(async move {
                    running.await;
                    let _ = senders.send_to(from, Msg::End { token }).await;
                    owner.mesh.serving.borrow_mut().remove(&(from, token));
                })
                .detach();
                self.serving.borrow_mut().insert((from, token), task);
            }
            Msg::Value { token, value } => {
                if let Some(tx) = self.waiting.borrow().get(&token) {
                    // Unbounded, so this never waits; a closed receiver means the asker left.
                    let _ = tx.try_send(Some(value));
                }
            }
            Msg::End { token } => {
                if let Some(tx) = self.waiting.borrow_mut().remove(&token) {
                    let _ = tx.try_send(None);
                }
            }
            Msg::Abandon { from, token } => {
                if let Some(task) = self.serving.borrow_mut().remove(&(from, token)) {
                    task.cancel();
                }
            }
        }
    }
}
