//! [`EnvBackend`]: secrets from `MAMEY_SECRET__…` environment variables.

use std::collections::BTreeMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use crate::{SecretBackend, SecretData, SecretError, SecretRef};

/// Secrets from environment variables, read once when the backend is made:
/// path `orders/db` key `password` is `MAMEY_SECRET__ORDERS__DB__PASSWORD`
/// (upper case, `-` and `/` as `_` and `__`). The embedded default: nothing
/// to run, and what container platforms inject.
#[derive(Debug, Clone)]
pub struct EnvBackend {
    prefix: String,
    /// Variables under the prefix, name (without it) → value.
    vars: BTreeMap<String, String>,
}

impl EnvBackend {
    /// The process's variables that start with `prefix`.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self::from_vars(prefix, std::env::vars())
    }

    /// These variables instead of the process's (tests, embedding).
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        prefix: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| {
                k.as_ref()
                    .strip_prefix(prefix)
                    .map(|rest| (rest.to_owned(), v.into()))
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            vars,
        }
    }

    fn lookup(&self, secret: &SecretRef) -> Result<SecretData, SecretError> {
        let stem = format!(
            "{}__",
            secret
                .path()
                .split('/')
                .map(|segment| segment.replace('-', "_").to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        );
        let values: Map<String, Value> = self
            .vars
            .iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(&stem)?;
                (!key.is_empty() && !key.contains("__"))
                    .then(|| (key.to_lowercase(), Value::String(value.clone())))
            })
            .collect();
        if values.is_empty() {
            return Err(SecretError::NotFound {
                backend: "env",
                path: format!("{} ({}{stem}*)", secret.path(), self.prefix),
            });
        }
        Ok(SecretData::new(values))
    }
}

impl SecretBackend for EnvBackend {
    fn name(&self) -> &'static str {
        "env"
    }

    fn read<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<SecretData, SecretError>> {
        std::future::ready(self.lookup(secret)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_variable_names() {
        let env = EnvBackend::from_vars(
            "MAMEY_SECRET__",
            [
                ("MAMEY_SECRET__ORDERS_API__DB__PASSWORD", "pw"),
                ("MAMEY_SECRET__ORDERS_API__DB__USER", "orders"),
                ("MAMEY_SECRET__ORDERS_API__DB__NESTED__NO", "x"),
                ("OTHER__ORDERS_API__DB__PASSWORD", "no"),
            ],
        );
        let data = env.lookup(&"orders-api/db".into()).unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["password", "user"]);
        assert_eq!(data.get("password").unwrap().expose(), "pw");
        let missing = env.lookup(&"billing/db".into()).unwrap_err().to_string();
        assert!(
            missing.contains("MAMEY_SECRET__BILLING__DB__*"),
            "{missing}"
        );
    }
}
