//! Rate limits: one token bucket per client on each shard.
//!
//! Buckets are thread-local (one shard per thread): no lock, no mesh message. A client's rate
//! is therefore per shard, and its burst too. In a fleet each member's share is the limit
//! divided by the live member count (`cluster::live_members`), so a client spread evenly over
//! the members gets the limit across the fleet (see docs/auth.md, "Limits").

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::config::auth::Rate;

use super::running::Auth;

struct Bucket {
    tokens: f64,
    at: Instant,
}

thread_local! {
    /// This shard's buckets, by client index.
    static BUCKETS: RefCell<Vec<Option<Bucket>>> = const { RefCell::new(Vec::new()) };
}

/// Takes one token of `client`'s bucket on this shard, or says how long until one is there;
/// `share` members split the rate and the burst (1 for a single instance).
pub(super) fn take_token(
    client: usize,
    rate: &Rate,
    share: usize,
    now: Instant,
) -> Result<(), Duration> {
    BUCKETS.with(|b| {
        let mut buckets = b.borrow_mut();
        if buckets.len() <= client {
            buckets.resize_with(client + 1, || None);
        }
        let share = share.max(1) as f64;
        let per_sec = f64::from(rate.requests) / rate.per.as_secs_f64() / share;
        let burst = (f64::from(rate.burst) / share).max(1.0);
        let bucket = buckets[client].get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    })
}

/// Moves this shard's buckets from `old`'s client order to `next`'s, by client name; a client
/// `next` no longer has loses its bucket.
pub(super) fn follow_clients(old: &Auth, next: &Auth) {
    BUCKETS.with(|b| {
        let mut buckets = b.borrow_mut();
        let mut moved: Vec<Option<Bucket>> = next.config.clients.iter().map(|_| None).collect();
        for (i, c) in old.config.clients.iter().enumerate() {
            if let (Some(j), Some(bucket)) = (next.find(&c.name), buckets.get_mut(i)) {
                moved[j] = bucket.take();
            }
        }
        *buckets = moved;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill() {
        let rate = Rate {
            requests: 2,
            per: Duration::from_secs(1),
            burst: 2,
        };
        let t0 = Instant::now();
        assert!(take_token(7, &rate, 1, t0).is_ok());
        assert!(take_token(7, &rate, 1, t0).is_ok());
        let wait = take_token(7, &rate, 1, t0).expect_err("empty");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(take_token(7, &rate, 1, t0 + Duration::from_millis(500)).is_ok());
        assert!(
            take_token(8, &rate, 1, t0).is_ok(),
            "buckets are per client"
        );
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;

    #[test]
    fn a_fleet_member_gets_its_share_of_the_rate_and_the_burst() {
        let rate = Rate {
            requests: 30,
            per: Duration::from_secs(1),
            burst: 30,
        };
        let t0 = Instant::now();
        // Three members: 10 of the burst here, then 10/s.
        for _ in 0..10 {
            assert!(take_token(3, &rate, 3, t0).is_ok());
        }
        let wait = take_token(3, &rate, 3, t0).expect_err("share spent");
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(take_token(3, &rate, 3, t0 + Duration::from_millis(100)).is_ok());
    }
}
