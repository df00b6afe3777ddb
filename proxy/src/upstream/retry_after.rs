//! `Retry-After` on an upstream's 503 or 429: how long the replica asked to get no work.
//!
//! Parsed here, at the HTTP edge, so the balancer only ever sees a [`Duration`] (it knows
//! nothing of HTTP). Anything that is not a well-formed value (RFC 9110 §10.2.3: delta-seconds
//! or an HTTP-date) is ignored, never guessed at: a header only lengthens an ejection the
//! replica's failures already earned, and the balancer caps how long (see
//! `balance::ReplicaStats::asked_pause`), so a bad or absurd value can neither panic nor keep a
//! replica out for good.

use std::time::{Duration, SystemTime};

use crate::http::ResponseHead;

/// Largest delta-seconds taken as written; longer ones saturate here (RFC 9111 §1.2.2 asks
/// recipients to treat an overflowing delta-seconds as 2^31).
const SATURATED: u64 = 1 << 31;

/// The pause an answer asks for: its `Retry-After`, when the status is one that carries it as
/// "the server cannot take work now" (503 Service Unavailable, 429 Too Many Requests) and the
/// value parses to more than zero. Every answer passes here, so the clock is read only for
/// those.
pub fn of(head: &ResponseHead) -> Option<Duration> {
    if !matches!(head.status, 503 | 429) {
        return None;
    }
    parse(head.header("retry-after")?, SystemTime::now())
}

/// Parses a `Retry-After` value: delta-seconds (digits only: no sign, no fraction) or an
/// HTTP-date (counted from `now`). `None` for anything else, for zero and for a date already
/// past.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let pause = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only way to fail is overflow, which saturates.
        Duration::from_secs(value.parse::<u64>().map_or(SATURATED, |s| s.min(SATURATED)))
    } else {
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()?
    };
    (!pause.is_zero()).then_some(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
    const EXAMPLE: u64 = 784_111_777;

    #[test]
    fn delta_seconds() {
        let now = at(EXAMPLE);
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse("007", now), Some(Duration::from_secs(7)));
        // Zero asks for no pause at all.
        assert_eq!(parse("0", now), None);
    }

    #[test]
    fn http_dates_count_from_now() {
        let now = at(EXAMPLE - 30);
        let in_30s = Some(Duration::from_secs(30));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), in_30s);
        // The two obsolete forms a recipient must still accept.
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now), in_30s);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now), in_30s);
        // A date already past (clocks differ) asks for nothing.
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", at(EXAMPLE + 5)),
            None
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", at(EXAMPLE)), None);
    }

    #[test]
    fn garbage_and_negative_values_are_ignored() {
        let now = at(EXAMPLE);
        for value in [
            "",
            " ",
            "-5",
            "+5",
            "5.5",
            "1e3",
            "5s",
            "soon",
            "0x10",
            "١٢",
            "5, 6",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(value, now), None, "{value:?}");
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let now = at(EXAMPLE);
        let max = Some(Duration::from_secs(SATURATED));
        assert_eq!(parse("18446744073709551615", now), max);
        assert_eq!(parse("99999999999999999999999999999999", now), max);
        assert_eq!(parse(&"9".repeat(10_000), now), max);
        // A date far ahead is large but finite; the balancer caps it like any other.
        let far = parse("Fri, 31 Dec 9999 23:59:59 GMT", now).expect("a future date");
        assert!(far > Duration::from_secs(SATURATED));
    }
}
