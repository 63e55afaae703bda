//! Keeping this service's instance registered while it runs.

use std::sync::Arc;
use std::time::Duration;

use mamey_core::InServiceScope;
use mamey_core::health::HealthStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::instance::Instance;
use crate::registry::{Presence, Registry};

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Registering,
    Registered,
    /// The last call to the registry failed, with why.
    Failing(String),
}

/// The background task that registers the instance, keeps it alive, and
/// registers it again when the registry lost it.
pub(crate) struct Registration {
    registry: Arc<dyn Registry>,
    instance: Instance,
    stop: CancellationToken,
    task: JoinHandle<()>,
    state: watch::Receiver<State>,
}

impl Registration {
    pub(crate) fn start(registry: Arc<dyn Registry>, instance: Instance, backoff: Backoff) -> Self {
        let stop = CancellationToken::new();
        let (state, receiver) = watch::channel(State::Registering);
        let task = tokio::spawn(
            maintain(
                Arc::clone(&registry),
                instance.clone(),
                stop.clone(),
                state,
                backoff,
            )
            .in_current_service(),
        );
        Self {
            registry,
            instance,
            stop,
            task,
            state: receiver,
        }
    }

    /// The instance registered.
    pub(crate) fn instance(&self) -> &Instance {
        &self.instance
    }

    /// A health check's view: degraded while the registry cannot be told.
    pub(crate) fn health(state: &watch::Receiver<State>) -> HealthStatus {
        match &*state.borrow() {
            State::Registered => HealthStatus::healthy(),
            State::Registering => HealthStatus::degraded("registering with the registry"),
            State::Failing(why) => HealthStatus::degraded(format!("not registered: {why}")),
        }
    }

    /// The state, for [`health`](Self::health).
    pub(crate) fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stops keeping the instance alive, then deregisters it within
    /// `timeout`.
    pub(crate) async fn deregister(self, timeout: Duration) -> Result<(), String> {
        self.stop.cancel();
        // The task only loops and waits; it ends at the next await.
        let _ = self.task.await;
        match tokio::time::timeout(timeout, self.registry.deregister(&self.instance)).await {
            Ok(Ok(())) => {
                tracing::info!(
                    registry = self.registry.name(),
                    id = %self.instance.id,
                    "deregistered"
                );
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "the {} registry did not answer within {} ms",
                self.registry.name(),
                timeout.as_millis()
            )),
        }
    }
}

async fn maintain(
    registry: Arc<dyn Registry>,
    instance: Instance,
    stop: CancellationToken,
    state: watch::Sender<State>,
    mut backoff: Backoff,
) {
    let name = registry.name();
    // Wait `pause`, or return when stopped.
    macro_rules! pause {
        ($pause:expr) => {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep($pause) => {}
            }
        };
    }
    loop {
        let registered = tokio::select! {
            () = stop.cancelled() => return,
            registered = registry.register(&instance) => registered,
        };
        if let Err(error) = registered {
            tracing::warn!(registry = name, id = %instance.id, error = %error, "registration failed; retrying");
            state.send_replace(State::Failing(error.message().to_owned()));
            pause!(backoff.next());
            continue;
        }
        tracing::info!(
            registry = name,
            service = %instance.service,
            id = %instance.id,
            endpoint = %instance.endpoint(),
            "registered"
        );
        state.send_replace(State::Registered);
        backoff.reset();
        loop {
            pause!(registry.heartbeat_interval());
            let presence = tokio::select! {
                () = stop.cancelled() => return,
                presence = registry.heartbeat(&instance) => presence,
            };
            match presence {
                Ok(Presence::Registered) => {
                    state.send_if_modified(|s| {
                        let changed = *s != State::Registered;
                        *s = State::Registered;
                        changed
                    });
                }
                Ok(Presence::Lost) => {
                    tracing::warn!(registry = name, id = %instance.id, "the registry lost this instance; registering again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(registry = name, id = %instance.id, error = %error, "heartbeat failed");
                    state.send_replace(State::Failing(error.message().to_owned()));
                }
            }
        }
    }
}
