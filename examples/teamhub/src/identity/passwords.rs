//! Passwords: argon2id with the crate's default cost, a random salt, stored
//! as PHC strings. Hashing is CPU- and memory-heavy (19 MiB each), so it
//! runs on the blocking pool, at most as many at once as there are CPUs.
//!
//! Signing in as an unknown account checks the password against a dummy
//! hash of the same cost, so that it takes as long as a wrong password and
//! the answer's timing does not tell which accounts exist.

use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use mamey_core::Error;
use tokio::sync::Semaphore;

/// Hashes and checks passwords; a resource, cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Passwords {
    /// One permit per hash in progress.
    permits: Arc<Semaphore>,
    /// A hash of a random password: what an unknown account is checked
    /// against.
    dummy: Arc<str>,
}

impl Passwords {
    /// A hasher that runs up to `parallelism` hashes at once (at least
    /// one). Makes the dummy hash, which takes one hash's time.
    ///
    /// # Errors
    /// No randomness, or the blocking pool is gone.
    pub(super) async fn new(parallelism: usize) -> Result<Self, Error> {
        let permits = Arc::new(Semaphore::new(parallelism.max(1)));
        let mut random = [0_u8; 32];
        OsRng
            .try_fill_bytes(&mut random)
            .map_err(|e| Error::internal(format!("no randomness for the dummy password: {e}")))?;
        let mut passwords = Self {
            permits,
            dummy: Arc::from(""),
        };
        passwords.dummy = passwords.hash(hex(&random)).await?.into();
        Ok(passwords)
    }

    /// The PHC string of `password` with a new random salt.
    ///
    /// # Errors
    /// No randomness, or the blocking pool is gone.
    pub(super) async fn hash(&self, password: String) -> Result<String, Error> {
        let mut salt = [0_u8; 16];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| Error::internal(format!("no randomness for a salt: {e}")))?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| Error::internal(format!("encoding a salt: {e}")))?;
        self.blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("hashing a password: {e}")))
        })
        .await?
    }

    /// Whether `password` is the one `hash` (a PHC string) was made from.
    /// Without a hash (no such account) the password is checked against
    /// the dummy hash, at the same cost, and the answer is `false`.
    ///
    /// # Errors
    /// A stored hash that is not a PHC string, or the blocking pool is gone.
    pub(super) async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, Error> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let matches = self
            .blocking(move || {
                let parsed = PasswordHash::new(&hash).map_err(|e| {
                    Error::internal(format!("a stored password hash is invalid: {e}"))
                })?;
                Ok::<_, Error>(
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        Ok(known && matches)
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("the password hasher is closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("a password hash did not finish: {e}")))
    }
}

/// `bytes` as lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_matches_its_hash_only() {
        let passwords = Passwords::new(2).await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_ne!(
            hash,
            passwords.hash("correct horse".into()).await.unwrap(),
            "salted"
        );
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_matches() {
        let passwords = Passwords::new(1).await.unwrap();
        assert!(!passwords.verify(String::new(), None).await.unwrap());
        assert!(
            passwords
                .verify("x".into(), Some("not a hash".into()))
                .await
                .is_err()
        );
    }
}
