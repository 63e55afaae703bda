//! Vault and OpenBao (feature `vault`): login by token, AppRole or
//! Kubernetes with the token kept alive; KV v1 and v2 reads; dynamic
//! database credentials kept renewed and re-issued before their maximum;
//! [`Transit`] encryption; a PKI certificate kept renewed in files.
//!
//! Everything talks to the server through `vaultrs`, over rustls with the
//! ring provider.

mod auth;
mod client;
mod database;
mod pki;
mod transit;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mamey_core::credentials::CredentialSources;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use transit::Transit;

use self::auth::Login;
use self::client::{Connection, map_error};
use self::database::DatabaseLease;
use self::pki::Certificate;
use crate::config::VaultConfig;
use crate::{SecretBackend, SecretData, SecretError, SecretRef};

/// The Vault backend: the connection, and the leases the service holds.
pub(crate) struct VaultBackend {
    conn: Connection,
    config: VaultConfig,
    login: Login,
    leases: Mutex<Vec<Arc<DatabaseLease>>>,
    certificate: Mutex<Option<Arc<Certificate>>>,
    /// What is wrong with the token or a lease right now, by part.
    trouble: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

impl VaultBackend {
    /// Connects and logs in, trying `connect_attempts` times with backoff
    /// while the server cannot be reached; then a clear error.
    pub(crate) async fn connect(config: &VaultConfig) -> Result<Self, SecretError> {
        let conn = Connection::new(config)?;
        let attempts = config.connect_attempts.max(1);
        let started = tokio::time::Instant::now();
        let mut backoff = config.connect_backoff;
        let mut attempt = 1;
        let login = loop {
            match auth::login(&conn, &config.auth).await {
                Ok(login) => break login,
                Err(error) if error.is_transient() && attempt < attempts => {
                    tracing::warn!(attempt, attempts, %error, address = %config.address, "Vault not reachable yet; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(error) if error.is_transient() => {
                    let error = match error {
                        SecretError::Unavailable { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Err(SecretError::Unavailable {
                        backend: "vault",
                        reason: format!(
                            "no answer from {} after {attempts} tries over {:.1?} (secrets.vault.connect_attempts): {error}",
                            config.address,
                            started.elapsed()
                        ),
                    });
                }
                Err(error) => return Err(error),
            }
        };
        tracing::info!(address = %config.address, method = ?config.auth.method, "logged in to Vault");
        Ok(Self {
            conn,
            config: config.clone(),
            login,
            leases: Mutex::new(Vec::new()),
            certificate: Mutex::new(None),
            trouble: Arc::default(),
        })
    }

    /// Issues the configured database credentials and certificate, and
    /// answers the resources for them.
    pub(crate) async fn issue(&self) -> Result<(CredentialSources, Transit), SecretError> {
        let mut sources = CredentialSources::new();
        let mut leases = Vec::new();
        for (name, lease) in &self.config.database {
            if lease.role.is_empty() {
                return Err(SecretError::Config {
                    key: format!("secrets.vault.database.{name}.role"),
                    reason: "expected the database role to issue credentials for".into(),
                });
            }
            let lease = DatabaseLease::issue(&self.conn, name, lease).await?;
            sources = sources.with_source(name.clone(), lease.subscribe());
            leases.push(Arc::new(lease));
        }
        *self.leases.lock().unwrap_or_else(PoisonError::into_inner) = leases;
        if let Some(pki) = &self.config.pki {
            let certificate = Certificate::issue(&self.conn, pki).await?;
            *self
                .certificate
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certificate));
        }
        Ok((
            sources,
            Transit::new(self.conn.clone(), &self.config.transit.mount),
        ))
    }

    /// The background work: token renewal, lease renewal and re-issue,
    /// certificate renewal. Each future runs until `stop`.
    pub(crate) fn keepers(
        &self,
        stop: &CancellationToken,
    ) -> Vec<(String, BoxFuture<'static, ()>)> {
        let renew_at = self.config.renew_at;
        let mut work: Vec<(String, BoxFuture<'static, ()>)> = Vec::new();
        work.push((
            "vault-token".into(),
            auth::keep_alive(
                self.conn.clone(),
                self.config.auth.clone(),
                self.login.clone(),
                renew_at,
                stop.clone(),
                self.reporter("token"),
            )
            .boxed(),
        ));
        for lease in self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            work.push((
                format!("vault-lease-{}", lease.name()),
                Arc::clone(lease)
                    .keep(
                        self.conn.clone(),
                        renew_at,
                        stop.clone(),
                        self.reporter(&format!("database.{}", lease.name())),
                    )
                    .boxed(),
            ));
        }
        if let Some(certificate) = self
            .certificate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            work.push((
                "vault-pki".into(),
                certificate
                    .keep(
                        self.conn.clone(),
                        renew_at,
                        stop.clone(),
                        self.reporter("pki"),
                    )
                    .boxed(),
            ));
        }
        work
    }

    /// Revokes the leases held, and the token if this service logged in
    /// for it, when `revoke_on_shutdown` is set.
    pub(crate) async fn shutdown(&self) {
        if !self.config.revoke_on_shutdown {
            return;
        }
        let leases = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for lease in leases {
            lease.revoke(&self.conn).await;
        }
        if self.config.auth.method != crate::config::AuthMethod::Token
            && let Err(error) = vaultrs::token::revoke_self(&*self.conn.client()).await
        {
            tracing::warn!(error = %map_error("auth/token/revoke-self", error), "could not revoke the Vault token");
        }
    }

    /// What is wrong right now, if anything: for the health check.
    pub(crate) fn trouble(&self) -> Option<String> {
        let trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        (!trouble.is_empty()).then(|| {
            trouble
                .iter()
                .map(|(part, problem)| format!("{part}: {problem}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn reporter(&self, part: &str) -> impl Fn(Option<String>) + Send + Sync + 'static {
        let trouble = Arc::clone(&self.trouble);
        let part = part.to_owned();
        move |problem| {
            let mut trouble = trouble.lock().unwrap_or_else(PoisonError::into_inner);
            match problem {
                Some(problem) => {
                    trouble.insert(part.clone(), problem);
                }
                None => {
                    trouble.remove(&part);
                }
            }
        }
    }

    async fn read_kv(&self, secret: &SecretRef) -> Result<SecretData, SecretError> {
        let mount = secret.mount.as_deref().unwrap_or(&self.config.kv.mount);
        let kv_version = secret.kv_version.unwrap_or(self.config.kv.version);
        let client = self.conn.client();
        let path = secret.path();
        let where_ = format!("{mount}/{path}");
        let values: Map<String, Value> = match (kv_version, secret.version) {
            (1, _) => vaultrs::kv1::get(&*client, mount, path).await,
            (_, Some(version)) => vaultrs::kv2::read_version(&*client, mount, path, version).await,
            (_, None) => vaultrs::kv2::read(&*client, mount, path).await,
        }
        .map_err(|e| map_error(&where_, e))?;
        Ok(SecretData::new(values))
    }
}

impl SecretBackend for VaultBackend {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn read<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<SecretData, SecretError>> {
        self.read_kv(secret).boxed()
    }
}
