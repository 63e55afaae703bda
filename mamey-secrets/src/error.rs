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

impl From<SecretError> for mamey_core::Error {
    /// In a handler, `?` on a secret operation: an unreachable backend is
    /// *unavailable* (`secrets.unavailable`, retried by consumers, 503);
    /// anything else — a secret or key that is not there, a denied path, a
    /// wrong shape, a bad configuration — is the service's fault, not the
    /// caller's: *internal* (`secrets.failed`, 500, its detail logged and
    /// never shown). The `SecretError` stays the source.
    fn from(error: SecretError) -> Self {
        let (kind, code) = if error.is_transient() {
            (mamey_core::ErrorKind::Unavailable, "secrets.unavailable")
        } else {
            (mamey_core::ErrorKind::Internal, "secrets.failed")
        };
        Self::new(kind, code, error.to_string()).with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_errors_become_unavailable_or_internal_without_showing_the_path() {
        let unreachable = mamey_core::Error::from(SecretError::Unavailable {
            backend: "vault",
            reason: "connection refused".into(),
        });
        assert_eq!(unreachable.kind(), mamey_core::ErrorKind::Unavailable);
        assert_eq!(unreachable.code(), "secrets.unavailable");
        let missing = mamey_core::Error::from(SecretError::NotFound {
            backend: "vault",
            path: "orders/db".into(),
        });
        assert_eq!(missing.kind(), mamey_core::ErrorKind::Internal);
        assert!(missing.message().contains("orders/db"));
        assert!(!missing.public_message().contains("orders/db"));
    }
}
