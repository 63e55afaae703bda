//! Benchmark P1: what mamey-http costs a JSON handler, against bare axum and
//! against axum with the same features assembled by hand.
//!
//! The same handler (`GET /hello/{name}` → a small JSON object) is served
//! by four stacks on loopback; an in-process load generator keeps
//! `CONNECTIONS` keep-alive HTTP/1.1 connections busy for `BENCH_SECONDS`
//! (default 2) per case, alternating the stacks of a phase for `ROUNDS`
//! rounds (this machine's CPU speed drifts, so stacks are compared a
//! moment apart and each ratio is the median over rounds).
//!
//! Phase 1, before anything installs a global subscriber or metrics
//! recorder:
//! - `axum`: bare axum;
//! - `mamey`: a mamey service without the observability plug-in — the
//!   framework's own pipeline (context, deadline, panic guard,
//!   problem+json, load shedding, request id, compression).
//!
//! Phase 2, with mamey's observability installed (JSON logs at `info` to a
//! sink, the Prometheus recorder, span export off), which both stacks use:
//! - `axum+`: axum plus what a careful user assembles by hand for the same
//!   features: tower-http `TraceLayer` with an `info` span per request,
//!   request id set and propagated, timeout, catch-panic, compression, and
//!   a Prometheus counter and histogram per route through `metrics`;
//! - `mamey+`: the mamey service in profile `prod` with the observability
//!   plug-in: its full default stack.
//!
//! Bare axum runs in phase 2 as well, as the baseline for latency.
//! `BENCH_PROFILE=<stack>` runs one stack alone, for a profiler.
//!
//! Prints req/s, p50 and p99 per stack and round, the medians, and
//! `RATIO http_rps_vs_axum <x>` (mamey / axum),
//! `RATIO http_rps_vs_axum_equivalent <x>` (mamey+ / axum+) and
//! `P99_ADDED_US <stack> <µs>` over bare axum.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Path, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use mamey_core::{RunningService, Service};
use mamey_http::{HttpAddress, WebApi};
use mamey_observability::Observability;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

mod support;

use support::{Load, Run, median, micros};

const ROUNDS: usize = 5;
const CONNECTIONS: usize = 32;

/// What every stack is sent: the same small JSON handler.
const LOAD: Load = Load {
    path: "/hello/ada",
    headers: Vec::new(),
    connections: CONNECTIONS,
};

#[derive(Serialize)]
struct Greeting {
    message: String,
    length: usize,
}

async fn hello(Path(name): Path<String>) -> axum::Json<Greeting> {
    axum::Json(Greeting {
        length: name.len(),
        message: format!("hello, {name}"),
    })
}

fn routes() -> Router {
    Router::new().route("/hello/{name}", get(hello))
}

/// What a careful user writes for per-route RED metrics.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// axum with the features of mamey's default stack, assembled by hand.
fn equivalent() -> Router {
    let request_id = http::HeaderName::from_static("x-request-id");
    routes()
        .route_layer(axum::middleware::from_fn(record_metrics))
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

async fn serve_axum(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

async fn serve_mamey(observed: bool) -> (SocketAddr, RunningService) {
    // As deployed: a non-`dev` profile logs JSON lines.
    let mut service = Service::builder("bench")
        .profile("prod")
        .handle_signals(false)
        .config_dir(std::env::temp_dir().join("mamey-http-bench-no-config"))
        .env_vars(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("MAMEY__"))
                .chain([("MAMEY__HTTP__ADDRESS".to_owned(), "127.0.0.1:0".to_owned())]),
        );
    if observed {
        service = service.plugin(Observability::new().with_writer(std::io::sink));
    }
    let service = service
        .plugin(WebApi::new().router(routes()))
        .build()
        .await
        .unwrap();
    let HttpAddress(address) = service.resources().get::<HttpAddress>().unwrap();
    (address, service.start().await.unwrap())
}

/// Runs the named stacks alternately for `ROUNDS` rounds; answers each
/// stack's runs.
async fn rounds(stacks: &[(&str, SocketAddr)], seconds: f64) -> Vec<Vec<Run>> {
    for (_, address) in stacks {
        LOAD.run(*address, 0.3).await; // warm: connections, allocator, metric series
    }
    let mut runs = vec![Vec::new(); stacks.len()];
    for round in 0..ROUNDS {
        for (i, (name, address)) in stacks.iter().enumerate() {
            let run = LOAD.run(*address, seconds).await;
            println!(
                "round {round}: {name:<6} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                run.rps,
                micros(run.p50),
                micros(run.p99)
            );
            runs[i].push(run);
        }
    }
    for (i, (name, _)) in stacks.iter().enumerate() {
        let rps = median(runs[i].iter().map(|r| r.rps).collect());
        let p50 = median(runs[i].iter().map(|r| micros(r.p50)).collect());
        let p99 = median(runs[i].iter().map(|r| micros(r.p99)).collect());
        println!("median: {name:<6} {rps:>8.0} req/s  p50 {p50:>6.0} µs  p99 {p99:>6.0} µs");
    }
    runs
}

/// The median over rounds of `a`'s req/s over `b`'s in the same round.
fn ratio(a: &[Run], b: &[Run]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect())
}

/// The median over rounds of `a`'s p99 minus `b`'s, in µs.
fn p99_added(a: &[Run], b: &[Run]) -> f64 {
    median(
        a.iter()
            .zip(b)
            .map(|(a, b)| micros(a.p99) - micros(b.p99))
            .collect(),
    )
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        if let Ok(stack) = std::env::var("BENCH_PROFILE") {
            // One stack only, for a profiler: `axum`, `axum+`, `mamey` or `mamey+`.
            let (address, running) = match stack.as_str() {
                "axum" => (serve_axum(routes()).await, None),
                "axum+" => {
                    let (_, running) = serve_mamey(true).await; // the subscriber and recorder
                    (serve_axum(equivalent()).await, Some(running))
                }
                "mamey" => {
                    let (address, running) = serve_mamey(false).await;
                    (address, Some(running))
                }
                _ => {
                    let (address, running) = serve_mamey(true).await;
                    (address, Some(running))
                }
            };
            let run = LOAD.run(address, seconds).await;
            println!(
                "{stack} {:.0} req/s, {:.0} requests",
                run.rps,
                run.rps * seconds
            );
            if let Some(running) = running {
                running.stop().await.unwrap();
            }
            return;
        }

        println!("phase 1: the framework's own pipeline, nothing observing");
        let axum = serve_axum(routes()).await;
        let (mamey, bare_service) = serve_mamey(false).await;
        let phase1 = rounds(&[("axum", axum), ("mamey", mamey)], seconds).await;
        bare_service.stop().await.unwrap();

        println!("phase 2: the same features by hand vs mamey's default stack");
        let (full, full_service) = serve_mamey(true).await;
        let by_hand = serve_axum(equivalent()).await;
        let phase2 = rounds(
            &[("axum", axum), ("axum+", by_hand), ("mamey+", full)],
            seconds,
        )
        .await;
        full_service.stop().await.unwrap();

        println!(
            "RATIO http_rps_vs_axum {:.3}",
            ratio(&phase1[1], &phase1[0])
        );
        println!(
            "RATIO http_rps_vs_axum_equivalent {:.3}",
            ratio(&phase2[2], &phase2[1])
        );
        println!(
            "P99_ADDED_US mamey {:.0} (over axum, phase 1)",
            p99_added(&phase1[1], &phase1[0])
        );
        println!(
            "P99_ADDED_US axum+ {:.0} (over axum, phase 2)",
            p99_added(&phase2[1], &phase2[0])
        );
        println!(
            "P99_ADDED_US mamey+ {:.0} (over axum, phase 2)",
            p99_added(&phase2[2], &phase2[0])
        );
    });
}
