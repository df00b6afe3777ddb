//! The proxy as a stdio MCP server (`mcp-proxy --stdio`), for desktop clients that launch
//! their servers as child processes.
//!
//! One client, one session: newline-delimited JSON-RPC in on stdin, out on stdout; logs go to
//! stderr only. Every incoming message is handled in its own task, so a cancellation or a
//! sampling answer is read while the call it concerns is still running.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::future::poll_fn;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::UnixStream;

use crate::mcp::routing::{self, Answer};
use crate::mcp::session::ShardSessions;
use crate::mcp::session::{Next, Session, STANDALONE};
use crate::protocol::jsonrpc::{self, code, Kind};
use crate::shard::Shard;
use crate::upstream::stdio::lines::{read_lines, write_lines};

/// Joins the process's stdin and stdout to one end of a socket pair and returns the other,
/// as a raw fd for the shard to adopt: glommio cannot drive pipes, but it drives sockets.
pub fn bridge_stdio() -> std::io::Result<std::os::unix::net::UnixStream> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut to_proxy = theirs.try_clone()?;
    let mut from_proxy = theirs;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_proxy.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // End of input: the proxy sees end-of-file and shuts down.
            let _ = to_proxy.shutdown(std::net::Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("stdout".into())
        .spawn(move || {
            let mut stdout = std::io::stdout().lock();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from_proxy.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdout
                            .write_all(&buf[..n])
                            .and_then(|_| stdout.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        })?;
    Ok(ours)
}

/// Serves one client on `io` until it closes its input.
pub async fn serve(shard: Rc<Shard>, io: std::os::unix::net::UnixStream) {
    // SAFETY: the fd comes from a socket this function owns from here on.
    let stream = unsafe { UnixStream::from_raw_fd(io.into_raw_fd()) };
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (out, lines) = local_channel::new_unbounded();
    let writer_task = glommio::spawn_local(write_lines(writer, lines));
    let session: Rc<std::cell::RefCell<Option<Rc<Session>>>> = Rc::default();
    let out = Rc::new(out);
    let read = read_lines(&mut reader, |line| {
        let (shard, session, out) = (shard.clone(), session.clone(), out.clone());
        let line = Bytes::copy_from_slice(line);
        glommio::spawn_local(async move { handle_line(shard, session, out, line).await }).detach();
    })
    .await;
    if let Err(e) = read {
        log::error!("stdio client sent {e}; closing");
    }
    let ended = session.borrow_mut().take();
    if let Some(s) = ended {
        shard
            .end_session(&s.id, crate::metrics::Closed::SessionEnded)
            .await;
    }
    drop(out);
    writer_task.await;
}

async fn handle_line(
    shard: Rc<Shard>,
    session: Rc<std::cell::RefCell<Option<Rc<Session>>>>,
    out: Rc<LocalSender<Bytes>>,
    line: Bytes,
) {
    let current = session.borrow().clone();
    let Some(current) = current else {
        let mut buf = line.to_vec();
        let reply = match jsonrpc::parse(&mut buf) {
            Err(e) => Some(jsonrpc::error_body(None, e.code(), &e.to_string())),
            Ok(msg) => match jsonrpc::classify(&msg) {
                Ok(Kind::Request {
                    id,
                    method: "initialize",
                }) => match routing::initialize(&shard, &id, &msg, None) {
                    Ok((s, answer)) => {
                        *session.borrow_mut() = Some(s.clone());
                        glommio::spawn_local(follow(s, STANDALONE, out.clone())).detach();
                        Some(answer)
                    }
                    Err(answer) => Some(answer),
                },
                Ok(Kind::Request { id, .. }) => Some(jsonrpc::error_body(
                    Some(&id),
                    code::INVALID_REQUEST,
                    "send initialize first",
                )),
                Ok(_) => None,
                Err(e) => Some(jsonrpc::error_body(None, e.code(), &e.to_string())),
            },
        };
        if let Some(reply) = reply {
            let _ = out.try_send(reply);
        }
        return;
    };
    current.touch();
    let received = std::time::Instant::now();
    let answer = routing::handle(&shard, &current, line, true, received).await;
    write_answer(answer, out).await;
}

/// Writes an MCP answer as lines: the one place answers reach stdout. A message is one line;
/// a stream is each of its messages as it comes; a taken notification or response and a
/// cancelled exchange write nothing.
async fn write_answer(answer: Answer, out: Rc<LocalSender<Bytes>>) {
    match answer {
        Answer::Json(b) | Answer::Refused(b) | Answer::Unknown(b) => {
            let _ = out.try_send(b);
        }
        Answer::Stream(session, stream) => follow(session, stream, out).await,
        Answer::Accepted | Answer::Silent => {}
    }
}

/// Writes every message of one of the session's streams.
async fn follow(session: Rc<Session>, stream: u64, out: Rc<LocalSender<Bytes>>) {
    let epoch = session.events.claim(stream);
    let mut after = 0;
    loop {
        match poll_fn(|cx| session.events.poll_next(stream, after, epoch, cx)).await {
            Next::Event(seq, message) => {
                after = seq;
                if out.try_send(message).is_err() {
                    return;
                }
            }
            // A stream the server behind ended early is resumed by the proxy itself after the
            // server's retry hint; a stdio client cannot reconnect, so it waits for that.
            Next::End(_) if session.events.paused_retry(stream).is_some() => {
                poll_fn(|cx| session.events.poll_unpaused(stream, cx)).await;
            }
            Next::End(_) => return,
        }
    }
}
