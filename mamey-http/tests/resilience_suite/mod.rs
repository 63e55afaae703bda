//! The resilience every outbound transport of the service client must show,
//! written once and run against each (`resilience.rs`: HTTP calls and gRPC
//! channels): a failing endpoint is ejected and calls go to the healthy
//! one, an all-ejected service fails at once, retries stop when the budget
//! is spent, a non-retryable failure is not retried (nor held against the
//! endpoint), and timeouts count as failures.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use mamey_core::RunningService;
use mamey_core::discovery::{ServiceResolver, StaticResolver};
use mamey_http::{BreakerConfig, ClientConfig, LoadBalancer, RetryConfig, ServiceClient};

/// The name every case calls.
pub const SERVICE: &str = "up";

/// How long a slow upstream takes to answer; every case's timeout is far
/// shorter.
pub const SLOW: Duration = Duration::from_secs(2);

/// How an upstream answers, in words common to both transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// A success.
    Healthy,
    /// The endpoint's own failure, worth a retry: HTTP `503`, gRPC
    /// `UNAVAILABLE`.
    Failing,
    /// The caller's mistake, the same every time: HTTP `404`, gRPC
    /// `NOT_FOUND`.
    NotFound,
    /// An answer after [`SLOW`].
    Slow,
}

/// What an upstream's server reads and counts; the test sets it.
#[derive(Clone, Default)]
pub struct Shared {
    hits: Arc<AtomicUsize>,
    behaviour: Arc<AtomicU8>,
}

impl Shared {
    /// Counts a request and says how to answer it.
    pub fn arrive(&self) -> Behaviour {
        self.hits.fetch_add(1, Ordering::SeqCst);
        match self.behaviour.load(Ordering::SeqCst) {
            0 => Behaviour::Healthy,
            1 => Behaviour::Failing,
            2 => Behaviour::NotFound,
            _ => Behaviour::Slow,
        }
    }
}

/// A running upstream of the transport's kind.
pub struct Upstream {
    pub url: String,
    shared: Shared,
    service: RunningService,
}

impl Upstream {
    /// Requests that reached the server.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }
}

/// How a call ended, in words common to both transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Ok,
    /// The endpoint's failure answer ([`Behaviour::Failing`]).
    Unavailable,
    NotFound,
    /// The client's timeout ran out.
    TimedOut,
    /// Every endpoint ejected: nothing sent.
    CircuitOpen,
    Other(String),
}

/// What a transport provides to the shared cases.
pub trait Transport {
    /// What calls go through: a `ServiceClient`, a `GrpcChannel`.
    type Client;

    /// Starts a server answering as `shared` says, on a free port; its base
    /// URL.
    fn serve(&self, shared: Shared) -> impl Future<Output = (String, RunningService)>;

    /// What calls `SERVICE` at `client`'s endpoints.
    fn client(&self, client: ServiceClient) -> Self::Client;

    /// One call, retried as the transport retries a call that is safe to
    /// repeat (HTTP: an idempotent `GET`; gRPC: `GrpcChannel::retry`).
    fn call(&self, client: &Self::Client) -> impl Future<Output = Ended>;
}

/// An upstream answering as `behaviour` says.
pub async fn upstream<T: Transport>(transport: &T, behaviour: Behaviour) -> Upstream {
    let shared = Shared::default();
    let (url, service) = transport.serve(shared.clone()).await;
    let upstream = Upstream {
        url,
        shared,
        service,
    };
    upstream.set(behaviour);
    upstream
}

/// A client of `upstreams` (as `SERVICE`) with `config`.
pub fn client<T: Transport>(
    transport: &T,
    config: ClientConfig,
    upstreams: &[&Upstream],
) -> T::Client {
    let resolver = StaticResolver::new().service(SERVICE, upstreams.iter().map(|u| u.url.clone()));
    let client = ServiceClient::new(config, ServiceResolver::new(resolver)).unwrap();
    transport.client(client)
}

/// `max_attempts`, with a backoff too short to wait on and the budget
/// given.
pub fn retry(max_attempts: u32, budget_ratio: f64, budget_min_per_second: f64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        budget_ratio,
        budget_min_per_second,
    }
}

/// Ejection after `failure_threshold` failures, for longer than any case.
pub fn breaker(failure_threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold,
        open_for: Duration::from_secs(60),
        ..BreakerConfig::default()
    }
}

pub async fn a_failing_endpoint_is_ejected_and_calls_go_to_the_healthy_one<T: Transport>(
    transport: &T,
) {
    let healthy = upstream(transport, Behaviour::Healthy).await;
    let sick = upstream(transport, Behaviour::Failing).await;
    let client = client(
        transport,
        ClientConfig {
            load_balancer: LoadBalancer::RoundRobin,
            retry: retry(1, 0.0, 0.0),
            breaker: breaker(2),
            ..ClientConfig::default()
        },
        &[&healthy, &sick],
    );

    // Round robin sends every other call to the sick endpoint until its
    // second failure in a row ejects it.
    let mut failures = 0;
    for _ in 0..10 {
        if sick.hits() == 2 {
            break;
        }
        match transport.call(&client).await {
            Ended::Ok => {}
            Ended::Unavailable => failures += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((sick.hits(), failures), (2, 2));

    let before = healthy.hits();
    for _ in 0..6 {
        assert_eq!(transport.call(&client).await, Ended::Ok);
    }
    assert_eq!(sick.hits(), 2, "an ejected endpoint gets no call");
    assert_eq!(healthy.hits() - before, 6, "the healthy one gets them all");
}

pub async fn calls_fail_at_once_when_every_endpoint_is_ejected<T: Transport>(transport: &T) {
    let sick = upstream(transport, Behaviour::Failing).await;
    let client = client(
        transport,
        ClientConfig {
            retry: retry(1, 0.0, 0.0),
            breaker: breaker(1),
            ..ClientConfig::default()
        },
        &[&sick],
    );
    assert_eq!(transport.call(&client).await, Ended::Unavailable);
    assert_eq!(transport.call(&client).await, Ended::CircuitOpen);
    assert_eq!(sick.hits(), 1, "an open circuit sends nothing");
}

pub async fn retries_stop_when_the_budget_is_spent<T: Transport>(transport: &T) {
    let sick = upstream(transport, Behaviour::Failing).await;
    let client = client(
        transport,
        ClientConfig {
            retry: retry(5, 0.5, 0.0),
            breaker: breaker(1000),
            ..ClientConfig::default()
        },
        &[&sick],
    );
    for _ in 0..10 {
        assert_eq!(transport.call(&client).await, Ended::Unavailable);
    }
    // Every other call earns a retry (a ratio of 0.5), and a retry is spent
    // at once: 10 calls, 5 retries, although each call would have made 4.
    assert_eq!(sick.hits(), 15);
}

pub async fn a_non_retryable_failure_is_not_retried<T: Transport>(transport: &T) {
    let missing = upstream(transport, Behaviour::NotFound).await;
    let client = client(
        transport,
        ClientConfig {
            retry: retry(3, 0.2, 100.0),
            breaker: breaker(1),
            ..ClientConfig::default()
        },
        &[&missing],
    );
    assert_eq!(transport.call(&client).await, Ended::NotFound);
    assert_eq!(missing.hits(), 1, "not retried");
    // The endpoint answered as a working one does: not ejected.
    assert_eq!(transport.call(&client).await, Ended::NotFound);
    assert_eq!(missing.hits(), 2);
}

pub async fn timeouts_count_as_failures<T: Transport>(transport: &T) {
    let healthy = upstream(transport, Behaviour::Healthy).await;
    let slow = upstream(transport, Behaviour::Slow).await;
    let client = client(
        transport,
        ClientConfig {
            timeout: Duration::from_millis(200),
            load_balancer: LoadBalancer::RoundRobin,
            retry: retry(1, 0.0, 0.0),
            breaker: breaker(1),
            ..ClientConfig::default()
        },
        &[&healthy, &slow],
    );
    let mut ended = Vec::new();
    for _ in 0..4 {
        if slow.hits() == 1 {
            break;
        }
        ended.push(transport.call(&client).await);
    }
    assert_eq!(slow.hits(), 1);
    assert_eq!(ended.last(), Some(&Ended::TimedOut), "{ended:?}");

    // One timeout met the threshold: the slow endpoint is ejected.
    for _ in 0..4 {
        assert_eq!(transport.call(&client).await, Ended::Ok);
    }
    assert_eq!(slow.hits(), 1, "an ejected endpoint gets no call");
}
