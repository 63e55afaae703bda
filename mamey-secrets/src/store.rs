//! [`SecretStore`]: typed reads, watches and health over a backend.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{SecretBackend, SecretData, SecretError, SecretRef};

/// How long a failed read keeps the health check degraded when nothing
/// reads the backend again to clear it.
const TROUBLE_MEMORY: Duration = Duration::from_secs(60);

/// Secrets at runtime: a resource the [`Secrets`](crate::Secrets) plug-in
/// provides, for code that needs a secret after the service has built.
///
/// ```
/// use mamey_core::config::Secret;
/// use mamey_secrets::{EnvBackend, SecretStore};
///
/// #[derive(serde::Deserialize)]
/// struct Smtp {
///     user: String,
///     password: Secret<String>,
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SecretStore::new(EnvBackend::from_vars("MAMEY_SECRET__", [
///     ("MAMEY_SECRET__MAIL__SMTP__USER", "mailer"),
///     ("MAMEY_SECRET__MAIL__SMTP__PASSWORD", "hunter2"),
/// ]));
/// let smtp: Smtp = store.read("mail/smtp").await?;
/// assert_eq!(smtp.user, "mailer");
/// assert_eq!(format!("{:?}", smtp.password), "[redacted]");
/// # Ok::<(), mamey_secrets::SecretError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn SecretBackend>,
    watched: Mutex<BTreeMap<SecretRef, watch::Sender<SecretData>>>,
    /// The last failure talking to the backend and when it happened,
    /// cleared by a success.
    trouble: watch::Sender<Option<(Instant, String)>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// A store reading from `backend`.
    pub fn new(backend: impl SecretBackend) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    pub(crate) fn from_arc(backend: Arc<dyn SecretBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                watched: Mutex::new(BTreeMap::new()),
                trouble: watch::Sender::new(None),
            }),
        }
    }

    /// The backend's name: `"vault"`, `"file"`, `"env"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Reads a secret as a typed value; wrap its fields in
    /// [`Secret`](mamey_core::config::Secret) so they never print.
    ///
    /// # Errors
    /// [`SecretError`]: not found, denied, backend unavailable, or a shape
    /// that does not match `T` (naming the key, never the value).
    pub async fn read<T: DeserializeOwned>(
        &self,
        secret: impl Into<SecretRef>,
    ) -> Result<T, SecretError> {
        let secret = secret.into();
        self.read_data(&secret).await?.deserialize(secret.path())
    }

    /// Reads a secret's keys and values.
    ///
    /// # Errors
    /// [`SecretError`]: not found, denied, or backend unavailable.
    pub async fn read_data(&self, secret: &SecretRef) -> Result<SecretData, SecretError> {
        let result = self.inner.backend.read(secret).await;
        match &result {
            Err(error) if error.is_transient() => self.report_trouble(error.to_string()),
            _ => self.report_ok(),
        }
        result
    }

    /// Watches a secret: its value now, and a notification each time a
    /// re-read (every `secrets.refresh`) finds it changed.
    ///
    /// # Errors
    /// As [`read_data`](Self::read_data), for the first read.
    pub async fn watch(&self, secret: impl Into<SecretRef>) -> Result<SecretWatch, SecretError> {
        let secret = secret.into();
        let existing = self
            .lock_watched()
            .get(&secret)
            .map(watch::Sender::subscribe);
        if let Some(receiver) = existing {
            return Ok(SecretWatch { secret, receiver });
        }
        let data = self.read_data(&secret).await?;
        let receiver = self
            .lock_watched()
            .entry(secret.clone())
            .or_insert_with(|| watch::Sender::new(data))
            .subscribe();
        Ok(SecretWatch { secret, receiver })
    }

    /// Reads every watched secret again and notifies the watches of those
    /// that changed. A failure keeps the last value and is reported in the
    /// health check.
    pub(crate) async fn refresh_watched(&self) {
        let watched: Vec<(SecretRef, watch::Sender<SecretData>)> = self
            .lock_watched()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (secret, sender) in watched {
            match self.read_data(&secret).await {
                Ok(data) => {
                    let changed = sender.send_if_modified(|current| {
                        let changed = *current != data;
                        if changed {
                            *current = data;
                        }
                        changed
                    });
                    if changed {
                        tracing::info!(secret = %secret, "secret rotated");
                    }
                }
                Err(error) => {
                    tracing::warn!(secret = %secret, %error, "could not re-read a watched secret; keeping its last value");
                }
            }
        }
    }

    /// Records a failure to reach the backend, for the health check.
    pub(crate) fn report_trouble(&self, trouble: String) {
        self.inner
            .trouble
            .send_replace(Some((Instant::now(), trouble)));
    }

    /// Records that the backend answered.
    pub(crate) fn report_ok(&self) {
        self.inner.trouble.send_if_modified(|t| t.take().is_some());
    }

    /// The last failure to reach the backend, if it has not answered since
    /// and it happened within the last minute.
    #[must_use]
    pub fn trouble(&self) -> Option<String> {
        self.inner
            .trouble
            .borrow()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < TROUBLE_MEMORY)
            .map(|(_, trouble)| trouble.clone())
    }

    fn lock_watched(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<SecretRef, watch::Sender<SecretData>>> {
        self.inner
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A watched secret: see [`SecretStore::watch`].
#[derive(Debug)]
pub struct SecretWatch {
    secret: SecretRef,
    receiver: watch::Receiver<SecretData>,
}

impl SecretWatch {
    /// The secret's current keys and values.
    #[must_use]
    pub fn current(&self) -> SecretData {
        self.receiver.borrow().clone()
    }

    /// The current value as a typed value.
    ///
    /// # Errors
    /// [`SecretError::Shape`] when it does not match `T`.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<T, SecretError> {
        self.receiver
            .borrow_and_update()
            .deserialize(self.secret.path())
    }

    /// Waits until the secret changes.
    ///
    /// # Errors
    /// [`SecretError::Unavailable`] when the store has gone (the service
    /// stopped).
    pub async fn changed(&mut self) -> Result<(), SecretError> {
        self.receiver
            .changed()
            .await
            .map_err(|_| SecretError::Unavailable {
                backend: "store",
                reason: "the secret store has stopped".into(),
            })
    }
}
