//! Layered, typed configuration.
//!
//! Layers, later wins:
//!
//! 1. code defaults (each section's [`Default`], plus the `app` values the
//!    service builder knows),
//! 2. `config/default.toml`, then `config/{service}.toml` (the service's
//!    own file, for several services sharing one directory),
//! 3. `config/{profile}.toml`, then `config/{service}-{profile}.toml`,
//!    where the profile comes from `MAMEY_PROFILE` (default `dev`),
//! 4. environment variables `MAMEY__SECTION__KEY` (`MAMEY__HTTP__PORT=8081`),
//! 5. [`ConfigOverlay`]s fetched when the service builds (secrets, KV stores).
//!
//! The directory is `config/` under the working directory, or
//! `MAMEY_CONFIG_DIR`, or [`ConfigLoader::dir`]. Missing files are skipped.
//!
//! Each plug-in owns one section, a [`ConfigSection`] read with
//! [`Config::section`]:
//!
//! ```
//! use mamey_core::config::{Config, ConfigSection};
//!
//! #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Greeter {
//!     /// The greeting. Default: empty.
//!     greeting: String,
//! }
//!
//! impl ConfigSection for Greeter {
//!     const KEY: &'static str = "greeter";
//! }
//!
//! let config = Config::loader("hello")
//!     .env_vars([("MAMEY__GREETER__GREETING", "hi")])
//!     .load()?;
//! assert_eq!(config.section::<Greeter>()?.greeting, "hi");
//! assert_eq!(config.app().name, "hello");
//! # Ok::<(), mamey_core::config::ConfigError>(())
//! ```

pub mod duration;
mod env;
mod error;
mod overlay;
mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use error::{ConfigError, ConfigProblem};
pub use figment;
pub use overlay::ConfigOverlay;
pub(crate) use overlay::DynOverlay;
pub use secret::{REDACTED, Secret};

use env::EnvProvider;

/// Environment variable that selects the profile.
pub const PROFILE_VAR: &str = "MAMEY_PROFILE";
/// Environment variable that overrides the configuration directory.
pub const CONFIG_DIR_VAR: &str = "MAMEY_CONFIG_DIR";
/// The profile used when none is set.
pub const DEFAULT_PROFILE: &str = "dev";

/// A typed configuration section owned by one plug-in.
///
/// Derive `Deserialize`, `Serialize` and `Default`, and mark the struct
/// `#[serde(default, deny_unknown_fields)]` so that omitted keys take their
/// documented defaults and misspelt keys are errors. Wrap secrets in
/// [`Secret`] so they never print.
pub trait ConfigSection: DeserializeOwned + Serialize + Default + Send + Sync + 'static {
    /// The top-level key of the section, e.g. `"http"`.
    const KEY: &'static str;
}

/// The `app` section: who this service is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Service name. Default: the name given to the service builder.
    pub name: String,
    /// Id of this running instance. Default: `{name}-{random uuid}`,
    /// generated at start.
    pub instance_id: String,
    /// Service version. Default: the version given to the builder, else `0.0.0`.
    pub version: String,
    /// The active profile. Always the one that selected the profile file
    /// (`MAMEY_PROFILE` or the builder's), never set from files.
    pub profile: String,
}

impl ConfigSection for AppConfig {
    const KEY: &'static str = "app";
}

/// Where a layer of the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// A TOML file that exists and was read.
    File(PathBuf),
    /// `MAMEY__*` environment variables, by name.
    Env(Vec<String>),
    /// A [`ConfigOverlay`], by name.
    Overlay(String),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(names) => write!(f, "env ({})", names.join(", ")),
            Self::Overlay(name) => write!(f, "overlay {name}"),
        }
    }
}

/// Builds a [`Config`] from the layers described in the [module docs](self).
///
/// The service builder owns one; use it directly in tools and tests.
pub struct ConfigLoader {
    service_name: String,
    version: Option<String>,
    profile: Option<String>,
    dir: Option<PathBuf>,
    env: Option<Vec<(String, String)>>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("service_name", &self.service_name)
            .field("version", &self.version)
            .field("profile", &self.profile)
            .field("dir", &self.dir)
            .field("env", &self.env.as_ref().map(|_| "[custom]"))
            .finish()
    }
}

impl ConfigLoader {
    /// A loader for the service called `service_name`.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            version: None,
            profile: None,
            dir: None,
            env: None,
        }
    }

    /// The service version reported in `app.version` unless configured.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Selects the profile, overriding `MAMEY_PROFILE`.
    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Reads files from `dir` instead of `config/` or `MAMEY_CONFIG_DIR`.
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Uses these variables instead of the process environment (for tests
    /// and embedding: several services in one process can each get their own).
    #[must_use]
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Reads every layer.
    ///
    /// # Errors
    /// A file that is not valid TOML, a malformed environment variable, or
    /// an `app` section of the wrong shape.
    pub fn load(self) -> Result<Config, ConfigError> {
        let env_vars = self.env.unwrap_or_else(|| std::env::vars().collect());
        let lookup = |name: &str| {
            env_vars
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let profile = self
            .profile
            .or_else(|| lookup(PROFILE_VAR))
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let dir = self
            .dir
            .or_else(|| lookup(CONFIG_DIR_VAR).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config"));

        let defaults = AppConfig {
            instance_id: format!("{}-{}", self.service_name, uuid::Uuid::new_v4().simple()),
            name: self.service_name,
            version: self.version.unwrap_or_else(|| "0.0.0".to_owned()),
            profile: profile.clone(),
        };
        let mut figment = Figment::from(Serialized::default(AppConfig::KEY, &defaults));
        let mut sources = Vec::new();

        // General before specific, profile files over plain ones: a
        // directory shared by several services holds what they share in
        // `default.toml` and each one's own settings in `{service}.toml`.
        let name = &defaults.name;
        for file in [
            dir.join("default.toml"),
            dir.join(format!("{name}.toml")),
            dir.join(format!("{profile}.toml")),
            dir.join(format!("{name}-{profile}.toml")),
        ] {
            if file.is_file() {
                figment = figment.merge(Toml::file_exact(&file));
                sources.push(ConfigSource::File(file));
            }
        }
        let env = EnvProvider::new(&env_vars);
        if !env.is_empty() {
            sources.push(ConfigSource::Env(env.names().map(str::to_owned).collect()));
            figment = figment.merge(env);
        }
        // The profile is decided before files are read; a file cannot change it.
        figment = figment.merge(Serialized::default("app.profile", &profile));

        let config = Config {
            figment,
            app: AppConfig::default(),
            sources,
            dir,
            read: Mutex::new(BTreeMap::new()),
        };
        config.validated()
    }
}

/// The loaded configuration of one service.
///
/// Read typed sections with [`Config::section`]; print what the service
/// actually runs with, secrets redacted, with [`Config::effective_toml`].
pub struct Config {
    figment: Figment,
    app: AppConfig,
    sources: Vec<ConfigSource>,
    dir: PathBuf,
    /// Sections read so far, as the typed values serialize (defaults filled
    /// in, secrets redacted), for [`Config::effective_toml`].
    read: Mutex<BTreeMap<&'static str, toml::Value>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("app", &self.app)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A loader for the service called `service_name`.
    pub fn loader(service_name: impl Into<String>) -> ConfigLoader {
        ConfigLoader::new(service_name)
    }

    /// This configuration with `data` layered on top, as the service builder
    /// does with each [`ConfigOverlay`]. The profile stays as loaded.
    ///
    /// # Errors
    /// As [`ConfigLoader::load`], for the combined layers.
    pub fn with_overlay(
        mut self,
        name: impl Into<String>,
        data: figment::value::Dict,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        let profile = self.app.profile.clone();
        self.figment = self
            .figment
            .merge(overlay::OverlayData {
                name: name.clone(),
                data,
            })
            .merge(Serialized::default("app.profile", &profile));
        self.sources.push(ConfigSource::Overlay(name));
        self.validated()
    }

    /// Surfaces syntax errors in any layer now, not at first use, and reads
    /// the `app` section.
    fn validated(self) -> Result<Self, ConfigError> {
        self.figment
            .extract::<figment::value::Value>()
            .map_err(|e| ConfigError::from_figment(e, &self.figment, ""))?;
        let app = self.section::<AppConfig>()?;
        if app.name.trim().is_empty() {
            return Err(self.invalid("app.name", "must not be empty"));
        }
        Ok(Self { app, ..self })
    }

    /// The `app` section.
    #[must_use]
    pub fn app(&self) -> &AppConfig {
        &self.app
    }

    /// The layers that contributed, lowest first (files that exist, the
    /// environment variables read, overlays).
    #[must_use]
    pub fn sources(&self) -> &[ConfigSource] {
        &self.sources
    }

    /// The directory configuration files are read from.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads section `T`, filling omitted keys with their defaults.
    ///
    /// # Errors
    /// Unknown keys, values of the wrong type, or a section that is not a
    /// table; each problem names the key, its source and the expected shape.
    pub fn section<T: ConfigSection>(&self) -> Result<T, ConfigError> {
        let value = if self.figment.contains(T::KEY) {
            self.figment
                .extract_inner::<T>(T::KEY)
                .map_err(|e| ConfigError::from_figment(e, &self.figment, T::KEY))?
        } else {
            T::default()
        };
        if let Ok(effective) = toml::Value::try_from(&value)
            && let Ok(mut read) = self.read.lock()
        {
            read.insert(T::KEY, effective);
        }
        Ok(value)
    }

    /// Top-level sections present in some layer that nothing has read with
    /// [`Config::section`] yet — usually a misspelt section name or a
    /// plug-in that was not added. The service logs them as warnings once
    /// every plug-in has initialised.
    #[must_use]
    pub fn unread_sections(&self) -> Vec<String> {
        let present = self.figment.extract::<toml::Table>().unwrap_or_default();
        let Ok(read) = self.read.lock() else {
            return Vec::new();
        };
        present
            .keys()
            .filter(|key| !read.contains_key(key.as_str()))
            .cloned()
            .collect()
    }

    /// A [`ConfigError`] for `key` found by a plug-in's own validation,
    /// naming where the value came from.
    ///
    /// ```
    /// use mamey_core::config::Config;
    ///
    /// let config = Config::loader("svc")
    ///     .env_vars([("MAMEY__HTTP__ADDRESS", "nowhere")])
    ///     .load()?;
    /// let error = config.invalid("http.address", "expected host:port");
    /// assert_eq!(
    ///     error.to_string(),
    ///     "config key `http.address` (from environment variable `MAMEY__HTTP__ADDRESS`): expected host:port"
    /// );
    /// # Ok::<(), mamey_core::config::ConfigError>(())
    /// ```
    #[must_use]
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        let source = self
            .figment
            .find_metadata(key)
            .map(|m| error::describe_source(m, &path));
        ConfigError::new(key, message).with_source(source.as_deref())
    }

    /// The configuration the service runs with, as TOML: every key from every
    /// layer, with the sections plug-ins have read shown with their defaults
    /// filled in. Values of [`Secret`] fields show as `"[redacted]"`, and so
    /// do values whose key has a word that names a secret: `password`, `passwd`, `secret`, `token`, `key`, `apikey`,
    /// `credential`, singular or plural, split at `_`, `-`, `.` and camelCase —
    /// so `db_password`, `signing_key` and `accessToken` are hidden, while
    /// `keyspace` is not.
    #[must_use]
    pub fn effective_toml(&self) -> String {
        let mut root = self.figment.extract::<toml::Table>().unwrap_or_default();
        if let Ok(read) = self.read.lock() {
            for (key, value) in read.iter() {
                root.insert((*key).to_owned(), value.clone());
            }
        }
        let mut root = toml::Value::Table(root);
        redact(&mut root);
        toml::to_string_pretty(&root).unwrap_or_default()
    }
}

/// Words that mark a key's value as secret in printed configuration
/// (singular; a trailing `s` is ignored).
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "apikey",
    "credential",
];

/// Whether a key names a secret: split into words at `_`, `-`, `.` and
/// camelCase boundaries, any word (singular or plural) is a secret word.
fn is_secret_key(key: &str) -> bool {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if matches!(c, '_' | '-' | '.') || (c.is_ascii_uppercase() && previous_lower) {
            words.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    words.push(word);
    words.iter().any(|w| {
        let singular = w.strip_suffix('s').unwrap_or(w);
        SECRET_WORDS.contains(&w.as_str()) || SECRET_WORDS.contains(&singular)
    })
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                if is_secret_key(key) && !value.is_table() {
                    *value = toml::Value::String(REDACTED.to_owned());
                } else {
                    redact(value);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::is_secret_key;

    #[test]
    fn secret_words_are_matched_whole() {
        for key in [
            "password",
            "db_password",
            "signing_key",
            "api-key",
            "apikey",
            "token",
            "client_secret",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["keyspace", "monkey", "url", "secretariat", "maxTokenizer"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
