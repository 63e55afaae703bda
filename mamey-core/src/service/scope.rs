//! [`ServiceScope`]: which service the running work belongs to, so that
//! several services in one process keep their own name in logs and metrics.
//!
//! The process has one log subscriber and one metrics recorder; they tell
//! the services apart by the scope of the task that logs or records. The
//! service enters its scope around every plug-in's `init`, `start`,
//! `ready`, `drain` and `stop`, every [`StartContext::spawn`]ed task and
//! every dispatch. A task spawned by other means does not inherit it (task
//! locals never cross `tokio::spawn`): carry it over with
//! [`in_current_service`](InServiceScope::in_current_service), as tracing's
//! `in_current_span` does for spans.
//!
//! [`StartContext::spawn`]: crate::StartContext::spawn

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

use crate::config::AppConfig;

tokio::task_local! {
    // `None` inside a future that captured "no service" (see
    // `in_current_service`) or in `ServiceScope::unscoped`.
    static CURRENT: Option<ServiceScope>;
}

/// The identity of a service of this process — name, instance id and
/// version, as in its `app` section — current while its work runs.
///
/// Cheap to clone (one reference count); reading the current one allocates
/// nothing.
///
/// ```
/// use mamey_core::ServiceScope;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert!(ServiceScope::current().is_none());
/// let billing = ServiceScope::new("billing", "billing-7f3a", "2.1.0");
/// billing
///     .scope(async {
///         let current = ServiceScope::current().expect("inside the scope");
///         assert_eq!(current.name(), "billing");
///         assert_eq!(current.instance_id(), "billing-7f3a");
///         assert_eq!(current.version(), "2.1.0");
///     })
///     .await;
/// # });
/// ```
#[derive(Clone)]
pub struct ServiceScope {
    inner: Arc<Identity>,
}

struct Identity {
    name: Arc<str>,
    instance_id: Arc<str>,
    version: Arc<str>,
}

impl fmt::Debug for ServiceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceScope")
            .field("name", &self.name())
            .field("instance_id", &self.instance_id())
            .field("version", &self.version())
            .finish()
    }
}

impl PartialEq for ServiceScope {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.name() == other.name()
                && self.instance_id() == other.instance_id()
                && self.version() == other.version())
    }
}

impl Eq for ServiceScope {}

impl From<&AppConfig> for ServiceScope {
    /// The scope of the service configured by `app`.
    fn from(app: &AppConfig) -> Self {
        Self::new(
            app.name.as_str(),
            app.instance_id.as_str(),
            app.version.as_str(),
        )
    }
}

impl ServiceScope {
    /// A scope for the service `name`. A [`Service`](crate::Service) makes
    /// its own from its `app` section; build one yourself to attribute work
    /// outside a service, e.g. in tests.
    pub fn new(
        name: impl Into<Arc<str>>,
        instance_id: impl Into<Arc<str>>,
        version: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            inner: Arc::new(Identity {
                name: name.into(),
                instance_id: instance_id.into(),
                version: version.into(),
            }),
        }
    }

    /// The service's name (`app.name`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's name, shared: a clone of it is a reference count, not
    /// a copy (for metric labels and other values kept after the call).
    #[must_use]
    pub fn name_shared(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// The id of this instance of the service (`app.instance_id`).
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The service's version (`app.version`).
    #[must_use]
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The scope of the service whose work is running, if any.
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok().flatten()
    }

    /// Calls `f` with the current scope, if any, without copying it: for
    /// hot paths such as writing a log line.
    ///
    /// ```
    /// use mamey_core::ServiceScope;
    ///
    /// let name = ServiceScope::with_current(|s| s.map_or("none", |_| "some"));
    /// assert_eq!(name, "none");
    /// ```
    pub fn with_current<R>(f: impl FnOnce(Option<&Self>) -> R) -> R {
        // A reference count rather than a borrow of the task local held
        // during `f`, so `f` may enter scopes of its own.
        f(Self::current().as_ref())
    }

    /// Runs `future` with this scope as the current one; scopes nest, the
    /// innermost wins.
    ///
    /// ```
    /// use mamey_core::ServiceScope;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let outer = ServiceScope::new("gateway", "gateway-1", "1.0.0");
    /// let inner = ServiceScope::new("orders", "orders-1", "1.0.0");
    /// outer
    ///     .scope(async {
    ///         inner.scope(async {
    ///             assert_eq!(ServiceScope::current().unwrap().name(), "orders");
    ///         })
    ///         .await;
    ///         assert_eq!(ServiceScope::current().unwrap().name(), "gateway");
    ///     })
    ///     .await;
    /// # });
    /// ```
    pub fn scope<F: Future>(self, future: F) -> InService<F> {
        CURRENT.scope(Some(self), future)
    }

    /// Calls `f` with this scope as the current one: the synchronous
    /// [`scope`](Self::scope).
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(Some(self), f)
    }

    /// Calls `f` with no current scope: for work of the whole process done
    /// from inside a service (process metrics refreshed during a scrape).
    ///
    /// ```
    /// use mamey_core::ServiceScope;
    ///
    /// ServiceScope::new("orders", "orders-1", "1.0.0").sync_scope(|| {
    ///     assert!(ServiceScope::unscoped(|| ServiceScope::current()).is_none());
    /// });
    /// ```
    pub fn unscoped<R>(f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(None, f)
    }
}

/// A future run inside a [`ServiceScope`] (or inside none, when it was
/// captured where no service was current), returned by
/// [`ServiceScope::scope`] and [`InServiceScope`]. It is tokio's task-local
/// future, so it costs no allocation.
pub type InService<F> = TaskLocalFuture<Option<ServiceScope>, F>;

/// Runs a future inside a service's scope: the one current where it is
/// wrapped ([`in_current_service`](Self::in_current_service)) or a given one
/// ([`in_service`](Self::in_service)). Implemented for every future.
///
/// Wrap what you hand to `tokio::spawn` (or a `JoinSet`, a `TaskTracker`,
/// an executor), so its logs and metrics are the spawning service's:
///
/// ```
/// use mamey_core::{InServiceScope, ServiceScope};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let orders = ServiceScope::new("orders", "orders-1", "1.0.0");
/// let name = orders
///     .scope(async {
///         // Without `in_current_service`, the child would see no service.
///         tokio::spawn(async { ServiceScope::current().map(|s| s.name().to_owned()) }
///             .in_current_service())
///         .await
///         .unwrap()
///     })
///     .await;
/// assert_eq!(name.as_deref(), Some("orders"));
/// # });
/// ```
pub trait InServiceScope: Future + Sized {
    /// Captures the current scope, now, and runs this future inside it
    /// wherever it is polled. Where no service is current, the future runs
    /// with none.
    fn in_current_service(self) -> InService<Self> {
        CURRENT.scope(ServiceScope::current(), self)
    }

    /// Runs this future inside `scope`: a [`ServiceScope`], or an
    /// `Option` of one captured earlier with [`ServiceScope::current`]
    /// (`None` runs it with no service current).
    fn in_service(self, scope: impl Into<Option<ServiceScope>>) -> InService<Self> {
        CURRENT.scope(scope.into(), self)
    }
}

impl<F: Future> InServiceScope for F {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scope(name: &str) -> ServiceScope {
        ServiceScope::new(name, format!("{name}-1"), "1.0.0")
    }

    fn current_name() -> Option<String> {
        ServiceScope::current().map(|s| s.name().to_owned())
    }

    #[tokio::test]
    async fn current_is_set_inside_the_scope_only() {
        assert_eq!(current_name(), None);
        let seen = scope("orders").scope(async { current_name() }).await;
        assert_eq!(seen.as_deref(), Some("orders"));
        assert_eq!(current_name(), None);
        let (instance, version) = scope("orders").sync_scope(|| {
            ServiceScope::with_current(|s| {
                let s = s.unwrap();
                (s.instance_id().to_owned(), s.version().to_owned())
            })
        });
        assert_eq!((instance.as_str(), version.as_str()), ("orders-1", "1.0.0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spawned_task_keeps_the_scope_only_when_carried_over() {
        let (carried, lost) = scope("billing")
            .scope(async {
                let carried = tokio::spawn(async { current_name() }.in_current_service());
                let lost = tokio::spawn(async { current_name() });
                (carried.await.unwrap(), lost.await.unwrap())
            })
            .await;
        assert_eq!(carried.as_deref(), Some("billing"));
        assert_eq!(lost, None);
    }

    #[tokio::test]
    async fn scopes_nest_and_a_captured_scope_wins_where_it_is_polled() {
        let captured = scope("orders").sync_scope(|| async { current_name() }.in_current_service());
        let outcome = scope("gateway")
            .scope(async {
                let inner = scope("orders").scope(async { current_name() }).await;
                let back = current_name();
                let carried = captured.await;
                let none = ServiceScope::unscoped(current_name);
                let given = async { current_name() }.in_service(scope("pricing")).await;
                (inner, back, carried, none, given)
            })
            .await;
        assert_eq!(outcome.0.as_deref(), Some("orders"));
        assert_eq!(outcome.1.as_deref(), Some("gateway"));
        assert_eq!(
            outcome.2.as_deref(),
            Some("orders"),
            "captured, then polled in gateway"
        );
        assert_eq!(outcome.3, None);
        assert_eq!(outcome.4.as_deref(), Some("pricing"));
    }

    #[tokio::test]
    async fn a_future_captured_outside_any_service_runs_in_none() {
        let outside = async { current_name() }.in_current_service();
        let seen = scope("orders").scope(outside).await;
        assert_eq!(seen, None);
    }
}
