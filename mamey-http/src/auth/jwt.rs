//! Bearer-token validation: the configured key source (a secret, a public
//! key, or a JWKS URL), the token's header, signature and claims, and the
//! caller's identity from them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Header};
use mamey_core::Identity;
use mamey_core::config::ConfigError;
use serde_json::Value;

use super::jwks::{Jwks, KeyError};
use super::verified::{Verified, VerifiedTokens};
use super::{Authentication, Presented};
use crate::config::JwtConfig;

/// Validates bearer tokens against the configured key source.
pub(crate) struct Authenticator {
    keys: Keys,
    rules: ClaimRules,
    roles_claim: String,
    verified: VerifiedTokens,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

enum Keys {
    Static {
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
    },
    Jwks(Box<Jwks>),
}

impl Authenticator {
    /// The authenticator `config` describes, `None` when no key is set.
    /// `key` is where the section is (`http.jwt`, `grpc.jwt`), for errors.
    pub(crate) fn from_config(config: &JwtConfig, key: &str) -> Result<Option<Self>, ConfigError> {
        let sources = [
            config.secret.is_some(),
            config.public_key_pem.is_some(),
            config.jwks_url.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(ConfigError::new(
                    key,
                    "set exactly one of `secret`, `public_key_pem` and `jwks_url`",
                ));
            }
        }
        let keys = if let Some(secret) = &config.secret {
            if secret.expose().len() < 32 {
                return Err(ConfigError::new(
                    format!("{key}.secret"),
                    "expected a secret of at least 32 bytes",
                ));
            }
            Keys::Static {
                key: DecodingKey::from_secret(secret.expose().as_bytes()),
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            }
        } else if let Some(pem) = &config.public_key_pem {
            let pem = pem.as_bytes();
            if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                Keys::Static {
                    key,
                    algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                }
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                Keys::Static {
                    key,
                    algorithms: vec![Algorithm::ES256],
                }
            } else {
                return Err(ConfigError::new(
                    format!("{key}.public_key_pem"),
                    "expected a PEM-encoded RSA or EC (P-256) public key",
                ));
            }
        } else {
            let url = config.jwks_url.clone().unwrap_or_default();
            let uri: http::Uri = url.parse().map_err(|e| {
                ConfigError::new(
                    format!("{key}.jwks_url"),
                    format!("expected an http(s):// URL: {e}"),
                )
            })?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") if cfg!(feature = "tls") => {}
                Some("https") => {
                    return Err(ConfigError::new(
                        format!("{key}.jwks_url"),
                        "an https:// URL needs the `tls` feature of mamey-http",
                    ));
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("{key}.jwks_url"),
                        "expected an http:// or https:// URL",
                    ));
                }
            }
            let connector =
                crate::transport::connector(Duration::from_secs(5), config.ca_file.as_deref())
                    .map_err(|e| ConfigError::new(format!("{key}.ca_file"), e))?;
            Keys::Jwks(Box::new(Jwks::new(uri, config.jwks_refresh, connector)))
        };
        Ok(Some(Self {
            keys,
            rules: ClaimRules {
                issuer: config.issuer.clone(),
                audiences: config.audiences.clone(),
                leeway: config.leeway.as_secs(),
            },
            roles_claim: config.roles_claim.clone(),
            verified: VerifiedTokens::new(config.cache_size),
        }))
    }

    /// What the token a request presents establishes.
    pub(crate) async fn authenticate(&self, presented: &Presented<'_>) -> Authentication {
        let token = match presented {
            Presented::Nothing => return Authentication::Missing,
            Presented::Malformed(reason) => return Authentication::Invalid((*reason).to_owned()),
            Presented::Token(token) => token,
        };
        match self.validate(token).await {
            Ok(identity) => Authentication::Valid(identity),
            Err(rejection) => Authentication::Invalid(rejection.to_string()),
        }
    }

    /// The header is read first, then the signature verified (jsonwebtoken
    /// does the cryptography), then the claims are read and checked. A
    /// token verified before skips the first two (see [`VerifiedTokens`]).
    async fn validate(&self, token: &str) -> Result<Identity, Rejection> {
        self.validate_at(token, now()).await
    }

    async fn validate_at(&self, token: &str, now: u64) -> Result<Identity, Rejection> {
        if let Some(kept) = self.verified.get(token) {
            if let (Keys::Jwks(jwks), Some((kid, algorithm))) = (&self.keys, &kept.key) {
                let (_, current) = jwks.key(kid.as_deref()).await?;
                if current != *algorithm {
                    return Err(Rejection::Algorithm);
                }
            }
            self.rules.check(&kept.claims, now)?;
            return Ok(identity((*kept.claims).clone(), &self.roles_claim));
        }
        let verified = self.verify(token).await?;
        self.rules.check(&verified.claims, now)?;
        let claims = (*verified.claims).clone();
        self.verified
            .insert(token, verified, now, self.rules.leeway);
        Ok(identity(claims, &self.roles_claim))
    }

    /// Reads the header and verifies the signature of `token`.
    async fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        let header = decode_header(token)?;
        let (claims, key) = match &self.keys {
            Keys::Static { key, algorithms } => {
                if !algorithms.contains(&header.alg) {
                    tracing::debug!(alg = ?header.alg, "bearer token refused: algorithm not accepted");
                    return Err(Rejection::Algorithm);
                }
                (verify(token, key, header.alg)?, None)
            }
            Keys::Jwks(jwks) => {
                let (key, algorithm) = jwks.key(header.kid.as_deref()).await?;
                if header.alg != algorithm {
                    tracing::debug!(
                        alg = ?header.alg,
                        key_alg = ?algorithm,
                        "bearer token refused: algorithm does not match the key's"
                    );
                    return Err(Rejection::Algorithm);
                }
                (
                    verify(token, &key, algorithm)?,
                    Some((header.kid, algorithm)),
                )
            }
        };
        let expires = numeric_date(&claims, "exp")?.unwrap_or(0);
        Ok(Verified {
            claims: Arc::new(claims),
            key,
            expires,
        })
    }
}

/// Why a bearer token was refused: a small fixed vocabulary, the `401`
/// detail. What a library said about the token goes to the debug log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// Not three base64url segments of JSON objects, or a header without
    /// `alg`.
    Malformed,
    /// An `alg` that is not the key's, or no algorithm at all (`none`).
    Algorithm,
    /// A `crit` header: mamey understands no extension (RFC 7515 §4.1.11).
    Critical,
    /// JWKS: no key with the token's `kid`.
    UnknownKey,
    /// JWKS: the key set could not be fetched.
    KeysUnavailable,
    Signature,
    /// A required claim (`exp`, or a configured `iss` or `aud`) is absent.
    Missing(&'static str),
    /// `exp`, `nbf` or `iat` is not a `NumericDate` mamey supports.
    Time(&'static str),
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// Anything else jsonwebtoken refuses.
    Invalid,
}

impl From<KeyError> for Rejection {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unknown => Self::UnknownKey,
            KeyError::Unavailable => Self::KeysUnavailable,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("the token is malformed"),
            Self::Algorithm => f.write_str("the token's algorithm is not accepted"),
            Self::Critical => f.write_str("the token's `crit` header is not supported"),
            Self::UnknownKey => f.write_str("the token's key id is not known"),
            Self::KeysUnavailable => f.write_str("the signing keys are unavailable"),
            Self::Signature => f.write_str("the token's signature is not valid"),
            Self::Missing(claim) => write!(f, "the token lacks the `{claim}` claim"),
            Self::Time(claim) => write!(f, "the token's `{claim}` claim is not a valid time"),
            Self::Expired => f.write_str("the token has expired"),
            Self::NotYetValid => f.write_str("the token is not valid yet"),
            Self::Issuer => f.write_str("the token's issuer is not accepted"),
            Self::Audience => f.write_str("the token's audience is not accepted"),
            Self::Invalid => f.write_str("the token is not valid"),
        }
    }
}

/// The token's header, read before anything else: three segments, the
/// first a JSON object whose `alg` names a known algorithm, without `crit`.
fn decode_header(token: &str) -> Result<Header, Rejection> {
    let malformed = |error: &dyn fmt::Display| {
        tracing::debug!(%error, "bearer token refused: malformed header");
        Rejection::Malformed
    };
    let mut segments = token.split('.');
    let (Some(segment), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Rejection::Malformed);
    };
    let fields = json_object(segment).map_err(|e| malformed(&e))?;
    match fields.get("alg") {
        Some(Value::String(alg)) if alg.parse::<Algorithm>().is_ok() => {}
        Some(Value::String(alg)) => {
            tracing::debug!(%alg, "bearer token refused: unknown algorithm");
            return Err(Rejection::Algorithm);
        }
        _ => return Err(Rejection::Malformed),
    }
    // Whatever it lists, and even when it is empty or no list: a recipient
    // must refuse a token whose critical extensions it does not understand,
    // and mamey understands none.
    if fields.contains_key("crit") {
        return Err(Rejection::Critical);
    }
    jsonwebtoken::decode_header(token).map_err(|e| malformed(&e))
}

/// The JSON object a base64url segment encodes. A member named twice
/// makes it malformed, so no two readers can disagree on which one counts.
fn json_object(segment: &str) -> Result<BTreeMap<String, Value>, String> {
    struct Unique(BTreeMap<String, Value>);

    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(UniqueVisitor)
        }
    }

    struct UniqueVisitor;

    impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
        type Value = Unique;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut members = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, Value>()? {
                if members.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("`{name}` appears twice")));
                }
                members.insert(name, value);
            }
            Ok(Unique(members))
        }
    }

    let json = base64url_decode(segment).ok_or("not base64url")?;
    serde_json::from_slice::<Unique>(&json)
        .map(|Unique(members)| members)
        .map_err(|e| e.to_string())
}

/// Unpadded base64url (RFC 7515 §2), strictly: no padding, no other
/// symbols, no stray bits in the last symbol.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// The claims of `token` (three segments, checked by [`decode_header`]),
/// once its signature verifies with `key` under `algorithm`.
fn verify(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
) -> Result<BTreeMap<String, Value>, Rejection> {
    use jsonwebtoken::errors::ErrorKind as Jwt;
    let (message, signature) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
    let (_, payload) = message.split_once('.').ok_or(Rejection::Malformed)?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, algorithm) {
        Ok(true) => {}
        Ok(false) => return Err(Rejection::Signature),
        Err(error) => {
            let rejection = match error.kind() {
                Jwt::Base64(_) => Rejection::Malformed,
                _ => Rejection::Invalid,
            };
            tracing::debug!(%error, reason = %rejection, "bearer token refused");
            return Err(rejection);
        }
    }
    json_object(payload).map_err(|error| {
        tracing::debug!(%error, "bearer token refused: malformed claims");
        Rejection::Malformed
    })
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a token's claims must be, beyond a valid signature.
#[derive(Debug)]
struct ClaimRules {
    /// `iss` must be this one string.
    issuer: Option<String>,
    /// `aud` must name one of these (when any are set).
    audiences: Vec<String>,
    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    leeway: u64,
}

/// The latest `NumericDate` accepted, in seconds: `i64::MAX`.
const MAX_SECONDS: u64 = i64::MAX.unsigned_abs();

impl ClaimRules {
    fn check(&self, claims: &BTreeMap<String, Value>, now: u64) -> Result<(), Rejection> {
        let expires = numeric_date(claims, "exp")?;
        let not_before = numeric_date(claims, "nbf")?;
        numeric_date(claims, "iat")?;
        let expires = expires.ok_or(Rejection::Missing("exp"))?;
        if expires < now.saturating_sub(self.leeway) {
            return Err(Rejection::Expired);
        }
        if not_before.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(Rejection::NotYetValid);
        }
        // A configured issuer or audience is required, not only checked
        // when present. `iss` is one string (RFC 7519 §4.1.1), never a list.
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(Rejection::Missing("iss")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => return Err(Rejection::Issuer),
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |aud: &str| self.audiences.iter().any(|a| a == aud);
            match claims.get("aud") {
                None | Some(Value::Null) => return Err(Rejection::Missing("aud")),
                Some(Value::String(aud)) if accepted(aud) => {}
                Some(Value::Array(auds))
                    if auds.iter().all(Value::is_string)
                        && auds.iter().filter_map(Value::as_str).any(accepted) => {}
                Some(_) => return Err(Rejection::Audience),
            }
        }
        Ok(())
    }
}

/// A `NumericDate` claim (RFC 7519 §2) in whole seconds, fractions dropped;
/// `None` when absent or `null`. Anything but a number from 0 to
/// [`MAX_SECONDS`] is refused as an invalid time, not taken as absent.
fn numeric_date(
    claims: &BTreeMap<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, Rejection> {
    let number = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(Rejection::Time(name)),
    };
    // Exclusive: `i64::MAX + 1`, 2⁶³, is the first float above `MAX_SECONDS`.
    let float_limit = 2f64.powi(63);
    let seconds = if let Some(seconds) = number.as_u64() {
        Some(seconds).filter(|s| *s <= MAX_SECONDS)
    } else if number.is_i64() {
        None // negative
    } else {
        number
            .as_f64()
            .filter(|f| (0.0..float_limit).contains(f))
            // In range, the integer part fits: the cast truncates, never saturates.
            .map(|f| f.trunc() as u64)
    };
    seconds.map(Some).ok_or(Rejection::Time(name))
}

fn identity(mut claims: BTreeMap<String, Value>, roles_claim: &str) -> Identity {
    let subject = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let roles = match claims.remove(roles_claim) {
        Some(Value::String(role)) => vec![role],
        Some(Value::Array(roles)) => roles
            .into_iter()
            .filter_map(|r| match r {
                Value::String(r) => Some(r),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Identity {
        subject,
        roles,
        claims,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn base64url_is_decoded_strictly() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("-_8", &[0xfb, 0xff]),
        ] {
            assert_eq!(base64url_decode(text).as_deref(), Some(bytes), "{text}");
        }
        // Padding, the other alphabet, a lone symbol, stray bits, `!` (33).
        for text in ["Zg==", "Zm+v", "Zm/v", "Zm9vY", "Zh", "Zm9", "Zm9v!"] {
            assert_eq!(base64url_decode(text), None, "{text}");
        }
    }

    #[test]
    fn numeric_dates_are_non_negative_seconds_up_to_i64_max() {
        let date = |json: &str| {
            let claims = BTreeMap::from([("exp".to_owned(), serde_json::from_str(json).unwrap())]);
            numeric_date(&claims, "exp")
        };
        assert_eq!(date("null"), Ok(None));
        assert_eq!(date("0"), Ok(Some(0)));
        assert_eq!(date("1700000000.9"), Ok(Some(1_700_000_000)));
        assert_eq!(date("9223372036854775807"), Ok(Some(MAX_SECONDS)));
        for invalid in [
            "9223372036854775808",
            "9.3e18",
            "1e20",
            "-1",
            "-0.5",
            "\"1700000000\"",
            "true",
            "[1]",
            "{}",
        ] {
            assert_eq!(date(invalid), Err(Rejection::Time("exp")), "{invalid}");
        }
    }

    /// An authenticator with an HMAC secret, and a token it accepts that
    /// expires at `exp`.
    fn hmac(exp: u64) -> (Authenticator, String) {
        const SECRET: &str = "a secret of at least thirty-two bytes";
        let config = JwtConfig {
            secret: Some(SECRET.to_owned().into()),
            leeway: Duration::from_secs(30),
            ..JwtConfig::default()
        };
        let authenticator = Authenticator::from_config(&config, "http.jwt")
            .unwrap()
            .unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": "ada", "exp": exp, "roles": ["admin"] }),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        (authenticator, token)
    }

    #[tokio::test]
    async fn a_kept_token_is_refused_once_it_expires() {
        let (authenticator, token) = hmac(10_000);
        let first = authenticator.validate_at(&token, 9_000).await.unwrap();
        assert_eq!(authenticator.verified.len(), 1);
        let again = authenticator.validate_at(&token, 9_500).await.unwrap();
        assert_eq!((again.subject, again.roles), (first.subject, first.roles));
        // Within the leeway, then past it.
        assert!(authenticator.validate_at(&token, 10_030).await.is_ok());
        assert_eq!(
            authenticator.validate_at(&token, 10_031).await.unwrap_err(),
            Rejection::Expired
        );
    }

    #[tokio::test]
    async fn only_the_exact_token_is_taken_from_the_cache() {
        let (authenticator, token) = hmac(10_000);
        authenticator.validate_at(&token, 9_000).await.unwrap();
        // The same claims with another signature: verified, and refused.
        let (message, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{message}.{}", "A".repeat(43));
        assert_eq!(
            authenticator.validate_at(&forged, 9_000).await.unwrap_err(),
            Rejection::Signature
        );
        // A refused token is not kept; an expired one is not kept either.
        assert_eq!(authenticator.verified.len(), 1);
        let (authenticator, expired) = hmac(1_000);
        assert!(authenticator.validate_at(&expired, 9_000).await.is_err());
        assert_eq!(authenticator.verified.len(), 0);
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_library_error_goes_to_the_debug_log_only() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // `{"alg":` is cut short: serde_json's "EOF while parsing".
        let rejection = tracing::subscriber::with_default(subscriber, || {
            decode_header("eyJhbGciOg.e30.c2ln").unwrap_err()
        });
        assert_eq!(rejection.to_string(), "the token is malformed");
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("DEBUG"), "{log}");
        assert!(log.contains("EOF while parsing"), "{log}");
    }
}
