//! The service builder and its lifecycle: init → start → run → stop.
//!
//! ```no_run
//! use mamey_core::Service;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mamey_core::ServiceError> {
//!     Service::builder("orders")
//!         .version(env!("CARGO_PKG_VERSION"))
//!         // .plugin(WebApi::default()) .plugin(RabbitMq::default()) ...
//!         .build()
//!         .await?
//!         .run()
//!         .await
//! }
//! ```

mod builder;
mod error;
mod group;
mod plugin;
mod scope;
mod shutdown;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AppConfig, Config};
use crate::cqrs::Dispatcher;
use crate::health::{Health, HealthStatus, Probe};
use crate::resources::Resources;

pub use builder::ServiceBuilder;
pub use error::{ServiceError, StopFailure};
pub use group::{RunningGroup, ServiceGroup};
pub use plugin::{InitContext, Plugin, ResourceConflict, StartContext};
pub use scope::{InService, InServiceScope, ServiceScope};
pub use shutdown::{HealthConfig, ShutdownConfig, ShutdownHandle};

use plugin::{DynPlugin, TaskFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Initialising,
    Starting,
    Running,
    Stopping,
    Failed,
}

/// Startup passes once every plug-in has started; readiness holds only while
/// running, so load balancers stop sending traffic as soon as shutdown begins.
fn register_lifecycle_checks(health: &Health, lifecycle: &watch::Sender<Lifecycle>) {
    let state = lifecycle.subscribe();
    health.register("lifecycle", &[Probe::Startup], move || {
        let current = *state.borrow();
        async move {
            match current {
                Lifecycle::Running | Lifecycle::Stopping => HealthStatus::healthy(),
                Lifecycle::Failed => HealthStatus::unhealthy("failed to start"),
                Lifecycle::Initialising | Lifecycle::Starting => {
                    HealthStatus::unhealthy("starting")
                }
            }
        }
    });
    let state = lifecycle.subscribe();
    health.register("lifecycle", &[Probe::Ready], move || {
        let current = *state.borrow();
        async move {
            match current {
                Lifecycle::Running => HealthStatus::healthy(),
                Lifecycle::Stopping => HealthStatus::unhealthy("stopping"),
                Lifecycle::Failed => HealthStatus::unhealthy("failed to start"),
                Lifecycle::Initialising | Lifecycle::Starting => {
                    HealthStatus::unhealthy("starting")
                }
            }
        }
    });
}

/// A plug-in with what it was given at start: its stop token, its tasks,
/// and the token that abandons them when it overruns the deadline.
struct Slot {
    plugin: Box<dyn DynPlugin>,
    token: CancellationToken,
    tasks: TaskTracker,
    abandon: CancellationToken,
}

impl Slot {
    fn new(plugin: Box<dyn DynPlugin>) -> Self {
        Self {
            plugin,
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
        }
    }
}

/// Drains plug-ins in reverse order, together within `timeout`; one that
/// fails or overruns is reported and the next drains in the time left.
async fn drain_all(slots: &mut [Slot], timeout: Duration) -> Vec<StopFailure> {
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    for slot in slots.iter_mut().rev() {
        let plugin = slot.plugin.name();
        let reason = match tokio::time::timeout_at(deadline, slot.plugin.drain()).await {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => format!("draining failed: {error}"),
            Err(_) => format!(
                "did not drain within half of the shutdown deadline ({})",
                crate::config::duration::format(timeout)
            ),
        };
        tracing::error!(plugin, %reason, "plug-in did not drain cleanly");
        failures.push(StopFailure { plugin, reason });
    }
    failures
}

/// Stops plug-ins in reverse order within one deadline. For each: cancel
/// its token, call `stop`, await its tasks. A plug-in may use the time left
/// minus a reserve of `timeout / (10 × plug-ins)` for each plug-in still to
/// stop after it, so a hung one cannot take the time the last ones (telemetry
/// flush) need. A plug-in that overruns its budget is abandoned, its tasks
/// aborted, and reported.
async fn stop_all(slots: &mut [Slot], deadline: Instant, timeout: Duration) -> Vec<StopFailure> {
    let reserve = timeout / (10 * u32::try_from(slots.len()).unwrap_or(u32::MAX).max(1));
    let mut failures = Vec::new();
    for (later, slot) in slots.iter_mut().enumerate().rev() {
        let reserved = reserve * u32::try_from(later).unwrap_or(u32::MAX);
        let budget_end = deadline.checked_sub(reserved).unwrap_or(deadline);
        let plugin = slot.plugin.name();
        let started = Instant::now();
        slot.token.cancel();
        slot.tasks.close();
        let tasks = slot.tasks.clone();
        let stopping = async {
            let result = slot.plugin.stop().await;
            tasks.wait().await;
            result
        };
        let reason = match tokio::time::timeout_at(budget_end, stopping).await {
            Ok(Ok(())) => {
                tracing::debug!(plugin, "stopped");
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => {
                slot.abandon.cancel();
                format!(
                    "did not stop within its share of the shutdown deadline ({} of {})",
                    crate::config::duration::format(budget_end.saturating_duration_since(started)),
                    crate::config::duration::format(timeout)
                )
            }
        };
        tracing::error!(plugin, %reason, "plug-in did not stop cleanly");
        failures.push(StopFailure { plugin, reason });
    }
    failures
}

/// A built service: configuration loaded, plug-ins initialised, handlers
/// registered. [`Service::run`] starts it.
pub struct Service {
    config: Config,
    app: Arc<AppConfig>,
    slots: Vec<Slot>,
    resources: Arc<Resources>,
    health: Health,
    dispatcher: Dispatcher,
    shutdown: ShutdownHandle,
    shutdown_timeout: Duration,
    handle_signals: bool,
    scope: ServiceScope,
    lifecycle: watch::Sender<Lifecycle>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plugins: Vec<&str> = self.slots.iter().map(|s| s.plugin.name()).collect();
        f.debug_struct("Service")
            .field("app", &self.app)
            .field("plugins", &plugins)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A builder for the service called `name` (the default `app.name`).
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder::new(name)
    }

    /// The `app` section.
    #[must_use]
    pub fn app(&self) -> &AppConfig {
        &self.app
    }

    /// The service's identity in logs and metrics, current while its
    /// plug-ins, tasks and handlers run. See [`ServiceScope`].
    #[must_use]
    pub fn scope(&self) -> &ServiceScope {
        &self.scope
    }

    /// The loaded configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration the service runs with, secrets redacted, as TOML.
    /// See [`Config::effective_toml`].
    #[must_use]
    pub fn effective_config(&self) -> String {
        self.config.effective_toml()
    }

    /// The resources plug-ins provided, including the [`Dispatcher`].
    #[must_use]
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// The dispatcher with every handler registered.
    #[must_use]
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The health checks.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A handle that makes [`Service::run`] shut down and return.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Starts every plug-in in order, runs until SIGINT/SIGTERM, a
    /// [`ShutdownHandle`], or a failed background task, then stops every
    /// plug-in in reverse order within `shutdown.timeout`.
    ///
    /// A signal or shutdown request during start-up skips the plug-ins not
    /// started yet. A second SIGINT/SIGTERM while stopping exits the process
    /// at once (status 130).
    ///
    /// # Errors
    /// [`ServiceError::PluginStart`] (every initialised plug-in is stopped
    /// first), [`ServiceError::TaskFailed`], or [`ServiceError::Stop`] when a
    /// plug-in failed to stop or overran the deadline.
    pub async fn run(self) -> Result<(), ServiceError> {
        let scope = self.scope.clone();
        scope.scope(self.run_in_scope()).await
    }

    async fn run_in_scope(mut self) -> Result<(), ServiceError> {
        // Signals are watched from the start, so one that arrives while
        // plug-ins are starting still stops the ones already started.
        let watcher = self.handle_signals.then(|| {
            tokio::spawn(shutdown::watch_signals(self.shutdown.clone()).in_current_service())
        });
        let (failure_tx, mut failure_rx) = mpsc::unbounded_channel::<TaskFailure>();
        self.set(Lifecycle::Starting);
        let started = std::time::Instant::now();
        let mut failure = None;
        let mut contexts = Vec::with_capacity(self.slots.len());
        for index in 0..self.slots.len() {
            failure = failure_rx.try_recv().ok();
            if failure.is_some() || self.shutdown.is_shutdown() {
                break;
            }
            let slot = &mut self.slots[index];
            let plugin = slot.plugin.name();
            let ctx = StartContext {
                plugin,
                app: Arc::clone(&self.app),
                resources: Arc::clone(&self.resources),
                health: self.health.clone(),
                dispatcher: self.dispatcher.clone(),
                token: slot.token.clone(),
                service_shutdown: self.shutdown.clone(),
                tasks: slot.tasks.clone(),
                abandon: slot.abandon.clone(),
                failures: failure_tx.clone(),
                scope: self.scope.clone(),
            };
            if let Err(source) = slot.plugin.start(&ctx).await {
                tracing::error!(plugin, error = %source, "start failed; stopping every plug-in");
                self.set(Lifecycle::Failed);
                self.shutdown.shutdown();
                stop_all(
                    &mut self.slots,
                    Instant::now() + self.shutdown_timeout,
                    self.shutdown_timeout,
                )
                .await;
                watcher.inspect(tokio::task::JoinHandle::abort);
                return Err(ServiceError::PluginStart { plugin, source });
            }
            tracing::debug!(plugin, "started");
            contexts.push(ctx);
        }
        drop(failure_tx);

        // How many plug-ins, from the first, were told the service is ready.
        let mut announced = 0;
        if failure.is_none() && !self.shutdown.is_shutdown() {
            for (slot, ctx) in self.slots.iter_mut().zip(&contexts) {
                let plugin = slot.plugin.name();
                if let Err(source) = slot.plugin.ready(ctx).await {
                    tracing::error!(plugin, error = %source, "failed when the service became ready; stopping every plug-in");
                    self.set(Lifecycle::Failed);
                    self.shutdown.shutdown();
                    let deadline = Instant::now() + self.shutdown_timeout;
                    drain_all(&mut self.slots[..announced], self.shutdown_timeout / 2).await;
                    stop_all(&mut self.slots, deadline, self.shutdown_timeout).await;
                    watcher.inspect(tokio::task::JoinHandle::abort);
                    return Err(ServiceError::PluginStart { plugin, source });
                }
                announced += 1;
            }
            drop(contexts);
            self.set(Lifecycle::Running);
            tracing::info!(
                service = %self.app.name,
                instance = %self.app.instance_id,
                elapsed_ms = started.elapsed().as_millis(),
                "service started"
            );
            failure = tokio::select! {
                () = self.shutdown.wait() => None,
                Some(failure) = failure_rx.recv() => Some(failure),
            };
        }
        self.shutdown.shutdown();
        self.set(Lifecycle::Stopping);
        let stopping = Instant::now();
        let deadline = stopping + self.shutdown_timeout;
        let mut failures = drain_all(&mut self.slots[..announced], self.shutdown_timeout / 2).await;
        failures.extend(stop_all(&mut self.slots, deadline, self.shutdown_timeout).await);
        watcher.inspect(tokio::task::JoinHandle::abort);
        tracing::info!(
            service = %self.app.name,
            instance = %self.app.instance_id,
            elapsed_ms = stopping.elapsed().as_millis(),
            clean = failures.is_empty(),
            "service stopped"
        );
        match failure {
            Some(TaskFailure {
                plugin,
                task,
                error,
            }) => Err(ServiceError::TaskFailed {
                plugin,
                task,
                source: error,
            }),
            None if failures.is_empty() => Ok(()),
            None => Err(ServiceError::Stop(failures)),
        }
    }

    fn set(&self, state: Lifecycle) {
        self.lifecycle.send_replace(state);
    }

    /// Runs the service in the background and returns once every plug-in
    /// has started — for tests and for embedding a service in a larger
    /// program. Stop it with [`RunningService::stop`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let service = mamey_core::Service::builder("embedded")
    ///     .handle_signals(false)
    ///     .build()
    ///     .await?;
    /// let running = service.start().await?;
    /// // ... talk to it ...
    /// running.stop().await?;
    /// # Ok::<(), mamey_core::ServiceError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`Service::run`] when start-up fails (every initialised plug-in
    /// has then been stopped).
    pub async fn start(self) -> Result<RunningService, ServiceError> {
        let mut state = self.lifecycle.subscribe();
        let shutdown = self.shutdown.clone();
        let mut task = tokio::spawn(self.run());
        let started = state.wait_for(|s| matches!(s, Lifecycle::Running | Lifecycle::Stopping));
        tokio::select! {
            Ok(_) = started => Ok(RunningService { shutdown, task: Some(task) }),
            finished = &mut task => {
                flatten(finished)?;
                Ok(RunningService { shutdown, task: None })
            }
        }
    }
}

/// A service started with [`Service::start`], running in the background.
#[derive(Debug)]
pub struct RunningService {
    shutdown: ShutdownHandle,
    task: Option<JoinHandle<Result<(), ServiceError>>>,
}

impl RunningService {
    /// The handle that stops the service.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops every plug-in in reverse order and waits until it is done.
    ///
    /// # Errors
    /// As [`Service::run`]: a failed background task, or plug-ins that did
    /// not stop cleanly.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.shutdown();
        self.wait().await
    }

    /// Waits until the service stops by itself (signal, shutdown handle,
    /// failed task).
    ///
    /// # Errors
    /// As [`Service::run`].
    pub async fn wait(mut self) -> Result<(), ServiceError> {
        match self.task.take() {
            Some(task) => flatten(task.await),
            None => Ok(()),
        }
    }
}

/// The result of the background `run` task; a panic in it is reported as a
/// failed task of the service itself.
fn flatten(
    finished: Result<Result<(), ServiceError>, tokio::task::JoinError>,
) -> Result<(), ServiceError> {
    finished.unwrap_or_else(|error| {
        Err(ServiceError::TaskFailed {
            plugin: "service",
            task: "run".into(),
            source: error.to_string().into(),
        })
    })
}
