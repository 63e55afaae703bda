//! The [`Secrets`] plug-in.

use std::sync::Arc;

use mamey_core::config::Config;
use mamey_core::config::figment::value::Dict;
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};

use crate::config::{BackendKind, SecretsConfig};
use crate::{EnvBackend, FileBackend, SecretBackend, SecretStore, overlay};

/// The secrets plug-in (section `secrets`): lays secrets over the
/// configuration before any plug-in initialises, provides a
/// [`SecretStore`] for reads at runtime, and with Vault keeps the token,
/// the database leases and the certificate alive while the service runs.
///
/// Add it first, so the plug-ins after it see its secrets and resources:
///
/// ```no_run
/// use mamey_core::Service;
/// use mamey_secrets::Secrets;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // config/default.toml:
/// //   [secrets]
/// //   backend = "file"
/// //   file.path = "/run/secrets/orders.toml"
/// //   overlay = [{ path = "orders/db", into = "postgres" }]
/// Service::builder("orders")
///     .plugin(Secrets::new())
///     // .plugin(Postgres::new()) — its `postgres.url` came from the secret
///     .build()
///     .await?
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// Resources: [`SecretStore`]; with the Vault backend also
/// [`CredentialSources`](mamey_core::credentials::CredentialSources) (one
/// per `secrets.vault.database.<name>`) and
/// [`Transit`](crate::vault::Transit). Health: a `secrets` readiness check,
/// degraded (not failing) while the backend cannot be reached — the
/// current secrets stay in use until they expire.
#[derive(Default)]
pub struct Secrets {
    env: Option<Vec<(String, String)>>,
    state: Option<State>,
}

struct State {
    config: SecretsConfig,
    store: SecretStore,
    #[cfg(feature = "vault")]
    vault: Option<Arc<crate::vault::VaultBackend>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("backend", &self.state.as_ref().map(|s| s.store.backend()))
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The plug-in, configured by the `secrets` section.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `MAMEY_SECRET__…` from these variables instead of the process
    /// environment (tests, several services in one process).
    #[must_use]
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    async fn open(&self, config: &Config) -> Result<State, BoxError> {
        let section = config.section::<SecretsConfig>()?;
        if !(section.vault.renew_at > 0.0 && section.vault.renew_at < 1.0) {
            return Err(config
                .invalid(
                    "secrets.vault.renew_at",
                    "expected a fraction between 0 and 1, e.g. 0.5",
                )
                .into());
        }
        #[cfg(feature = "vault")]
        let mut vault = None;
        let backend: Arc<dyn SecretBackend> = match section.backend {
            BackendKind::Env => Arc::new(match &self.env {
                Some(vars) => EnvBackend::from_vars(&section.env.prefix, vars.iter().cloned()),
                None => EnvBackend::new(&section.env.prefix),
            }),
            BackendKind::File => {
                let path = if section.file.path.is_relative() {
                    config.dir().parent().map_or_else(
                        || section.file.path.clone(),
                        |root| root.join(&section.file.path),
                    )
                } else {
                    section.file.path.clone()
                };
                Arc::new(FileBackend::new(path))
            }
            #[cfg(feature = "vault")]
            BackendKind::Vault => {
                let backend = Arc::new(crate::vault::VaultBackend::connect(&section.vault).await?);
                vault = Some(Arc::clone(&backend));
                backend
            }
            #[cfg(not(feature = "vault"))]
            BackendKind::Vault => {
                return Err(config
                    .invalid(
                        "secrets.backend",
                        "`vault` needs the `vault` feature of mamey-secrets",
                    )
                    .into());
            }
        };
        Ok(State {
            config: section,
            store: SecretStore::from_arc(backend),
            #[cfg(feature = "vault")]
            vault,
        })
    }
}

impl Plugin for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }

    async fn config_overlay(&mut self, base: &Config) -> Result<Option<Dict>, BoxError> {
        let state = self.open(base).await?;
        let data = overlay::build(&state.store, &state.config.overlay).await?;
        self.state = Some(state);
        Ok((!data.is_empty()).then_some(data))
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let state = match self.state.take() {
            Some(state) => state,
            None => self.open(ctx.config()).await?,
        };
        ctx.provide(state.store.clone())?;
        #[cfg(feature = "vault")]
        if let Some(vault) = &state.vault {
            let (credentials, transit) = vault.issue().await?;
            ctx.provide(credentials)?;
            ctx.provide(transit)?;
        }
        let store = state.store.clone();
        #[cfg(feature = "vault")]
        let vault = state.vault.clone();
        ctx.health().register("secrets", &[Probe::Ready], move || {
            #[cfg(feature = "vault")]
            let trouble = store
                .trouble()
                .or_else(|| vault.as_ref().and_then(|v| v.trouble()));
            #[cfg(not(feature = "vault"))]
            let trouble = store.trouble();
            async move {
                match trouble {
                    Some(trouble) => HealthStatus::degraded(trouble),
                    None => HealthStatus::healthy(),
                }
            }
        });
        self.state = Some(state);
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let stop = ctx.shutdown_token();
        let store = state.store.clone();
        let refresh = state.config.refresh;
        let refresher_stop = stop.clone();
        ctx.spawn("secrets-refresh", async move {
            let mut ticks = tokio::time::interval(refresh);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = refresher_stop.cancelled() => return Ok(()),
                    _ = ticks.tick() => store.refresh_watched().await,
                }
            }
        });
        #[cfg(feature = "vault")]
        if let Some(vault) = &state.vault {
            for (name, work) in vault.keepers(&stop) {
                ctx.spawn(name, async move {
                    work.await;
                    Ok(())
                });
            }
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        #[cfg(feature = "vault")]
        if let Some(vault) = self.state.as_ref().and_then(|s| s.vault.clone()) {
            vault.shutdown().await;
        }
        Ok(())
    }
}
