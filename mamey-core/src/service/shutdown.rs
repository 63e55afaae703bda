//! Asking a running service to stop.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigSection;

/// Triggers and observes the shutdown of one service. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use mamey_core::ShutdownHandle;
///
/// let handle = ShutdownHandle::new();
/// let waiter = handle.clone();
/// handle.shutdown();
/// waiter.wait().await; // returns at once: shutdown was requested
/// assert!(waiter.is_shutdown());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    /// A handle nobody has triggered yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the service to stop. Idempotent.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was asked for.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown is asked for.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// The token under this handle, for APIs that take one
    /// (e.g. `tokio::select!` loops or `axum::serve` graceful shutdown).
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// The `shutdown` section.
///
/// ```toml
/// [shutdown]
/// timeout = "30s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long stopping every plug-in may take in total before the service
    /// gives up on the rest and exits. Default: `30s`.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

impl ConfigSection for ShutdownConfig {
    const KEY: &'static str = "shutdown";
}

/// The `health` section.
///
/// ```toml
/// [health]
/// timeout = "2s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How long one health check may take before it counts as unhealthy,
    /// unless it was registered with its own timeout. Default: `2s`.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            timeout: crate::health::Health::DEFAULT_TIMEOUT,
        }
    }
}

impl ConfigSection for HealthConfig {
    const KEY: &'static str = "health";
}

/// Shuts the service down on the first SIGINT/SIGTERM; exits the process on
/// the second, for when a plug-in hangs while stopping and someone is
/// pressing Ctrl-C again.
pub(crate) async fn watch_signals(shutdown: ShutdownHandle) {
    let signal = os_signal().await;
    tracing::info!(signal, "shutdown signal received");
    shutdown.shutdown();
    let signal = os_signal().await;
    tracing::error!(signal, "second signal while stopping: exiting now");
    std::process::exit(130);
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM. If a signal handler
/// cannot be installed, that signal is logged and ignored.
pub(crate) async fn os_signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGINT");
                std::future::pending().await
            }
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
                "SIGTERM"
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    }
}
