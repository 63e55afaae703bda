//! Logging in to Vault (token, AppRole, Kubernetes) and keeping the token
//! alive: renewed at a fraction of its time to live, and a fresh login
//! when renewal is refused or the token reaches its maximum.

use std::time::Duration;

use mamey_core::config::Secret;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Connection, map_error};
use crate::SecretError;
use crate::config::{AuthMethod, VaultAuth};

/// Longest a token or service-account file may be.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// The token a login gave.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// Time to live when issued or last renewed; zero for a token that
    /// never expires (a root token).
    pub(crate) ttl: Duration,
    pub(crate) renewable: bool,
}

/// Logs in as `auth` says and makes the connection use the token.
pub(crate) async fn login(conn: &Connection, auth: &VaultAuth) -> Result<Login, SecretError> {
    let client = conn.client();
    let info = match auth.method {
        AuthMethod::Token => {
            let token = match (&auth.token, &auth.token_file) {
                (Some(token), _) => token.clone(),
                (None, Some(file)) => {
                    read_credential(file, "secrets.vault.auth.token_file").await?
                }
                (None, None) => {
                    return Err(config_error(
                        "secrets.vault.auth.token",
                        "method `token` needs `token` or `token_file`",
                    ));
                }
            };
            conn.set_token(token.expose());
            let me = vaultrs::token::lookup_self(&*conn.client())
                .await
                .map_err(|e| map_error("auth/token/lookup-self", e))?;
            return Ok(Login {
                ttl: Duration::from_secs(me.ttl),
                renewable: me.renewable.unwrap_or(false),
            });
        }
        AuthMethod::Approle => {
            let mount = auth.mount.as_deref().unwrap_or("approle");
            let role_id = auth.role_id.as_deref().ok_or_else(|| {
                config_error(
                    "secrets.vault.auth.role_id",
                    "method `approle` needs `role_id`",
                )
            })?;
            let secret_id = match (&auth.secret_id, &auth.secret_id_file) {
                (Some(id), _) => id.clone(),
                (None, Some(file)) => {
                    read_credential(file, "secrets.vault.auth.secret_id_file").await?
                }
                (None, None) => {
                    return Err(config_error(
                        "secrets.vault.auth.secret_id",
                        "method `approle` needs `secret_id` or `secret_id_file`",
                    ));
                }
            };
            vaultrs::auth::approle::login(&*client, mount, role_id, secret_id.expose())
                .await
                .map_err(|e| map_error(&format!("auth/{mount}/login"), e))?
        }
        AuthMethod::Kubernetes => {
            let mount = auth.mount.as_deref().unwrap_or("kubernetes");
            let role = auth.role.as_deref().ok_or_else(|| {
                config_error(
                    "secrets.vault.auth.role",
                    "method `kubernetes` needs `role`",
                )
            })?;
            let jwt = read_credential(&auth.jwt_file, "secrets.vault.auth.jwt_file").await?;
            vaultrs::auth::kubernetes::login(&*client, mount, role, jwt.expose())
                .await
                .map_err(|e| map_error(&format!("auth/{mount}/login"), e))?
        }
    };
    conn.set_token(&info.client_token);
    Ok(Login {
        ttl: Duration::from_secs(info.lease_duration),
        renewable: info.renewable,
    })
}

/// Keeps the token alive until `stop`: renews it after `renew_at` of its
/// time to live; logs in again when renewal is refused or the token nears
/// its maximum. While Vault is unreachable, tries again with backoff and
/// reports it through `trouble`.
pub(crate) async fn keep_alive(
    conn: Connection,
    auth: VaultAuth,
    mut login_state: Login,
    renew_at: f64,
    stop: CancellationToken,
    trouble: impl Fn(Option<String>) + Send,
) {
    loop {
        if login_state.ttl.is_zero() {
            // A token that never expires needs no care.
            stop.cancelled().await;
            return;
        }
        let wait = login_state.ttl.mul_f64(renew_at);
        let deadline = Instant::now() + login_state.ttl;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            match refresh(&conn, &auth, &login_state).await {
                Ok(next) => {
                    trouble(None);
                    login_state = next;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not renew the Vault token; trying again");
                    trouble(Some(format!("token renewal: {error}")));
                    // Before the token ends, try again well within its
                    // life; after, at the backoff's pace.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let pause = if left.is_zero() {
                        backoff
                    } else {
                        backoff.min(left / 2).max(Duration::from_millis(100))
                    };
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Renews the token, or logs in again when it cannot be renewed for its
/// full time to live.
async fn refresh(
    conn: &Connection,
    auth: &VaultAuth,
    current: &Login,
) -> Result<Login, SecretError> {
    let can_login = auth.method != AuthMethod::Token;
    if current.renewable {
        let increment = format!("{}s", current.ttl.as_secs());
        match vaultrs::token::renew_self(&*conn.client(), Some(&increment)).await {
            Ok(info) => {
                let ttl = Duration::from_secs(info.lease_duration);
                // Capped by the token's maximum: log in again before it ends.
                if ttl < current.ttl && can_login {
                    tracing::info!(
                        ttl_secs = ttl.as_secs(),
                        "Vault token nears its maximum; logging in again"
                    );
                    return login(conn, auth).await;
                }
                tracing::debug!(ttl_secs = ttl.as_secs(), "Vault token renewed");
                return Ok(Login {
                    ttl: if ttl.is_zero() { current.ttl } else { ttl },
                    renewable: info.renewable,
                });
            }
            Err(error) => {
                let error = map_error("auth/token/renew-self", error);
                if error.is_transient() || !can_login {
                    return Err(error);
                }
                tracing::info!(%error, "Vault refused to renew the token; logging in again");
            }
        }
    }
    if can_login {
        login(conn, auth).await
    } else {
        Err(SecretError::Denied {
            backend: "vault",
            path: "auth/token/renew-self".into(),
            reason: "the configured token cannot be renewed and will expire; give the service a renewable token or use approle/kubernetes".into(),
        })
    }
}

/// Reads a token or JWT from a file, trimmed, bounded in size.
async fn read_credential(path: &std::path::Path, key: &str) -> Result<Secret<String>, SecretError> {
    let unreadable = |reason: String| SecretError::Config {
        key: key.to_owned(),
        reason: format!("cannot read `{}`: {reason}", path.display()),
    };
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| unreadable(e.to_string()))?
        .len();
    if size > MAX_CREDENTIAL_FILE_BYTES {
        return Err(unreadable(format!("{size} bytes is too large")));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(Secret::new(text.trim().to_owned()))
}

fn config_error(key: &str, message: &str) -> SecretError {
    SecretError::Config {
        key: key.to_owned(),
        reason: message.to_owned(),
    }
}
