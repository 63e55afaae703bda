//! Signing tokens: [`JwtIssuer`], for identity services and tests.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mamey_core::{Error, Identity};

/// Issues signed tokens, for identity services (sign-in) and tests.
///
/// ```
/// use std::time::Duration;
/// use mamey_core::Identity;
/// use mamey_http::JwtIssuer;
///
/// let issuer = JwtIssuer::hs256("a-secret-of-at-least-32-bytes-long")
///     .issuer("identity")
///     .audience("orders")
///     .ttl(Duration::from_secs(900));
/// let token = issuer.issue(&Identity::new("user-1").with_role("admin")).unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Clone)]
pub struct JwtIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    key_id: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Duration,
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtIssuer {
    /// Signs with HMAC-SHA256 and a shared secret; validators
    /// (`http.jwt.secret`) require at least 32 bytes.
    #[must_use]
    pub fn hs256(secret: &str) -> Self {
        Self::new(
            EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
    }

    /// Signs with RS256 and a PEM RSA private key.
    ///
    /// # Errors
    /// When `pem` is not an RSA private key.
    pub fn rs256(pem: &str) -> Result<Self, Error> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| Error::internal(format!("not an RSA private key: {e}")))?;
        Ok(Self::new(key, Algorithm::RS256))
    }

    /// Signs with ES256 and a PEM EC (P-256) private key in PKCS#8.
    ///
    /// # Errors
    /// When `pem` is not an EC private key.
    pub fn es256(pem: &str) -> Result<Self, Error> {
        let key = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| Error::internal(format!("not an EC private key: {e}")))?;
        Ok(Self::new(key, Algorithm::ES256))
    }

    fn new(key: EncodingKey, algorithm: Algorithm) -> Self {
        Self {
            key,
            algorithm,
            key_id: None,
            issuer: None,
            audience: None,
            ttl: Duration::from_secs(3600),
        }
    }

    /// The `kid` header, naming the key in a key set.
    #[must_use]
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }

    /// The `iss` claim.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The `aud` claim.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How long tokens are valid. Default: one hour.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// A token for `identity`: `sub`, `roles`, its other claims, and `iat`,
    /// `nbf`, `exp`, `jti`, `iss`, `aud`. Claims in `identity` override
    /// the standard ones, so tests can issue expired tokens.
    ///
    /// # Errors
    /// When signing fails.
    pub fn issue(&self, identity: &Identity) -> Result<String, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), identity.subject.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + self.ttl.as_secs()).into());
        claims.insert("jti".into(), mamey_core::new_id().into());
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), issuer.clone().into());
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".into(), audience.clone().into());
        }
        if !identity.roles.is_empty() {
            claims.insert("roles".into(), identity.roles.clone().into());
        }
        for (name, value) in &identity.claims {
            claims.insert(name.clone(), value.clone());
        }
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.key_id);
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Error::internal(format!("signing a token: {e}")))
    }
}
