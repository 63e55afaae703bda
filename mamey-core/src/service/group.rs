//! [`ServiceGroup`]: several services in one process, run as one.

use std::fmt;

use futures_util::future::select_all;
use tokio::task::JoinHandle;

use super::{RunningService, Service, ServiceError, ShutdownHandle, shutdown};

/// Several services of one process, run as one: started in the order
/// added, stopped in reverse, under one signal handler.
///
/// Add the services a caller depends on first: on shutdown the callers
/// stop (and drain their in-flight work) while the services they call are
/// still up. Each service keeps its own name in logs and metrics and its
/// own `shutdown.timeout`; the group stops them one after the other.
///
/// ```no_run
/// use mamey_core::{Service, ServiceGroup};
///
/// # async fn demo() -> Result<(), mamey_core::ServiceError> {
/// let pricing = Service::builder("pricing").build().await?;
/// // … read what `orders` needs from `pricing.resources()` …
/// let orders = Service::builder("orders").build().await?;
/// ServiceGroup::new()
///     .service(pricing) // called by orders: starts first, stops last
///     .service(orders)
///     .run() // until Ctrl-C or SIGTERM
///     .await
/// # }
/// ```
pub struct ServiceGroup {
    services: Vec<Service>,
    shutdown: ShutdownHandle,
    handle_signals: bool,
}

impl fmt::Debug for ServiceGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .services
            .iter()
            .map(|s| s.app().name.as_str())
            .collect();
        f.debug_struct("ServiceGroup")
            .field("services", &names)
            .finish_non_exhaustive()
    }
}

impl Default for ServiceGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceGroup {
    /// An empty group that stops on SIGINT/SIGTERM.
    #[must_use]
    pub fn new() -> Self {
        Self {
            services: Vec::new(),
            shutdown: ShutdownHandle::new(),
            handle_signals: true,
        }
    }

    /// Adds a built service; it starts after the ones added before it and
    /// stops before them. The group owns the signals: the service's own
    /// signal handling is turned off.
    #[must_use]
    pub fn service(mut self, mut service: Service) -> Self {
        service.handle_signals = false;
        self.services.push(service);
        self
    }

    /// Whether the group stops on SIGINT/SIGTERM. Default: `true`.
    #[must_use]
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// A handle that stops the whole group.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Starts every service in order and runs until SIGINT/SIGTERM, the
    /// [`shutdown_handle`](Self::shutdown_handle), or a service stopping by
    /// itself (a failed background task); then stops them all in reverse
    /// order.
    ///
    /// # Errors
    /// As [`ServiceGroup::start`] and [`RunningGroup::wait`].
    pub async fn run(self) -> Result<(), ServiceError> {
        self.start().await?.wait().await
    }

    /// Starts every service in order and returns once all run. A service
    /// that fails to start stops the ones started before it, in reverse.
    ///
    /// # Errors
    /// The failing service's error, wrapped in [`ServiceError::Services`]
    /// with its name.
    pub async fn start(self) -> Result<RunningGroup, ServiceError> {
        let watcher = self
            .handle_signals
            .then(|| tokio::spawn(shutdown::watch_signals(self.shutdown.clone())));
        let mut running = Vec::with_capacity(self.services.len());
        for service in self.services {
            let name = service.app().name.clone();
            match service.start().await {
                Ok(service) => running.push((name, service)),
                Err(error) => {
                    tracing::error!(service = %name, %error, "start failed; stopping the services started before it");
                    let mut failures = stop_in_reverse(running).await;
                    failures.insert(0, (name, error));
                    watcher.inspect(JoinHandle::abort);
                    return Err(ServiceError::Services(failures));
                }
            }
        }
        Ok(RunningGroup {
            running,
            shutdown: self.shutdown,
            watcher,
        })
    }
}

/// A [`ServiceGroup`] whose services all run.
pub struct RunningGroup {
    running: Vec<(String, RunningService)>,
    shutdown: ShutdownHandle,
    watcher: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.running.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RunningGroup")
            .field("services", &names)
            .finish_non_exhaustive()
    }
}

impl RunningGroup {
    /// A handle that stops the whole group.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops every service in reverse order and waits until they are done.
    ///
    /// # Errors
    /// As [`RunningGroup::wait`].
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.shutdown();
        self.wait().await
    }

    /// Waits until the group is asked to stop or a service stops by itself,
    /// then stops every service in reverse order.
    ///
    /// # Errors
    /// [`ServiceError::Services`] naming each service that failed (a failed
    /// background task, a plug-in that did not stop cleanly).
    pub async fn wait(self) -> Result<(), ServiceError> {
        let members: Vec<_> = self
            .running
            .iter()
            .map(|(_, service)| {
                let handle = service.shutdown_handle();
                Box::pin(async move { handle.wait().await })
            })
            .collect();
        if members.is_empty() {
            self.shutdown.wait().await;
        } else {
            tokio::select! {
                () = self.shutdown.wait() => {}
                _ = select_all(members) => {}
            }
        }
        self.shutdown.shutdown();
        let failures = stop_in_reverse(self.running).await;
        self.watcher.inspect(JoinHandle::abort);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Services(failures))
        }
    }
}

/// Stops each service, the last started first, waiting for each before the
/// next.
async fn stop_in_reverse(running: Vec<(String, RunningService)>) -> Vec<(String, ServiceError)> {
    let mut failures = Vec::new();
    for (name, service) in running.into_iter().rev() {
        if let Err(error) = service.stop().await {
            failures.push((name, error));
        }
    }
    failures
}
