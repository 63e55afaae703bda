//! Adaptive load shedding, after go-zero's shedder: refuse requests early
//! while the service is saturated, judged from what it has done lately.
//!
//! Time is cut into buckets (`window / buckets` long); each counts the
//! requests that finished in it and the sum of their latencies. From the
//! finished buckets of the window come the most requests finished in one
//! bucket (the throughput the service has shown it can reach) and the
//! lowest mean latency of a bucket (its latency unloaded); by Little's law
//! their product is the number of requests the service holds in progress
//! at full speed: its **capacity**. A request is shed when more than that
//! many, and more than `min_in_flight`, are in progress, and the service
//! is slow: the newest bucket with finished requests has a mean latency
//! over the target, or nothing has finished for longer than the target
//! while the service was busy (handlers stuck: no latency to measure).
//!
//! The path of a request costs a few atomic operations: the capacity is
//! worked out once per bucket, under a lock taken only then; the latency is
//! read only when the in-flight count is over the capacity.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The shedder's settings and its counts. Times are nanoseconds on the
/// owner's clock.
#[derive(Debug)]
pub(crate) struct Shedder {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    target: u64,
    min_in_flight: usize,
    in_flight: AtomicUsize,
    /// When the in-flight count last rose from zero.
    busy_since: AtomicU64,
    /// When a request last finished.
    last_done: AtomicU64,
    /// The capacity (`f64` bits); NaN until some bucket has finished.
    capacity: AtomicU64,
    /// Held while a bucket is recycled and the capacity worked out.
    rollover: Mutex<()>,
}

/// The requests that finished in one bucket of time.
#[derive(Debug)]
struct Bucket {
    /// Which bucket of time it counts (`now / bucket_nanos`).
    period: AtomicU64,
    finished: AtomicU64,
    latency_sum: AtomicU64,
}

/// No period: a bucket not used yet.
const NONE: u64 = u64::MAX;

impl Shedder {
    /// Sheds over `target` latency, with `buckets` buckets in `window`,
    /// never with `min_in_flight` requests or fewer in progress.
    pub(crate) fn new(
        target: Duration,
        window: Duration,
        buckets: u32,
        min_in_flight: usize,
    ) -> Self {
        let buckets = buckets.max(1);
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            bucket_nanos: (window / u64::from(buckets)).max(1),
            buckets: (0..buckets)
                .map(|_| Bucket {
                    period: AtomicU64::new(NONE),
                    finished: AtomicU64::new(0),
                    latency_sum: AtomicU64::new(0),
                })
                .collect(),
            target: u64::try_from(target.as_nanos()).unwrap_or(u64::MAX),
            min_in_flight,
            in_flight: AtomicUsize::new(0),
            busy_since: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            capacity: AtomicU64::new(f64::NAN.to_bits()),
            rollover: Mutex::new(()),
        }
    }

    /// Admits a request arriving at `now`, counting it in progress until
    /// [`done`](Self::done); `false` when it is to be shed.
    pub(crate) fn admit(&self, now: u64) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            self.busy_since.store(now, Ordering::Relaxed);
        }
        if self.overloaded(before + 1, now) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// An admitted request that started at `started` is no longer in
    /// progress at `now`; `finished` when it ran (its latency counts), not
    /// when it was refused by a later limit.
    pub(crate) fn done(&self, started: u64, now: u64, finished: bool) {
        if finished {
            let period = now / self.bucket_nanos;
            let bucket = self.bucket(period);
            if bucket.period.load(Ordering::Acquire) != period {
                self.roll_over(period);
            }
            bucket.finished.fetch_add(1, Ordering::Relaxed);
            bucket
                .latency_sum
                .fetch_add(now.saturating_sub(started), Ordering::Relaxed);
            self.last_done.fetch_max(now, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether `in_flight` requests are too many at `now`.
    fn overloaded(&self, in_flight: usize, now: u64) -> bool {
        if in_flight <= self.min_in_flight {
            return false;
        }
        let capacity = f64::from_bits(self.capacity.load(Ordering::Relaxed));
        // In-flight counts are far below 2^52. NaN (no estimate) compares
        // false: never shed before the service has shown what it does.
        #[allow(clippy::cast_precision_loss)]
        let over = in_flight as f64 > capacity;
        if !over {
            return false;
        }
        let slow = self
            .recent_latency(now / self.bucket_nanos)
            .is_some_and(|latency| latency > self.target);
        let quiet_since = self
            .last_done
            .load(Ordering::Relaxed)
            .max(self.busy_since.load(Ordering::Relaxed));
        slow || now.saturating_sub(quiet_since) > self.target
    }

    /// The mean latency of the newest bucket of the window (the current one
    /// included) that has finished requests.
    fn recent_latency(&self, period: u64) -> Option<u64> {
        (0..self.buckets.len() as u64)
            .filter_map(|back| period.checked_sub(back))
            .find_map(|period| {
                let bucket = self.bucket(period);
                if bucket.period.load(Ordering::Acquire) != period {
                    return None;
                }
                let finished = bucket.finished.load(Ordering::Relaxed);
                (finished > 0).then(|| bucket.latency_sum.load(Ordering::Relaxed) / finished)
            })
    }

    /// Starts bucket `period` (recycling the one it replaces) and works the
    /// capacity out again from the finished buckets of the window.
    fn roll_over(&self, period: u64) {
        let _held = self.rollover.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = self.bucket(period);
        if bucket.period.load(Ordering::Acquire) == period {
            return;
        }
        let (mut most, mut lowest) = (0, u64::MAX);
        for back in 1..self.buckets.len() as u64 {
            let Some(earlier) = period.checked_sub(back) else {
                break;
            };
            let old = self.bucket(earlier);
            if old.period.load(Ordering::Acquire) != earlier {
                continue;
            }
            let finished = old.finished.load(Ordering::Relaxed);
            if finished > 0 {
                most = most.max(finished);
                lowest = lowest.min(old.latency_sum.load(Ordering::Relaxed) / finished);
            }
        }
        // A window without finished requests keeps the last estimate.
        if most > 0 {
            // Requests per bucket × latency / bucket length = requests in
            // progress at that throughput and latency.
            #[allow(clippy::cast_precision_loss)]
            let capacity = most as f64 * lowest as f64 / self.bucket_nanos as f64;
            self.capacity.store(capacity.to_bits(), Ordering::Relaxed);
        }
        bucket.finished.store(0, Ordering::Relaxed);
        bucket.latency_sum.store(0, Ordering::Relaxed);
        bucket.period.store(period, Ordering::Release);
    }

    fn bucket(&self, period: u64) -> &Bucket {
        let index = usize::try_from(period % self.buckets.len() as u64).unwrap_or_default();
        &self.buckets[index]
    }

    /// Requests in progress.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The capacity estimate, if any yet.
    #[cfg(test)]
    fn capacity(&self) -> Option<f64> {
        Some(f64::from_bits(self.capacity.load(Ordering::Relaxed))).filter(|c| !c.is_nan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// 10 buckets of 100 ms, a 50 ms target, never below 2 in flight.
    fn shedder() -> Shedder {
        Shedder::new(Duration::from_millis(50), Duration::from_secs(1), 10, 2)
    }

    /// `count` requests of `latency` each, one after another from `from`.
    fn run(shedder: &Shedder, from: u64, count: u64, latency: u64) -> u64 {
        let mut now = from;
        for _ in 0..count {
            assert!(shedder.admit(now));
            shedder.done(now, now + latency, true);
            now += latency;
        }
        now
    }

    #[test]
    fn nothing_is_shed_before_there_is_an_estimate() {
        let shedder = shedder();
        assert!((0..100).all(|_| shedder.admit(0)));
        assert_eq!(shedder.capacity(), None);
    }

    #[test]
    fn capacity_is_peak_throughput_times_lowest_latency() {
        let shedder = shedder();
        // 99 requests of 1 ms finish in bucket 0 (by 99 ms); one in
        // bucket 1 rolls it over.
        run(&shedder, 0, 99, MS);
        run(&shedder, 150 * MS, 1, MS);
        // 99 per 100 ms × 1 ms ≈ 1 request in progress at full speed.
        let capacity = shedder.capacity().unwrap();
        assert!((capacity - 0.99).abs() < 1e-9, "{capacity}");
    }

    #[test]
    fn a_slow_service_over_capacity_sheds_and_recovers() {
        let shedder = shedder();
        let now = run(&shedder, 0, 100, MS);
        let now = run(&shedder, now.max(100 * MS), 1, MS);
        // Slow now: two requests of 80 ms finish in the current bucket.
        let now = run(&shedder, now, 2, 80 * MS);
        // Three in flight: over capacity (1) and min_in_flight (2).
        assert!(shedder.admit(now) && shedder.admit(now));
        assert!(!shedder.admit(now), "slow and over capacity: shed");
        assert!(!shedder.admit(now));
        // Fewer in flight: admitted whatever the latency.
        shedder.done(now, now + MS, true);
        assert!(shedder.admit(now + MS), "back at min_in_flight");
        // Fast again: the newest bucket's mean is under the target.
        shedder.done(now, now + MS, true);
        shedder.done(now, now + MS, true);
        let later = run(&shedder, 1000 * MS, 5, MS);
        assert!(shedder.admit(later) && shedder.admit(later) && shedder.admit(later));
    }

    #[test]
    fn stuck_handlers_are_shed_once_the_target_has_passed() {
        let shedder = shedder();
        let now = run(&shedder, 0, 100, MS);
        let now = run(&shedder, now.max(100 * MS), 1, MS);
        // Three requests that do not finish.
        assert!(shedder.admit(now) && shedder.admit(now) && shedder.admit(now));
        assert!(shedder.admit(now + 50 * MS), "within the target");
        assert!(!shedder.admit(now + 51 * MS), "nothing finished for 51 ms");
    }

    #[test]
    fn an_idle_service_taking_a_burst_is_not_shed() {
        let shedder = shedder();
        let now = run(&shedder, 0, 100, MS);
        run(&shedder, now.max(100 * MS), 1, MS);
        // Long idle, then a burst: busy only since it began.
        let burst = 10_000 * MS;
        assert!((0..50).all(|_| shedder.admit(burst)));
    }

    #[test]
    fn refused_requests_leave_no_latency() {
        let shedder = shedder();
        assert!(shedder.admit(0));
        shedder.done(0, 900 * MS, false);
        assert_eq!(shedder.recent_latency(9), None);
        assert_eq!(shedder.in_flight.load(Ordering::Relaxed), 0);
    }
}
