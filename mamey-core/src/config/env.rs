//! The `MAMEY__SECTION__KEY` environment layer.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Prefix of configuration environment variables.
pub(crate) const PREFIX: &str = "MAMEY__";
/// Separator between key segments in a variable name.
const SEPARATOR: &str = "__";

/// A figment provider over a captured set of environment variables.
///
/// `MAMEY__HTTP__ADDRESS=0.0.0.0:8080` becomes `http.address`. Values are
/// read like TOML scalars (`8080` is a number, `true` a boolean, anything
/// else a string), so `MAMEY__HTTP__PORT=abc` fails typed extraction with an
/// error naming the variable.
#[derive(Debug, Clone)]
pub(crate) struct EnvProvider {
    vars: Vec<(String, String)>,
}

impl EnvProvider {
    /// Keeps the variables with the `MAMEY__` prefix.
    pub(crate) fn new(vars: &[(String, String)]) -> Self {
        let vars = vars
            .iter()
            .filter(|(name, _)| name.starts_with(PREFIX) && name.len() > PREFIX.len())
            .cloned()
            .collect();
        Self { vars }
    }

    /// The names of the variables this provider reads.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(name, _)| name.as_str())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// The variable name for a key path, e.g. `["http", "port"]` → `MAMEY__HTTP__PORT`.
pub(crate) fn var_name<S: AsRef<str>>(keys: &[S]) -> String {
    let joined: Vec<String> = keys
        .iter()
        .map(|k| k.as_ref().to_ascii_uppercase())
        .collect();
    format!("{PREFIX}{}", joined.join(SEPARATOR))
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile, keys| var_name(keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, raw) in &self.vars {
            let path: Vec<String> = name[PREFIX.len()..]
                .split(SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(figment::Error::from(format!(
                    "environment variable `{name}` has an empty key segment; \
                     expected MAMEY__SECTION__KEY"
                )));
            }
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            insert(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Inserts `value` at `path`, creating tables on the way.
fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if entry.as_dict().is_none() {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_to_nested_keys() {
        let vars = vec![
            ("MAMEY__HTTP__PORT".to_owned(), "8080".to_owned()),
            ("MAMEY__HTTP__TLS__ENABLED".to_owned(), "true".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let figment = figment::Figment::from(EnvProvider::new(&vars));
        assert_eq!(figment.extract_inner::<u16>("http.port").ok(), Some(8080));
        assert_eq!(
            figment.extract_inner::<bool>("http.tls.enabled").ok(),
            Some(true)
        );
        assert!(!figment.contains("other"));
    }

    #[test]
    fn var_name_round_trips() {
        assert_eq!(var_name(&["http", "port"]), "MAMEY__HTTP__PORT");
    }
}
