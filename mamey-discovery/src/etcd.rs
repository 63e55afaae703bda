//! The etcd backend: an instance is a key `{prefix}/{service}/{id}` bound
//! to a lease, so it disappears when its process stops renewing; lookups
//! read the service's prefix and watch it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchStream,
};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use mamey_core::Error;
use mamey_core::discovery::Endpoint;

use crate::config::EtcdConfig;
use crate::instance::Instance;
use crate::registry::{Presence, Registry, unreachable};

/// The etcd v3 registry (feature `etcd`).
///
/// An instance is stored as JSON at `{prefix}/{service}/{id}`, bound to a
/// lease of `lease_ttl`, renewed every third of it: a process that dies
/// disappears within the TTL. A lookup reads `{prefix}/{service}/` and then
/// watches it from the revision it read, so no change is missed between the
/// two.
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    lease_ttl: Duration,
    timeout: Duration,
    /// The lease of each instance registered through this registry.
    leases: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the cluster `config` names. Connections open lazily:
    /// an etcd that is down now is not an error here — except with a user
    /// name and password, which are checked (and a token fetched) at once.
    ///
    /// # Errors
    /// When an endpoint is not a valid URL, only one of user name and
    /// password is set, or etcd refuses the credentials.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                options = options.with_user(user.clone(), password.expose().clone());
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid_input(
                    "discovery.config",
                    "`discovery.etcd.username` and `discovery.etcd.password` go together: set both or neither",
                ));
            }
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| {
                Error::invalid_input(
                    "discovery.config",
                    format!("etcd endpoints {:?}: {e}", config.endpoints),
                )
            })?;
        Ok(Self {
            client,
            prefix: config.prefix.trim_end_matches('/').to_owned(),
            lease_ttl: config.lease_ttl.max(Duration::from_secs(2)),
            timeout: config.timeout,
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, instance: &Instance) -> String {
        format!("{}/{}/{}", self.prefix, instance.service, instance.id)
    }

    fn lease_of(&self, id: &str) -> Option<i64> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
    }

    /// Runs `call` within the request timeout, mapping its error.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unreachable("etcd", format!("{what}: {error}"))),
            Err(_) => Err(unreachable(
                "etcd",
                format!("{what}: no answer within {} ms", self.timeout.as_millis()),
            )),
        }
    }
}

impl Registry for EtcdRegistry {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn register<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let ttl = i64::try_from(self.lease_ttl.as_secs()).unwrap_or(i64::MAX);
            let lease = self
                .call("granting a lease", client.lease_grant(ttl, None))
                .await?
                .id();
            let value = serde_json::to_vec(instance).map_err(Error::from_source)?;
            let put = client.put(
                self.key(instance),
                value,
                Some(PutOptions::new().with_lease(lease)),
            );
            if let Err(error) = self.call("writing the instance", put).await {
                let _ = client.lease_revoke(lease).await;
                return Err(error);
            }
            let previous = self
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(instance.id.clone(), lease);
            // An earlier registration's lease, if etcd still has it.
            if let Some(previous) = previous {
                let _ = client.lease_revoke(previous).await;
            }
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>> {
        Box::pin(async move {
            let Some(lease) = self.lease_of(&instance.id) else {
                return Ok(Presence::Lost);
            };
            let mut client = self.client.clone();
            let renewed = self
                .call("renewing the lease", async {
                    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    answers.message().await
                })
                .await;
            match renewed {
                // The lease expired while etcd was away, or etcd lost its
                // data: a TTL of 0, or an error saying so.
                Ok(answer) if answer.as_ref().is_none_or(|answer| answer.ttl() <= 0) => {
                    return Ok(Presence::Lost);
                }
                Err(error) if error.message().contains("lease not found") => {
                    return Ok(Presence::Lost);
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
            let found = self
                .call(
                    "reading the instance",
                    client.get(
                        self.key(instance),
                        Some(GetOptions::new().with_count_only()),
                    ),
                )
                .await?;
            Ok(if found.count() > 0 {
                Presence::Registered
            } else {
                Presence::Lost
            })
        })
    }

    fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            self.call(
                "deleting the instance",
                client.delete(self.key(instance), None),
            )
            .await?;
            let lease = self
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&instance.id);
            if let Some(lease) = lease {
                // The key is gone already; a failure here only leaves a lease
                // that expires by itself.
                let _ = self
                    .call("revoking the lease", client.lease_revoke(lease))
                    .await;
            }
            Ok(())
        })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        let watch = Watch {
            client: self.client.clone(),
            prefix: format!("{}/{}/", self.prefix, service),
            timeout: self.timeout,
            instances: BTreeMap::new(),
            stream: None,
        };
        stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            match watch.next().await {
                Ok(endpoints) => Some((Ok(endpoints), Some(watch))),
                // The error ends this watch; the resolver opens another.
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }
}

/// One open watch of a service's prefix.
struct Watch {
    client: Client,
    prefix: String,
    timeout: Duration,
    /// Endpoints by key.
    instances: BTreeMap<String, Endpoint>,
    /// The etcd watch, once the first read is done.
    stream: Option<WatchStream>,
}

impl Watch {
    /// The endpoints after the next change (the first call reads them).
    async fn next(&mut self) -> Result<Vec<Endpoint>, Error> {
        let Some(stream) = self.stream.as_mut() else {
            return self.read().await;
        };
        loop {
            let answer = stream
                .message()
                .await
                .map_err(|e| unreachable("etcd", format!("watching `{}`: {e}", self.prefix)))?
                .ok_or_else(|| {
                    unreachable("etcd", format!("the watch of `{}` closed", self.prefix))
                })?;
            if answer.canceled() {
                return Err(unreachable(
                    "etcd",
                    format!(
                        "the watch of `{}` was cancelled: {}",
                        self.prefix,
                        answer.cancel_reason()
                    ),
                ));
            }
            if answer.events().is_empty() {
                continue;
            }
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match event.event_type() {
                    EventType::Put => match parse(kv.value()) {
                        Some(endpoint) => {
                            self.instances.insert(key, endpoint);
                        }
                        None => {
                            tracing::warn!(key = %key, "ignoring an instance that is not mamey's JSON");
                        }
                    },
                    EventType::Delete => {
                        self.instances.remove(&key);
                    }
                }
            }
            return Ok(self.endpoints());
        }
    }

    /// Reads the prefix, then opens the watch from the next revision.
    async fn read(&mut self) -> Result<Vec<Endpoint>, Error> {
        let read = async {
            let found = self
                .client
                .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = found
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            let stream = self
                .client
                .watch(
                    self.prefix.clone(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await?;
            Ok::<_, etcd_client::Error>((found, stream))
        };
        let (found, stream) = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                return Err(unreachable(
                    "etcd",
                    format!("reading `{}`: {e}", self.prefix),
                ));
            }
            Err(_) => {
                return Err(unreachable(
                    "etcd",
                    format!(
                        "reading `{}`: no answer within {} ms",
                        self.prefix,
                        self.timeout.as_millis()
                    ),
                ));
            }
        };
        self.instances = found
            .kvs()
            .iter()
            .filter_map(|kv| {
                let endpoint = parse(kv.value())?;
                Some((String::from_utf8_lossy(kv.key()).into_owned(), endpoint))
            })
            .collect();
        self.stream = Some(stream);
        Ok(self.endpoints())
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        let mut endpoints: Vec<Endpoint> = self.instances.values().cloned().collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }
}

/// The endpoint of an instance stored as JSON; `None` for anything else.
fn parse(value: &[u8]) -> Option<Endpoint> {
    serde_json::from_slice::<Instance>(value)
        .ok()
        .map(|instance| instance.endpoint())
}
