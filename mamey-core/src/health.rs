//! Health checks: plug-ins register them, transports expose them.
//!
//! Each check answers for one or more [`Probe`]s (liveness, readiness,
//! startup). [`Health::check`] runs the checks of one probe concurrently,
//! each under its own timeout, so one hung dependency makes its own check
//! unhealthy instead of hanging the endpoint. The worst status wins.
//!
//! ```
//! use mamey_core::health::{Health, HealthStatus, Probe, Status};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let health = Health::new();
//! health.register("cache", &[Probe::Ready], || async { HealthStatus::degraded("slow") });
//! let report = health.check(Probe::Ready).await;
//! assert_eq!(report.status, Status::Degraded);
//! assert!(report.is_serving());
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;

/// Which question a check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// Is the process alive, or should it be restarted?
    Live,
    /// Should it receive traffic now?
    Ready,
    /// Has it finished starting?
    Startup,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Live => "live",
            Self::Ready => "ready",
            Self::Startup => "startup",
        })
    }
}

/// The status of a check or a whole probe; the order is best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Healthy,
    /// Working, with a problem worth reporting (e.g. telemetry export failing).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthStatus {
    /// The status.
    pub status: Status,
    /// Why, when not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HealthStatus {
    /// Healthy.
    #[must_use]
    pub fn healthy() -> Self {
        Self {
            status: Status::Healthy,
            detail: None,
        }
    }

    /// Degraded, with a reason.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Degraded,
            detail: Some(detail.into()),
        }
    }

    /// Unhealthy, with a reason.
    pub fn unhealthy(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Unhealthy,
            detail: Some(detail.into()),
        }
    }
}

/// A health check. Implemented for async closures returning [`HealthStatus`].
pub trait HealthCheck: Send + Sync + 'static {
    /// Runs the check once.
    fn check(&self) -> impl Future<Output = HealthStatus> + Send;
}

impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HealthStatus> + Send,
{
    fn check(&self) -> impl Future<Output = HealthStatus> + Send {
        self()
    }
}

/// The result of one check within a [`HealthReport`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// What it found.
    #[serde(flatten)]
    pub result: HealthStatus,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// The aggregated result of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The probe asked.
    pub probe: Probe,
    /// The worst status of any check; healthy when there are none.
    pub status: Status,
    /// Each check, in registration order.
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    /// Whether the probe passes (healthy or degraded).
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.status != Status::Unhealthy
    }
}

type DynCheck = Arc<dyn Fn() -> BoxFuture<'static, HealthStatus> + Send + Sync>;

struct Registered {
    name: String,
    probes: Vec<Probe>,
    timeout: Duration,
    check: DynCheck,
}

/// The health checks of one service. Cheap to clone; clones share checks.
#[derive(Clone)]
pub struct Health {
    checks: Arc<RwLock<Vec<Registered>>>,
    default_timeout: Duration,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .checks
            .read()
            .map(|c| c.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        f.debug_struct("Health")
            .field("checks", &names)
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// The timeout of a check registered without one.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// No checks; each check times out after [`Health::DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_default_timeout(Self::DEFAULT_TIMEOUT)
    }

    /// No checks; each check times out after `timeout` unless registered
    /// with its own.
    #[must_use]
    pub fn with_default_timeout(timeout: Duration) -> Self {
        Self {
            checks: Arc::new(RwLock::new(Vec::new())),
            default_timeout: timeout,
        }
    }

    /// Registers `check` under `name` for `probes`, with the default timeout.
    pub fn register(&self, name: impl Into<String>, probes: &[Probe], check: impl HealthCheck) {
        self.register_with_timeout(name, probes, self.default_timeout, check);
    }

    /// Registers `check` with its own timeout.
    pub fn register_with_timeout(
        &self,
        name: impl Into<String>,
        probes: &[Probe],
        timeout: Duration,
        check: impl HealthCheck,
    ) {
        let check = Arc::new(check);
        let check: DynCheck = Arc::new(move || {
            let check = Arc::clone(&check);
            async move { check.check().await }.boxed()
        });
        if let Ok(mut checks) = self.checks.write() {
            checks.push(Registered {
                name: name.into(),
                probes: probes.to_vec(),
                timeout,
                check,
            });
        }
    }

    /// Runs every check registered for `probe`, concurrently, and aggregates.
    ///
    /// A check that exceeds its timeout is unhealthy ("timed out after …");
    /// one that panics is unhealthy ("check panicked").
    pub async fn check(&self, probe: Probe) -> HealthReport {
        let selected: Vec<(String, Duration, DynCheck)> = self
            .checks
            .read()
            .map(|checks| {
                checks
                    .iter()
                    .filter(|c| c.probes.contains(&probe))
                    .map(|c| (c.name.clone(), c.timeout, Arc::clone(&c.check)))
                    .collect()
            })
            .unwrap_or_default();
        let runs = selected
            .into_iter()
            .map(|(name, timeout, check)| async move {
                let started = Instant::now();
                let outcome =
                    tokio::time::timeout(timeout, AssertUnwindSafe(check()).catch_unwind());
                let result = match outcome.await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => HealthStatus::unhealthy("check panicked"),
                    Err(_) => HealthStatus::unhealthy(format!(
                        "timed out after {}",
                        crate::config::duration::format(timeout)
                    )),
                };
                CheckReport {
                    name,
                    result,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                }
            });
        let checks = join_all(runs).await;
        let status = checks
            .iter()
            .map(|c| c.result.status)
            .max()
            .unwrap_or(Status::Healthy);
        HealthReport {
            probe,
            status,
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hung_check_times_out_without_hanging_the_probe() {
        let health = Health::new();
        health.register("db", &[Probe::Ready], || async { HealthStatus::healthy() });
        health.register_with_timeout(
            "stuck",
            &[Probe::Ready],
            Duration::from_millis(100),
            std::future::pending::<HealthStatus>,
        );
        let report = health.check(Probe::Ready).await;
        assert_eq!(report.status, Status::Unhealthy);
        assert_eq!(report.checks.len(), 2);
        assert_eq!(report.checks[0].result.status, Status::Healthy);
        let stuck = &report.checks[1];
        assert_eq!(stuck.name, "stuck");
        assert_eq!(
            stuck.result.detail.as_deref(),
            Some("timed out after 100ms")
        );
    }

    #[tokio::test]
    async fn worst_status_wins_and_probes_are_separate() {
        let health = Health::new();
        health.register("a", &[Probe::Live, Probe::Ready], || async {
            HealthStatus::healthy()
        });
        health.register("b", &[Probe::Ready], || async {
            HealthStatus::degraded("exporter unreachable")
        });
        health.register("c", &[Probe::Startup], || async {
            HealthStatus::unhealthy("migrations pending")
        });
        assert_eq!(health.check(Probe::Live).await.status, Status::Healthy);
        let ready = health.check(Probe::Ready).await;
        assert_eq!(ready.status, Status::Degraded);
        assert!(ready.is_serving());
        let startup = health.check(Probe::Startup).await;
        assert!(!startup.is_serving());
    }

    #[tokio::test]
    async fn panicking_check_is_unhealthy() {
        let health = Health::new();
        health.register("boom", &[Probe::Live], || async {
            panic!("bug in check");
        });
        let report = health.check(Probe::Live).await;
        assert_eq!(report.status, Status::Unhealthy);
        assert_eq!(
            report.checks[0].result.detail.as_deref(),
            Some("check panicked")
        );
    }

    #[tokio::test]
    async fn no_checks_is_healthy() {
        let report = Health::new().check(Probe::Startup).await;
        assert_eq!(report.status, Status::Healthy);
        assert!(report.checks.is_empty());
    }
}
