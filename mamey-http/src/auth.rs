//! Bearer-token authentication (JWT) and per-endpoint authorization.
//!
//! The web API validates the `authorization: Bearer …` header of every
//! request once, puts the caller's [`Identity`] into the request's
//! [`MessageContext`](mamey_core::MessageContext), and each endpoint checks
//! its [`Auth`] requirement: `401` without a valid token, `403` without the
//! role or policy.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use mamey_core::config::ConfigError;
use mamey_core::{Error, Identity};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::config::JwtConfig;
use crate::problem::Problem;

/// Who may call an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// Anyone (the default).
    #[default]
    Anonymous,
    /// Any caller with a valid token.
    Authenticated,
    /// A caller with a valid token and at least one of these roles.
    Roles(Vec<String>),
    /// A caller with a valid token that the named policy (registered with
    /// [`WebApi::policy`](crate::WebApi::policy)) allows.
    Policy(String),
}

impl Auth {
    /// [`Auth::Roles`] from any list of names.
    pub fn roles<I, S>(roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Roles(roles.into_iter().map(Into::into).collect())
    }

    /// [`Auth::Policy`] by name.
    pub fn policy(name: impl Into<String>) -> Self {
        Self::Policy(name.into())
    }
}

/// What the request's bearer token established; a request extension.
#[derive(Debug, Clone)]
pub(crate) enum Authentication {
    /// No `authorization` header.
    Missing,
    /// A valid token.
    Valid(Identity),
    /// A token that failed validation, and why.
    Invalid(String),
}

type PolicyFn = Arc<dyn Fn(&Identity) -> bool + Send + Sync>;

/// Named authorization rules over the caller's identity.
#[derive(Clone, Default)]
pub(crate) struct Policies(HashMap<String, PolicyFn>);

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Policies {
    pub(crate) fn insert(&mut self, name: String, policy: PolicyFn) {
        self.0.insert(name, policy);
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Checks `requirement` against what the request established.
    pub(crate) fn authorize(
        &self,
        requirement: &Auth,
        authentication: Option<&Authentication>,
    ) -> Result<(), Denied> {
        let identity = match (requirement, authentication) {
            (Auth::Anonymous, _) => return Ok(()),
            (_, Some(Authentication::Valid(identity))) => identity,
            (_, Some(Authentication::Invalid(reason))) => {
                return Err(Denied::Unauthenticated(reason.clone()));
            }
            (_, Some(Authentication::Missing) | None) => {
                return Err(Denied::Unauthenticated(
                    "a bearer token is required".to_owned(),
                ));
            }
        };
        match requirement {
            Auth::Anonymous | Auth::Authenticated => Ok(()),
            Auth::Roles(roles) if roles.iter().any(|r| identity.has_role(r)) => Ok(()),
            Auth::Roles(roles) => Err(Denied::Forbidden(format!(
                "requires one of the roles: {}",
                roles.join(", ")
            ))),
            Auth::Policy(name) if self.0.get(name).is_some_and(|policy| policy(identity)) => Ok(()),
            Auth::Policy(name) => Err(Denied::Forbidden(format!("denied by policy `{name}`"))),
        }
    }
}

/// Why a request may not proceed: `401` or `403`.
#[derive(Debug)]
pub(crate) enum Denied {
    Unauthenticated(String),
    Forbidden(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated(reason) => unauthorized(&reason),
            Self::Forbidden(reason) => {
                Problem::new(StatusCode::FORBIDDEN, "auth.forbidden", reason).into_response()
            }
        }
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "auth.unauthorized", reason).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// An [`Auth`] requirement for plain axum routes, as a route layer: `401`
/// or `403` problem before the handler runs, as for DSL endpoints.
///
/// ```
/// use axum::Router;
/// use axum::routing::get;
/// use mamey_http::{Auth, require};
///
/// let admin: Router = Router::new()
///     .route("/admin/stats", get(|| async { "…" }))
///     .route_layer(require(Auth::roles(["admin"])));
/// ```
#[must_use]
pub fn require(auth: Auth) -> RequireLayer {
    RequireLayer {
        auth: Arc::new(auth),
    }
}

/// The layer [`require`] makes.
#[derive(Debug, Clone)]
pub struct RequireLayer {
    auth: Arc<Auth>,
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Require<S> {
        Require {
            auth: Arc::clone(&self.auth),
            inner,
        }
    }
}

/// The service [`RequireLayer`] makes.
#[derive(Debug, Clone)]
pub struct Require<S> {
    auth: Arc<Auth>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Require<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The named policies come with the request (the pipeline adds them
        // when bearer tokens are validated); without them no identity
        // exists and every requirement but `Anonymous` is unmet.
        let empty = Policies::default();
        let policies = request
            .extensions()
            .get::<Arc<Policies>>()
            .map_or(&empty, |p| p.as_ref());
        match policies.authorize(&self.auth, request.extensions().get::<Authentication>()) {
            Ok(()) => futures_util::future::Either::Right(self.inner.call(request)),
            Err(denied) => {
                futures_util::future::Either::Left(std::future::ready(Ok(denied.into_response())))
            }
        }
    }
}

/// The authenticated caller, as an extractor for plain axum handlers:
/// rejects with `401` when the request has no valid bearer token.
///
/// ```
/// use mamey_http::Caller;
///
/// async fn me(Caller(identity): Caller) -> String {
///     identity.subject
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Valid(identity)) => Ok(Self(identity.clone())),
            Some(Authentication::Invalid(reason)) => Err(unauthorized(reason)),
            _ => Err(unauthorized("a bearer token is required")),
        }
    }
}

/// The token of an `authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// What a request's `authorization` header establishes, for the web API
/// and gRPC alike: the outcome, with a valid caller's identity put into
/// `context`, and the valid token (for forwarding). Without an
/// authenticator a token is refused, naming `section`'s `jwt` key.
pub(crate) async fn establish(
    authenticator: Option<&Authenticator>,
    headers: &HeaderMap,
    section: &str,
    context: &mut mamey_core::MessageContext,
) -> (Authentication, Option<Arc<str>>) {
    let authentication = match authenticator {
        Some(authenticator) => authenticator.authenticate(headers).await,
        None if headers.contains_key(header::AUTHORIZATION) => Authentication::Invalid(format!(
            "bearer tokens are not accepted: `{section}.jwt` is not configured"
        )),
        None => Authentication::Missing,
    };
    let mut token = None;
    if let Authentication::Valid(identity) = &authentication {
        context.identity = Some(identity.clone());
        token = bearer_token(headers).map(Arc::from);
    }
    (authentication, token)
}

/// Validates bearer tokens against the configured key source.
pub(crate) struct Authenticator {
    keys: Keys,
    rules: ClaimRules,
    roles_claim: String,
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
        }))
    }

    /// What the request's `authorization` header establishes.
    async fn authenticate(&self, headers: &HeaderMap) -> Authentication {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Authentication::Missing;
        }
        let Some(token) = bearer_token(headers) else {
            return Authentication::Invalid("expected `authorization: Bearer <token>`".to_owned());
        };
        match self.validate(token).await {
            Ok(identity) => Authentication::Valid(identity),
            Err(rejection) => Authentication::Invalid(rejection.to_string()),
        }
    }

    /// The header is read first, then the signature verified (jsonwebtoken
    /// does the cryptography), then the claims are read and checked.
    async fn validate(&self, token: &str) -> Result<Identity, Rejection> {
        let header = decode_header(token)?;
        let claims = match &self.keys {
            Keys::Static { key, algorithms } => {
                if !algorithms.contains(&header.alg) {
                    tracing::debug!(alg = ?header.alg, "bearer token refused: algorithm not accepted");
                    return Err(Rejection::Algorithm);
                }
                verify(token, key, header.alg)?
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
                verify(token, &key, algorithm)?
            }
        };
        self.rules.check(&claims, now())?;
        Ok(identity(claims, &self.roles_claim))
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

/// A JSON Web Key Set fetched over HTTP and cached.
struct Jwks {
    client: hyper_util::client::legacy::Client<
        crate::transport::Connector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    uri: http::Uri,
    refresh: Duration,
    cache: RwLock<Option<Cached>>,
    /// Held while fetching; the time of the last attempt, failed or not.
    fetching: Mutex<Option<Instant>>,
}

struct Cached {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Instant,
}

/// The least time between two fetches (after an unknown key id, or a failed
/// fetch), so tokens with made-up ids or a key server that is down cannot
/// make every request wait for a fetch.
const MIN_REFETCH: Duration = Duration::from_secs(1);

impl Jwks {
    fn new(uri: http::Uri, refresh: Duration, connector: crate::transport::Connector) -> Self {
        Self {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(connector),
            uri,
            refresh,
            cache: RwLock::new(None),
            fetching: Mutex::new(None),
        }
    }

    /// The key for `kid` (or the only key, when the token names none).
    async fn key(&self, kid: Option<&str>) -> Result<(DecodingKey, Algorithm), Rejection> {
        if let Some(found) = self.cached(kid, self.refresh).await {
            return Ok(found);
        }
        let mut last_attempt = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached(kid, self.refresh).await {
            return Ok(found);
        }
        let recently = last_attempt.is_some_and(|at| at.elapsed() < MIN_REFETCH);
        if !recently {
            let fetched = self.fetch().await;
            // Stamped when the attempt ends: a fetch that hung until its
            // timeout does not let the next waiter start another at once.
            *last_attempt = Some(Instant::now());
            match fetched {
                Ok(keys) => {
                    *self.cache.write().await = Some(Cached {
                        keys,
                        fetched: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::warn!(url = %self.uri, error = %e, "fetching the JWKS failed");
                    // Stale keys are better than none while the key server is down.
                    if let Some(found) = self.cached(kid, Duration::MAX).await {
                        return Ok(found);
                    }
                    return Err(Rejection::KeysUnavailable);
                }
            }
        }
        if self.cache.read().await.is_none() {
            return Err(Rejection::KeysUnavailable);
        }
        self.cached(kid, Duration::MAX)
            .await
            .ok_or(Rejection::UnknownKey)
    }

    async fn cached(
        &self,
        kid: Option<&str>,
        max_age: Duration,
    ) -> Option<(DecodingKey, Algorithm)> {
        let cache = self.cache.read().await;
        let cached = cache.as_ref().filter(|c| c.fetched.elapsed() < max_age)?;
        match kid {
            Some(kid) => cached.keys.get(kid).cloned(),
            None if cached.keys.len() == 1 => cached.keys.values().next().cloned(),
            None => None,
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let body = crate::transport::get_bytes(
            &self.client,
            &self.uri,
            1024 * 1024,
            Duration::from_secs(10),
        )
        .await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                // Symmetric and other keys have no place in a public key set.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let kid = jwk
                .common
                .key_id
                .clone()
                .unwrap_or_else(|| format!("#{index}"));
            keys.insert(kid, (key, algorithm));
        }
        Ok(keys)
    }
}

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

tokio::task_local! {
    /// The caller's validated bearer token, for the service client to
    /// forward (`http_client.forward_authorization`).
    static CALLER_TOKEN: Arc<str>;
}

/// The bearer token the current request or call was authenticated with, if
/// any.
pub(crate) fn caller_token() -> Option<Arc<str>> {
    CALLER_TOKEN.try_with(Arc::clone).ok()
}

/// Runs `future` with `token` as the caller's bearer token.
pub(crate) async fn with_caller_token<F: Future>(token: Arc<str>, future: F) -> F::Output {
    CALLER_TOKEN.scope(token, future).await
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
