//! Laying secrets over the configuration: each `secrets.overlay` entry's
//! keys become configuration keys under its `into`.

use mamey_core::config::figment::value::{Dict, Value};

use crate::config::OverlayEntry;
use crate::{SecretError, SecretRef, SecretStore};

/// Reads every entry and nests its keys into one table.
pub(crate) async fn build(
    store: &SecretStore,
    entries: &[OverlayEntry],
) -> Result<Dict, SecretError> {
    let mut root = Dict::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.path.trim_matches('/').is_empty() {
            return Err(SecretError::Config {
                key: format!("secrets.overlay[{index}].path"),
                reason: "expected the path of a secret, e.g. \"orders/db\"".into(),
            });
        }
        let mut secret = SecretRef::new(entry.path.as_str());
        if let Some(mount) = &entry.mount {
            secret = secret.mount(mount.as_str());
        }
        if let Some(kv_version) = entry.kv_version {
            secret = secret.kv_version(kv_version);
        }
        if let Some(version) = entry.version {
            secret = secret.version(version);
        }
        let data = match store.read_data(&secret).await {
            Ok(data) => data,
            Err(SecretError::NotFound { .. }) if !entry.required => {
                tracing::info!(secret = %secret, "optional secret not found; not laid over the configuration");
                continue;
            }
            Err(error) => return Err(error),
        };
        let base: Vec<&str> = entry.into.split('.').filter(|s| !s.is_empty()).collect();
        for (key, value) in data.values() {
            let path: Vec<&str> = base
                .iter()
                .copied()
                .chain(key.split("__").flat_map(|part| part.split('.')))
                .filter(|s| !s.is_empty())
                .collect();
            let value = Value::serialize(value).map_err(|e| SecretError::Shape {
                path: secret.path().to_owned(),
                reason: format!("key `{key}`: {e}"),
            })?;
            insert(&mut root, &path, value);
        }
        tracing::info!(secret = %secret, into = %entry.into, keys = data.keys().count(), "secret laid over the configuration");
    }
    Ok(root)
}

fn insert(table: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let child = table
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(child, Value::Dict(..)) {
                *child = Value::from(Dict::new());
            }
            if let Value::Dict(_, dict) = child {
                insert(dict, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvBackend;

    #[tokio::test]
    async fn keys_nest_under_into() {
        let store = SecretStore::new(EnvBackend::from_vars(
            "S__",
            [
                ("S__ORDERS__DB__PASSWORD", "pw"),
                ("S__ORDERS__DB__TLS.KEY", "k"),
            ],
        ));
        let entries = vec![
            OverlayEntry {
                path: "orders/db".into(),
                into: "postgres".into(),
                ..OverlayEntry::default()
            },
            OverlayEntry {
                path: "missing/one".into(),
                required: false,
                ..OverlayEntry::default()
            },
        ];
        let dict = build(&store, &entries).await.unwrap();
        let postgres = dict["postgres"].as_dict().unwrap();
        assert_eq!(postgres["password"].as_str(), Some("pw"));
        assert_eq!(
            postgres["tls"].as_dict().unwrap()["key"].as_str(),
            Some("k")
        );
        let required = vec![OverlayEntry {
            path: "missing/one".into(),
            ..OverlayEntry::default()
        }];
        assert!(matches!(
            build(&store, &required).await,
            Err(SecretError::NotFound { .. })
        ));
    }
}
