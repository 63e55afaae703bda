//! The `http.limits` (and `grpc.limits`) configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `http.limits` and `grpc.limits`: overload protection. Each limit answers
/// at once, never queueing without bound: `503` (gRPC `UNAVAILABLE`) when
/// too many requests are in progress or the service is saturated, `429`
/// (gRPC `RESOURCE_EXHAUSTED`) when one caller sends too many. The health
/// and metrics endpoints (gRPC: the health service) are never limited.
///
/// ```toml
/// [http.limits]
/// max_concurrency = 512
/// queue_timeout = "0s"
/// retry_after = "1s"
/// routes."/reports/{id}" = { max_concurrency = 4 }
/// rate = { requests_per_second = 20, burst = 40, trusted_proxy_header = "x-forwarded-for" }
/// shedding = { enabled = true, target_latency = "250ms" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests in progress at once across all routes (the operational
    /// endpoints not counted); more are answered `503`. Default: none,
    /// which for the web API means `http.concurrency_limit` (`1024`), the
    /// older name of this key, and for gRPC no limit.
    pub max_concurrency: Option<usize>,
    /// How long a request over a concurrency limit may wait for a slot
    /// before it is answered `503`. Default: `0s` (answered at once).
    #[serde(with = "mamey_core::config::duration")]
    pub queue_timeout: Duration,
    /// The `retry-after` of the `503` answers, in whole seconds (rounded
    /// up, at least one). Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub retry_after: Duration,
    /// Limits of single routes, by route template exactly as registered
    /// (`"/orders/{id}"`; for gRPC the method's path,
    /// `"/orders.v1.Orders/Get"`). Default: none.
    pub routes: BTreeMap<String, RouteLimits>,
    /// A token-bucket rate limit per caller. Default: off.
    pub rate: RateLimitConfig,
    /// Adaptive load shedding. Default: off.
    pub shedding: SheddingConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrency: None,
            queue_timeout: Duration::ZERO,
            retry_after: Duration::from_secs(1),
            routes: BTreeMap::new(),
            rate: RateLimitConfig::default(),
            shedding: SheddingConfig::default(),
        }
    }
}

/// `http.limits.routes."<template>"`: the limits of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    /// Requests of this route in progress at once; more are answered
    /// `503`. Required, at least `1`. They count towards `max_concurrency`
    /// too.
    pub max_concurrency: usize,
}

/// `http.limits.rate`: a token bucket per caller.
///
/// The caller is the subject of a valid bearer token, else the client's
/// address: the connection's peer, or, when `trusted_proxy_header` is set,
/// the right-most address in that header that is not one of
/// `trusted_proxies`. IPv6 addresses count by their `/64` network, since
/// one client usually holds a whole one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Tokens added to each caller's bucket per second; a request takes
    /// one, and without one it is answered `429` with `retry-after` (the
    /// seconds until a token is there). Default: none, and rate limiting
    /// is off.
    pub requests_per_second: Option<f64>,
    /// A bucket's size: how many requests a caller may send at once after
    /// a pause. Default: one second's worth (`requests_per_second` rounded
    /// up).
    pub burst: Option<u32>,
    /// Callers whose buckets are kept at once; past it, full buckets are
    /// forgotten first (losslessly: a full bucket is a new one), then the
    /// fullest. Bounds the memory a caller can make the service spend by
    /// changing its address or subject (about 40 bytes a caller).
    /// Default: `100000`.
    pub max_tracked_callers: usize,
    /// A header your reverse proxy sets to the client's address, such as
    /// `x-forwarded-for` (a comma-separated list, the proxy's own entry
    /// last). Set it only behind such a proxy: a caller can write anything
    /// into it. Default: none (the connection's peer is the caller).
    pub trusted_proxy_header: Option<String>,
    /// The proxies in front of the service, as addresses or CIDR ranges
    /// (`"10.0.0.0/8"`). When set, the header is read only on connections
    /// from one of them, and its entries from them are skipped (read from
    /// the right). When empty, the header's right-most entry is the client.
    /// Default: `[]`.
    pub trusted_proxies: Vec<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            burst: None,
            max_tracked_callers: 100_000,
            trusted_proxy_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `http.limits.shedding`: answering `503` early while the service is
/// saturated, as go-zero's adaptive shedder does.
///
/// The service's capacity is estimated from the last `window`: the most
/// requests finished in one bucket (per second) times the lowest mean
/// latency of a bucket. A request is shed when more than that many (and
/// more than `min_in_flight`) are in progress **and** either the mean
/// latency of the latest finished requests exceeds `target_latency`, or no
/// request has finished for longer than `target_latency` while the service
/// was busy.
///
/// Off by default: the latency target is the service owner's to choose, and
/// a default one would shed healthy routes that are slow by design. The
/// concurrency limit stays on as the backstop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SheddingConfig {
    /// Whether requests are shed. Default: `false`.
    pub enabled: bool,
    /// The latency above which a service over its capacity sheds; set it
    /// above the usual latency of the slowest healthy route.
    /// Default: `500ms`.
    #[serde(with = "mamey_core::config::duration")]
    pub target_latency: Duration,
    /// How far back throughput and latency are looked at. Default: `5s`.
    #[serde(with = "mamey_core::config::duration")]
    pub window: Duration,
    /// How many buckets the window is cut into (each at least 1 ms long).
    /// Default: `50`.
    pub buckets: u32,
    /// Requests in progress below which nothing is shed, whatever the
    /// estimate says. Default: `8`.
    pub min_in_flight: usize,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            target_latency: Duration::from_millis(500),
            window: Duration::from_secs(5),
            buckets: 50,
            min_in_flight: 8,
        }
    }
}
