//! End to end: mamey-http's service client calls `http://pricing/…` through
//! the etcd backend to two real in-process services, spreads the load, and
//! moves off one that stops — without a failed call, because it leaves the
//! registry before its listener closes.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mamey_discovery::Discovery;
use mamey_http::{ServiceClient, ServiceClientPlugin};
use support::{eventually, service, shared_etcd, start, unique, whoami};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_by_name_spread_over_instances_and_move_off_one_that_stops() {
    if shared_etcd().await.is_none() {
        return;
    }
    let prefix = format!("/{}", unique("mamey-test"));
    let settings = [
        ("discovery.backend", "etcd".to_owned()),
        ("discovery.etcd.prefix", prefix.clone()),
        // Callers' watches see the instance leave well within this.
        ("discovery.drain_delay", "500ms".to_owned()),
    ];
    let (a, _) = start(
        service("pricing", &settings)
            .plugin(Discovery::new())
            .plugin(whoami("a")),
    )
    .await;
    let (b, _) = start(
        service("pricing", &settings)
            .plugin(Discovery::new())
            .plugin(whoami("b")),
    )
    .await;
    let caller = service("checkout", &settings)
        .plugin(Discovery::new())
        .plugin(ServiceClientPlugin::new())
        .build()
        .await
        .unwrap();
    let client = caller.resources().get::<ServiceClient>().unwrap();
    let caller = caller.start().await.unwrap();

    let call = |client: ServiceClient| async move {
        let answer = client.get("pricing", "/whoami").send().await?;
        Ok::<_, mamey_core::Error>(String::from_utf8_lossy(&answer.body).into_owned())
    };
    eventually("both instances are known", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            let mut seen = BTreeMap::new();
            for _ in 0..20 {
                *seen.entry(call(client.clone()).await.ok()?).or_insert(0) += 1;
            }
            (seen.len() == 2).then_some(())
        }
    })
    .await;

    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        *spread
            .entry(call(client.clone()).await.unwrap())
            .or_insert(0) += 1;
    }
    println!("spread over 200 calls: {spread:?}");
    assert_eq!(spread.len(), 2, "{spread:?}");
    assert!(spread.values().all(|&n| n >= 40), "uneven: {spread:?}");

    // Calls keep going while `a` stops.
    let calling = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, calling, failures) =
            (client.clone(), Arc::clone(&calling), Arc::clone(&failures));
        async move {
            let mut answered = 0;
            while calling.load(Ordering::SeqCst) {
                match call(client.clone()).await {
                    Ok(_) => answered += 1,
                    Err(error) => {
                        eprintln!("failed call: {error}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            answered
        }
    });
    a.stop().await.unwrap();
    let only_b = eventually("traffic moves to `b`", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            for _ in 0..20 {
                if call(client.clone()).await.ok()? != "b" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    calling.store(false, Ordering::SeqCst);
    let answered = load.await.unwrap();
    assert_eq!(only_b, ());
    assert!(answered > 0);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "calls failed while `a` stopped"
    );

    caller.stop().await.unwrap();
    b.stop().await.unwrap();
}
