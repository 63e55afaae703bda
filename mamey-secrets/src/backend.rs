//! The [`SecretBackend`] contract, what it is asked for ([`SecretRef`]) and
//! what it answers ([`SecretData`]).

use std::fmt;

use futures_util::future::BoxFuture;
use mamey_core::config::Secret;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::SecretError;

/// A store secrets are read from: a file, the environment, Vault.
///
/// Implement it to read from another store; the [`SecretStore`](crate::SecretStore)
/// adds typed reads, watching and health on top.
pub trait SecretBackend: Send + Sync + 'static {
    /// The backend's name in errors and logs: `"vault"`, `"file"`, `"env"`.
    fn name(&self) -> &'static str;

    /// Reads the secret `secret` names: its keys and values.
    fn read<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<SecretData, SecretError>>;
}

/// Which secret to read: a path, and for Vault KV the mount, engine
/// version and secret version when they differ from the configured ones.
///
/// ```
/// use mamey_secrets::SecretRef;
///
/// let latest: SecretRef = "orders/db".into();
/// let pinned = SecretRef::new("orders/db").mount("kv").version(3);
/// assert_eq!(latest.path(), pinned.path());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    path: String,
    pub(crate) mount: Option<String>,
    pub(crate) kv_version: Option<u8>,
    pub(crate) version: Option<u64>,
}

impl SecretRef {
    /// The secret at `path` (`orders/db`), from the default mount, latest
    /// version.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into().trim_matches('/').to_owned(),
            mount: None,
            kv_version: None,
            version: None,
        }
    }

    /// Vault: read from this KV mount.
    #[must_use]
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = Some(mount.into());
        self
    }

    /// Vault: the KV engine version of the mount, 1 or 2.
    #[must_use]
    pub fn kv_version(mut self, version: u8) -> Self {
        self.kv_version = Some(version);
        self
    }

    /// Vault KV v2: read this version of the secret.
    #[must_use]
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// The path.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl From<&str> for SecretRef {
    fn from(path: &str) -> Self {
        Self::new(path)
    }
}

impl From<String> for SecretRef {
    fn from(path: String) -> Self {
        Self::new(path)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(mount) = &self.mount {
            write!(f, "{mount}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(version) = self.version {
            write!(f, "@v{version}")?;
        }
        Ok(())
    }
}

/// The keys and values of one secret. `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq)]
pub struct SecretData(Map<String, Value>);

impl SecretData {
    /// Wraps the keys and values a backend read.
    #[must_use]
    pub fn new(values: Map<String, Value>) -> Self {
        Self(values)
    }

    /// The value of `key` as text (a string as is, anything else as JSON).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Secret<String>> {
        self.0.get(key).map(|value| {
            Secret::new(match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
        })
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether the secret has no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret as a typed value; wrap its fields in [`Secret`] so they
    /// never print.
    ///
    /// # Errors
    /// [`SecretError::Shape`] naming the key and expected type — never the
    /// value.
    pub fn deserialize<T: DeserializeOwned>(&self, path: &str) -> Result<T, SecretError> {
        serde_path_to_error::deserialize(Value::Object(self.0.clone())).map_err(|e| {
            SecretError::Shape {
                path: path.to_owned(),
                reason: format!("at `{}`: {}", e.path(), redact_serde(e.inner())),
            }
        })
    }

    /// The keys and values, for an overlay.
    pub(crate) fn values(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, mamey_core::config::REDACTED)))
            .finish()
    }
}

/// A serde error's message without the offending value: serde quotes
/// values (`invalid type: string "hunter2"`, ``unknown variant `x` ``).
/// What is expected names the schema, never the value, so keep only that.
fn redact_serde(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("missing field") {
        return text;
    }
    let kind = if text.starts_with("invalid type") {
        "invalid type"
    } else if text.starts_with("unknown variant") {
        "unknown variant"
    } else {
        "invalid value"
    };
    match text.find(", expected ") {
        Some(at) => format!("{kind}{}", &text[at..]),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_show_keys_not_values() {
        let data = SecretData::new(
            serde_json::json!({"password": "hunter2", "port": "not-a-number"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(
            format!("{data:?}"),
            r#"{"password": "[redacted]", "port": "[redacted]"}"#
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Db {
            password: Secret<String>,
            port: u16,
        }
        let error = data.deserialize::<Db>("orders/db").unwrap_err().to_string();
        assert!(error.contains("port"), "{error}");
        assert!(!error.contains("not-a-number"), "{error}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Mode {
            Fast,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct WithMode {
            password: Mode,
        }
        let error = data
            .deserialize::<WithMode>("orders/db")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant, expected"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let db: Result<Db, _> = SecretData::new(
            serde_json::json!({"password": "hunter2", "port": 5432})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .deserialize("orders/db");
        assert_eq!(db.unwrap().password.expose(), "hunter2");
    }
}
