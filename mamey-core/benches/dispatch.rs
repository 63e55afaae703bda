//! The dispatcher's own cost: one handler called directly (`.await` of the
//! async fn with its arguments) and through `Dispatcher::send` of a built
//! service (the default stack: context, span, logs, metrics hooks,
//! validation, extractors), same handler, same run. No tracing subscriber
//! is installed, so the figure is the dispatcher's, not a subscriber's.
//!
//! Prints ns/call for both, their ratio, and heap allocations per call
//! counted by a counting global allocator (deterministic, unlike time):
//!
//! - `ALLOCS dispatch_command`: inside a message context, as every
//!   transport (HTTP, gRPC, broker) runs a dispatch;
//! - `ALLOCS dispatch_command_root`: with no context, so the dispatcher
//!   creates a root one (two ids and their `Arc`);
//! - `ALLOCS dispatch_command_layered`: with one tower layer
//!   (`TimeoutLayer`) added, which erases the chain per route.
//!
//! `cargo bench -p mamey-core --bench dispatch` (`BENCH_CALLS` sets the
//! calls per round, default 200 000).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mamey_core::cqrs::{Command, Dispatcher, Res};
use mamey_core::{Error, MessageContext, Service};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Bump {
    by: u64,
}
impl Command for Bump {}

#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

async fn bump(cmd: Bump, Res(counter): Res<Counter>) -> Result<(), Error> {
    counter.0.fetch_add(cmd.by, Ordering::Relaxed);
    Ok(())
}

async fn service(counter: &Counter, layered: bool) -> Dispatcher {
    let service = Service::builder("bench")
        .handle_signals(false)
        .resource(counter.clone())
        .handlers(|d| {
            d.command(bump);
            if layered {
                d.layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)));
            }
        })
        .build()
        .await
        .expect("the bench service builds");
    service.dispatcher().clone()
}

/// Allocations per call of `call`, over `n` calls.
async fn allocations<F, Fut>(n: u64, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        call().await;
    }
    let allocations = region.change().allocations;
    allocations as f64 / n as f64
}

/// Nanoseconds per call of `call`, over `n` calls.
async fn time<F, Fut>(n: u64, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for _ in 0..n {
        call().await;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let calls: u64 = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let counter = Counter::default();
        let dispatcher = service(&counter, false).await;
        let layered = service(&counter, true).await;
        let context = MessageContext::new();

        let direct = || async { bump(Bump { by: 1 }, Res(counter.clone())).await.unwrap() };
        let dispatched = || async { dispatcher.send(Bump { by: 1 }).await.unwrap() };
        let through_layer = || async { layered.send(Bump { by: 1 }).await.unwrap() };

        // Warm up: first calls fill lazily initialised statics (tracing's
        // callsite registry, the runtime's timer wheel).
        context
            .clone()
            .scope(async {
                for _ in 0..1_000 {
                    direct().await;
                    dispatched().await;
                    through_layer().await;
                }
            })
            .await;
        dispatched().await;

        let allocs_direct = context.clone().scope(allocations(1_000, direct)).await;
        let allocs_dispatch = context.clone().scope(allocations(1_000, dispatched)).await;
        let allocs_layered = context
            .clone()
            .scope(allocations(1_000, through_layer))
            .await;
        let allocs_root = allocations(1_000, dispatched).await;

        let (mut direct_ns, mut dispatched_ns) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            direct_ns.push(context.clone().scope(time(calls, direct)).await);
            dispatched_ns.push(context.clone().scope(time(calls, dispatched)).await);
        }
        let (direct_ns, dispatched_ns) = (median(direct_ns), median(dispatched_ns));
        let layered_ns = context.clone().scope(time(calls, through_layer)).await;
        assert!(counter.0.load(Ordering::Relaxed) > 0);

        println!("calls per round {calls}, 5 rounds, medians");
        println!("direct      {direct_ns:8.1} ns/call");
        println!("dispatched  {dispatched_ns:8.1} ns/call");
        println!("one layer   {layered_ns:8.1} ns/call (tower TimeoutLayer)");
        println!("RATIO dispatch_vs_direct {:.2}", dispatched_ns / direct_ns);
        println!("ALLOCS direct_command {allocs_direct}");
        println!("ALLOCS dispatch_command {allocs_dispatch}");
        println!("ALLOCS dispatch_command_root {allocs_root}");
        println!("ALLOCS dispatch_command_layered {allocs_layered}");
    });
}
