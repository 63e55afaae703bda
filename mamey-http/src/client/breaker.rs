//! The circuit of each endpoint: outlier ejection with exponential
//! ejection periods and one half-open probe, and the calls in flight that
//! the balancer weighs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mamey_core::discovery::Endpoint;

use super::config::BreakerConfig;

/// Outlier ejection and load of one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// The endpoint, named in the logs of its ejections (never in errors:
    /// its address is internal).
    endpoint: Endpoint,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// When a call last went to the endpoint.
    used: LastUsed,
}

#[derive(Debug)]
struct LastUsed(Mutex<Instant>);

impl Default for LastUsed {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The circuit of one endpoint: closed, ejected for a period, or half-open
/// with its one probe out. The time is passed in, so the logic does not
/// depend on a clock.
#[derive(Debug, Default)]
struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// The current ejection, while the endpoint is out of rotation.
    ejection: Option<Ejection>,
    /// Whether the half-open probe is out.
    probing: bool,
}

/// One ejection: since when, and for how long before a probe.
#[derive(Debug, Clone, Copy)]
struct Ejection {
    since: Instant,
    period: Duration,
}

impl Breaker {
    /// Closed, or ejected long enough for one probe that is not yet out.
    fn allows(&self, now: Instant) -> bool {
        match self.ejection {
            None => true,
            Some(ejection) => {
                !self.probing && now.saturating_duration_since(ejection.since) >= ejection.period
            }
        }
    }

    /// Lets a call through: `Some(false)` when closed, `Some(true)` when it
    /// is the half-open probe (now marked as out), `None` when ejected or a
    /// probe is already out.
    fn admit(&mut self, now: Instant) -> Option<bool> {
        if self.ejection.is_none() {
            Some(false)
        } else if self.allows(now) {
            self.probing = true;
            Some(true)
        } else {
            None
        }
    }

    /// A success closes the circuit and resets the period to `open_for`.
    /// Returns whether the endpoint was ejected.
    fn succeed(&mut self) -> bool {
        let was_ejected = self.ejection.is_some();
        *self = Self::default();
        was_ejected
    }

    /// A failure: at the threshold it ejects the endpoint for `open_for`; a
    /// failed probe ejects it again for twice the last period, up to
    /// `max_open_for`. Returns the period of the ejection it starts.
    fn fail(&mut self, config: &BreakerConfig, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let period = match self.ejection {
            // While a probe is out, any failure counts as the probe's: a
            // call sent before the ejection that fails this late is as bad
            // a sign.
            Some(ejection) if self.probing => ejection
                .period
                .saturating_mul(2)
                .min(config.max_open_for.max(config.open_for)),
            // A call sent before the ejection: the ejection stands as it is.
            Some(_) => return None,
            None if self.failures >= config.failure_threshold => config.open_for,
            None => return None,
        };
        self.ejection = Some(Ejection { since: now, period });
        self.probing = false;
        Some(period)
    }
}

impl EndpointState {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::default()),
            used: LastUsed::default(),
        }
    }

    /// Calls in flight to the endpoint, for the balancer.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closed, or ejected long enough for one probe that is not yet out.
    pub(crate) fn allows(&self) -> bool {
        self.lock().allows(Instant::now())
    }

    /// Lets a call through: `Some(false)` when closed, `Some(true)` when it
    /// is the half-open probe (marked as out), `None` when ejected or a
    /// probe is already out. Checked and marked under one lock.
    pub(crate) fn admit(&self) -> Option<bool> {
        self.lock().admit(Instant::now())
    }

    /// A call to `service` succeeded: the endpoint returns to rotation if
    /// it was ejected.
    pub(crate) fn record_success(&self, service: &str) {
        if self.lock().succeed() {
            tracing::info!(endpoint = %self.endpoint, service, "endpoint returned to rotation");
        }
    }

    /// A call to `service` failed: the endpoint may be ejected.
    pub(crate) fn record_failure(&self, config: &BreakerConfig, service: &str) {
        let (ejected_for, failures) = {
            let mut breaker = self.lock();
            (breaker.fail(config, Instant::now()), breaker.failures)
        };
        if let Some(ejected_for) = ejected_for {
            tracing::warn!(
                endpoint = %self.endpoint,
                service,
                failures,
                ?ejected_for,
                "endpoint ejected"
            );
        }
    }

    /// How long since a call last went to the endpoint.
    pub(crate) fn idle_for(&self) -> Duration {
        self.used.lock().elapsed()
    }

    /// A call goes to the endpoint (as its half-open probe when `probe`).
    pub(crate) fn start(&self, probe: bool) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        *self.used.lock() = Instant::now();
        InFlight {
            state: self,
            probe,
            settled: false,
        }
    }
}

/// One call in flight to an endpoint. Dropped unsettled (the caller gave up
/// on the call), a half-open probe is released so that another may go.
pub(crate) struct InFlight<'a> {
    state: &'a EndpointState,
    probe: bool,
    settled: bool,
}

impl InFlight<'_> {
    /// The call ended with a verdict for the breaker: a probe stays taken
    /// until that verdict is recorded.
    pub(crate) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.settled {
            self.state.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failure_threshold: u32, open_for: u64, max_open_for: u64) -> BreakerConfig {
        BreakerConfig {
            failure_threshold,
            open_for: Duration::from_secs(open_for),
            max_open_for: Duration::from_secs(max_open_for),
        }
    }

    #[test]
    fn the_breaker_ejects_after_the_threshold_and_lets_one_probe_through() {
        let config = breaker(2, 10, 300);
        let t0 = Instant::now();
        let mut circuit = Breaker::default();
        assert_eq!(circuit.fail(&config, t0), None);
        assert_eq!(circuit.admit(t0), Some(false), "closed below the threshold");
        assert_eq!(circuit.fail(&config, t0), Some(Duration::from_secs(10)));
        assert_eq!(circuit.admit(t0 + Duration::from_secs(9)), None, "ejected");
        let due = t0 + Duration::from_secs(10);
        assert!(circuit.allows(due), "the period elapsed: a probe may go");
        assert_eq!(circuit.admit(due), Some(true));
        assert!(!circuit.allows(due), "only one probe at a time");
        assert_eq!(circuit.admit(due), None);
        assert!(
            circuit.succeed(),
            "the probe's success returns the endpoint"
        );
        assert_eq!(circuit.admit(due), Some(false));
        assert!(!circuit.succeed(), "already in rotation");
    }

    #[test]
    fn a_failed_probe_doubles_the_ejection() {
        let config = breaker(1, 10, 60);
        let mut now = Instant::now();
        let mut periods = Vec::new();
        let mut circuit = Breaker::default();
        let mut period = circuit.fail(&config, now);
        while let Some(ejected_for) = period {
            periods.push(ejected_for.as_secs());
            if periods.len() == 6 {
                break;
            }
            assert_eq!(
                circuit.admit(now + ejected_for - Duration::from_millis(1)),
                None,
                "no probe before the period ends"
            );
            now += ejected_for;
            assert_eq!(circuit.admit(now), Some(true), "the probe goes");
            period = circuit.fail(&config, now);
        }
        assert_eq!(periods, [10, 20, 40, 60, 60, 60], "doubling, capped");

        // A late failure of a call sent before the ejection changes nothing.
        assert_eq!(circuit.fail(&config, now), None);
        assert_eq!(circuit.admit(now + Duration::from_secs(60)), Some(true));

        // A success returns the endpoint and resets the period.
        assert!(circuit.succeed());
        assert_eq!(circuit.fail(&config, now), Some(Duration::from_secs(10)));
    }

    #[test]
    fn max_open_for_below_open_for_keeps_open_for() {
        let config = breaker(1, 10, 5);
        let now = Instant::now();
        let mut circuit = Breaker::default();
        assert_eq!(circuit.fail(&config, now), Some(Duration::from_secs(10)));
        let due = now + Duration::from_secs(10);
        assert_eq!(circuit.admit(due), Some(true));
        assert_eq!(circuit.fail(&config, due), Some(Duration::from_secs(10)));
    }

    #[test]
    fn an_abandoned_probe_is_released() {
        let config = BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::ZERO,
            ..BreakerConfig::default()
        };
        let state = EndpointState::new(Endpoint::new("http://127.0.0.1:1"));
        state.record_failure(&config, "orders");
        assert_eq!(state.admit(), Some(true));
        assert_eq!(state.admit(), None, "only one probe at a time");
        drop(state.start(true));
        assert_eq!(state.admit(), Some(true), "an abandoned probe is released");
        state.record_success("orders");
        assert_eq!(state.admit(), Some(false));
    }
}
