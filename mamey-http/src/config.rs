//! The `http` configuration section.

use std::time::Duration;

use mamey_core::config::{ConfigSection, Secret};
use serde::{Deserialize, Serialize};

use crate::limits::LimitsConfig;

/// The `http` section: the listener, limits, CORS, operational endpoints and
/// bearer-token authentication. Every key has a default.
///
/// ```toml
/// [http]
/// address = "0.0.0.0:8080"
/// request_timeout = "30s"
/// body_limit = 2097152
/// idle_timeout = "75s"
/// drain_timeout = "10s"
/// compression = true
/// cors = { allowed_origins = ["https://app.example.com"] }
/// jwt = { issuer = "identity", audiences = ["orders"], jwks_url = "http://identity/.well-known/jwks.json" }
/// tls = { cert_file = "/etc/orders/tls.crt", key_file = "/etc/orders/tls.key" }
/// limits = { max_concurrency = 1024, rate = { requests_per_second = 50 } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen, `host:port`. Port `0` picks a free port; the bound
    /// address is the [`HttpAddress`](crate::HttpAddress) resource.
    /// Default: `"0.0.0.0:8080"`.
    pub address: String,
    /// Longest a request may take before it is answered: `408 Request
    /// Timeout` when the handler is still waiting for the request's body,
    /// else `504 Gateway Timeout`. Default: `30s`.
    #[serde(with = "mamey_core::config::duration")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes; larger ones get
    /// `413 Content Too Large`. Default: `2097152` (2 MiB).
    pub body_limit: usize,
    /// Longest request URI (path and query) accepted, in bytes; a longer
    /// one gets `414 URI Too Long` as problem+json. Default: `8192`.
    pub max_uri_length: usize,
    /// Largest total of a request's header names and values, in bytes; more
    /// gets `431 Request Header Fields Too Large` as problem+json.
    /// Default: `32768`.
    pub max_header_bytes: usize,
    /// Connections open at once; more wait in the listen backlog until one
    /// closes. Default: `10000`.
    pub max_connections: usize,
    /// Longest a new connection may take to get going: from connecting
    /// until its first request head is complete (HTTP/1.1), or until the
    /// HTTP/2 preface and the client's SETTINGS have arrived. On HTTP/1.1
    /// also the longest a later request head may take from its first byte.
    /// Then the connection is closed, so silent and slow clients cannot hold
    /// connections. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in flight,
    /// between requests (HTTP/1.1 keep-alive and HTTP/2 alike); then it is
    /// closed (HTTP/2 with a GOAWAY). Keep it above the idle timeout of any
    /// load balancer or client pool in front, so that they close first.
    /// Default: `75s`.
    #[serde(with = "mamey_core::config::duration")]
    pub idle_timeout: Duration,
    /// How often HTTP/2 connections are pinged, with requests in flight or
    /// not, to notice peers that have gone away. `0s` turns pings off.
    /// Default: `20s`.
    #[serde(with = "mamey_core::config::duration")]
    pub http2_ping_interval: Duration,
    /// How long an HTTP/2 ping, or the GOAWAY closing a connection, may go
    /// unacknowledged; then the connection is closed. Default: `20s`.
    #[serde(with = "mamey_core::config::duration")]
    pub http2_ping_timeout: Duration,
    /// When the service stops, how long connections get to finish the
    /// requests in flight; then the ones still open are cut (and a warning
    /// says how many), and the stop succeeds. Keep it well under
    /// `shutdown.timeout`. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub drain_timeout: Duration,
    /// The older name of `http.limits.max_concurrency`, used when that key
    /// is not set: requests in progress at once (the health and metrics
    /// endpoints not counted); more are answered `503 Service Unavailable`
    /// with `retry-after`. Default: `1024`.
    pub concurrency_limit: usize,
    /// Compress responses (gzip) when the client accepts it. Default: `true`.
    pub compression: bool,
    /// Request headers never written to logs, lower-case, in addition to
    /// `authorization`, `cookie`, `set-cookie`, `proxy-authorization` and
    /// `x-api-key`, which always are. Default: none more.
    pub sensitive_headers: Vec<String>,
    /// Cross-origin requests; off unless origins are listed.
    pub cors: CorsConfig,
    /// Bearer-token (JWT) authentication; off unless a key is configured.
    pub jwt: JwtConfig,
    /// The operational endpoints mamey adds to the router.
    pub endpoints: OperationalEndpoints,
    /// Serving HTTPS (feature `tls`); off unless a certificate and its key
    /// are configured.
    pub tls: ServerTlsConfig,
    /// Overload protection: concurrency per route and in all, a rate limit
    /// per caller, adaptive shedding. Default: `1024` requests at once
    /// (`concurrency_limit`), the rest off.
    pub limits: LimitsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0:8080".to_owned(),
            request_timeout: Duration::from_secs(30),
            body_limit: 2 * 1024 * 1024,
            max_uri_length: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            http2_ping_interval: Duration::from_secs(20),
            http2_ping_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(10),
            concurrency_limit: 1024,
            compression: true,
            sensitive_headers: Vec::new(),
            cors: CorsConfig::default(),
            jwt: JwtConfig::default(),
            endpoints: OperationalEndpoints::default(),
            tls: ServerTlsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl ConfigSection for HttpConfig {
    const KEY: &'static str = "http";
}

/// `http.cors`: which browser origins may call the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`"https://app.example.com"`), or `["*"]` for any.
    /// Default: none, and CORS is off.
    pub allowed_origins: Vec<String>,
    /// Allowed methods. Default (when empty): `GET`, `POST`, `PUT`,
    /// `PATCH`, `DELETE`.
    pub allowed_methods: Vec<String>,
    /// Allowed request headers. Default (when empty): `authorization`,
    /// `content-type`, `x-request-id`, `x-correlation-id`, `traceparent`.
    pub allowed_headers: Vec<String>,
    /// Whether credentials (cookies, authorization) may be sent. Not allowed
    /// with `"*"`. Default: `false`.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer, in seconds.
    /// Default: `0` (not sent).
    pub max_age_secs: u64,
}

/// `http.jwt`: validating bearer tokens.
///
/// Configure exactly one key source: `secret` (HS256/384/512),
/// `public_key_pem` (RS256 or ES256, by the key's type), or `jwks_url`.
/// The accepted algorithms follow from the key, never from the token, so a
/// token cannot pick `none` or turn an RSA public key into an HMAC secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HMAC tokens. Default: none.
    pub secret: Option<Secret<String>>,
    /// PEM public key (RSA or EC P-256). Default: none.
    pub public_key_pem: Option<String>,
    /// URL of a JSON Web Key Set; keys are cached and fetched again after
    /// `jwks_refresh`, or when a token names a key id not in the cache.
    /// Default: none.
    pub jwks_url: Option<String>,
    /// How long fetched keys are trusted before the set is fetched again.
    /// Default: `5m`.
    #[serde(with = "mamey_core::config::duration")]
    pub jwks_refresh: Duration,
    /// Required `iss`. Default: none (not checked).
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token must name one. Default: none (not
    /// checked).
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`. Default: `30s`.
    #[serde(with = "mamey_core::config::duration")]
    pub leeway: Duration,
    /// The claim holding roles (a string or an array of strings).
    /// Default: `"roles"`.
    pub roles_claim: String,
    /// A PEM file of certificates to trust for an `https://` `jwks_url`
    /// besides Mozilla's roots (feature `tls`). Default: none.
    pub ca_file: Option<String>,
    /// How many accepted tokens are remembered, so that a token presented
    /// again skips the signature check (its claims are still checked every
    /// time, and a JWKS key must still be in the set); `0`: none. Tokens
    /// over 4 KiB are never kept. Default: `10000`.
    pub cache_size: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            public_key_pem: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            issuer: None,
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            roles_claim: "roles".to_owned(),
            ca_file: None,
            cache_size: 10_000,
        }
    }
}

impl JwtConfig {
    /// Whether a key source is configured.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some() || self.public_key_pem.is_some() || self.jwks_url.is_some()
    }
}

/// `http.endpoints`: the operational routes mamey serves beside the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationalEndpoints {
    /// `/health/live`, `/health/ready` and `/health/startup`. Default: `true`.
    pub health: bool,
    /// `/metrics` in Prometheus text format, when the observability plug-in
    /// is added before this one. Default: `true`. (The observability
    /// plug-in can serve metrics on a port of its own: `metrics.listen`.)
    pub metrics: bool,
    /// `/openapi.json` and the `/docs` page. Default: `true`.
    pub openapi: bool,
    /// `/log-level` (GET to read, PUT to change the filter), for callers
    /// with `admin_role`. Default: `true`.
    pub log_level: bool,
    /// The role a caller needs for `/log-level`. Default: `"admin"`.
    pub admin_role: String,
    /// How long a health report is reused; probes arriving meanwhile (and
    /// concurrently) share one run of the checks. `0s` runs the checks for
    /// every probe. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub health_reuse: Duration,
}

impl Default for OperationalEndpoints {
    fn default() -> Self {
        Self {
            health: true,
            metrics: true,
            openapi: true,
            log_level: true,
            admin_role: "admin".to_owned(),
            health_reuse: Duration::from_secs(1),
        }
    }
}

/// `http.tls` (and `grpc.tls`): serving TLS (feature `tls`).
///
/// TLS is on when both `cert_file` and `key_file` are set; setting one of
/// them alone is a configuration error. The files are watched: a renewed
/// certificate is served to new connections within `reload_interval`,
/// without a restart.
///
/// ```toml
/// [http.tls]
/// cert_file = "/etc/orders/tls.crt"
/// key_file = "/etc/orders/tls.key"
/// client_ca_file = "/etc/orders/clients-ca.crt" # mutual TLS
/// reload_interval = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// A PEM file with the server's certificate chain, the server's own
    /// certificate first. Default: none.
    pub cert_file: Option<String>,
    /// A PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA
    /// or SEC1 EC). Default: none.
    pub key_file: Option<String>,
    /// A PEM file of CA certificates. When set, every client must present a
    /// certificate issued by one of them (mutual TLS); it is read once, at
    /// start. Default: none (no client certificates asked for).
    pub client_ca_file: Option<String>,
    /// How often `cert_file` and `key_file` are checked for changes (their
    /// modification time and length); a changed pair is loaded and served
    /// to new connections, while a pair that does not load is logged as a
    /// warning and the previous certificate stays. `0s` turns the watch
    /// off. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub reload_interval: Duration,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl ServerTlsConfig {
    /// Whether TLS is configured: a certificate file and a key file.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}
