//! Health checks as the transports serve them: concurrent probes share one
//! run of the checks, and a report is reused for a moment, so that callers
//! hammering `/health/ready` cannot multiply the load on the dependencies
//! the checks ping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mamey_core::health::{Health, HealthReport, Probe};
use tokio::sync::Mutex;

/// A probe's last report and when it was made; locked while checks run.
type Slot = Mutex<Option<(Instant, HealthReport)>>;

/// The service's health, with a short-lived report per probe.
#[derive(Clone)]
pub(crate) struct SharedHealth {
    health: Health,
    reuse_for: Duration,
    reports: Arc<[Slot; 3]>,
}

impl SharedHealth {
    /// Reports are reused for `reuse_for` (zero: every call runs the checks,
    /// still one run at a time per probe).
    pub(crate) fn new(health: Health, reuse_for: Duration) -> Self {
        Self {
            health,
            reuse_for,
            reports: Arc::new([Mutex::new(None), Mutex::new(None), Mutex::new(None)]),
        }
    }

    /// The probe's report: the last one while fresh, else a new run that
    /// concurrent callers wait for and share.
    pub(crate) async fn check(&self, probe: Probe) -> HealthReport {
        let slot = &self.reports[match probe {
            Probe::Live => 0,
            Probe::Ready => 1,
            Probe::Startup => 2,
        }];
        let mut last = slot.lock().await;
        if let Some((at, report)) = &*last
            && at.elapsed() < self.reuse_for
        {
            return report.clone();
        }
        let report = self.health.check(probe).await;
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mamey_core::health::HealthStatus;

    use super::*;

    #[tokio::test]
    async fn concurrent_probes_share_one_run_and_reuse_it() {
        let health = Health::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        health.register("db", &[Probe::Ready], move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                HealthStatus::healthy()
            }
        });
        let shared = SharedHealth::new(health, Duration::from_secs(60));
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move { shared.check(Probe::Ready).await })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap().is_serving());
        }
        shared.check(Probe::Ready).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        let fresh = SharedHealth::new(shared.health.clone(), Duration::ZERO);
        fresh.check(Probe::Ready).await;
        fresh.check(Probe::Ready).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "not reused when reuse_for is zero"
        );
    }
}
