//! Benchmark: what checking an ES256 bearer token costs a request, with
//! the verified-token cache (`http.jwt.cache_size`, default 10 000) and
//! without it (`cache_size = 0`: the signature verified on every request,
//! as a handler calling `jsonwebtoken::decode` does).
//!
//! One mamey service per case serves `GET /hello` (a small JSON body);
//! `CONNECTIONS` keep-alive HTTP/1.1 connections send it with the same
//! token — a client reusing its access token, as clients do — for
//! `BENCH_SECONDS` (default 2) per case, the cases alternating for
//! `ROUNDS` rounds. Besides req/s and latency it counts the process's CPU
//! time per request (user + system, from `/proc/self/stat`; the load
//! generator's share is the same in both cases), which depends less on
//! what else runs on the machine.
//!
//! Prints each round, the medians, `RATIO jwt_rps_cached_vs_verify_each
//! <x>` and `RATIO jwt_cpu_per_request_verify_each_vs_cached <x>`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mamey_core::{Identity, RunningService, Service};
use mamey_http::{Auth, HttpAddress, JwtIssuer, WebApi, require};

use support::{Load, Run, median, micros};

const ROUNDS: usize = 5;
const CONNECTIONS: usize = 16;
const EC: &str = include_str!("../tests/keys/ec.pem");
const EC_PUBLIC: &str = include_str!("../tests/keys/ec.pub.pem");

/// A service checking ES256 tokens, keeping `cache_size` of them.
async fn serve(cache_size: usize) -> (SocketAddr, RunningService) {
    let service = Service::builder("bench")
        .profile("prod")
        .handle_signals(false)
        .config_dir(std::env::temp_dir().join("mamey-http-bench-no-config"))
        .env_vars([
            ("MAMEY__HTTP__ADDRESS".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "MAMEY__HTTP__JWT__PUBLIC_KEY_PEM".to_owned(),
                EC_PUBLIC.to_owned(),
            ),
            (
                "MAMEY__HTTP__JWT__CACHE_SIZE".to_owned(),
                cache_size.to_string(),
            ),
        ])
        .plugin(
            WebApi::new().router(
                Router::new()
                    .route("/hello", get(|| async { axum::Json("hello") }))
                    .route_layer(require(Auth::Authenticated)),
            ),
        )
        .build()
        .await
        .unwrap();
    let HttpAddress(address) = service.resources().get::<HttpAddress>().unwrap();
    (address, service.start().await.unwrap())
}

/// Sends one request with `authorization`; answers its status.
async fn status(address: SocketAddr, authorization: &str) -> http::StatusCode {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/hello")
        .header("host", "bench")
        .header("authorization", authorization)
        .body(Empty::new())
        .unwrap();
    sender.send_request(request).await.unwrap().status()
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
        let token = JwtIssuer::es256(EC)
            .unwrap()
            .issue(&Identity::new("ada"))
            .unwrap();
        let load = Load {
            path: "/hello",
            headers: vec![("authorization", format!("Bearer {token}"))],
            connections: CONNECTIONS,
        };
        let cases = [
            ("verify each", serve(0).await),
            ("cached", serve(10_000).await),
        ];
        // Both check the token: a forged one is refused.
        let (message, _) = token.rsplit_once('.').unwrap();
        let forged = format!("Bearer {message}.{}", "A".repeat(86));
        for (name, (address, _)) in &cases {
            assert_eq!(
                status(*address, &forged).await,
                http::StatusCode::UNAUTHORIZED,
                "{name}"
            );
            load.run(*address, 0.3).await; // warm
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
        for round in 0..ROUNDS {
            for (i, (name, (address, _))) in cases.iter().enumerate() {
                let run = load.run(*address, seconds).await;
                println!(
                    "round {round}: {name:<11} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  cpu {:>5.0} µs/request",
                    run.rps,
                    micros(run.p50),
                    micros(run.p99),
                    micros(run.cpu_per_request)
                );
                runs[i].push(run);
            }
        }
        let medians: Vec<(f64, f64, f64)> = runs
            .iter()
            .map(|runs| {
                (
                    median(runs.iter().map(|r| r.rps).collect()),
                    median(runs.iter().map(|r| micros(r.p99)).collect()),
                    median(runs.iter().map(|r| micros(r.cpu_per_request)).collect()),
                )
            })
            .collect();
        for ((name, _), (rps, p99, cpu)) in cases.iter().zip(&medians) {
            println!("median: {name:<11} {rps:>8.0} req/s  p99 {p99:>6.0} µs  cpu {cpu:>5.0} µs/request");
        }
        println!(
            "RATIO jwt_rps_cached_vs_verify_each {:.2}",
            medians[1].0 / medians[0].0
        );
        println!(
            "RATIO jwt_cpu_per_request_verify_each_vs_cached {:.2}",
            medians[0].2 / medians[1].2
        );
        for (_, (_, running)) in cases {
            running.stop().await.unwrap();
        }
    });
}
