//! Serde support for [`Duration`] written as `"30s"`, `"250ms"`, `"5m"` or
//! `"1h"` (a bare number means seconds).
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Retry {
//!     #[serde(with = "mamey_core::config::duration")]
//!     delay: Duration,
//! }
//!
//! let retry: Retry = serde_json::from_str(r#"{ "delay": "250ms" }"#).unwrap();
//! assert_eq!(retry.delay, Duration::from_millis(250));
//! assert_eq!(serde_json::to_string(&retry).unwrap(), r#"{"delay":"250ms"}"#);
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserializer, Serializer};

const EXPECTED: &str = "a duration like \"30s\", \"250ms\", \"5m\" or \"1h\"";

/// Parses `"30s"`, `"250ms"`, `"5m"`, `"1h"` or a bare number of seconds.
///
/// # Errors
/// Returns a message naming the expected shape when `text` is none of those.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid duration \"{text}\": expected {EXPECTED}");
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(invalid()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

/// Formats a duration the way [`parse`] reads it, in the largest exact unit.
#[must_use]
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(3_600_000) && millis > 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Serializes as [`format()`] does.
///
/// # Errors
/// Only those of the serializer.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// Deserializes what [`parse`] reads, or a number of seconds.
///
/// # Errors
/// A value that is neither names the expected shape.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| E::invalid_value(Unexpected::Float(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_garbage_naming_the_shape() {
        for bad in ["soon", "10 parsecs", "", "-1s", "s"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("expected a duration like"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(7200),
            Duration::ZERO,
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
