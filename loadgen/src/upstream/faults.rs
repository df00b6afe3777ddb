//! What the upstream does wrong on purpose: latency drawn from a distribution, errors, stalls.
//!
//! Faults apply to requests other than `initialize`, so a load generator can always open its
//! sessions and the injected behaviour shows only in the measured traffic.

use std::time::Duration;

use crate::duration;

/// Why a latency distribution did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid latency distribution {0:?}: use e.g. 'p50=1ms,p99=20ms' (percentiles increasing, durations not decreasing)")]
pub struct DistError(pub String);

/// Injected latency: none, fixed, or drawn from percentile points.
#[derive(Debug, Clone, PartialEq)]
pub enum Latency {
    /// Always the same delay (zero for none).
    Fixed(Duration),
    /// Piecewise-linear between points `(quantile, delay)`, starting from (0, 0); above the last
    /// point the last delay holds. `p50=1ms,p99=20ms` gives half the requests 0..1 ms, 49% 1..20
    /// ms and 1% 20 ms.
    Dist(Vec<(f64, Duration)>),
}

impl Latency {
    /// Parses `p50=1ms,p99=20ms,p99.9=100ms`.
    pub fn parse_dist(text: &str) -> Result<Latency, DistError> {
        let err = || DistError(text.to_owned());
        let mut points: Vec<(f64, Duration)> = Vec::new();
        for part in text.split(',') {
            let (p, d) = part.trim().split_once('=').ok_or_else(err)?;
            let q: f64 = p
                .trim()
                .strip_prefix('p')
                .ok_or_else(err)?
                .parse()
                .map_err(|_| err())?;
            let q = q / 100.0;
            let d = duration::parse(d).map_err(|_| err())?;
            let ordered = points.last().is_none_or(|(lq, ld)| q > *lq && d >= *ld);
            if !(q > 0.0 && q <= 1.0 && ordered) {
                return Err(err());
            }
            points.push((q, d));
        }
        Ok(Latency::Dist(points))
    }

    /// The delay for a uniform draw `u` in [0, 1).
    pub fn sample(&self, u: f64) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::Dist(points) => {
                let (mut lq, mut ld) = (0.0, Duration::ZERO);
                for &(q, d) in points {
                    if u < q {
                        let f = (u - lq) / (q - lq);
                        return ld + (d - ld).mul_f64(f);
                    }
                    (lq, ld) = (q, d);
                }
                ld
            }
        }
    }
}

/// How an injected error is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// HTTP 200 with a JSON-RPC error -32603 (internal error): the upstream is up but failing.
    Rpc,
    /// HTTP 500 with a JSON-RPC error body: what a crashing web framework answers.
    Http,
}

/// The fault settings.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Delay before answering.
    pub latency: Latency,
    /// Fraction of requests answered with an error.
    pub error_rate: f64,
    /// How errors are answered.
    pub error_kind: ErrorKind,
    /// Fraction of requests never answered.
    pub stall_rate: f64,
    /// Fraction of POSTs (initialize and notifications included) answered with a bare HTTP
    /// error before the MCP server sees them, as a broken load balancer or an overloaded
    /// front end would.
    pub http_error_rate: f64,
    /// The status of those answers (503 by default).
    pub http_error_status: u16,
    /// POSTs served normally before `http_error_rate` applies: a replica that starts failing
    /// once clients are already using it.
    pub http_error_after: u64,
    /// `Retry-After` of those answers, sent as given (so a malformed one can be sent too);
    /// `None` sends `1` with a 503 and nothing with other statuses.
    pub retry_after: Option<String>,
}

/// Default status of `--http-error-rate` answers: what an overloaded front end says.
pub const DEFAULT_HTTP_ERROR_STATUS: u16 = 503;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Answer after the delay.
    Answer(Duration),
    /// Answer with an error after the delay.
    Fail(Duration),
    /// Never answer.
    Stall,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Faults {
        Faults {
            latency: Latency::Fixed(Duration::ZERO),
            error_rate: 0.0,
            error_kind: ErrorKind::Rpc,
            stall_rate: 0.0,
            http_error_rate: 0.0,
            http_error_status: DEFAULT_HTTP_ERROR_STATUS,
            http_error_after: 0,
            retry_after: None,
        }
    }

    /// The status to answer the POST that `earlier` POSTs preceded with instead of handling
    /// it, if the front end fails it. Drawn before anything else: the request never reaches
    /// the MCP server.
    pub fn gateway(&self, rng: &mut Rng, earlier: u64) -> Option<u16> {
        (self.http_error_rate > 0.0
            && earlier >= self.http_error_after
            && rng.uniform() < self.http_error_rate)
            .then_some(self.http_error_status)
    }

    /// The `Retry-After` of an injected answer with `status`.
    pub fn retry_after(&self, status: u16) -> Option<&str> {
        match &self.retry_after {
            Some(value) => Some(value),
            None => (status == 503).then_some("1"),
        }
    }

    /// Decides the fate of one request from three uniform draws.
    pub fn decide(&self, rng: &mut Rng) -> Decision {
        if self.stall_rate > 0.0 && rng.uniform() < self.stall_rate {
            return Decision::Stall;
        }
        let delay = match &self.latency {
            Latency::Fixed(d) => *d,
            dist => dist.sample(rng.uniform()),
        };
        if self.error_rate > 0.0 && rng.uniform() < self.error_rate {
            Decision::Fail(delay)
        } else {
            Decision::Answer(delay)
        }
    }
}

/// xorshift64*: statistically fine for fault injection, one multiply per draw, no crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the OS, or from the clock if that fails (the quality does not matter here).
    pub fn from_entropy() -> Rng {
        let mut seed = [0u8; 8];
        let s = match getrandom::fill(&mut seed) {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        Rng::seeded(s)
    }

    /// A generator with a fixed seed (0 is replaced: xorshift would stay at 0).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_points_and_interpolation() {
        let d = Latency::parse_dist("p50=1ms,p99=20ms").unwrap();
        assert_eq!(d.sample(0.0), Duration::ZERO);
        assert_eq!(d.sample(0.25), Duration::from_micros(500));
        assert_eq!(d.sample(0.5), Duration::from_millis(1));
        assert_eq!(d.sample(0.995), Duration::from_millis(20));
        assert!(Latency::parse_dist("p99=1ms,p50=2ms").is_err());
        assert!(Latency::parse_dist("p50=2ms,p99=1ms").is_err());
        assert!(Latency::parse_dist("50=1ms").is_err());
        assert!(Latency::parse_dist("p150=1ms").is_err());
    }

    #[test]
    fn rates_are_respected() {
        let faults = Faults {
            error_rate: 0.1,
            stall_rate: 0.05,
            ..Faults::none()
        };
        let mut rng = Rng::seeded(42);
        let (mut fails, mut stalls) = (0, 0);
        for _ in 0..100_000 {
            match faults.decide(&mut rng) {
                Decision::Fail(_) => fails += 1,
                Decision::Stall => stalls += 1,
                Decision::Answer(_) => {}
            }
        }
        assert!((4_500..5_500).contains(&stalls), "{stalls}");
        // Errors are drawn among the requests that were not stalled.
        assert!((9_000..10_000).contains(&fails), "{fails}");
    }

    #[test]
    fn gateway_failures_follow_their_rate_and_status() {
        let mut rng = Rng::seeded(7);
        let none = Faults::none();
        assert!((0..10_000).all(|_| none.gateway(&mut rng, 0).is_none()));
        let always = Faults {
            http_error_rate: 1.0,
            ..Faults::none()
        };
        assert!((0..1_000).all(|_| always.gateway(&mut rng, 0) == Some(503)));
        let half = Faults {
            http_error_rate: 0.5,
            http_error_status: 502,
            ..Faults::none()
        };
        let draws: Vec<_> = (0..100_000).map(|_| half.gateway(&mut rng, 0)).collect();
        let failed = draws.iter().filter(|d| d.is_some()).count();
        assert!((48_000..52_000).contains(&failed), "{failed}");
        assert!(draws.iter().flatten().all(|s| *s == 502));
    }

    #[test]
    fn gateway_failures_start_after_the_posts_served_first() {
        let mut rng = Rng::seeded(11);
        let later = Faults {
            http_error_rate: 1.0,
            http_error_after: 5,
            ..Faults::none()
        };
        let fates: Vec<_> = (0..10).map(|n| later.gateway(&mut rng, n)).collect();
        assert_eq!(fates[..5], [None; 5]);
        assert_eq!(fates[5..], [Some(503); 5]);
    }

    #[test]
    fn retry_after_defaults_to_one_second_on_503_only() {
        let plain = Faults::none();
        assert_eq!(plain.retry_after(503), Some("1"));
        assert_eq!(plain.retry_after(502), None);
        assert_eq!(plain.retry_after(429), None);
        let given = Faults {
            retry_after: Some("45".into()),
            ..Faults::none()
        };
        assert_eq!(given.retry_after(503), Some("45"));
        assert_eq!(given.retry_after(429), Some("45"));
    }
}
