//! The `secrets` section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mamey_core::config::{ConfigSection, Secret, duration};
use serde::{Deserialize, Serialize};

/// The `secrets` section: where secrets come from and which of them lay
/// over the configuration.
///
/// ```toml
/// [secrets]
/// backend = "vault"        # "env" (default), "file" or "vault"
/// refresh = "1m"           # how often watched secrets are re-read
///
/// [[secrets.overlay]]      # orders/db's keys become postgres.<key>
/// path = "orders/db"
/// into = "postgres"
///
/// [secrets.vault]
/// address = "https://vault.internal:8200"
/// auth = { method = "approle", role_id = "…", secret_id_file = "/run/secrets/secret-id" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// Where secrets come from. Default: `"env"`.
    pub backend: BackendKind,
    /// Secrets laid over the configuration when the service builds, above
    /// files and environment variables. Default: none.
    pub overlay: Vec<OverlayEntry>,
    /// How often secrets that code [watches](crate::SecretStore::watch) are
    /// read again to notice a rotation. Default: `1m`.
    #[serde(with = "duration")]
    pub refresh: Duration,
    /// The file backend.
    pub file: FileConfig,
    /// The environment backend.
    pub env: EnvConfig,
    /// The Vault (or OpenBao) backend, feature `vault`.
    pub vault: VaultConfig,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Env,
            overlay: Vec::new(),
            refresh: Duration::from_secs(60),
            file: FileConfig::default(),
            env: EnvConfig::default(),
            vault: VaultConfig::default(),
        }
    }
}

impl ConfigSection for SecretsConfig {
    const KEY: &'static str = "secrets";
}

/// Which backend serves secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `MAMEY_SECRET__…` environment variables.
    Env,
    /// A TOML or JSON file.
    File,
    /// Vault or OpenBao (feature `vault`).
    Vault,
}

/// One secret laid over the configuration: every key of the secret at
/// `path` becomes `{into}.{key}`. A key with dots or `__` in it is nested
/// (`tls__key` → `tls.key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlayEntry {
    /// The secret's path: `orders/db`. For the file backend a table path,
    /// for the environment `MAMEY_SECRET__ORDERS__DB__*`, for Vault a KV
    /// path under `mount`.
    pub path: String,
    /// The configuration key the secret's keys go under; empty for the top
    /// level. Default: empty.
    pub into: String,
    /// Vault only: the KV mount. Default: `secrets.vault.kv.mount`.
    pub mount: Option<String>,
    /// Vault only: the KV engine version of the mount, 1 or 2. Default:
    /// `secrets.vault.kv.version`.
    pub kv_version: Option<u8>,
    /// Vault KV v2 only: the version of the secret to read. Default: the
    /// latest.
    pub version: Option<u64>,
    /// Whether a missing secret fails the build. Default: `true`.
    pub required: bool,
}

impl Default for OverlayEntry {
    fn default() -> Self {
        Self {
            path: String::new(),
            into: String::new(),
            mount: None,
            kv_version: None,
            version: None,
            required: true,
        }
    }
}

/// `secrets.file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The secrets file, TOML or JSON (by extension; TOML otherwise),
    /// relative to the working directory unless absolute. A path `a/b` is
    /// the table `[a.b]`. The file is read on every read, so an edit is a
    /// rotation. Default: `config/secrets.toml`.
    pub path: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("config/secrets.toml"),
        }
    }
}

/// `secrets.env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvConfig {
    /// The prefix of secret variables: path `orders/db` key `password` is
    /// `{prefix}ORDERS__DB__PASSWORD` (`-` becomes `_`). Default:
    /// `MAMEY_SECRET__`.
    pub prefix: String,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            prefix: "MAMEY_SECRET__".into(),
        }
    }
}

/// `secrets.vault`: the server, how to log in, and the leases to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// The server's address. Default: `http://127.0.0.1:8200`.
    pub address: String,
    /// The namespace (Vault Enterprise, OpenBao namespaces). Default: none.
    pub namespace: Option<String>,
    /// A PEM file of CA certificates to trust for an `https` address, in
    /// addition to the system's. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Never in production: logs a warning
    /// at every start. Default: `false`.
    pub skip_verify: bool,
    /// Longest one request to the server may take. Default: `10s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Tries to reach the server and log in at start before giving up.
    /// Default: `5`.
    pub connect_attempts: u32,
    /// Wait after the first failed try at start, doubling each time up to
    /// 5 s. Default: `500ms`.
    #[serde(with = "duration")]
    pub connect_backoff: Duration,
    /// How to log in.
    pub auth: VaultAuth,
    /// The KV engine overlays and reads use.
    pub kv: KvConfig,
    /// Dynamic database credentials, by the name a pool refers to them with
    /// (`postgres.credentials = "orders"`). Default: none.
    pub database: BTreeMap<String, DatabaseLeaseConfig>,
    /// The transit engine behind [`Transit`](crate::vault::Transit).
    pub transit: TransitConfig,
    /// A certificate to issue from the PKI engine and keep renewed.
    /// Default: none.
    pub pki: Option<PkiConfig>,
    /// Fraction of a lease's or token's time to live after which it is
    /// renewed. Default: `0.5`.
    pub renew_at: f64,
    /// Revoke the leases this service holds, and the token it logged in
    /// for, when it stops. Default: `true`.
    pub revoke_on_shutdown: bool,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8200".into(),
            namespace: None,
            ca_file: None,
            skip_verify: false,
            timeout: Duration::from_secs(10),
            connect_attempts: 5,
            connect_backoff: Duration::from_millis(500),
            auth: VaultAuth::default(),
            kv: KvConfig::default(),
            database: BTreeMap::new(),
            transit: TransitConfig::default(),
            pki: None,
            renew_at: 0.5,
            revoke_on_shutdown: true,
        }
    }
}

/// How the service logs in to Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A token given in configuration or a file.
    Token,
    /// AppRole: a role id and a secret id.
    Approle,
    /// Kubernetes: the pod's service-account token.
    Kubernetes,
}

/// `secrets.vault.auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultAuth {
    /// The method. Default: `"token"`.
    pub method: AuthMethod,
    /// `token`: the token. Default: none (then `token_file`).
    pub token: Option<Secret<String>>,
    /// `token`: a file holding the token. Default: none.
    pub token_file: Option<PathBuf>,
    /// `approle` / `kubernetes`: where the auth method is mounted.
    /// Default: `approle` or `kubernetes`.
    pub mount: Option<String>,
    /// `approle`: the role id. Default: none.
    pub role_id: Option<String>,
    /// `approle`: the secret id. Default: none (then `secret_id_file`).
    pub secret_id: Option<Secret<String>>,
    /// `approle`: a file holding the secret id. Default: none.
    pub secret_id_file: Option<PathBuf>,
    /// `kubernetes`: the Vault role to log in as. Default: none.
    pub role: Option<String>,
    /// `kubernetes`: the service-account token file. Default:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub jwt_file: PathBuf,
}

impl Default for VaultAuth {
    fn default() -> Self {
        Self {
            method: AuthMethod::Token,
            token: None,
            token_file: None,
            mount: None,
            role_id: None,
            secret_id: None,
            secret_id_file: None,
            role: None,
            jwt_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        }
    }
}

/// `secrets.vault.kv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    /// The KV mount. Default: `secret`.
    pub mount: String,
    /// The KV engine version, 1 or 2. Default: `2`.
    pub version: u8,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            mount: "secret".into(),
            version: 2,
        }
    }
}

/// One dynamic-credentials lease: `secrets.vault.database.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseLeaseConfig {
    /// The database secrets engine's mount. Default: `database`.
    pub mount: String,
    /// The role to issue credentials for. Required.
    pub role: String,
}

impl Default for DatabaseLeaseConfig {
    fn default() -> Self {
        Self {
            mount: "database".into(),
            role: String::new(),
        }
    }
}

/// `secrets.vault.transit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransitConfig {
    /// The transit engine's mount. Default: `transit`.
    pub mount: String,
}

impl Default for TransitConfig {
    fn default() -> Self {
        Self {
            mount: "transit".into(),
        }
    }
}

/// `secrets.vault.pki`: a certificate issued at start, written to files,
/// and issued again before it expires — where `http.tls` reloads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// The PKI engine's mount. Default: `pki`.
    pub mount: String,
    /// The role to issue for. Required.
    pub role: String,
    /// The certificate's common name. Required.
    pub common_name: String,
    /// More DNS names. Default: none.
    pub alt_names: Vec<String>,
    /// IP addresses. Default: none.
    pub ip_sans: Vec<String>,
    /// Requested validity; the role's default when unset.
    #[serde(default, with = "optional_duration")]
    pub ttl: Option<Duration>,
    /// Where the certificate chain (PEM) is written. Required.
    pub cert_file: PathBuf,
    /// Where the private key (PEM) is written, readable by the owner only.
    /// Required.
    pub key_file: PathBuf,
    /// Where the issuing CA (PEM) is written, for clients and mTLS.
    /// Default: not written.
    pub ca_file: Option<PathBuf>,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            mount: "pki".into(),
            role: String::new(),
            common_name: String::new(),
            alt_names: Vec::new(),
            ip_sans: Vec::new(),
            ttl: None,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: None,
        }
    }
}

/// `Option<Duration>` in the `"30s"` form.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => mamey_core::config::duration::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "mamey_core::config::duration")] Duration);
        Option::<Wrapped>::deserialize(deserializer).map(|w| w.map(|Wrapped(d)| d))
    }
}
