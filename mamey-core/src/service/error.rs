//! Why a service could not be built, start or stop cleanly.

use std::fmt;

use crate::config::ConfigError;
use crate::cqrs::DispatcherError;
use crate::error::BoxError;

/// Why a service could not be built, could not start, or did not stop
/// cleanly. Every variant names the plug-in involved.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigError),
    /// A [`ConfigOverlay`](crate::config::ConfigOverlay), or a plug-in's
    /// [`Plugin::config_overlay`](super::Plugin::config_overlay), could not fetch its data.
    #[error("config overlay `{overlay}` failed: {source}")]
    ConfigOverlay {
        /// The overlay's name.
        overlay: String,
        /// Its error.
        source: BoxError,
    },
    /// Two plug-ins with the same [`Plugin::name`](super::Plugin::name) were added.
    #[error("plug-in `{plugin}` is added twice; add each plug-in once")]
    DuplicatePlugin {
        /// The plug-in's name.
        plugin: &'static str,
    },
    /// A plug-in requires a resource that no earlier plug-in provides.
    #[error(
        "plug-in `{plugin}` requires resource `{resource}`, which no plug-in added before it provides{}",
        hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
    )]
    MissingResource {
        /// The plug-in that needs it.
        plugin: &'static str,
        /// The type it needs.
        resource: &'static str,
        /// What to add, as the plug-in says.
        hint: Option<String>,
    },
    /// A plug-in's `init` failed; the plug-ins initialised before it were stopped.
    #[error("plug-in `{plugin}` failed to initialise: {source}")]
    PluginInit {
        /// The plug-in.
        plugin: &'static str,
        /// Its error.
        source: BoxError,
    },
    /// The handlers are inconsistent (two handlers for one command) or take
    /// a resource no plug-in provides.
    #[error(transparent)]
    Dispatcher(#[from] DispatcherError),
    /// A plug-in's `start` (or `ready`) failed; every initialised plug-in
    /// was stopped.
    #[error("plug-in `{plugin}` failed to start: {source}")]
    PluginStart {
        /// The plug-in.
        plugin: &'static str,
        /// Its error.
        source: BoxError,
    },
    /// A background task failed, so the service shut down.
    #[error("background task `{task}` of plug-in `{plugin}` failed: {source}")]
    TaskFailed {
        /// The plug-in that spawned it.
        plugin: &'static str,
        /// The task's name.
        task: String,
        /// Its error.
        source: BoxError,
    },
    /// Services of a [`ServiceGroup`](super::ServiceGroup) failed, each named with its error.
    #[error("{} service(s) failed: {}", .0.len(), join_services(.0))]
    Services(Vec<(String, ServiceError)>),
    /// Some plug-ins failed to stop or overran the shutdown deadline.
    #[error("{} plug-in(s) did not stop cleanly: {}", .0.len(), join(.0))]
    Stop(Vec<StopFailure>),
}

/// `Debug` prints the message, so `main() -> Result<(), ServiceError>` (or a
/// boxed error) ends with a readable line rather than a struct dump.
impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn join_services(failures: &[(String, ServiceError)]) -> String {
    failures
        .iter()
        .map(|(service, error)| format!("`{service}`: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn join(failures: &[StopFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A plug-in that did not stop cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopFailure {
    /// The plug-in.
    pub plugin: &'static str,
    /// What went wrong: its error, or that it overran the deadline.
    pub reason: String,
}

impl fmt::Display for StopFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.plugin, self.reason)
    }
}
