//! Assembling a service: configuration, overlays, plug-ins, handlers and
//! resources, then `build` initialises them in order.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::plugin::DynPlugin;
use super::{
    HealthConfig, InitContext, Lifecycle, Plugin, Service, ServiceError, ServiceScope,
    ShutdownConfig, ShutdownHandle, Slot, register_lifecycle_checks, stop_all,
};
use crate::config::{Config, ConfigLoader, ConfigOverlay, DynOverlay};
use crate::cqrs::{Dispatcher, DispatcherBuilder};
use crate::health::Health;
use crate::resources::Resources;

/// Assembles a [`Service`] from plug-ins. Start with [`Service::builder`].
pub struct ServiceBuilder {
    loader: ConfigLoader,
    overlays: Vec<Box<dyn DynOverlay>>,
    plugins: Vec<Box<dyn DynPlugin>>,
    dispatcher: DispatcherBuilder,
    resources: Resources,
    handle_signals: bool,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plugins: Vec<&str> = self.plugins.iter().map(|p| p.name()).collect();
        f.debug_struct("ServiceBuilder")
            .field("loader", &self.loader)
            .field("plugins", &plugins)
            .finish_non_exhaustive()
    }
}

impl ServiceBuilder {
    pub(super) fn new(name: impl Into<String>) -> Self {
        Self {
            loader: ConfigLoader::new(name),
            overlays: Vec::new(),
            plugins: Vec::new(),
            dispatcher: DispatcherBuilder::new(),
            resources: Resources::new(),
            handle_signals: true,
        }
    }

    /// Adds a plug-in. Plug-ins initialise and start in the order added and
    /// stop in reverse.
    #[must_use]
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Box::new(plugin));
        self
    }

    /// Registers the application's command, query and event handlers.
    ///
    /// Handlers name what they need as arguments (see
    /// [`cqrs::extract`](crate::cqrs::extract)); those are resolved from
    /// the resources once every plug-in has initialised, and a missing one
    /// fails [`build`](Self::build) naming the message, the handler and
    /// the resource.
    ///
    /// ```
    /// use mamey_core::cqrs::{Command, DispatcherBuilder, Res};
    /// use mamey_core::{Error, Service};
    ///
    /// struct Ping;
    /// impl Command for Ping {}
    ///
    /// #[derive(Clone)]
    /// struct Pongs(std::sync::Arc<std::sync::atomic::AtomicU32>);
    ///
    /// async fn ping(_: Ping, Res(pongs): Res<Pongs>) -> Result<(), Error> {
    ///     pongs.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///     Ok(())
    /// }
    ///
    /// fn handlers(d: &mut DispatcherBuilder) {
    ///     d.command(ping);
    /// }
    ///
    /// let builder = Service::builder("svc")
    ///     .resource(Pongs(Default::default()))
    ///     .handlers(handlers);
    /// ```
    #[must_use]
    pub fn handlers(mut self, register: impl FnOnce(&mut DispatcherBuilder)) -> Self {
        register(&mut self.dispatcher);
        self
    }

    /// Adds a resource of the application's own, available to plug-ins and
    /// handlers like a plug-in's.
    #[must_use]
    pub fn resource<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The version reported as `app.version` unless configured; pass
    /// `env!("CARGO_PKG_VERSION")`.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.loader = self.loader.version(version);
        self
    }

    /// Selects the configuration profile, overriding `MAMEY_PROFILE`.
    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.loader = self.loader.profile(profile);
        self
    }

    /// Reads configuration files from `dir` instead of `config/`.
    #[must_use]
    pub fn config_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.loader = self.loader.dir(dir);
        self
    }

    /// Uses these variables instead of the process environment.
    #[must_use]
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.loader = self.loader.env_vars(vars);
        self
    }

    /// Adds a configuration layer fetched during [`build`](Self::build),
    /// above files, environment and the overlays added before it (secrets
    /// from a vault, keys from a KV store).
    #[must_use]
    pub fn config_overlay(mut self, overlay: impl ConfigOverlay) -> Self {
        self.overlays.push(Box::new(overlay));
        self
    }

    /// Whether [`Service::run`] stops on SIGINT/SIGTERM. Default: `true`.
    /// Turn it off when something else owns the signals (tests, an
    /// embedding process); use [`Service::shutdown_handle`] instead.
    #[must_use]
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// Loads configuration and initialises every plug-in in order, then
    /// registers handlers and builds the dispatcher.
    ///
    /// # Errors
    /// A [`ServiceError`] naming the plug-in and the cause. Plug-ins that
    /// initialised before a failure are stopped, in reverse order, first.
    pub async fn build(self) -> Result<Service, ServiceError> {
        let started = std::time::Instant::now();
        check_duplicates(&self.plugins)?;
        let config = self.loader.load()?;
        let Self {
            overlays,
            plugins,
            dispatcher,
            resources,
            handle_signals,
            ..
        } = self;
        // Each phase in the service's scope, so that what plug-ins log and
        // record is theirs even when other services share the process; the
        // second with the `app` section as the overlays left it.
        let (config, plugins) = ServiceScope::from(config.app())
            .scope(apply_overlays(config, plugins, overlays))
            .await?;
        let scope = ServiceScope::from(config.app());
        let parts = Parts {
            config,
            plugins,
            dispatcher,
            resources,
            handle_signals,
            scope: scope.clone(),
            started,
        };
        scope.scope(initialise(parts)).await
    }
}

/// What [`ServiceBuilder::build`] initialises once the configuration is
/// complete.
struct Parts {
    config: Config,
    plugins: Vec<Box<dyn DynPlugin>>,
    dispatcher: DispatcherBuilder,
    resources: Resources,
    handle_signals: bool,
    scope: ServiceScope,
    started: std::time::Instant,
}

/// Lays the plug-ins' overlays, then the builder's, over `config`.
async fn apply_overlays(
    mut config: Config,
    mut plugins: Vec<Box<dyn DynPlugin>>,
    overlays: Vec<Box<dyn DynOverlay>>,
) -> Result<(Config, Vec<Box<dyn DynPlugin>>), ServiceError> {
    for plugin in &mut plugins {
        let name = plugin.name();
        let data =
            plugin
                .config_overlay(&config)
                .await
                .map_err(|source| ServiceError::ConfigOverlay {
                    overlay: name.to_owned(),
                    source,
                })?;
        if let Some(data) = data {
            config = config.with_overlay(name, data)?;
        }
    }
    for mut overlay in overlays {
        let name = overlay.name().to_owned();
        let data = overlay
            .fetch(&config)
            .await
            .map_err(|source| ServiceError::ConfigOverlay {
                overlay: name.clone(),
                source,
            })?;
        config = config.with_overlay(name, data)?;
    }
    Ok((config, plugins))
}

/// Initialises every plug-in in order, then builds the dispatcher.
async fn initialise(parts: Parts) -> Result<Service, ServiceError> {
    let Parts {
        config,
        plugins,
        mut dispatcher,
        mut resources,
        handle_signals,
        scope,
        started,
    } = parts;
    let shutdown_timeout = config.section::<ShutdownConfig>()?.timeout;
    let health = Health::with_default_timeout(config.section::<HealthConfig>()?.timeout);
    let sources: Vec<String> = config.sources().iter().map(ToString::to_string).collect();
    tracing::info!(
        service = %config.app().name,
        profile = %config.app().profile,
        sources = %if sources.is_empty() { "defaults only".to_owned() } else { sources.join(", ") },
        "configuration loaded"
    );

    let lifecycle = watch::Sender::new(Lifecycle::Initialising);
    register_lifecycle_checks(&health, &lifecycle);
    let shutdown = ShutdownHandle::new();
    let shared_dispatcher = Dispatcher::unbuilt();
    resources.insert(shared_dispatcher.clone());
    let mut slots: Vec<Slot> = Vec::with_capacity(plugins.len());

    for mut plugin in plugins {
        let name = plugin.name();
        let missing = plugin
            .requires()
            .into_iter()
            .find(|r| !resources.contains_id(r.id));
        let result = match missing {
            Some(requirement) => Err(ServiceError::MissingResource {
                plugin: name,
                resource: requirement.type_name,
                hint: requirement.hint,
            }),
            None => {
                let mut ctx = InitContext {
                    plugin: name,
                    config: &config,
                    resources: &mut resources,
                    health: &health,
                    dispatcher: &mut dispatcher,
                    shutdown: &shutdown,
                    scope: &scope,
                };
                plugin
                    .init(&mut ctx)
                    .await
                    .map_err(|source| ServiceError::PluginInit {
                        plugin: name,
                        source,
                    })
            }
        };
        if let Err(error) = result {
            tracing::error!(plugin = name, %error, "initialisation failed; stopping the plug-ins before it");
            stop_all(
                &mut slots,
                Instant::now() + shutdown_timeout,
                shutdown_timeout,
            )
            .await;
            return Err(error);
        }
        tracing::debug!(plugin = name, "initialised");
        slots.push(Slot::new(plugin));
    }

    if let Err(error) = dispatcher.build_into(&shared_dispatcher, &resources, Some(scope.clone())) {
        stop_all(
            &mut slots,
            Instant::now() + shutdown_timeout,
            shutdown_timeout,
        )
        .await;
        return Err(error.into());
    }
    let dispatcher = shared_dispatcher;
    for section in config.unread_sections() {
        tracing::warn!(
            section,
            "config section `{section}` is not read by any plug-in; misspelt, or a plug-in missing?"
        );
    }
    tracing::info!(
        plugins = %slots.iter().map(|s| s.plugin.name()).collect::<Vec<_>>().join(", "),
        elapsed_ms = started.elapsed().as_millis(),
        "service initialised"
    );
    Ok(Service {
        app: Arc::new(config.app().clone()),
        config,
        slots,
        resources: Arc::new(resources),
        health,
        dispatcher,
        shutdown,
        shutdown_timeout,
        handle_signals,
        scope,
        lifecycle,
    })
}

fn check_duplicates(plugins: &[Box<dyn DynPlugin>]) -> Result<(), ServiceError> {
    for (i, plugin) in plugins.iter().enumerate() {
        let duplicate = plugins[..i].iter().any(|p| p.name() == plugin.name());
        if duplicate {
            return Err(ServiceError::DuplicatePlugin {
                plugin: plugin.name(),
            });
        }
    }
    Ok(())
}
