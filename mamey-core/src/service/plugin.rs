//! The [`Plugin`] contract and the contexts a plug-in is given.

use std::any::TypeId;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::figment::value::Dict;
use crate::config::{AppConfig, Config, ConfigError, ConfigSection};
use crate::cqrs::{Dispatcher, DispatcherBuilder};
use crate::error::BoxError;
use crate::health::Health;
use crate::resources::{MissingResource, Requirement, Resources};
use crate::service::{ServiceScope, ShutdownHandle};

/// A building block of a service: a web server, a broker connection, a pool.
///
/// The service calls, in order of [`ServiceBuilder::plugin`](crate::ServiceBuilder::plugin):
///
/// 1. [`init`](Plugin::init) on every plug-in (read the config section,
///    connect, [`provide`](InitContext::provide) resources, register health
///    checks and handlers) — during [`ServiceBuilder::build`](crate::ServiceBuilder::build);
/// 2. [`start`](Plugin::start) on every plug-in (bind, begin consuming,
///    [`spawn`](StartContext::spawn) background tasks) — in
///    [`Service::run`](crate::Service::run);
/// 3. [`ready`](Plugin::ready) on every plug-in, in order, once all have
///    started and the service is ready: announce it (register in discovery);
/// 4. [`drain`](Plugin::drain) on every plug-in that was told `ready`, **in
///    reverse order**, as soon as shutdown begins and before anything
///    stops: withdraw the announcement (deregister), so callers stop sending
///    while every listener still serves;
/// 5. [`stop`](Plugin::stop) on every plug-in whose `init` succeeded, **in
///    reverse order**, when the service shuts down or a later plug-in fails.
///
/// Implement the methods as `async fn`:
///
/// ```
/// use mamey_core::{BoxError, InitContext, Plugin, StartContext};
///
/// #[derive(Clone)]
/// struct Clock;
///
/// struct ClockPlugin;
///
/// impl Plugin for ClockPlugin {
///     async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
///         ctx.provide(Clock)?;
///         Ok(())
///     }
///
///     async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
///         let shutdown = ctx.shutdown_token();
///         ctx.spawn("tick", async move {
///             shutdown.cancelled().await; // a real plug-in would work until then
///             Ok(())
///         });
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Send + 'static {
    /// The plug-in's name in logs and errors; unique within a service, so a
    /// type added twice (two pools, say) must give each instance its own
    /// name. Default: the type's name.
    fn name(&self) -> &'static str {
        crate::cqrs::short_type_name::<Self>()
    }

    /// Resources that plug-ins added before this one must provide. Checked
    /// before [`init`](Plugin::init); a missing one stops the build with an
    /// error naming this plug-in, the type, and the requirement's hint.
    fn requires(&self) -> Vec<Requirement> {
        Vec::new()
    }

    /// Configuration this plug-in lays over files and environment variables
    /// before any plug-in initialises: secrets from a vault, keys from a KV
    /// store. Called during [`ServiceBuilder::build`](crate::ServiceBuilder::build),
    /// in plug-in order, with the configuration loaded so far (so the
    /// plug-in's own settings can come from files or the environment); the
    /// keys it returns are nested tables, as a
    /// [`ConfigOverlay`](crate::config::ConfigOverlay)'s are, and errors
    /// about them name the plug-in as their source. Default: nothing.
    fn config_overlay(
        &mut self,
        base: &Config,
    ) -> impl Future<Output = Result<Option<Dict>, BoxError>> + Send {
        let _ = base;
        async { Ok(None) }
    }

    /// Reads configuration, connects, provides resources, registers health
    /// checks and handlers. Must not serve traffic yet.
    fn init(
        &mut self,
        ctx: &mut InitContext<'_>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Begins serving. Long-running work goes into [`StartContext::spawn`];
    /// this method should return promptly. Default: nothing.
    fn start(&mut self, ctx: &StartContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// The service is ready: every plug-in has started. Announce it, e.g.
    /// register the instance in discovery; work that may wait on another
    /// system belongs in a [`StartContext::spawn`]ed task. An error stops
    /// the service as a failed start does. Default: nothing.
    fn ready(&mut self, ctx: &StartContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Shutdown has begun and no plug-in has stopped yet: withdraw what
    /// [`ready`](Plugin::ready) announced, so that callers stop sending
    /// before listeners close. Plug-ins drain in reverse order, together
    /// within half of `shutdown.timeout`; one that overruns is reported and
    /// the service goes on stopping. Default: nothing.
    fn drain(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Stops serving and releases what `init` acquired. By the time it is
    /// called, this plug-in's [`StartContext::shutdown_token`] is cancelled;
    /// its spawned tasks are awaited after it returns. Default: nothing.
    fn stop(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }
}

/// Object-safe view of a [`Plugin`].
pub(crate) trait DynPlugin: Send {
    fn name(&self) -> &'static str;
    fn requires(&self) -> Vec<Requirement>;
    fn config_overlay<'a>(
        &'a mut self,
        base: &'a Config,
    ) -> BoxFuture<'a, Result<Option<Dict>, BoxError>>;
    fn init<'a>(&'a mut self, ctx: &'a mut InitContext<'_>) -> BoxFuture<'a, Result<(), BoxError>>;
    fn start<'a>(&'a mut self, ctx: &'a StartContext) -> BoxFuture<'a, Result<(), BoxError>>;
    fn ready<'a>(&'a mut self, ctx: &'a StartContext) -> BoxFuture<'a, Result<(), BoxError>>;
    fn drain(&mut self) -> BoxFuture<'_, Result<(), BoxError>>;
    fn stop(&mut self) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<P: Plugin> DynPlugin for P {
    fn name(&self) -> &'static str {
        Plugin::name(self)
    }
    fn requires(&self) -> Vec<Requirement> {
        Plugin::requires(self)
    }
    fn config_overlay<'a>(
        &'a mut self,
        base: &'a Config,
    ) -> BoxFuture<'a, Result<Option<Dict>, BoxError>> {
        Plugin::config_overlay(self, base).boxed()
    }
    fn init<'a>(&'a mut self, ctx: &'a mut InitContext<'_>) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::init(self, ctx).boxed()
    }
    fn start<'a>(&'a mut self, ctx: &'a StartContext) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::start(self, ctx).boxed()
    }
    fn ready<'a>(&'a mut self, ctx: &'a StartContext) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::ready(self, ctx).boxed()
    }
    fn drain(&mut self) -> BoxFuture<'_, Result<(), BoxError>> {
        Plugin::drain(self).boxed()
    }
    fn stop(&mut self) -> BoxFuture<'_, Result<(), BoxError>> {
        Plugin::stop(self).boxed()
    }
}

/// A resource was provided twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource `{type_name}` is already provided by plug-in `{provider}`")]
pub struct ResourceConflict {
    /// The type provided twice.
    pub type_name: &'static str,
    /// The plug-in that provided it first.
    pub provider: &'static str,
}

/// What a plug-in can reach during [`Plugin::init`].
pub struct InitContext<'a> {
    pub(crate) plugin: &'static str,
    pub(crate) config: &'a Config,
    pub(crate) resources: &'a mut Resources,
    pub(crate) health: &'a Health,
    pub(crate) dispatcher: &'a mut DispatcherBuilder,
    pub(crate) shutdown: &'a ShutdownHandle,
    pub(crate) scope: &'a ServiceScope,
}

impl fmt::Debug for InitContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitContext")
            .field("plugin", &self.plugin)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl InitContext<'_> {
    /// The whole configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        self.config
    }

    /// The `app` section: service name, instance id, version, profile.
    #[must_use]
    pub fn app(&self) -> &AppConfig {
        self.config.app()
    }

    /// Reads this plug-in's configuration section.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key, its source and the expected shape.
    pub fn section<T: ConfigSection>(&self) -> Result<T, ConfigError> {
        self.config.section()
    }

    /// A resource provided by an earlier plug-in.
    ///
    /// # Errors
    /// [`MissingResource`] naming the type and this plug-in. Declare needs in
    /// [`Plugin::requires`] to get the error before `init` runs, with a hint.
    pub fn resource<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingResource> {
        self.resources.get::<T>().map_err(|mut e| {
            e.hint = Some(format!(
                "plug-in `{}` needs it: add a plug-in that provides it before `{}`",
                self.plugin, self.plugin
            ));
            e
        })
    }

    /// Makes `value` available to later plug-ins and to handlers.
    ///
    /// # Errors
    /// [`ResourceConflict`] when another plug-in already provided a `T`.
    pub fn provide<T: Clone + Send + Sync + 'static>(
        &mut self,
        value: T,
    ) -> Result<(), ResourceConflict> {
        let id = TypeId::of::<T>();
        if self.resources.contains_id(id) {
            return Err(ResourceConflict {
                type_name: std::any::type_name::<T>(),
                provider: self.resources.provider_of(id).unwrap_or("the application"),
            });
        }
        self.resources.insert_from(Some(self.plugin), value);
        Ok(())
    }

    /// The service's health checks, to register this plug-in's own.
    #[must_use]
    pub fn health(&self) -> &Health {
        self.health
    }

    /// The dispatcher being built: register handlers and middleware.
    pub fn dispatcher(&mut self) -> &mut DispatcherBuilder {
        self.dispatcher
    }

    /// The handle that shuts the whole service down.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The service's identity in logs and metrics, current during `init`.
    /// A task the plug-in spawns itself carries it with
    /// [`in_current_service`](crate::InServiceScope::in_current_service).
    #[must_use]
    pub fn scope(&self) -> &ServiceScope {
        self.scope
    }
}

/// A background task of a plug-in failed; the service shuts down.
pub(crate) struct TaskFailure {
    pub(crate) plugin: &'static str,
    pub(crate) task: String,
    pub(crate) error: BoxError,
}

/// What a plug-in can reach from [`Plugin::start`] on. Cheap to clone.
#[derive(Clone)]
pub struct StartContext {
    pub(crate) plugin: &'static str,
    pub(crate) app: Arc<AppConfig>,
    pub(crate) resources: Arc<Resources>,
    pub(crate) health: Health,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) token: CancellationToken,
    pub(crate) service_shutdown: ShutdownHandle,
    pub(crate) tasks: TaskTracker,
    pub(crate) abandon: CancellationToken,
    pub(crate) failures: mpsc::UnboundedSender<TaskFailure>,
    pub(crate) scope: ServiceScope,
}

impl fmt::Debug for StartContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartContext")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl StartContext {
    /// The `app` section.
    #[must_use]
    pub fn app(&self) -> &AppConfig {
        &self.app
    }

    /// All resources, frozen.
    #[must_use]
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// A resource.
    ///
    /// # Errors
    /// [`MissingResource`] naming the type.
    pub fn resource<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingResource> {
        self.resources.get()
    }

    /// The service's dispatcher, with every handler registered.
    #[must_use]
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The service's health checks.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The service's identity in logs and metrics: current during `start`,
    /// `ready`, `drain`, `stop` and in every [`spawn`](Self::spawn)ed task.
    /// A task the plug-in spawns by other means carries it with
    /// [`in_current_service`](crate::InServiceScope::in_current_service).
    #[must_use]
    pub fn scope(&self) -> &ServiceScope {
        &self.scope
    }

    /// Cancelled when this plug-in is about to be stopped (not when the
    /// service starts shutting down: plug-ins stop one at a time, in reverse
    /// order). Background tasks watch it to finish their work.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The handle that shuts the whole service down, e.g. after a fatal error.
    #[must_use]
    pub fn service_shutdown(&self) -> ShutdownHandle {
        self.service_shutdown.clone()
    }

    /// Runs `task` in the background as part of this plug-in.
    ///
    /// The task is awaited when the plug-in stops (within the shutdown
    /// deadline, then aborted). If it returns an error, the error is logged
    /// (a panic counts as an error) and the whole service shuts down, with [`Service::run`](crate::Service::run)
    /// returning that error.
    ///
    /// The task runs in the service's [`scope`](Self::scope), so what it
    /// logs and records is this service's.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let (plugin, name) = (self.plugin, name.into());
        let failures = self.failures.clone();
        let abandon = self.abandon.clone();
        let scope = self.scope.clone();
        self.tasks.spawn(scope.scope(async move {
            let outcome = tokio::select! {
                biased;
                // The plug-in overran its share of the shutdown deadline.
                () = abandon.cancelled() => return,
                outcome = AssertUnwindSafe(task).catch_unwind() => outcome,
            };
            let error: BoxError = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(_) => "the task panicked".into(),
            };
            tracing::error!(plugin, task = %name, error = %error, "background task failed");
            // The receiver is gone only when the service has already stopped.
            let _ = failures.send(TaskFailure {
                plugin,
                task: name,
                error,
            });
        }));
    }
}
