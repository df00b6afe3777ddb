//! A child's stderr, copied into the proxy's log without letting the child hurt the proxy.
//!
//! The pipe is drained for as long as the child holds it open, whatever it writes: a reader
//! that stopped would leave the child blocked on a full pipe, or dead of EPIPE / SIGPIPE on its
//! next write. What is read is bytes, not text, so bytes that are not UTF-8 are decoded
//! lossily rather than ending the reader. A line keeps at most [`MAX_LINE`] bytes (the rest is
//! read and counted, and the logged line says how much was cut), so a child writing without
//! newlines cannot grow the proxy. At most [`LINES_PER_SECOND`] lines a second (after a burst
//! of [`BURST`]) reach the log; the others are counted and the count is logged once a second
//! while lines are being dropped, and when the pipe closes. Control characters are escaped by
//! the log's formatter (`metrics::logs`), so a child cannot forge log lines or send terminal
//! escapes.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Longest part of one stderr line that is logged.
pub const MAX_LINE: usize = 8 * 1024;
/// Lines logged per second per child, sustained.
pub const LINES_PER_SECOND: u32 = 50;
/// Lines logged at once before the rate applies (a start-up banner or a stack trace).
pub const BURST: u32 = 200;
/// How often a count of dropped lines is logged while lines are being dropped.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reads `stderr` of server `name` until end-of-file, logging its lines under target `stdio`.
pub fn drain(name: &str, mut stderr: impl Read + AsRawFd) {
    let fd = stderr.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cutter = LineCutter::default();
    let mut bucket = TokenBucket::new(Instant::now());
    let mut dropped: u64 = 0;
    let mut last_report = Instant::now();
    let report = |dropped: &mut u64, last_report: &mut Instant| {
        if *dropped > 0 {
            log::warn!(
                target: "stdio",
                "{name}: dropped {dropped} lines of stderr (more than {LINES_PER_SECOND} lines/s)"
            );
            *dropped = 0;
        }
        *last_report = Instant::now();
    };
    loop {
        if dropped > 0 {
            // Wait for input only until the next report is due, so a count is logged even
            // when the child goes quiet after a flood.
            let due = DROP_REPORT_EVERY.saturating_sub(last_report.elapsed());
            if due.is_zero() || !readable_within(fd, due) {
                report(&mut dropped, &mut last_report);
                continue;
            }
        }
        let n = match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!(target: "stdio", "{name}: cannot read stderr: {e}");
                break;
            }
        };
        let now = Instant::now();
        cutter.feed(&buf[..n], |line, cut| {
            if bucket.take(now) {
                log_line(name, line, cut);
            } else {
                dropped += 1;
            }
        });
    }
    cutter.finish(|line, cut| {
        if bucket.take(Instant::now()) {
            log_line(name, line, cut);
        } else {
            dropped += 1;
        }
    });
    report(&mut dropped, &mut last_report);
}

fn log_line(name: &str, line: &[u8], cut: u64) {
    let text = String::from_utf8_lossy(line);
    if cut > 0 {
        log::info!(target: "stdio", "{name}: {text}... [truncated {cut} bytes]");
    } else {
        log::info!(target: "stdio", "{name}: {text}");
    }
}

/// Whether `fd` has input (or end-of-file) within `wait`.
fn readable_within(fd: i32, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd on the stack; poll only writes its revents.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    // An error (EINTR) counts as readable: the caller's read sorts it out.
    n != 0
}

/// Splits a byte stream into lines, keeping at most [`MAX_LINE`] bytes of each.
#[derive(Default)]
struct LineCutter {
    line: Vec<u8>,
    cut: u64,
}

impl LineCutter {
    /// Calls `on_line(kept, cut)` for every line `data` completes (without `\n` or `\r\n`);
    /// blank lines are skipped.
    fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8], u64)) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.keep(&data[..end]);
            self.emit(&mut on_line);
            data = &data[end + 1..];
        }
        self.keep(data);
    }

    /// Emits the last line when the stream ends without a newline.
    fn finish(&mut self, mut on_line: impl FnMut(&[u8], u64)) {
        self.emit(&mut on_line);
    }

    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LINE - self.line.len();
        let kept = room.min(part.len());
        self.line.extend_from_slice(&part[..kept]);
        self.cut += (part.len() - kept) as u64;
    }

    fn emit(&mut self, on_line: &mut impl FnMut(&[u8], u64)) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if self.cut > 0 || !line.iter().all(u8::is_ascii_whitespace) {
            on_line(line, self.cut);
        }
        self.line.clear();
        self.cut = 0;
    }
}

/// [`BURST`] tokens, refilled at [`LINES_PER_SECOND`]; one per logged line.
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(BURST),
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill =
            now.saturating_duration_since(self.at).as_secs_f64() * f64::from(LINES_PER_SECOND);
        self.tokens = (self.tokens + refill).min(f64::from(BURST));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut cutter = LineCutter::default();
        for c in chunks {
            cutter.feed(c, |l, cut| out.push((l.to_vec(), cut)));
        }
        cutter.finish(|l, cut| out.push((l.to_vec(), cut)));
        out
    }

    #[test]
    fn lines_split_across_reads_and_long_ones_are_cut() {
        assert_eq!(
            lines(&[b"a\r\nb", b"c\n\n  \nlast"]),
            [
                (b"a".to_vec(), 0),
                (b"bc".to_vec(), 0),
                (b"last".to_vec(), 0)
            ]
        );
        let long = vec![b'x'; MAX_LINE + 10];
        let got = lines(&[&long, &long, b"\nnext\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), MAX_LINE);
        assert_eq!(got[0].1, (2 * (MAX_LINE + 10) - MAX_LINE) as u64);
        assert_eq!(got[1], (b"next".to_vec(), 0));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        let burst = (0..BURST * 2).filter(|_| b.take(t0)).count();
        assert_eq!(burst, BURST as usize);
        let later = t0 + Duration::from_secs(2);
        let refilled = (0..BURST * 2).filter(|_| b.take(later)).count();
        assert_eq!(refilled, (2 * LINES_PER_SECOND) as usize);
    }
}
