//! [`Secret`]: a configuration value that never prints.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a [`Secret`] shows instead of its value.
pub const REDACTED: &str = "[redacted]";

/// A value that must not appear in logs, `Debug` output or the printed
/// effective configuration: passwords, tokens, keys.
///
/// It deserializes like `T`; it serializes and formats as `"[redacted]"`.
/// Read the value with [`Secret::expose`].
///
/// ```
/// use mamey_core::config::Secret;
///
/// let password: Secret<String> = serde_json::from_str("\"hunter2\"").unwrap();
/// assert_eq!(password.expose(), "hunter2");
/// assert_eq!(format!("{password:?}"), "[redacted]");
/// assert_eq!(serde_json::to_string(&password).unwrap(), "\"[redacted]\"");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value. Call this only where the value is used, never to log.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}
