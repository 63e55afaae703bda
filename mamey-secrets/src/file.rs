//! [`FileBackend`]: secrets from a TOML or JSON file.

use std::path::{Path, PathBuf};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::{SecretBackend, SecretData, SecretError, SecretRef};

/// Largest secrets file read, so a wrong path (a log, a device) cannot
/// exhaust memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Secrets from a TOML or JSON file (JSON by the `.json` extension, TOML
/// otherwise). Path `orders/db` is the table `[orders.db]`. The file is read
/// on every read, so editing it rotates the secrets (and
/// [watches](crate::SecretStore::watch) notice).
///
/// Keep it readable by the service's user only: [`FileBackend::new`] warns
/// when group or others may read it.
///
/// ```
/// use mamey_secrets::{FileBackend, SecretStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("secrets.toml");
/// std::fs::write(&path, "[orders.db]\npassword = \"hunter2\"\n").unwrap();
///
/// let store = SecretStore::new(FileBackend::new(&path));
/// let db = store.read_data(&"orders/db".into()).await?;
/// assert_eq!(db.get("password").unwrap().expose(), "hunter2");
/// # Ok::<(), mamey_secrets::SecretError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileBackend {
    path: PathBuf,
}

impl FileBackend {
    /// Secrets from the file at `path`; logs a warning when the file is
    /// readable by group or others.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if let Some(mode) = loose_permissions(&path) {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "secrets file is readable by group or others; restrict it with `chmod 600`"
            );
        }
        Self { path }
    }

    async fn load(&self, secret: &SecretRef) -> Result<SecretData, SecretError> {
        let unavailable = |reason: String| SecretError::Unavailable {
            backend: "file",
            reason: format!("{}: {reason}", self.path.display()),
        };
        let size = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(unavailable(format!(
                "{size} bytes, more than the {MAX_FILE_BYTES} a secrets file may have"
            )));
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let json = self.path.extension().is_some_and(|e| e == "json");
        // Parse errors name the line, never the content.
        let root: Value = if json {
            serde_json::from_str(&text).map_err(|e| {
                unavailable(format!(
                    "not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?
        } else {
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                let at = e
                    .span()
                    .map_or(0, |s| text[..s.start.min(text.len())].lines().count());
                unavailable(format!("not valid TOML (near line {at})"))
            })?;
            serde_json::to_value(table).map_err(|e| unavailable(e.to_string()))?
        };
        let mut node = &root;
        for segment in secret.path().split('/') {
            node = node.get(segment).ok_or_else(|| SecretError::NotFound {
                backend: "file",
                path: secret.path().to_owned(),
            })?;
        }
        match node {
            Value::Object(values) => Ok(SecretData::new(values.clone())),
            _ => Err(SecretError::Shape {
                path: secret.path().to_owned(),
                reason: "expected a table of keys, found a single value".into(),
            }),
        }
    }
}

impl SecretBackend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn read<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<SecretData, SecretError>> {
        self.load(secret).boxed()
    }
}

/// The file's mode when group or others have any access to it.
#[cfg(unix)]
fn loose_permissions(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_permissions(_path: &Path) -> Option<u32> {
    None
}
