//! Dynamic database credentials: issued at init, renewed after a fraction
//! of their time to live, issued afresh when renewal can no longer give a
//! full period (the lease nears its maximum), and revoked at shutdown.
//! Every new pair is published to the pool that follows the source.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mamey_core::config::Secret;
use mamey_core::credentials::Credentials;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Connection, Leased};
use crate::SecretError;
use crate::config::DatabaseLeaseConfig;

/// One named source of dynamic credentials.
pub(crate) struct DatabaseLease {
    name: String,
    mount: String,
    role: String,
    sender: watch::Sender<Credentials>,
    state: Mutex<LeaseState>,
}

#[derive(Debug, Clone)]
struct LeaseState {
    lease_id: String,
    /// The time to live the role grants each issue or renewal.
    ttl: Duration,
    renewable: bool,
    /// When the lease ends unless renewed.
    expires: Instant,
    /// Earlier leases still alive, revoked at shutdown.
    retired: Vec<(String, Instant)>,
}

#[derive(serde::Deserialize)]
struct Issued {
    username: String,
    password: Secret<String>,
}

impl DatabaseLease {
    /// Issues the first credentials.
    pub(crate) async fn issue(
        conn: &Connection,
        name: &str,
        config: &DatabaseLeaseConfig,
    ) -> Result<Self, SecretError> {
        let (credentials, state) = fetch(conn, &config.mount, &config.role, Vec::new()).await?;
        tracing::info!(source = name, username = %credentials.username, ttl_secs = state.ttl.as_secs(), "database credentials issued");
        Ok(Self {
            name: name.to_owned(),
            mount: config.mount.clone(),
            role: config.role.clone(),
            sender: watch::Sender::new(credentials),
            state: Mutex::new(state),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Credentials> {
        self.sender.subscribe()
    }

    fn state(&self) -> LeaseState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Renews and re-issues until `stop`. Vault unreachable: the current
    /// credentials stay in use until their lease ends, retried with
    /// backoff and reported through `trouble`.
    pub(crate) async fn keep(
        self: std::sync::Arc<Self>,
        conn: Connection,
        renew_at: f64,
        stop: CancellationToken,
        trouble: impl Fn(Option<String>) + Send,
    ) {
        loop {
            let state = self.state();
            let wait = if state.renewable {
                state.ttl.mul_f64(renew_at)
            } else {
                // Not renewable: issue afresh with the same margin.
                state
                    .expires
                    .saturating_duration_since(Instant::now())
                    .mul_f64(renew_at)
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let mut backoff = Duration::from_millis(250);
            loop {
                match self.step(&conn).await {
                    Ok(()) => {
                        trouble(None);
                        break;
                    }
                    Err(error) => {
                        let left = self
                            .state()
                            .expires
                            .saturating_duration_since(Instant::now());
                        tracing::warn!(source = %self.name, %error, left_secs = left.as_secs(), "could not renew database credentials; keeping the current ones and trying again");
                        trouble(Some(if left.is_zero() {
                            format!("{error} (the current credentials have expired)")
                        } else {
                            format!(
                                "{error} (current credentials valid for {}s more)",
                                left.as_secs()
                            )
                        }));
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// One renewal; or a fresh issue when renewal cannot give a full
    /// period, the lease is not renewable, or it has already ended.
    async fn step(&self, conn: &Connection) -> Result<(), SecretError> {
        let state = self.state();
        let now = Instant::now();
        if state.renewable && state.expires > now {
            match conn.renew_lease(&state.lease_id, state.ttl).await {
                Ok(ttl) if ttl >= state.ttl => {
                    let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    current.expires = now + ttl;
                    tracing::debug!(source = %self.name, ttl_secs = ttl.as_secs(), "database credentials renewed");
                    return Ok(());
                }
                Ok(ttl) => {
                    tracing::info!(source = %self.name, left_secs = ttl.as_secs(), "database credentials near their maximum time to live; issuing new ones");
                    self.state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .expires = now + ttl;
                }
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::info!(source = %self.name, %error, "renewal refused; issuing new credentials");
                }
            }
        }
        self.rotate(conn).await
    }

    async fn rotate(&self, conn: &Connection) -> Result<(), SecretError> {
        let old = self.state();
        let mut retired: Vec<(String, Instant)> = old
            .retired
            .into_iter()
            .filter(|(_, expires)| *expires > Instant::now())
            .collect();
        if old.expires > Instant::now() {
            retired.push((old.lease_id, old.expires));
        }
        let (credentials, state) = fetch(conn, &self.mount, &self.role, retired).await?;
        tracing::info!(source = %self.name, username = %credentials.username, ttl_secs = state.ttl.as_secs(), "database credentials rotated");
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.sender.send_replace(credentials);
        Ok(())
    }

    /// Revokes the current lease and the earlier ones still alive.
    pub(crate) async fn revoke(&self, conn: &Connection) {
        let state = self.state();
        let now = Instant::now();
        let alive = state
            .retired
            .iter()
            .filter(|(_, expires)| *expires > now)
            .map(|(id, _)| id.clone())
            .chain(std::iter::once(state.lease_id));
        for lease_id in alive {
            match conn.revoke_lease(&lease_id).await {
                Ok(()) => tracing::debug!(source = %self.name, "database lease revoked"),
                Err(error) => {
                    tracing::warn!(source = %self.name, %error, "could not revoke a database lease; it ends at its time to live");
                }
            }
        }
    }
}

async fn fetch(
    conn: &Connection,
    mount: &str,
    role: &str,
    retired: Vec<(String, Instant)>,
) -> Result<(Credentials, LeaseState), SecretError> {
    let issued: Leased<Issued> = conn
        .call(reqwest::Method::GET, &format!("{mount}/creds/{role}"), None)
        .await?;
    let ttl = Duration::from_secs(issued.lease_duration.max(1));
    let credentials = Credentials {
        username: issued.data.username,
        password: issued.data.password,
    };
    let state = LeaseState {
        lease_id: issued.lease_id,
        ttl,
        renewable: issued.renewable,
        expires: Instant::now() + ttl,
        retired,
    };
    Ok((credentials, state))
}
