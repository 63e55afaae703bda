//! The connection to Vault: one HTTP client (rustls, ring), the current
//! token, error mapping, and the few calls vaultrs does not return lease
//! details for.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::SecretError;
use crate::config::VaultConfig;

/// Largest response body read from Vault.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A shared connection to one Vault server. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Connection {
    http: reqwest::Client,
    settings: VaultClientSettings,
    client: Arc<RwLock<Arc<VaultClient>>>,
}

/// A secret with a lease, as Vault answers `GET` on a dynamic path.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Leased<T> {
    pub(crate) lease_id: String,
    pub(crate) lease_duration: u64,
    pub(crate) renewable: bool,
    pub(crate) data: T,
}

impl Connection {
    /// A connection with no token yet.
    pub(crate) fn new(config: &VaultConfig) -> Result<Self, SecretError> {
        // reqwest is built without a crypto provider: use ring, as the rest
        // of the workspace does. Ignored when a provider is already set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |reason: String| SecretError::Unavailable {
            backend: "vault",
            reason,
        };
        let address = reqwest::Url::parse(&config.address)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                invalid(format!(
                    "secrets.vault.address `{}` is not an http:// or https:// URL",
                    config.address
                ))
            })?;
        if config.skip_verify {
            tracing::warn!(
                address = %address,
                "secrets.vault.skip_verify is on: Vault's certificate is NOT verified; never do this in production"
            );
        }
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(address.as_str())
            .token(String::new())
            .timeout(Some(config.timeout))
            .verify(!config.skip_verify)
            .identity(None)
            .ca_certs(
                config
                    .ca_file
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            );
        if let Some(namespace) = &config.namespace {
            builder.set_namespace(namespace.clone());
        }
        let settings = builder
            .build()
            .map_err(|e| invalid(format!("secrets.vault: {e}")))?;
        let client = VaultClient::new(settings.clone()).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            http: client.http.http.clone(),
            settings,
            client: Arc::new(RwLock::new(Arc::new(client))),
        })
    }

    /// The client with the current token.
    pub(crate) fn client(&self) -> Arc<VaultClient> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Uses `token` from now on.
    pub(crate) fn set_token(&self, token: &str) {
        let mut settings = self.settings.clone();
        settings.token = token.to_owned();
        let client = VaultClient {
            http: rustify::clients::reqwest::Client::new(
                self.settings.address.as_str(),
                self.http.clone(),
            ),
            middle: EndpointMiddleware {
                token: token.to_owned(),
                version: format!("v{}", settings.version),
                wrap: None,
                namespace: settings.namespace.clone(),
            },
            settings,
        };
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(client);
    }

    /// A call vaultrs has no lease-aware form for: `method` on
    /// `/v1/{path}` with a JSON body, answering the whole response.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, SecretError> {
        let client = self.client();
        let url = format!(
            "{}/v1/{}",
            self.settings.address.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Request", "true")
            .header("X-Vault-Token", client.middle.token.as_str());
        if let Some(namespace) = &client.middle.namespace {
            request = request.header("X-Vault-Namespace", namespace.as_str());
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let unavailable = |reason: String| SecretError::Unavailable {
            backend: "vault",
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("{path}: {}", without_url(&e))))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("{path}: {}", without_url(&e))))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(unavailable(format!(
                "{path}: response over {MAX_BODY_BYTES} bytes"
            )));
        }
        if !(200..300).contains(&status) {
            let errors = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                .unwrap_or_default();
            return Err(api_error(path, status, &errors));
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes)
            .map_err(|e| unavailable(format!("{path}: unexpected response ({e})")))
    }

    /// Renews a lease by `increment`; answers the lease's new time to live.
    pub(crate) async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, SecretError> {
        #[derive(serde::Deserialize)]
        struct Renewed {
            lease_duration: u64,
        }
        let renewed: Renewed = self
            .call(
                reqwest::Method::PUT,
                "sys/leases/renew",
                Some(serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() })),
            )
            .await?;
        Ok(Duration::from_secs(renewed.lease_duration))
    }

    /// Revokes a lease.
    pub(crate) async fn revoke_lease(&self, lease_id: &str) -> Result<(), SecretError> {
        self.call::<Value>(
            reqwest::Method::PUT,
            "sys/leases/revoke",
            Some(serde_json::json!({ "lease_id": lease_id })),
        )
        .await
        .map(drop)
    }
}

/// A transport error's text without the URL (which could carry a query).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// An error status from Vault as a [`SecretError`].
fn api_error(path: &str, status: u16, errors: &[String]) -> SecretError {
    let reason = if errors.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}: {}", errors.join("; "))
    };
    match status {
        404 => SecretError::NotFound {
            backend: "vault",
            path: path.to_owned(),
        },
        400 | 401 | 403 => SecretError::Denied {
            backend: "vault",
            path: path.to_owned(),
            reason,
        },
        _ => SecretError::Unavailable {
            backend: "vault",
            reason: format!("{path}: {reason}"),
        },
    }
}

/// A vaultrs error as a [`SecretError`] about `path`.
pub(crate) fn map_error(path: &str, error: ClientError) -> SecretError {
    match error {
        ClientError::APIError { code, errors } => api_error(path, code, &errors),
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            SecretError::NotFound {
                backend: "vault",
                path: path.to_owned(),
            }
        }
        other => SecretError::Unavailable {
            backend: "vault",
            reason: format!("{path}: {}", describe(&other)),
        },
    }
}

/// A vaultrs error's innermost cause, which names what went wrong on the
/// wire (refused, timed out) rather than only "request failed".
fn describe(error: &ClientError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}
