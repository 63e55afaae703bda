//! Overload protection (`http.limits`, `grpc.limits`): one tower layer that
//! answers at once, before the handler runs, when a request is one too
//! many.
//!
//! A request goes through, in this order:
//!
//! 1. **The exemptions**: the health and metrics endpoints (gRPC: the
//!    health service) pass untouched, so probes answer however loaded the
//!    service is.
//! 2. **The rate limit** (`rate.rs`, `caller.rs`): a token bucket per
//!    caller — the subject of a valid token, else the client's address.
//!    First, so that a flooding caller costs nothing further: `429`.
//! 3. **The shedder** (`shed.rs`): `503` while the service is saturated.
//! 4. **The concurrency limits** (`concurrency.rs`): the route's and the
//!    server's; `503` when full (after at most `queue_timeout`).
//!
//! Every refusal is counted (`http_server_rejections_total{route, reason}`
//! or `grpc_server_rejections_total{service, reason}`, reason `rate`,
//! `shed` or `concurrency`), logged at debug, and answered the way of its
//! transport (`web.rs`: problem+json; `grpc.rs`: a status), with when to
//! try again. The layer sits inside the web pipeline and the gRPC call
//! layer, after authentication, so a valid token's subject is known.

mod caller;
mod concurrency;
mod config;
#[cfg(feature = "grpc")]
mod grpc;
mod layer;
mod rate;
mod shed;
mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, Request};
use mamey_core::config::{Config, ConfigError};

use self::caller::{CallerKey, ClientAddress};
use self::concurrency::{Concurrency, Slots};
use self::rate::{RateLimiter, TokenBucket};
use self::shed::Shedder;

pub use self::config::{LimitsConfig, RateLimitConfig, RouteLimits, SheddingConfig};
#[cfg(feature = "grpc")]
pub(crate) use self::grpc::GrpcLimits;
pub(crate) use self::layer::LimitsLayer;
pub(crate) use self::web::HttpLimits;

/// Why a request was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Concurrency,
    Rate,
    Shed,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rate => "rate",
            Self::Shed => "shed",
        }
    }
}

/// A refusal, and in how many seconds to try again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rejection {
    pub(crate) reason: Reason,
    pub(crate) retry_after: u64,
}

/// What a transport makes of a request and of a refusal.
pub(crate) trait Protocol: Clone + Send + Sync + 'static {
    /// `None` for a request no limit applies to, else the template its
    /// route's limit would be configured under, if it has one.
    fn target<'r>(&self, request: &'r Request<Body>) -> Option<Option<&'r str>>;

    /// Counts, logs and answers a refusal.
    fn reject(&self, request: &Request<Body>, rejection: Rejection) -> Response;
}

/// The limits of one server, shared by its requests.
#[derive(Debug)]
pub(crate) struct Limits {
    concurrency: Concurrency,
    rate: Option<(RateLimiter, ClientAddress)>,
    shedder: Option<Shedder>,
    /// Of the `503` answers, in seconds.
    retry_after: u64,
    /// The rate limiter's and the shedder's clock starts here.
    epoch: Instant,
    /// Whether the warning about callers without an address was given.
    warned: AtomicBool,
}

impl Limits {
    /// The limits of `section.limits`; `max_concurrency` when the section
    /// sets none (the web API's `http.concurrency_limit`).
    ///
    /// # Errors
    /// A value out of range, naming its key.
    pub(crate) fn from_config(
        config: &LimitsConfig,
        section: &str,
        max_concurrency: Option<usize>,
        source: &Config,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: &str| {
            source.invalid(&format!("{section}.limits.{key}"), message.to_owned())
        };
        let global = match config.max_concurrency {
            Some(0) => return Err(invalid("max_concurrency", "expected at least 1")),
            Some(max) => Some(max),
            None => max_concurrency.map(|max| max.max(1)),
        };
        let mut routes = Vec::new();
        for (template, limits) in &config.routes {
            let key = format!("{section}.limits.routes.\"{template}\"");
            if !template.starts_with('/') {
                return Err(ConfigError::new(
                    key,
                    "expected a route template, starting with `/`, such as `/orders/{id}`",
                ));
            }
            if limits.max_concurrency == 0 {
                return Err(ConfigError::new(
                    format!("{key}.max_concurrency"),
                    "expected at least 1",
                ));
            }
            routes.push((template.clone(), limits.max_concurrency));
        }
        let rate = match config.rate.requests_per_second {
            None => None,
            Some(per_second) => Some(rate_limiter(&config.rate, per_second, &invalid)?),
        };
        let shedding = &config.shedding;
        let shedder = if shedding.enabled {
            if shedding.target_latency.is_zero() {
                return Err(invalid("shedding.target_latency", "expected more than 0s"));
            }
            if !(1..=10_000).contains(&shedding.buckets) {
                return Err(invalid("shedding.buckets", "expected 1 to 10000"));
            }
            if shedding.window < Duration::from_millis(u64::from(shedding.buckets)) {
                return Err(invalid(
                    "shedding.window",
                    "expected at least 1 ms per bucket (`shedding.buckets`)",
                ));
            }
            Some(Shedder::new(
                shedding.target_latency,
                shedding.window,
                shedding.buckets,
                shedding.min_in_flight,
            ))
        } else {
            None
        };
        Ok(Self {
            concurrency: Concurrency::new(global, routes, config.queue_timeout),
            rate,
            shedder,
            retry_after: whole_seconds(config.retry_after),
            epoch: Instant::now(),
            warned: AtomicBool::new(false),
        })
    }

    /// Whether any limit is set (else the layer can be left out).
    #[cfg(any(feature = "grpc", test))]
    pub(crate) fn is_active(&self) -> bool {
        self.concurrency.is_limited() || self.rate.is_some() || self.shedder.is_some()
    }

    /// Nanoseconds on the limits' clock.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Runs the limits for `request` of the route with limit `route`.
    fn check(self: &Arc<Self>, request: &Request<Body>, route: Option<usize>) -> Check {
        let now = if self.rate.is_some() || self.shedder.is_some() {
            self.now()
        } else {
            0
        };
        if let Some((limiter, rules)) = &self.rate {
            let caller = CallerKey::of(request, rules);
            if caller == CallerKey::Unknown && !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "rate limiting a caller with neither a valid token nor a known address: all such callers share one bucket"
                );
            }
            if let Err(wait) = limiter.check(&caller, now) {
                tracing::debug!(?caller, wait_ms = wait.as_millis(), "rate limit reached");
                return Check::Rejected(Rejection {
                    reason: Reason::Rate,
                    retry_after: whole_seconds(wait),
                });
            }
        }
        let shed = match &self.shedder {
            Some(shedder) if !shedder.admit(now) => return self.rejected(Reason::Shed),
            Some(_) => Some(now),
            None => None,
        };
        if let Some(slots) = self.concurrency.try_take(route) {
            return Check::Admitted(self.admission(slots, shed));
        }
        if self.concurrency.queue_timeout.is_zero() {
            self.refused(shed);
            return self.rejected(Reason::Concurrency);
        }
        Check::Queued(route, shed)
    }

    /// Waits (at most `queue_timeout`) for the concurrency slots of a
    /// request that found them taken.
    async fn wait(
        self: Arc<Self>,
        route: Option<usize>,
        shed: Option<u64>,
    ) -> Result<Admission, Rejection> {
        // Counted by the shedder while it waits: given back if it is
        // dropped meanwhile (its caller gone, the timeout up).
        let mut waiting = Waiting {
            limits: &self,
            shed,
        };
        let slots = self.concurrency.take(route).await;
        let shed = waiting.shed.take();
        match slots {
            Some(slots) => Ok(self.admission(slots, shed)),
            None => {
                self.refused(shed);
                Err(Rejection {
                    reason: Reason::Concurrency,
                    retry_after: self.retry_after,
                })
            }
        }
    }

    fn admission(self: &Arc<Self>, slots: Slots, shed: Option<u64>) -> Admission {
        Admission {
            limits: Arc::clone(self),
            slots,
            shed,
        }
    }

    /// A request the shedder admitted was refused by a later limit.
    fn refused(&self, shed: Option<u64>) {
        if let (Some(shedder), Some(started)) = (&self.shedder, shed) {
            shedder.done(started, started, false);
        }
    }

    fn rejected(&self, reason: Reason) -> Check {
        Check::Rejected(Rejection {
            reason,
            retry_after: self.retry_after,
        })
    }
}

/// Builds the rate limiter of `config`.
fn rate_limiter(
    config: &RateLimitConfig,
    per_second: f64,
    invalid: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(RateLimiter, ClientAddress), ConfigError> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(invalid(
            "rate.requests_per_second",
            "expected a number above 0",
        ));
    }
    // One second's worth; saturating, and `per_second` is finite.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let burst = config
        .burst
        .unwrap_or_else(|| (per_second.ceil() as u32).max(1));
    if burst == 0 {
        return Err(invalid("rate.burst", "expected at least 1"));
    }
    if config.max_tracked_callers == 0 {
        return Err(invalid("rate.max_tracked_callers", "expected at least 1"));
    }
    let header = match &config.trusted_proxy_header {
        Some(name) => Some(
            HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|_| invalid("rate.trusted_proxy_header", "expected a header name"))?,
        ),
        None => None,
    };
    let proxies = config
        .trusted_proxies
        .iter()
        .map(|range| {
            range.parse().map_err(|()| {
                invalid(
                    "rate.trusted_proxies",
                    &format!(
                        "expected addresses or CIDR ranges such as `10.0.0.0/8`, found `{range}`"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        RateLimiter::new(
            TokenBucket::new(per_second, burst),
            config.max_tracked_callers,
        ),
        ClientAddress::new(header, proxies),
    ))
}

/// Whole seconds, rounded up, at least one: a `retry-after` value.
fn whole_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    seconds.max(1)
}

/// What the limits make of a request.
enum Check {
    Admitted(Admission),
    Rejected(Rejection),
    /// The concurrency slots are taken: wait for them (route, shedder
    /// start).
    Queued(Option<usize>, Option<u64>),
}

/// A request waiting for concurrency slots, as the shedder counts it.
struct Waiting<'a> {
    limits: &'a Limits,
    shed: Option<u64>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.limits.refused(self.shed.take());
    }
}

/// An admitted request's place: its concurrency slots, and its count in
/// the shedder, given back when it is dropped (its response made, or the
/// request abandoned).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Arc<Limits>,
    slots: Slots,
    shed: Option<u64>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.concurrency.release(&self.slots);
        if let (Some(shedder), Some(started)) = (&self.limits.shedder, self.shed) {
            shedder.done(started, self.limits.now(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::HttpConfig;

    use super::*;

    /// The `http` section and its limits from `toml` and `env`.
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Limits, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), toml).unwrap();
        let source = Config::loader("svc")
            .dir(dir.path())
            .env_vars(env.iter().copied())
            .load()?;
        let http: HttpConfig = source.section()?;
        Limits::from_config(&http.limits, "http", Some(http.concurrency_limit), &source)
    }

    #[test]
    fn limits_are_read_from_files_and_the_environment() {
        let limits = load(
            r#"
            [http.limits]
            queue_timeout = "50ms"
            routes."/orders/{id}" = { max_concurrency = 2 }
            rate = { trusted_proxy_header = "X-Forwarded-For", trusted_proxies = ["10.0.0.0/8", "::1"] }
            shedding = { enabled = true, window = "1s", buckets = 10 }
            "#,
            &[("MAMEY__HTTP__LIMITS__RATE__REQUESTS_PER_SECOND", "2.5")],
        )
        .unwrap();
        assert!(limits.concurrency.route("/orders/{id}").is_some());
        assert!(limits.concurrency.route("/orders/7").is_none());
        assert_eq!(limits.concurrency.queue_timeout, Duration::from_millis(50));
        assert!(limits.rate.is_some() && limits.shedder.is_some());
        assert_eq!(limits.retry_after, 1);

        let defaults = load("", &[]).unwrap();
        assert!(defaults.is_active(), "http.concurrency_limit applies");
        assert!(defaults.rate.is_none() && defaults.shedder.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = |toml: &str| load(toml, &[]).err().unwrap().to_string();
        assert!(
            error("[http.limits]\nmax_concurrency = 0").contains("http.limits.max_concurrency"),
        );
        assert!(error("[http.limits]\nrequests_per_second = 1").contains("requests_per_second"));
        let route = error("[http.limits.routes.\"orders\"]\nmax_concurrency = 1");
        assert!(route.contains("http.limits.routes.\"orders\""), "{route}");
        let rate = error("[http.limits.rate]\nrequests_per_second = -1");
        assert!(
            rate.contains("http.limits.rate.requests_per_second"),
            "{rate}"
        );
        let proxies =
            error("[http.limits.rate]\nrequests_per_second = 1\ntrusted_proxies = [\"proxy\"]");
        assert!(
            proxies.contains("http.limits.rate.trusted_proxies"),
            "{proxies}"
        );
        let buckets = error("[http.limits.shedding]\nenabled = true\nwindow = \"5ms\"");
        assert!(buckets.contains("http.limits.shedding.window"), "{buckets}");
    }

    #[tokio::test]
    async fn a_request_dropped_while_queued_gives_its_place_back() {
        let toml =
            "[http.limits]\nmax_concurrency = 1\nqueue_timeout = \"1m\"\nshedding.enabled = true";
        let limits = Arc::new(load(toml, &[]).unwrap());
        let request = Request::new(Body::empty());
        let Check::Admitted(first) = limits.check(&request, None) else {
            panic!("the first is admitted");
        };
        let Check::Queued(route, shed) = limits.check(&request, None) else {
            panic!("the second waits");
        };
        let in_flight = || limits.shedder.as_ref().unwrap().in_flight();
        assert_eq!(in_flight(), 2);
        let waiting = Arc::clone(&limits).wait(route, shed);
        // Polled, so waiting for the slot, then dropped.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), waiting).await;
        assert!(gave_up.is_err());
        assert_eq!(in_flight(), 1, "the shedder no longer counts it");
        drop(first);
        assert_eq!(in_flight(), 0);
        assert!(matches!(limits.check(&request, None), Check::Admitted(_)));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
