//! The benchmarks' load generator: keep-alive HTTP/1.1 connections sending
//! one request in a loop for a while, and what they measured.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One case's figures.
#[derive(Clone, Copy)]
pub struct Run {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// The process's CPU time (user + system) per request, the load
    /// generator's share included.
    pub cpu_per_request: Duration,
}

/// What each connection sends: `GET path` with `headers`.
#[derive(Clone)]
pub struct Load {
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub connections: usize,
}

impl Load {
    /// Sends the request on every connection for `seconds`; each answer
    /// must be a 2xx with a body.
    pub async fn run(&self, address: SocketAddr, seconds: f64) -> Run {
        let stop = Arc::new(AtomicBool::new(false));
        let request: Arc<Self> = Arc::new(self.clone());
        let mut workers = Vec::new();
        for _ in 0..self.connections {
            let (stop, request) = (Arc::clone(&stop), Arc::clone(&request));
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
                    let mut builder = http::Request::get(request.path).header("host", "bench");
                    for (name, value) in &request.headers {
                        builder = builder.header(*name, value);
                    }
                    let started = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender
                        .send_request(builder.body(Empty::new()).unwrap())
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert!(!body.is_empty());
                    latencies.push(started.elapsed());
                }
                latencies
            }));
        }
        let (started, cpu) = (Instant::now(), cpu_time());
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.unwrap());
        }
        let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_time() - cpu);
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
        Run {
            rps: latencies.len() as f64 / elapsed,
            p50: at(0.50),
            p99: at(0.99),
            cpu_per_request: cpu / u32::try_from(latencies.len()).unwrap(),
        }
    }
}

/// The process's CPU time so far (user + system), from `/proc/self/stat`.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command (which may hold spaces) follow its `)`;
    // utime and stime are the 12th and 13th of them, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // 100 ticks a second on Linux
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `d` in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
