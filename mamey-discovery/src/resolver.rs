//! [`WatchedResolver`]: answers lookups from memory, kept fresh by one
//! watch per service name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mamey_core::discovery::{Endpoint, Resolver};
use mamey_core::health::HealthStatus;
use mamey_core::{Error, ErrorKind, InServiceScope, ServiceScope};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::registry::Registry;

/// What is known of one service name.
#[derive(Debug, Clone, Default)]
struct View {
    /// The last endpoints the registry reported; `None` before its first
    /// answer.
    endpoints: Option<Arc<[Endpoint]>>,
    /// Why the watch is failing, while it is.
    failing: Option<String>,
}

/// The resolver a discovery plug-in provides: the first lookup of a name
/// opens a watch on the registry and waits (at most `lookup_timeout`) for
/// its first answer; later lookups answer from memory. While the registry
/// is unreachable the last known endpoints keep being served, and
/// [`health`](WatchedResolver::health) reports degraded.
#[derive(Clone)]
pub(crate) struct WatchedResolver {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Arc<dyn Registry>,
    views: RwLock<HashMap<String, watch::Receiver<View>>>,
    lookup_timeout: Duration,
    backoff: Backoff,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// The scope of the service that made the resolver: the watches are its
    /// work, whichever caller looks a name up first.
    scope: Option<ServiceScope>,
}

impl WatchedResolver {
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        lookup_timeout: Duration,
        backoff: Backoff,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry,
                views: RwLock::new(HashMap::new()),
                lookup_timeout,
                backoff,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                scope: ServiceScope::current(),
            }),
        }
    }

    /// The view of `service`, opening its watch on first use.
    fn view(&self, service: &str) -> watch::Receiver<View> {
        if let Ok(views) = self.shared.views.read()
            && let Some(view) = views.get(service)
        {
            return view.clone();
        }
        let mut views = self
            .shared
            .views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(view) = views.get(service) {
            return view.clone();
        }
        let (sender, receiver) = watch::channel(View::default());
        views.insert(service.to_owned(), receiver.clone());
        if !self.shared.stop.is_cancelled() {
            self.shared.tasks.spawn(
                keep_watching(Arc::clone(&self.shared), service.to_owned(), sender)
                    .in_service(self.shared.scope.clone()),
            );
        }
        receiver
    }

    /// Degraded while any watch is failing (naming the services whose
    /// endpoints may be stale), else healthy.
    pub(crate) fn health(&self) -> HealthStatus {
        let views = self
            .shared
            .views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut failing: Vec<String> = views
            .iter()
            .filter_map(|(service, view)| {
                let view = view.borrow();
                view.failing
                    .as_ref()
                    .map(|why| format!("`{service}` ({why})"))
            })
            .collect();
        if failing.is_empty() {
            return HealthStatus::healthy();
        }
        failing.sort();
        HealthStatus::degraded(format!(
            "{} registry unreachable; serving the last known endpoints of {}",
            self.shared.registry.name(),
            failing.join(", ")
        ))
    }

    /// Closes every watch and waits for their tasks.
    pub(crate) async fn stop(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Resolver for WatchedResolver {
    fn resolve<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Endpoint>, Error>> {
        let mut view = self.view(service);
        // The steady state: answered from memory, with no await.
        if let Some(endpoints) = &view.borrow().endpoints {
            let endpoints = endpoints.to_vec();
            return Box::pin(std::future::ready(Ok(endpoints)));
        }
        let registry = self.shared.registry.name();
        let timeout = self.shared.lookup_timeout;
        Box::pin(async move {
            let first = tokio::time::timeout(
                timeout,
                view.wait_for(|v| v.endpoints.is_some() || v.failing.is_some()),
            )
            .await;
            let unavailable = |why: String| {
                Error::new(
                    ErrorKind::Unavailable,
                    "discovery.unreachable",
                    format!("looking up `{service}` in the {registry} registry: {why}"),
                )
            };
            match first {
                Ok(Ok(view)) => match (&view.endpoints, &view.failing) {
                    (Some(endpoints), _) => Ok(endpoints.to_vec()),
                    (None, Some(why)) => Err(unavailable(why.clone())),
                    (None, None) => Err(unavailable("no answer".to_owned())),
                },
                Ok(Err(_)) => Err(unavailable("discovery has stopped".to_owned())),
                Err(_) => Err(unavailable(format!(
                    "no answer within `discovery.lookup_timeout` ({} ms)",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

/// Keeps `service`'s view fresh until the resolver stops: reads the
/// registry's watch, and opens another after a backoff when it fails.
async fn keep_watching(shared: Arc<Shared>, service: String, view: watch::Sender<View>) {
    let mut backoff = shared.backoff.clone();
    loop {
        let mut changes = shared.registry.watch(&service);
        let why = loop {
            let change = tokio::select! {
                () = shared.stop.cancelled() => return,
                change = changes.next() => change,
            };
            match change {
                Some(Ok(endpoints)) => {
                    backoff.reset();
                    let endpoints: Arc<[Endpoint]> = endpoints.into();
                    view.send_if_modified(|v| {
                        let changed = v.endpoints.as_ref() != Some(&endpoints) || v.failing.is_some();
                        if changed {
                            tracing::debug!(service = %service, endpoints = endpoints.len(), "endpoints changed");
                            v.endpoints = Some(Arc::clone(&endpoints));
                            v.failing = None;
                        }
                        changed
                    });
                }
                Some(Err(error)) => break error.message().to_owned(),
                None => break "the watch ended".to_owned(),
            }
        };
        let known = view.borrow().endpoints.as_ref().map(|e| e.len());
        tracing::warn!(
            service = %service,
            registry = shared.registry.name(),
            error = %why,
            known_endpoints = ?known,
            "watch failed; serving the last known endpoints and retrying"
        );
        view.send_modify(|v| v.failing = Some(why));
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next()) => {}
        }
    }
}
