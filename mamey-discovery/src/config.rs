//! The `discovery` configuration section.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mamey_core::config::{ConfigSection, Secret, duration};
use serde::{Deserialize, Serialize};

/// The `discovery` section.
///
/// ```toml
/// [discovery]
/// backend = "etcd"            # "static" (default), "consul" or "etcd"
/// register = true
/// lookup_timeout = "5s"
/// retry_backoff = "500ms"
/// max_retry_backoff = "30s"
/// drain_delay = "0s"
///
/// [discovery.instance]
/// address = "10.0.0.7"        # default: the bound web API's address
/// port = 8080                 # default: the bound web API's port
/// tags = ["blue"]
/// meta = { zone = "a" }
///
/// [discovery.static]
/// services = { pricing = ["http://127.0.0.1:8081"] }
///
/// [discovery.etcd]
/// endpoints = ["http://127.0.0.1:2379"]
/// prefix = "/mamey/services"
/// lease_ttl = "10s"
///
/// [discovery.consul]
/// address = "http://127.0.0.1:8500"
/// check = "http"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Which registry: `"static"`, `"consul"` (feature `consul`) or `"etcd"`
    /// (feature `etcd`). Default: `"static"`.
    pub backend: Backend,
    /// Register this instance once the service is ready, and deregister it
    /// first on shutdown. The static backend has nothing to register with.
    /// Default: `true`.
    pub register: bool,
    /// How this instance is advertised.
    pub instance: InstanceConfig,
    /// How long the first lookup of a service name waits for the registry;
    /// later lookups answer from memory. Default: `5s`.
    #[serde(with = "duration")]
    pub lookup_timeout: Duration,
    /// The first pause before a failed registry call is tried again; it
    /// doubles (with jitter) up to `max_retry_backoff`. Default: `500ms`.
    #[serde(with = "duration")]
    pub retry_backoff: Duration,
    /// The longest pause between retries. Default: `30s`.
    #[serde(with = "duration")]
    pub max_retry_backoff: Duration,
    /// How long the service keeps serving after deregistering and before
    /// its listeners close, so that callers' watches see it leave first.
    /// Set it to the watch delay of your callers in production. Default:
    /// `0s`.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// The static backend's services.
    #[serde(rename = "static")]
    pub fixed: StaticConfig,
    /// The Consul backend.
    pub consul: ConsulConfig,
    /// The etcd backend.
    pub etcd: EtcdConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Static,
            register: true,
            instance: InstanceConfig::default(),
            lookup_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            fixed: StaticConfig::default(),
            consul: ConsulConfig::default(),
            etcd: EtcdConfig::default(),
        }
    }
}

impl ConfigSection for DiscoveryConfig {
    const KEY: &'static str = "discovery";
}

/// `discovery.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Fixed endpoints from `discovery.static.services`.
    Static,
    /// Consul's agent and health API.
    Consul,
    /// etcd v3 keys under a prefix, kept by a lease.
    Etcd,
}

impl Backend {
    /// The backend's name, as in configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Consul => "consul",
            Self::Etcd => "etcd",
        }
    }
}

/// `discovery.instance`: how this instance is advertised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceConfig {
    /// The host or IP callers reach this instance at. Default: the bound
    /// web API's IP (gRPC server's without one); when it is bound to every
    /// interface (`0.0.0.0`, `::`), the IP of the interface that routes
    /// outwards, else `127.0.0.1`.
    pub address: Option<String>,
    /// The port callers reach this instance at. Default: the bound web
    /// API's port (gRPC server's without one).
    pub port: Option<u16>,
    /// `"http"` or `"https"`. Default: `"http"`.
    pub scheme: String,
    /// Tags (Consul tags; stored with the instance in etcd). Default: none.
    pub tags: Vec<String>,
    /// Metadata. `version` is added from `app.version`. Default: none.
    pub meta: BTreeMap<String, String>,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            address: None,
            port: None,
            scheme: "http".to_owned(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
        }
    }
}

/// `discovery.static`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticConfig {
    /// Base URLs by service name. Default: none.
    pub services: HashMap<String, Vec<String>>,
}

/// `discovery.consul`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsulConfig {
    /// The local agent's HTTP address. Default: `"http://127.0.0.1:8500"`.
    pub address: String,
    /// ACL token, sent as `X-Consul-Token`. Default: none.
    pub token: Option<Secret<String>>,
    /// Datacenter to look up instances in (an agent registers in its own).
    /// Default: the agent's.
    pub datacenter: Option<String>,
    /// Namespace (Consul Enterprise). Default: none.
    pub namespace: Option<String>,
    /// `"http"`: the agent calls the instance's `check_path`; `"ttl"`: the
    /// instance reports passing every `ttl / 2`. Default: `"http"`.
    pub check: CheckKind,
    /// The path the HTTP check calls. Default: `"/health/ready"`.
    pub check_path: String,
    /// How often the agent runs the HTTP check. Default: `10s`.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// How long one HTTP check may take. Default: `5s`.
    #[serde(with = "duration")]
    pub check_timeout: Duration,
    /// The TTL of a TTL check. Default: `15s`.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Consul removes the instance after its check has been critical this
    /// long (it died without deregistering). Default: `1m`.
    #[serde(with = "duration")]
    pub deregister_critical_after: Duration,
    /// How long a blocking query waits for a change. Default: `60s`.
    #[serde(with = "duration")]
    pub wait: Duration,
    /// Longest a non-blocking request to the agent may take. Default: `5s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How often the registration is confirmed with the agent (and made
    /// again when the agent lost it). Default: `10s`.
    #[serde(with = "duration")]
    pub confirm_interval: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8500".to_owned(),
            token: None,
            datacenter: None,
            namespace: None,
            check: CheckKind::Http,
            check_path: "/health/ready".to_owned(),
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(15),
            deregister_critical_after: Duration::from_secs(60),
            wait: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            confirm_interval: Duration::from_secs(10),
        }
    }
}

/// `discovery.consul.check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The agent calls the instance over HTTP.
    Http,
    /// The instance reports to the agent before the TTL runs out.
    Ttl,
}

/// `discovery.etcd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Cluster endpoints. Default: `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix; an instance lives at `{prefix}/{service}/{id}`.
    /// Default: `"/mamey/services"`.
    pub prefix: String,
    /// The lease an instance's key is bound to: it disappears this long
    /// after its process stops renewing. Renewed every third of it.
    /// Default: `10s`.
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// User name, when etcd has authentication on. Default: none.
    pub username: Option<String>,
    /// Password of `username`. Default: none.
    pub password: Option<Secret<String>>,
    /// Longest a connection may take to open. Default: `2s`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest one request may take (not a watch). Default: `5s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/mamey/services".to_owned(),
            lease_ttl: Duration::from_secs(10),
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }
}
