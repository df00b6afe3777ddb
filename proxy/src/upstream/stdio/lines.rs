//! Newline-delimited JSON-RPC framing, shared by both stdio sides (the proxy as a stdio server,
//! and the proxy talking to its stdio children).

use bytes::Bytes;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::LocalReceiver;
use glommio::net::UnixStream;

/// Longest line accepted from a peer.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// A peer sent a line longer than [`MAX_LINE`].
#[derive(Debug, thiserror::Error)]
#[error("a line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Writes each message followed by a newline, flushing every one (the peer waits on it).
pub async fn write_lines(mut writer: WriteHalf<UnixStream>, lines: LocalReceiver<Bytes>) {
    while let Some(line) = lines.recv().await {
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(&line);
        framed.push(b'\n');
        if writer.write_all(&framed).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

/// Calls `on_line` with every non-blank line (without its `\n` or `\r\n`) until the input ends.
pub async fn read_lines(
    reader: &mut ReadHalf<UnixStream>,
    mut on_line: impl FnMut(&[u8]),
) -> Result<(), LineTooLong> {
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + pos];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                on_line(line);
            }
            start += pos + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            return Err(LineTooLong);
        }
    }
}
