//! A certificate from Vault's PKI engine, written to files and issued
//! again after a fraction of its validity — where a TLS server that
//! reloads its files (`http.tls`) picks it up.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use vaultrs::api::pki::requests::GenerateCertificateRequest;

use super::client::{Connection, map_error};
use crate::SecretError;
use crate::config::PkiConfig;

/// The certificate the service keeps.
pub(crate) struct Certificate {
    config: PkiConfig,
    state: Mutex<Issued>,
}

#[derive(Debug, Clone, Copy)]
struct Issued {
    at: SystemTime,
    expires: SystemTime,
}

impl Certificate {
    /// Issues the certificate and writes its files.
    pub(crate) async fn issue(conn: &Connection, config: &PkiConfig) -> Result<Self, SecretError> {
        for (key, missing) in [
            ("role", config.role.is_empty()),
            ("common_name", config.common_name.is_empty()),
            ("cert_file", config.cert_file.as_os_str().is_empty()),
            ("key_file", config.key_file.as_os_str().is_empty()),
        ] {
            if missing {
                return Err(SecretError::Config {
                    key: format!("secrets.vault.pki.{key}"),
                    reason: "required when `secrets.vault.pki` is set".into(),
                });
            }
        }
        let issued = issue(conn, config).await?;
        Ok(Self {
            config: config.clone(),
            state: Mutex::new(issued),
        })
    }

    /// Issues the certificate again after `renew_at` of its validity, until
    /// `stop`; failures are retried with backoff and reported.
    pub(crate) async fn keep(
        self: std::sync::Arc<Self>,
        conn: Connection,
        renew_at: f64,
        stop: CancellationToken,
        trouble: impl Fn(Option<String>) + Send,
    ) {
        loop {
            let issued = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let validity = issued.expires.duration_since(issued.at).unwrap_or_default();
            let due = issued.at + validity.mul_f64(renew_at);
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let mut backoff = Duration::from_millis(500);
            loop {
                match issue(&conn, &self.config).await {
                    Ok(next) => {
                        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = next;
                        trouble(None);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not renew the certificate; the current one stays in its files");
                        trouble(Some(error.to_string()));
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }
}

async fn issue(conn: &Connection, config: &PkiConfig) -> Result<Issued, SecretError> {
    let mut request = GenerateCertificateRequest::builder();
    // The chain to serve: intermediates, without the root clients trust.
    request
        .common_name(config.common_name.clone())
        .remove_roots_from_chain(true);
    if !config.alt_names.is_empty() {
        request.alt_names(config.alt_names.join(","));
    }
    if !config.ip_sans.is_empty() {
        request.ip_sans(config.ip_sans.join(","));
    }
    if let Some(ttl) = config.ttl {
        request.ttl(format!("{}s", ttl.as_secs().max(1)));
    }
    let where_ = format!("{}/issue/{}", config.mount, config.role);
    let response = vaultrs::pki::cert::generate(
        &*conn.client(),
        &config.mount,
        &config.role,
        Some(&mut request),
    )
    .await
    .map_err(|e| map_error(&where_, e))?;
    let at = SystemTime::now();
    let expires = response
        .expiration
        .map_or(at, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    let mut chain = response.certificate.trim().to_owned();
    for ca in response.ca_chain.iter().flatten() {
        chain.push('\n');
        chain.push_str(ca.trim());
    }
    chain.push('\n');
    let write_error = |path: &Path, e: std::io::Error| SecretError::Unavailable {
        backend: "vault",
        reason: format!("cannot write the certificate to {}: {e}", path.display()),
    };
    write_atomically(&config.key_file, response.private_key.as_bytes(), true)
        .await
        .map_err(|e| write_error(&config.key_file, e))?;
    write_atomically(&config.cert_file, chain.as_bytes(), false)
        .await
        .map_err(|e| write_error(&config.cert_file, e))?;
    if let Some(ca_file) = &config.ca_file {
        let ca = format!("{}\n", response.issuing_ca.trim());
        write_atomically(ca_file, ca.as_bytes(), false)
            .await
            .map_err(|e| write_error(ca_file, e))?;
    }
    tracing::info!(
        common_name = %config.common_name,
        serial = %response.serial_number,
        valid_secs = expires.duration_since(at).unwrap_or_default().as_secs(),
        cert_file = %config.cert_file.display(),
        "certificate issued"
    );
    Ok(Issued { at, expires })
}

/// Writes `bytes` to a temporary file beside `path` and renames it over,
/// so a reader sees the old file or the new one, never half of one.
async fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&temporary).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&temporary, path).await
}
