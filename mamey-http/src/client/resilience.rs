//! The resilience runner: what every outbound call goes through, whatever
//! carries it. HTTP calls and gRPC channels supply only an [`Attempt`] — how
//! to send one request to a chosen endpoint, and what its result means —
//! and the runner does the rest:
//!
//! 1. resolve the service's name (on every attempt, so a retry may go to a
//!    new endpoint);
//! 2. pick an endpoint with the balancer among those whose circuit lets a
//!    call through, taking the half-open probe under the breaker's lock;
//! 3. count the call in flight (dropped unsettled, the probe is released);
//! 4. bound the attempt by its timeout;
//! 5. classify the result, and record it in the endpoint's breaker;
//! 6. retry a retryable failure, when the call allows it, with jittered
//!    exponential backoff and a token from the client's retry budget,
//!    preferring an endpoint that has not failed the call yet.
//!
//! Which failures a call may repeat ([`Repeat`]) depends on whether its
//! request may have reached the endpoint: one that never left (no
//! connection could be opened, [`Outcome::Unsent`]) is safe to send again
//! whatever the method; one that may have arrived only when the call is
//! idempotent, or says it may be repeated.

use std::future::Future;
use std::time::Duration;

use mamey_core::Error;
use mamey_core::discovery::{Endpoint, ServiceResolver};
use tower::retry::budget::{Budget, TpsBudget};

use super::balance::Balancer;
use super::config::{ClientConfig, RetryConfig};

/// One kind of outbound request, as the runner drives it.
pub(crate) trait Attempt {
    /// What an attempt gives back when the endpoint answered.
    type Output;
    /// What an attempt gives back when it failed, or the runner refused it.
    type Error;

    /// Sends the request to `endpoint` once. The runner bounds it with the
    /// attempt's timeout and drops it when that runs out.
    fn send(
        &mut self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;

    /// What an attempt's result means for the call and for the endpoint:
    /// every result, a timed-out attempt's ([`Refusal::TimedOut`]) included.
    fn classify(&self, result: &Result<Self::Output, Self::Error>) -> Verdict;

    /// The error for an attempt the runner ended itself.
    fn refused(&self, refusal: Refusal) -> Self::Error;
}

/// Why the runner made no attempt, or ended one.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The resolver failed, or knows no endpoint: final.
    Unresolved(Error),
    /// Every endpoint's circuit is open: final, and nothing is sent.
    CircuitOpen,
    /// The attempt took longer than this; classified like any result.
    TimedOut(Duration),
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// For the call: done, or worth another attempt.
    pub(crate) outcome: Outcome,
    /// For the endpoint's breaker.
    pub(crate) endpoint: Health,
}

/// An attempt's result, for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The call got what it asked for.
    Success,
    /// A failure another attempt may not meet (the endpoint was down, or
    /// overloaded), after the request may have reached the endpoint.
    Retryable,
    /// A failure before any of the request left (no connection could be
    /// opened): another attempt is safe whatever the request.
    Unsent,
    /// A failure that would come again.
    Final,
}

/// An attempt's result, for the endpoint that had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The endpoint answered as a healthy one does, whatever the answer:
    /// a success for its breaker.
    Up,
    /// A failure of the endpoint (no answer, a timeout, an answer saying it
    /// is failing): counts towards its ejection.
    Down,
    /// Nothing was learnt about the endpoint (the request could not even be
    /// made): counts neither way, and a probe is released.
    Unjudged,
}

impl Verdict {
    pub(crate) fn new(outcome: Outcome, endpoint: Health) -> Self {
        Self { outcome, endpoint }
    }
}

/// Which failed attempts of a call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// None: one attempt.
    Never,
    /// Only those whose request never left ([`Outcome::Unsent`]): the
    /// default for a method that is not idempotent.
    Unsent,
    /// Every retryable failure ([`Outcome::Retryable`] and
    /// [`Outcome::Unsent`]): an idempotent method, or a call that says it
    /// may be repeated.
    Failures,
}

impl Repeat {
    /// Whether an attempt that came to `outcome` may be repeated.
    fn allows(self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Unsent => self != Self::Never,
            Outcome::Retryable => self == Self::Failures,
            Outcome::Success | Outcome::Final => false,
        }
    }
}

/// How long a call's deposit and a retry's withdrawal count in the budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The shared state and policy of one client's outbound calls: its
/// resolver, the endpoints' breakers and loads, and the retry budget.
#[derive(Debug)]
pub(crate) struct Resilience {
    config: ClientConfig,
    resolver: ServiceResolver,
    balancer: Balancer,
    budget: TpsBudget,
}

impl Resilience {
    /// The runner for `config`, resolving names with `resolver`.
    ///
    /// # Errors
    /// When `config.retry.max_attempts` is 0.
    pub(crate) fn new(config: ClientConfig, resolver: ServiceResolver) -> Result<Self, Error> {
        if config.retry.max_attempts == 0 {
            return Err(Error::invalid_input(
                "config.invalid",
                "http_client.retry.max_attempts: expected at least 1",
            ));
        }
        Ok(Self {
            balancer: Balancer::new(config.load_balancer),
            budget: budget(&config.retry),
            config,
            resolver,
        })
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A whole call to `service`: attempts, each bounded by `timeout`, and
    /// — when `repeat` allows it of a failure and the budget allows one —
    /// retries, each preferring an endpoint that has not failed the call.
    /// Returns the last attempt's result.
    pub(crate) async fn run<A: Attempt>(
        &self,
        service: &str,
        repeat: Repeat,
        timeout: Duration,
        attempt: &mut A,
    ) -> Result<A::Output, A::Error> {
        let mut retries = Retries::start(self, service, repeat);
        let mut failed = Vec::new();
        loop {
            let (result, outcome) = self.once(service, timeout, attempt, &mut failed).await;
            if !retries.again(outcome).await {
                return result;
            }
        }
    }

    /// One attempt to `service`, bounded by `timeout`, never retried (for
    /// requests that cannot be sent twice: gRPC channels'); with its
    /// outcome.
    /// Inside [`retry`](Self::retry), the endpoints that failed earlier
    /// attempts of the call are avoided, and one that fails this attempt is
    /// added to them.
    #[cfg(feature = "grpc")]
    pub(crate) async fn attempt<A: Attempt>(
        &self,
        service: &str,
        timeout: Duration,
        attempt: &mut A,
    ) -> (Result<A::Output, A::Error>, Outcome) {
        let mut failed = FAILED
            .try_with(std::cell::RefCell::take)
            .unwrap_or_default();
        let result = self.once(service, timeout, attempt, &mut failed).await;
        let _ = FAILED.try_with(|cell| cell.replace(failed));
        result
    }

    /// One attempt, to an endpoint outside `failed` when another lets a
    /// call through; an endpoint that fails it is added to `failed`.
    async fn once<A: Attempt>(
        &self,
        service: &str,
        timeout: Duration,
        attempt: &mut A,
        failed: &mut Vec<Endpoint>,
    ) -> (Result<A::Output, A::Error>, Outcome) {
        let endpoints = match self.resolver.resolve(service).await {
            Ok(endpoints) => endpoints,
            Err(error) => {
                return (
                    Err(attempt.refused(Refusal::Unresolved(error))),
                    Outcome::Final,
                );
            }
        };
        let Some(picked) = self.balancer.pick(&endpoints, failed) else {
            return (Err(attempt.refused(Refusal::CircuitOpen)), Outcome::Final);
        };
        // From here the call is in flight: an early return, or the caller
        // dropping the call, releases a half-open probe.
        let in_flight = picked.state.start(picked.probe);
        let result = match tokio::time::timeout(timeout, attempt.send(&picked.endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(attempt.refused(Refusal::TimedOut(timeout))),
        };
        let verdict = attempt.classify(&result);
        match verdict.endpoint {
            Health::Up => {
                in_flight.settled();
                picked.state.record_success(service);
            }
            Health::Down => {
                in_flight.settled();
                picked.state.record_failure(&self.config.breaker, service);
                failed.push(picked.endpoint);
            }
            Health::Unjudged => drop(in_flight),
        }
        (result, verdict.outcome)
    }

    /// Runs `call` again while `retryable` says so of its error and the
    /// retry config and budget allow, with backoff between attempts: for
    /// gRPC calls, whose requests the runner cannot send twice itself, so
    /// that the caller repeats them whole.
    #[cfg(feature = "grpc")]
    pub(crate) async fn retry<T, E, F, Fut>(
        &self,
        service: &str,
        mut call: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retries = Retries::start(self, service, Repeat::Failures);
        // The endpoints that failed this call, seen by each attempt the
        // calls make (they run in this task), so a retry goes elsewhere.
        FAILED
            .scope(std::cell::RefCell::default(), async move {
                loop {
                    let result = call().await;
                    let outcome = if matches!(&result, Err(error) if retryable(error)) {
                        Outcome::Retryable
                    } else {
                        Outcome::Final
                    };
                    if !retries.again(outcome).await {
                        return result;
                    }
                }
            })
            .await
    }
}

#[cfg(feature = "grpc")]
tokio::task_local! {
    /// The endpoints that failed the gRPC call [`Resilience::retry`] is
    /// repeating.
    static FAILED: std::cell::RefCell<Vec<Endpoint>>;
}

/// The retries of one call: a deposit in the budget when it starts, a
/// withdrawal and a backoff before each retry.
struct Retries<'a> {
    resilience: &'a Resilience,
    service: &'a str,
    repeat: Repeat,
    attempts: u32,
}

impl<'a> Retries<'a> {
    fn start(resilience: &'a Resilience, service: &'a str, repeat: Repeat) -> Self {
        // Every call, retryable or not, earns retries for the others.
        resilience.budget.deposit();
        Self {
            resilience,
            service,
            repeat,
            attempts: 1,
        }
    }

    /// Whether to try again after an attempt that came to `outcome`: then
    /// after the backoff.
    async fn again(&mut self, outcome: Outcome) -> bool {
        let config = &self.resilience.config.retry;
        if !self.repeat.allows(outcome)
            || self.attempts >= config.max_attempts
            || !self.resilience.budget.withdraw()
        {
            return false;
        }
        let backoff = backoff(config, self.attempts);
        tracing::debug!(service = %self.service, attempt = self.attempts, ?outcome, ?backoff, "retrying");
        tokio::time::sleep(backoff).await;
        self.attempts += 1;
        true
    }
}

/// The retry budget `config` describes, over [`BUDGET_WINDOW`]: tower's
/// `TpsBudget` asserts its ranges, so values outside them are clamped (a
/// negative or NaN one counts as 0).
fn budget(config: &RetryConfig) -> TpsBudget {
    let ratio = within(config.budget_ratio, 1000.0);
    // Whole retries a second: a fraction rounds up, so that a small minimum
    // is not none.
    let per_second = within(config.budget_min_per_second, 1e9).ceil();
    TpsBudget::new(BUDGET_WINDOW, per_second as u32, ratio as f32)
}

/// `value` within `0..=max`, NaN as 0.
fn within(value: f64, max: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, max)
    }
}

/// Full jitter over an exponential backoff.
fn backoff(config: &RetryConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = config
        .initial_backoff
        .saturating_mul(1 << exponent)
        .min(config.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(budget_ratio: f64, budget_min_per_second: f64) -> RetryConfig {
        RetryConfig {
            budget_ratio,
            budget_min_per_second,
            ..RetryConfig::default()
        }
    }

    fn retries_in(budget: &TpsBudget, calls: usize) -> usize {
        (0..calls)
            .filter(|_| {
                budget.deposit();
                budget.withdraw()
            })
            .count()
    }

    #[test]
    fn the_budget_allows_one_retry_per_five_calls_by_ratio() {
        assert_eq!(retries_in(&budget(&retry(0.2, 0.0)), 50), 10);
    }

    #[test]
    fn the_budget_counts_whole_calls_up_to_a_ratio_of_one() {
        // One retry per ⌊1 / ratio⌋ calls.
        assert_eq!(retries_in(&budget(&retry(0.3, 0.0)), 30), 10);
        assert_eq!(retries_in(&budget(&retry(0.7, 0.0)), 30), 30);
        // Above one, several per call.
        let generous = budget(&retry(2.0, 0.0));
        generous.deposit();
        assert!(generous.withdraw() && generous.withdraw() && !generous.withdraw());
    }

    #[test]
    fn the_minimum_is_a_reserve_over_the_window() {
        let reserve = budget(&retry(0.0, 1.0));
        let granted = (0..20).filter(|_| reserve.withdraw()).count();
        assert_eq!(granted, 10, "one a second over the 10 s window");
        // A fraction rounds up; a negative or NaN value counts as 0.
        let rounded = budget(&retry(0.0, 0.2));
        assert_eq!((0..20).filter(|_| rounded.withdraw()).count(), 10);
        assert!(!budget(&retry(-1.0, -1.0)).withdraw());
        assert!(!budget(&retry(f64::NAN, f64::NAN)).withdraw());
    }

    #[test]
    fn a_request_that_never_left_is_repeated_unless_the_call_says_never() {
        use Outcome::{Final, Retryable, Success, Unsent};
        for (repeat, allowed) in [
            (Repeat::Never, [false, false, false, false]),
            (Repeat::Unsent, [false, false, false, true]),
            (Repeat::Failures, [false, false, true, true]),
        ] {
            let seen = [Success, Final, Retryable, Unsent].map(|o| repeat.allows(o));
            assert_eq!(seen, allowed, "{repeat:?}");
        }
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let config = RetryConfig::default();
        for attempt in 1..10 {
            let ceiling = config
                .initial_backoff
                .saturating_mul(1 << (attempt - 1))
                .min(config.max_backoff);
            assert!(backoff(&config, attempt) <= ceiling);
        }
    }
}
