//! [`Transit`]: encryption as a service, with keys that never leave Vault.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mamey_core::config::Secret;

use super::client::{Connection, map_error};
use crate::SecretError;

/// Encrypts and decrypts with named keys of Vault's transit engine
/// (`secrets.vault.transit.mount`): a resource of the
/// [`Secrets`](crate::Secrets) plug-in when the backend is Vault.
///
/// ```no_run
/// # async fn run(transit: mamey_secrets::vault::Transit) -> Result<(), mamey_secrets::SecretError> {
/// let ciphertext = transit.encrypt("orders", b"4111 1111 1111 1111").await?; // "vault:v1:…"
/// let plaintext = transit.decrypt("orders", &ciphertext).await?;
/// assert_eq!(plaintext.expose(), b"4111 1111 1111 1111");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Transit {
    conn: Connection,
    mount: String,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transit")
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl Transit {
    pub(crate) fn new(conn: Connection, mount: &str) -> Self {
        Self {
            conn,
            mount: mount.to_owned(),
        }
    }

    /// Encrypts `plaintext` with the key `key`; answers Vault's ciphertext
    /// (`vault:v1:…`), safe to store.
    ///
    /// # Errors
    /// [`SecretError`]: no such key, denied, or Vault unavailable.
    pub async fn encrypt(&self, key: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let encoded = STANDARD.encode(plaintext);
        vaultrs::transit::data::encrypt(&*self.conn.client(), &self.mount, key, &encoded, None)
            .await
            .map(|response| response.ciphertext)
            .map_err(|e| map_error(&format!("{}/encrypt/{key}", self.mount), e))
    }

    /// Decrypts a ciphertext [`encrypt`](Self::encrypt) made.
    ///
    /// # Errors
    /// [`SecretError`]: a ciphertext that is not Vault's or not this key's,
    /// denied, or Vault unavailable.
    pub async fn decrypt(
        &self,
        key: &str,
        ciphertext: &str,
    ) -> Result<Secret<Vec<u8>>, SecretError> {
        let where_ = format!("{}/decrypt/{key}", self.mount);
        let response = vaultrs::transit::data::decrypt(
            &*self.conn.client(),
            &self.mount,
            key,
            ciphertext,
            None,
        )
        .await
        .map_err(|e| map_error(&where_, e))?;
        STANDARD
            .decode(response.plaintext.as_bytes())
            .map(Secret::new)
            .map_err(|_| SecretError::Shape {
                path: where_,
                reason: "the plaintext Vault answered is not base64".into(),
            })
    }
}
