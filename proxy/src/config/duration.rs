//! Durations written as `"200us"`, `"250ms"`, `"10s"`, `"5m"`, `"1h"` or an integer number of seconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses `"<integer><unit>"` with unit `us`, `ms`, `s`, `m` or `h`; zero is refused because
/// every duration here is a timeout or a wait, and a zero timeout would fail every request.
pub fn parse(text: &str) -> Result<Duration, String> {
    let hint = "use a whole number followed by us, ms, s, m or h, e.g. \"10s\"";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\"; {hint}"))?;
    let micros = match unit {
        "us" => Some(n),
        "ms" => n.checked_mul(1_000),
        "s" => n.checked_mul(1_000_000),
        "m" => n.checked_mul(60_000_000),
        "h" => n.checked_mul(3_600_000_000),
        _ => return Err(format!("invalid duration \"{text}\"; {hint}")),
    }
    .ok_or_else(|| format!("duration \"{text}\" is too large"))?;
    if micros == 0 {
        return Err(format!(
            "duration \"{text}\" is zero; use a positive value, e.g. \"10s\""
        ));
    }
    Ok(Duration::from_micros(micros))
}

/// Serde `deserialize_with` for a string or integer-seconds duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// Accepts the two spellings of a duration.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"10s\", \"5m\", \"1h\" or whole seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(secs) => self.visit_u64(secs),
            Err(_) => Err(E::custom(format!(
                "duration {v} is negative; use a positive number of seconds"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        if v == 0 {
            return Err(E::custom(
                "duration 0 is zero; use a positive value, e.g. 10 or \"10s\"",
            ));
        }
        Ok(Duration::from_secs(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "0s", "0ms"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("99999999999999999999h").is_err());
        assert!(parse("9999999999999999h").is_err());
    }
}
