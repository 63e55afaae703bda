//! The `http_client` section: timeouts, balancing, retries and the
//! breaker, shared by HTTP calls and gRPC channels.

use std::collections::HashMap;
use std::time::Duration;

use mamey_core::config::ConfigSection;
use serde::{Deserialize, Serialize};

/// The `http_client` section.
///
/// ```toml
/// [http_client]
/// timeout = "10s"
/// load_balancer = "p2c"
/// services = { orders = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"] }
/// retry = { max_attempts = 3, initial_backoff = "100ms", max_backoff = "2s", budget_ratio = 0.2, budget_min_per_second = 10.0 }
/// breaker = { failure_threshold = 5, open_for = "10s", max_open_for = "5m" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Longest one attempt may take (connect, send, read the whole
    /// response). Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub timeout: Duration,
    /// Longest a connection may take to open. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
    /// Largest response body read, in bytes. Default: `10485760` (10 MiB).
    pub max_response_bytes: usize,
    /// `"p2c"` (power of two choices by requests in flight) or
    /// `"round_robin"`. Default: `"p2c"`.
    pub load_balancer: LoadBalancer,
    /// Send the caller's bearer token on to the services called. Default:
    /// `false`.
    pub forward_authorization: bool,
    /// A PEM file of certificates to trust for `https://` endpoints besides
    /// Mozilla's roots (feature `tls`). Default: none.
    pub ca_file: Option<String>,
    /// Endpoints by service name. Without a discovery plug-in these are the
    /// only names known; with one (a
    /// [`ServiceResolver`](mamey_core::discovery::ServiceResolver) resource), a name
    /// listed here with at least one URL is pinned to those URLs and every
    /// other name is resolved by discovery. Default: none.
    pub services: HashMap<String, Vec<String>>,
    /// Retries.
    pub retry: RetryConfig,
    /// Outlier ejection: the circuit breaker of each endpoint.
    pub breaker: BreakerConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 10 * 1024 * 1024,
            load_balancer: LoadBalancer::P2c,
            forward_authorization: false,
            ca_file: None,
            services: HashMap::new(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl ConfigSection for ClientConfig {
    const KEY: &'static str = "http_client";
}

/// How a call picks among a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Two endpoints at random, the one with fewer requests in flight.
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

/// `http_client.retry`: which failures are tried again, how often, and how
/// much extra load retries may add.
///
/// Only idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`) are
/// retried unless a call says otherwise, and only after a connection error,
/// a timeout, `429`, `502`, `503` or `504`. Retries draw from a budget
/// (tower's [`TpsBudget`](tower::retry::budget::TpsBudget) over the last
/// 10 seconds): retries may add `budget_ratio` of the calls made in that
/// window, plus `budget_min_per_second` a second — so when a dependency is
/// down, retries add at most that share of load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included; `1` turns retries off.
    /// Default: `3`.
    pub max_attempts: u32,
    /// Backoff before the first retry, doubling after each, with full
    /// jitter. Default: `100ms`.
    #[serde(with = "mamey_core::config::duration")]
    pub initial_backoff: Duration,
    /// The longest backoff. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_backoff: Duration,
    /// Retries allowed per call made in the last 10 seconds, from `0` to
    /// `1000` (values outside are clamped). Up to `1`, counted in whole
    /// calls: one retry per `⌊1 / budget_ratio⌋` calls. Default: `0.2`.
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of traffic, averaged over 10
    /// seconds; a fraction is rounded up, a negative value counts as `0`.
    /// Default: `10`.
    pub budget_min_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
        }
    }
}

/// `http_client.breaker`: outlier ejection, when an endpoint is taken out of
/// rotation and for how long.
///
/// After `failure_threshold` failures in a row (connection errors,
/// timeouts, `5xx`) the endpoint is ejected (its circuit opens): calls skip
/// it, or fail at once with `client.circuit_open` when every endpoint is
/// ejected. After the ejection period, `open_for` at first, one call is let
/// through (half-open). Its failure ejects the endpoint again for twice the
/// previous period, up to `max_open_for`; its success, or any success,
/// returns the endpoint to rotation and resets the period to `open_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that eject the endpoint. Default: `5`.
    pub failure_threshold: u32,
    /// How long the first ejection lasts before a probe. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub open_for: Duration,
    /// The longest ejection: each failed probe doubles the period up to
    /// this (or up to `open_for`, if that is longer). Default: `5m`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(300),
        }
    }
}
