//! Where the services run: all in one process over embedded parts, or each
//! in its own process over real servers. A service module builds the same
//! service for both; [`Deployment`] supplies what differs.
//!
//! | | embedded | distributed |
//! |---|---|---|
//! | profile | `dev` | `distributed` |
//! | SQL | SQLite file `{data}/{service}.db` | Postgres database `teamhub_{service}` |
//! | broker | one [`MemoryBroker`] | RabbitMQ |
//! | discovery | one [`MemoryRegistry`] | etcd (Consul when configured) |
//! | secrets | file `{data}/secrets.toml` (dev key made on first run) | OpenBao / Vault KV |
//! | live backplane | an in-process channel | Redis pub/sub |
//!
//! Configuration lives in `examples/teamhub/config/`: what every service
//! shares in `default.toml` / `distributed.toml`, each service's own keys
//! in `{service}.toml` / `{service}-distributed.toml`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use mamey_core::{Service, ServiceBuilder};
use mamey_discovery::{Discovery, MemoryRegistry};
use mamey_http::ServiceClientPlugin;
use mamey_messaging::{MemoryBroker, Messaging};
use mamey_observability::{BoxedLayer, Observability};
use mamey_secrets::Secrets;
use tokio::sync::broadcast;

use crate::sql::Sql;

/// The directory of the services' configuration files.
pub const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

/// The directory of the services' SQL migrations (`migrations/{service}`).
pub const MIGRATIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

/// How the system runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All services in one process: SQLite, the in-process broker and
    /// registry, file secrets.
    Embedded,
    /// Each service in its own process: Postgres, RabbitMQ, etcd, OpenBao,
    /// Redis.
    Distributed,
}

/// What the services of one deployment share. Cheap to clone; clones share
/// the embedded broker, registry and backplane.
#[derive(Clone)]
pub struct Deployment {
    mode: Mode,
    data_dir: PathBuf,
    broker: MemoryBroker,
    registry: MemoryRegistry,
    backplane: broadcast::Sender<Bytes>,
    env: Vec<(String, String)>,
    /// Variables for one service only: (service, key, value).
    service_env: Vec<(String, String, String)>,
    /// Makes an extra tracing layer for each service's observability.
    layer: Option<std::sync::Arc<dyn Fn() -> BoxedLayer + Send + Sync>>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("mode", &self.mode)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// All services in this process, keeping their files in `data_dir`.
    #[must_use]
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self::new(Mode::Embedded, data_dir.into())
    }

    /// This process runs one service (or a replica) of the distributed
    /// system; the servers' addresses come from the configuration.
    #[must_use]
    pub fn distributed() -> Self {
        Self::new(Mode::Distributed, PathBuf::from("."))
    }

    fn new(mode: Mode, data_dir: PathBuf) -> Self {
        Self {
            mode,
            data_dir,
            broker: MemoryBroker::new(),
            registry: MemoryRegistry::new(),
            backplane: broadcast::Sender::new(4096),
            env: std::env::vars().collect(),
            service_env: Vec::new(),
            layer: None,
        }
    }

    /// Adds the layer `make` returns to each service's subscriber (tests
    /// capture spans with it). The services of one process share the
    /// subscriber the first one installs.
    #[must_use]
    pub fn tracing_layer(mut self, make: impl Fn() -> BoxedLayer + Send + Sync + 'static) -> Self {
        self.layer = Some(std::sync::Arc::new(make));
        self
    }

    /// Sets configuration variable `key` (`MAMEY__SECTION__KEY`) for every
    /// service of this deployment, over the process environment.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets configuration variable `key` for `service` only, over what
    /// [`env`](Self::env) sets (e.g. the gateway's port).
    #[must_use]
    pub fn service_env(
        mut self,
        service: &str,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.service_env
            .push((service.to_owned(), key.into(), value.into()));
        self
    }

    /// Embedded or distributed.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Where the embedded system keeps its files.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The registry the embedded services share.
    #[must_use]
    pub fn registry(&self) -> &MemoryRegistry {
        &self.registry
    }

    /// The in-process backplane of the embedded system: live notifications
    /// (JSON) for every notifications replica's connections.
    #[must_use]
    pub fn local_backplane(&self) -> &broadcast::Sender<Bytes> {
        &self.backplane
    }

    /// The builder of service `name` with what every teamhub service has,
    /// in this order: observability, the id generator's node, secrets (the
    /// JWT public key laid over `http.jwt`), discovery, and the service
    /// client. The service adds its messaging, handlers and servers.
    #[must_use]
    pub fn service(&self, name: &'static str) -> ServiceBuilder {
        self.builder(name, Vec::new())
    }

    /// [`service`](Self::service) with its database: the SQL plug-in `B`
    /// (outbox and inbox), its file (embedded) and its migrations
    /// (`migrations/{name}`), added after the service client.
    #[must_use]
    pub fn sql_service<B: Sql>(&self, name: &'static str) -> ServiceBuilder {
        let section = B::SECTION.to_uppercase();
        let mut env = vec![(
            format!("MAMEY__{section}__MIGRATIONS"),
            format!("{MIGRATIONS_DIR}/{name}"),
        )];
        if self.mode == Mode::Embedded {
            let data = self.data_dir.display();
            env.push((
                format!("MAMEY__{section}__URL"),
                format!("sqlite://{data}/{name}.db"),
            ));
        }
        self.builder(name, env).plugin(B::plugin())
    }

    fn builder(&self, name: &'static str, extra: Vec<(String, String)>) -> ServiceBuilder {
        let mut env = self.env.clone();
        env.extend(extra);
        let profile = match self.mode {
            Mode::Embedded => {
                let secrets = self.data_dir.join("secrets.toml");
                env.push((
                    "MAMEY__SECRETS__FILE__PATH".into(),
                    secrets.display().to_string(),
                ));
                "dev"
            }
            Mode::Distributed => "distributed",
        };
        for (service, key, value) in &self.service_env {
            if service == name {
                env.retain(|(k, _)| k != key);
                env.push((key.clone(), value.clone()));
            }
        }
        // ANCHOR: builder
        let discovery = match self.mode {
            Mode::Embedded => Discovery::with_registry(self.registry.clone()),
            Mode::Distributed => Discovery::new(),
        };
        let mut observability = Observability::new();
        if let Some(make) = &self.layer {
            observability = observability.with_layer(make());
        }
        Service::builder(name)
            .version(env!("CARGO_PKG_VERSION"))
            .config_dir(CONFIG_DIR)
            .profile(profile)
            .env_vars(env.clone())
            .plugin(observability)
            .plugin(crate::ids::NodeId)
            .plugin(Secrets::new().env_vars(env))
            .plugin(discovery)
            .plugin(ServiceClientPlugin::new())
        // ANCHOR_END: builder
    }

    /// The messaging plug-in: the shared in-process broker, or RabbitMQ.
    #[must_use]
    pub fn messaging(&self) -> Messaging {
        match self.mode {
            Mode::Embedded => Messaging::new(self.broker.clone()),
            Mode::Distributed => Messaging::rabbitmq(),
        }
    }
}
