//! What every service reads from a request the same way: the caller's
//! user id, a page size, and the time.

use std::time::{SystemTime, UNIX_EPOCH};

use mamey_core::{Error, MessageContext};

/// The page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;

/// The largest page.
pub const MAX_LIMIT: i64 = 100;

/// The caller's user id: the token's subject, a positive decimal.
///
/// # Errors
/// No identity, or a subject that is not a user id (401).
pub fn caller(ctx: &MessageContext) -> Result<i64, Error> {
    ctx.identity
        .as_ref()
        .and_then(|identity| identity.subject.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            Error::unauthorized("auth.unauthorized", "a user's bearer token is required")
        })
}

/// The page size asked for (`limit`), 1 to [`MAX_LIMIT`], or
/// [`DEFAULT_LIMIT`].
///
/// # Errors
/// Out of range: 400 `{service}.invalid_limit`.
pub fn limit(limit: Option<i64>, service: &str) -> Result<i64, Error> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Error::invalid_input(
            format!("{service}.invalid_limit"),
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Now, in Unix milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_stay_in_range() {
        assert_eq!(limit(None, "chat").ok(), Some(DEFAULT_LIMIT));
        assert_eq!(limit(Some(1), "chat").ok(), Some(1));
        assert_eq!(limit(Some(100), "chat").ok(), Some(100));
        for bad in [0, -1, 101] {
            let error = limit(Some(bad), "chat").err();
            assert_eq!(
                error.map(|e| e.code().to_owned()),
                Some("chat.invalid_limit".into())
            );
        }
    }

    #[test]
    fn the_caller_is_a_positive_user_id() {
        let mut ctx = MessageContext::default();
        assert!(caller(&ctx).is_err());
        ctx.identity = Some(mamey_core::Identity::new("42"));
        assert_eq!(caller(&ctx).ok(), Some(42));
        ctx.identity = Some(mamey_core::Identity::new("service-x"));
        assert!(caller(&ctx).is_err());
        ctx.identity = Some(mamey_core::Identity::new("-3"));
        assert!(caller(&ctx).is_err());
    }
}
