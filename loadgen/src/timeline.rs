//! The measured window cut into equal slices (`--timeline 100ms`): what each slice's requests
//! saw, and how much CPU time the hypervisor took from the machine in it.
//!
//! On a virtual machine a vCPU the host does not run for a few milliseconds stalls every request
//! it holds, so a run's tail says as much about the host as about the server. Slicing the run
//! and reading the host's *steal* time per slice tells the two apart: the report adds the
//! latency over the slices in which the host took nothing (nor in the slice before, which a
//! stall's backlog spills into).

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::MAX_TRACKED_NS;

/// Most slices one run may keep: each costs a histogram of a few tens of KB.
pub const MAX_SLICES: usize = 3600;

/// Linux reports CPU times in `/proc/stat` in units of USER_HZ, which is 100 on every
/// architecture the proxy targets.
const NS_PER_TICK: u64 = 10_000_000;

/// Why a timeline cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// The slice length was zero.
    #[error("--timeline must be longer than 0")]
    Zero,
    /// More slices than [`MAX_SLICES`].
    #[error("--timeline {slice:?} cuts the {duration:?} run into {slices} slices; at most {MAX_SLICES}: use a longer slice")]
    TooMany {
        /// Asked slice length.
        slice: Duration,
        /// Measured time.
        duration: Duration,
        /// Slices that would make.
        slices: usize,
    },
}

/// How many slices of length `slice` cover `duration` (the last one may be shorter).
pub fn slices(slice: Duration, duration: Duration) -> Result<usize, TimelineError> {
    if slice.is_zero() {
        return Err(TimelineError::Zero);
    }
    let n = duration.as_nanos().div_ceil(slice.as_nanos()).max(1);
    match usize::try_from(n) {
        Ok(n) if n <= MAX_SLICES => Ok(n),
        _ => Err(TimelineError::TooMany {
            slice,
            duration,
            slices: usize::try_from(n).unwrap_or(usize::MAX),
        }),
    }
}

/// One slice's measurements.
#[derive(Debug, Clone)]
pub struct Slice {
    /// Latency of successful requests due in the slice, in nanoseconds (two significant
    /// digits: 1 % resolution is plenty to see a stall, at an eighth of the full histogram).
    pub latency: Histogram<u64>,
    /// Failed requests due in the slice.
    pub errors: u64,
}

/// An empty histogram with a slice's bounds and precision (slices and their merges share it).
pub fn slice_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 2).expect("constant histogram bounds are valid")
}

impl Slice {
    fn new() -> Self {
        Self {
            latency: slice_histogram(),
            errors: 0,
        }
    }
}

/// The slices of one thread's measured window (or, merged, of the whole run).
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Length of one slice.
    pub slice: Duration,
    /// Slice `i` holds the requests due in `[i * slice, (i + 1) * slice)` after the warm-up.
    pub slices: Vec<Slice>,
}

impl Timeline {
    /// `count` empty slices of length `slice`.
    pub fn new(slice: Duration, count: usize) -> Self {
        Self {
            slice,
            slices: (0..count).map(|_| Slice::new()).collect(),
        }
    }

    /// The slice a request due `since_start` after the warm-up belongs to.
    pub fn slot(&mut self, since_start: Duration) -> Option<&mut Slice> {
        let i = since_start.as_nanos() / self.slice.as_nanos().max(1);
        let last = self.slices.len().checked_sub(1)?;
        // A request due exactly at the end (rounding) goes into the last slice.
        self.slices
            .get_mut(usize::try_from(i).unwrap_or(last).min(last))
    }

    /// Adds another thread's slices (same slice length and count).
    pub fn merge(&mut self, other: &Timeline) {
        for (mine, theirs) in self.slices.iter_mut().zip(&other.slices) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.latency.add(&theirs.latency);
            mine.errors += theirs.errors;
        }
    }
}

/// Nanoseconds of CPU time the hypervisor has taken from this machine's CPUs since boot (the
/// "steal" column of every `cpuN` line of `/proc/stat`, summed). `None` off Linux or where the
/// file cannot be read.
pub fn host_steal_ns() -> Option<u64> {
    parse_steal(&std::fs::read_to_string("/proc/stat").ok()?).ok()
}

fn parse_steal(stat: &str) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/stat line");
    let mut ticks = 0u64;
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        // Per-CPU lines only ("cpu0 ..."), not the machine's total ("cpu  ...").
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        // cpuN user nice system idle iowait irq softirq steal ...
        let steal = rest.split_ascii_whitespace().nth(8).ok_or_else(bad)?;
        ticks += steal.parse::<u64>().map_err(|_| bad())?;
    }
    Ok(ticks * NS_PER_TICK)
}

/// Reads the host's steal at every slice boundary from `warm_end - slice` (so the first
/// slice has a slice before it) to the end of the last slice, on the calling thread.
/// Returns the steal of each of those `count + 1` intervals (the one before the first slice,
/// then each slice), in nanoseconds, or `None` when it cannot be read.
pub fn sample_steal(warm_end: Instant, slice: Duration, count: usize) -> Option<Vec<u64>> {
    let first = warm_end.checked_sub(slice).unwrap_or(warm_end);
    let mut last = {
        sleep_until(first);
        host_steal_ns()?
    };
    let mut out = Vec::with_capacity(count + 1);
    for k in 0..=count {
        sleep_until(warm_end + slice * u32::try_from(k).unwrap_or(u32::MAX));
        let now = host_steal_ns()?;
        out.push(now.saturating_sub(last));
        last = now;
    }
    Some(out)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_run_and_refuse_too_many() {
        let ms = Duration::from_millis;
        assert_eq!(slices(ms(100), ms(1000)).ok(), Some(10));
        assert_eq!(slices(ms(300), ms(1000)).ok(), Some(4));
        assert_eq!(slices(ms(5000), ms(1000)).ok(), Some(1));
        assert!(matches!(slices(ms(0), ms(1000)), Err(TimelineError::Zero)));
        let err = slices(ms(1), Duration::from_secs(3600)).err();
        assert!(err.is_some_and(|e| e.to_string().contains("use a longer slice")));
    }

    #[test]
    fn requests_land_in_the_slice_they_were_due_in() {
        let mut t = Timeline::new(Duration::from_millis(100), 3);
        for (at, us) in [
            (0, 10),
            (99, 20),
            (100, 30),
            (250, 40),
            (300, 50),
            (9000, 60),
        ] {
            if let Some(s) = t.slot(Duration::from_millis(at)) {
                s.latency.saturating_record(us * 1000);
            }
        }
        let counts: Vec<u64> = t.slices.iter().map(|s| s.latency.len()).collect();
        // Past the end (rounding, or a late timer) counts in the last slice.
        assert_eq!(counts, [2, 1, 3]);
    }

    #[test]
    fn steal_is_summed_over_the_cpus_only() {
        let stat = "cpu  10 0 10 100 0 0 0 700 0 0\n\
                    cpu0 5 0 5 50 0 0 0 300 0 0\n\
                    cpu1 5 0 5 50 0 0 0 400 0 0\n\
                    intr 12345\nctxt 999\n";
        assert_eq!(parse_steal(stat).ok(), Some(700 * NS_PER_TICK));
        assert!(parse_steal("cpu0 1 2 3\n").is_err());
    }
}
