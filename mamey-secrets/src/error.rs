//! [`SecretError`]: why a secret could not be read. It names the path and
//! the backend, never a value.

/// Why a secret could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// No secret at this path.
    #[error("no secret at `{path}` in the {backend} backend")]
    NotFound {
        /// The backend asked.
        backend: &'static str,
        /// The path asked for.
        path: String,
    },
    /// The backend refused: a missing permission or a bad login.
    #[error("the {backend} backend denied access to `{path}`: {reason}")]
    Denied {
        /// The backend asked.
        backend: &'static str,
        /// The path asked for.
        path: String,
        /// What the backend said, without any secret value.
        reason: String,
    },
    /// The backend could not be reached, or failed.
    #[error("the {backend} backend is unavailable: {reason}")]
    Unavailable {
        /// The backend asked.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// The secret is there but not of the shape asked for.
    #[error("the secret at `{path}` has the wrong shape: {reason}")]
    Shape {
        /// The path asked for.
        path: String,
        /// What did not match (key names and types, never values).
        reason: String,
    },
    /// The backend's configuration is incomplete or wrong.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The configuration key, e.g. `secrets.vault.auth.role_id`.
        key: String,
        /// What is expected.
        reason: String,
    },
    /// The backend does not offer this operation.
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// The backend asked.
        backend: &'static str,
        /// What was asked.
        operation: &'static str,
    },
}

impl SecretError {
    /// Whether trying again later may succeed (the backend was unreachable).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
