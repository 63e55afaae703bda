//! Benchmark P1: what mamey-http's default stack costs a JSON handler.
//!
//! The same handler (`GET /hello/{name}` → a small JSON object) is served
//! by bare axum and by a mamey service in profile `prod` — the observability
//! plug-in (JSON logs at `info` to a sink, Prometheus recorder on, span
//! export off) and `WebApi`
//! with its default pipeline: load shedding, context extraction, request id,
//! a server span, RED metrics by route, timeout, panic recovery,
//! compression. Both listen on loopback; an in-process load generator keeps
//! `CONNECTIONS` keep-alive HTTP/1.1 connections busy for `BENCH_SECONDS`
//! (default 2) per case, alternating bare / mamey for `ROUNDS` rounds.
//!
//! Prints req/s, p50 and p99 per case and round, then
//! `RATIO http_rps_vs_axum <x>`: the median over rounds of mamey's req/s
//! divided by bare axum's in the same round (this machine's CPU speed
//! drifts, so cases are compared a moment apart, not across the run).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mamey_core::Service;
use mamey_http::{HttpAddress, WebApi};
use mamey_observability::Observability;
use serde::Serialize;

const ROUNDS: usize = 5;
const CONNECTIONS: usize = 32;

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

/// One case's figures.
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Keeps `CONNECTIONS` connections busy with `GET /hello/ada` for `seconds`.
async fn load(address: SocketAddr, seconds: f64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(64 * 1024);
            while !stop.load(Ordering::Relaxed) {
                let request = http::Request::get("/hello/ada")
                    .header("host", "bench")
                    .body(Empty::new())
                    .unwrap();
                let started = Instant::now();
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(!body.is_empty());
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Run {
        rps: latencies.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
        // Bare axum.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes()).await.unwrap() });

        // The mamey service with the default stack.
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
        if std::env::var("BENCH_OBSERVABILITY").as_deref() != Ok("0") {
            service = service.plugin(Observability::new().with_writer(std::io::sink));
        }
        let service = service
            .plugin(WebApi::new().router(routes()))
            .build()
            .await
            .unwrap();
        let HttpAddress(mamey) = service.resources().get::<HttpAddress>().unwrap();
        let running = service.start().await.unwrap();

        // Warm both up: connections, allocator, metric series.
        load(bare, 0.3).await;
        load(mamey, 0.3).await;

        let mut ratios = Vec::new();
        let (mut bare_rps, mut mamey_rps) = (Vec::new(), Vec::new());
        if std::env::var("BENCH_PROFILE").is_ok() {
            // Only the mamey service, for a profiler.
            let b = load(mamey, seconds).await;
            println!("mamey {:.0} req/s", b.rps);
            running.stop().await.unwrap();
            return;
        }
        for round in 0..ROUNDS {
            let a = load(bare, seconds).await;
            let b = load(mamey, seconds).await;
            println!(
                "round {round}: axum  {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                a.rps,
                a.p50.as_secs_f64() * 1e6,
                a.p99.as_secs_f64() * 1e6
            );
            println!(
                "round {round}: mamey {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                b.rps,
                b.p50.as_secs_f64() * 1e6,
                b.p99.as_secs_f64() * 1e6
            );
            ratios.push(b.rps / a.rps);
            bare_rps.push(a.rps);
            mamey_rps.push(b.rps);
        }
        println!("axum  (median) {:.0} req/s", median(bare_rps));
        println!("mamey (median) {:.0} req/s", median(mamey_rps));
        println!("RATIO http_rps_vs_axum {:.3}", median(ratios));
        running.stop().await.unwrap();
    });
}
