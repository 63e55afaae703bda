//! The in-process backend: a registry shared by the services of one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use mamey_core::Error;
use mamey_core::discovery::Endpoint;
use tokio::sync::watch;

use crate::instance::Instance;
use crate::registry::{Presence, Registry};

/// A registry living in this process, for several services run in one
/// process (the embedded mode of a system): each service registers itself
/// once ready and deregisters first on shutdown, exactly as with etcd or
/// Consul, and a watch sees each change at once. Clones share one registry.
///
/// ```
/// use mamey_discovery::{Discovery, MemoryRegistry};
///
/// let registry = MemoryRegistry::new();
/// // The same registry for every service of the process:
/// let boards = Discovery::with_registry(registry.clone());
/// let gateway = Discovery::with_registry(registry);
/// # let _ = (boards, gateway);
/// ```
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    services: Arc<Mutex<HashMap<String, Service>>>,
}

/// One service's instances, by id, and the channel its watches follow.
struct Service {
    instances: BTreeMap<String, Endpoint>,
    changes: watch::Sender<Vec<Endpoint>>,
}

impl Service {
    fn new() -> Self {
        Self {
            instances: BTreeMap::new(),
            changes: watch::Sender::new(Vec::new()),
        }
    }

    /// Tells the watches, when the endpoints changed.
    fn publish(&self) {
        let endpoints: Vec<Endpoint> = self.instances.values().cloned().collect();
        self.changes.send_if_modified(|current| {
            let changed = *current != endpoints;
            if changed {
                *current = endpoints;
            }
            changed
        });
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.lock();
        let mut names: Vec<&String> = services.keys().collect();
        names.sort();
        f.debug_struct("MemoryRegistry")
            .field("services", &names)
            .finish()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Service>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoints registered for `service` now.
    #[must_use]
    pub fn endpoints(&self, service: &str) -> Vec<Endpoint> {
        self.lock()
            .get(service)
            .map(|s| s.instances.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Registry for MemoryRegistry {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn register<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        let mut services = self.lock();
        let service = services
            .entry(instance.service.clone())
            .or_insert_with(Service::new);
        service
            .instances
            .insert(instance.id.clone(), instance.endpoint());
        service.publish();
        Box::pin(async { Ok(()) })
    }

    fn heartbeat<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>> {
        let present = self
            .lock()
            .get(&instance.service)
            .is_some_and(|s| s.instances.contains_key(&instance.id));
        Box::pin(async move {
            Ok(if present {
                Presence::Registered
            } else {
                Presence::Lost
            })
        })
    }

    fn heartbeat_interval(&self) -> Duration {
        // Nothing expires here; the heartbeat only notices a deregistration
        // done behind the plug-in's back.
        Duration::from_secs(60)
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        if let Some(service) = self.lock().get_mut(&instance.service) {
            service.instances.remove(&instance.id);
            service.publish();
        }
        Box::pin(async { Ok(()) })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        let mut changes = self
            .lock()
            .entry(service.to_owned())
            .or_insert_with(Service::new)
            .changes
            .subscribe();
        // The current list first, then one per change; the sender lives as
        // long as the registry, so the stream ends only with it.
        let first = changes.borrow_and_update().clone();
        stream::once(async move { Ok(first) })
            .chain(stream::unfold(changes, |mut changes| async move {
                changes.changed().await.ok()?;
                let endpoints = changes.borrow_and_update().clone();
                Some((Ok(endpoints), changes))
            }))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_sees_registrations_and_deregistrations() {
        let registry = MemoryRegistry::new();
        let mut watch = registry.watch("boards");
        assert_eq!(watch.next().await.and_then(Result::ok), Some(vec![]));

        let one = Instance::new("boards", "boards-1", "127.0.0.1", 7001);
        let two = Instance::new("boards", "boards-2", "127.0.0.1", 7002);
        registry.register(&one).await.ok();
        let seen = watch.next().await.and_then(Result::ok);
        assert_eq!(seen, Some(vec![Endpoint::new("http://127.0.0.1:7001")]));
        registry.register(&two).await.ok();
        let seen = watch.next().await.and_then(Result::ok).map(|e| e.len());
        assert_eq!(seen, Some(2));
        assert_eq!(
            registry.heartbeat(&one).await.ok(),
            Some(Presence::Registered)
        );

        registry.deregister(&one).await.ok();
        let seen = watch.next().await.and_then(Result::ok);
        assert_eq!(seen, Some(vec![Endpoint::new("http://127.0.0.1:7002")]));
        assert_eq!(registry.heartbeat(&one).await.ok(), Some(Presence::Lost));
        assert!(registry.endpoints("chat").is_empty());
    }
}
