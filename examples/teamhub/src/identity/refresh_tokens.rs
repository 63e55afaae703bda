//! Refresh tokens: `{id}.{secret}`, the id a row of `refresh_tokens`, the
//! secret 32 random bytes in base64url. The table keeps a hash of the
//! secret only, so a copy of the database signs nobody in.
//!
//! The secret is random (256 bits), not chosen by a person, so the hash
//! needs no stretching: argon2id at its lowest cost (8 KiB, one pass),
//! salted with the id, is a fast one-way function here. It runs inline.

use std::fmt;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mamey_core::Error;

/// The bytes of a secret.
const SECRET_BYTES: usize = 32;

/// A refresh token as issued or presented.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct RefreshToken {
    /// Its row.
    pub(super) id: i64,
    /// The secret, base64url without padding.
    secret: String,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RefreshToken {
    /// The token as the client holds it: `{id}.{secret}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl RefreshToken {
    /// A new token with a fresh id and secret.
    ///
    /// # Errors
    /// No randomness.
    pub(super) fn generate() -> Result<Self, Error> {
        let mut secret = [0_u8; SECRET_BYTES];
        OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| Error::internal(format!("no randomness for a refresh token: {e}")))?;
        Ok(Self {
            id: crate::ids::next(),
            secret: URL_SAFE_NO_PAD.encode(secret),
        })
    }

    /// A token as a client presents it; `None` when it is not of the form
    /// `{id}.{secret}` (it then matches no row anyway).
    pub(super) fn parse(text: &str) -> Option<Self> {
        let (id, secret) = text.trim().split_once('.')?;
        let id = id.parse::<i64>().ok().filter(|id| *id > 0)?;
        let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
        (decoded.len() == SECRET_BYTES).then(|| Self {
            id,
            secret: secret.to_owned(),
        })
    }

    /// The hash of the secret that the table keeps, base64url.
    ///
    /// # Errors
    /// Never for a token made by [`generate`](Self::generate) or
    /// [`parse`](Self::parse); argon2 refusing its parameters is a bug.
    pub(super) fn secret_hash(&self) -> Result<String, Error> {
        let failed = |e: argon2::Error| Error::internal(format!("hashing a refresh token: {e}"));
        let params =
            Params::new(Params::MIN_M_COST, Params::MIN_T_COST, 1, Some(32)).map_err(failed)?;
        let mut hash = [0_u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(self.secret.as_bytes(), &self.id.to_be_bytes(), &mut hash)
            .map_err(failed)?;
        Ok(URL_SAFE_NO_PAD.encode(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_issued() {
        let token = RefreshToken::generate().unwrap();
        let text = token.to_string();
        assert_eq!(RefreshToken::parse(&text), Some(token.clone()));
        assert!(
            !format!("{token:?}").contains(&token.secret),
            "the secret never prints"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let token = RefreshToken::generate().unwrap();
        for bad in [
            String::new(),
            "nothing".into(),
            format!("{}", token.id),
            format!("x.{}", token.secret),
            format!("-5.{}", token.secret),
            format!("{}.{}", token.id, &token.secret[1..]),
            format!("{}.{}=", token.id, token.secret),
        ] {
            assert_eq!(RefreshToken::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_hash_depends_on_secret_and_id() {
        let token = RefreshToken::generate().unwrap();
        let hash = token.secret_hash().unwrap();
        assert_eq!(hash, token.secret_hash().unwrap());
        let other_secret = RefreshToken::generate().unwrap();
        let same_id = RefreshToken {
            id: token.id,
            secret: other_secret.secret,
        };
        assert_ne!(hash, same_id.secret_hash().unwrap());
        let other_id = RefreshToken {
            id: token.id + 1,
            secret: token.secret.clone(),
        };
        assert_ne!(hash, other_id.secret_hash().unwrap());
        assert!(!hash.contains(&token.secret));
    }
}
