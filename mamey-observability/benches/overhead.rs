//! What tracing through mamey-observability costs a handler.
//!
//! One unit of work is handler-sized: decode a ~1 KiB JSON order, check and
//! total it, encode a reply — inside a `handle` span with one `info` event
//! (written to a sink, as a service's log lines would be) and one filtered
//! `debug` event. It runs for a fixed time per case, cases alternating over
//! several rounds:
//!
//! - `bare`: no subscriber at all: nothing is logged or traced;
//! - `none`: the plug-in with logs on and tracing off — the baseline the
//!   tracing ratios divide by, so they measure tracing, not logging;
//! - `never`: tracing on, sampler `never`;
//! - `ratio_0.1`: sampler ratio 0.1, exporting to an in-process OTLP receiver;
//! - `always`: every span exported to the receiver.
//!
//! `cargo bench -p mamey-observability --bench overhead` prints one line per
//! case and `RATIO tracing_ratio_0.1_vs_none <x>` (throughput ratio) last.
//! `BENCH_SECONDS` sets the time per case and round (default 0.25). This
//! machine's CPU speed drifts by up to 2x over seconds, so each ratio is the
//! median over rounds of the ratio *within* a round (cases a fraction of a
//! second apart), not a ratio of per-case medians.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use mamey_core::Service;
use mamey_observability::Telemetry;
use serde_json::{Value, json};
use tracing::Dispatch;

const ROUNDS: usize = 20;

fn order() -> String {
    let items: Vec<Value> = (0..12)
        .map(|i| json!({ "sku": format!("SKU-{i:05}"), "quantity": i % 4 + 1, "price": 9.99 + f64::from(i) }))
        .collect();
    json!({
        "id": "3f1c2b8e-6a8f-4c1e-9b7a-2d4e5f6a7b8c",
        "customer": { "id": "c-42", "email": "ada@example.com", "tier": "gold" },
        "items": items,
        "shipping": { "street": "1 Main St", "city": "Springfield", "zip": "12345" },
    })
    .to_string()
}

/// The handler: decode, validate, total, encode.
fn handle(body: &str, n: u64) -> usize {
    let span = tracing::info_span!("handle", message.name = "PlaceOrder", order = n);
    let _entered = span.enter();
    let order: Value = serde_json::from_str(body).unwrap();
    let total: f64 = order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["quantity"].as_f64().unwrap_or(0.0) * i["price"].as_f64().unwrap_or(0.0))
        .sum();
    tracing::debug!(total, "order priced");
    tracing::info!(total, "order accepted");
    serde_json::to_string(&json!({ "id": order["id"], "total": total, "status": "accepted" }))
        .unwrap()
        .len()
}

/// Runs the handler for `seconds`; returns units per second.
fn run(dispatch: &Dispatch, body: &str, seconds: f64) -> f64 {
    tracing::dispatcher::with_default(dispatch, || {
        let budget = Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut n = 0_u64;
        while started.elapsed() < budget {
            for _ in 0..64 {
                black_box(handle(black_box(body), n));
                n += 1;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / started.elapsed().as_secs_f64();
        rate
    })
}

async fn telemetry(vars: &[(&str, &str)]) -> (Service, Telemetry) {
    let service = support::observed("bench", vars, std::io::sink)
        .build()
        .await
        .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    (service, telemetry)
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.25);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (endpoint, received) = runtime.block_on(support::grpc_receiver());
    let json_logs = ("MAMEY__LOGGING__FORMAT", "json");
    let cases = runtime.block_on(async {
        let never = telemetry(&[
            json_logs,
            ("MAMEY__TRACING__ENDPOINT", &endpoint),
            ("MAMEY__TRACING__SAMPLER", "never"),
        ])
        .await;
        let ratio = telemetry(&[
            json_logs,
            ("MAMEY__TRACING__ENDPOINT", &endpoint),
            ("MAMEY__TRACING__SAMPLER", "ratio"),
            ("MAMEY__TRACING__RATIO", "0.1"),
        ])
        .await;
        let always = telemetry(&[
            json_logs,
            ("MAMEY__TRACING__ENDPOINT", &endpoint),
            ("MAMEY__TRACING__SAMPLER", "always"),
        ])
        .await;
        let logs_only = telemetry(&[json_logs]).await;
        vec![
            ("bare", Dispatch::none(), None),
            ("none", logs_only.1.dispatch().clone(), Some(logs_only)),
            ("never", never.1.dispatch().clone(), Some(never)),
            ("ratio_0.1", ratio.1.dispatch().clone(), Some(ratio)),
            ("always", always.1.dispatch().clone(), Some(always)),
        ]
    });

    let body = order();
    // `BENCH_ONLY=<case>` runs that case alone for a fixed count (for
    // profilers such as `valgrind --tool=callgrind`), printing nothing else.
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        let (_, dispatch, _) = cases
            .iter()
            .find(|(n, _, _)| *n == only)
            .expect("a case name");
        tracing::dispatcher::with_default(dispatch, || {
            for n in 0..5000 {
                black_box(handle(black_box(&body), n));
            }
        });
        return;
    }
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, dispatch, service)) in cases.iter().enumerate() {
            rates[i].push(run(dispatch, &body, seconds));
            // Drain this case's exporter before the next case runs, so that
            // its background export does not slow the next measurement.
            if let Some((_, telemetry)) = service {
                let _ = runtime.block_on(telemetry.flush());
            }
        }
    }
    let median = |r: &[f64]| {
        let mut sorted = r.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        }
    };
    for (i, (name, _, service)) in cases.iter().enumerate() {
        let exported = service
            .as_ref()
            .map_or(0, |(_, t)| t.export_stats().exported_spans());
        println!(
            "case {name:<10} {:>8.0} units/s median  (rounds: {})  spans exported: {exported}",
            median(&rates[i]),
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("receiver got {} spans", received.spans().len());
    let paired = |case: usize, base: usize| {
        let per_round: Vec<f64> = rates[case]
            .iter()
            .zip(&rates[base])
            .map(|(c, b)| c / b)
            .collect();
        median(&per_round)
    };
    println!("RATIO logging_vs_bare {:.3}", paired(1, 0));
    println!("RATIO tracing_never_vs_none {:.3}", paired(2, 1));
    println!("RATIO tracing_always_vs_none {:.3}", paired(4, 1));
    println!("RATIO tracing_ratio_0.1_vs_none {:.3}", paired(3, 1));
}
