//! The etcd backend against a real etcd: the shared one on 127.0.0.1:2379
//! for registration and watches, a private one the test stops and starts
//! for outages. Every test uses a key prefix of its own and deletes it.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use mamey_core::discovery::{Endpoint, ServiceResolver};
use mamey_core::health::{Probe, Status};
use mamey_discovery::config::EtcdConfig;
use mamey_discovery::{Discovery, EtcdRegistry, Instance, Presence, Registry};
use support::{PrivateEtcd, eventually, service, shared_etcd, start, unique, whoami};

const WITHIN: Duration = Duration::from_secs(15);

fn config(endpoint: &str, prefix: &str, lease_ttl: Duration) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint.to_owned()],
        prefix: prefix.to_owned(),
        lease_ttl,
        ..EtcdConfig::default()
    }
}

/// Deletes everything under `prefix` when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // A runtime of its own: the test's may be shutting down.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut client) =
                    etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await
                {
                    let _ = client
                        .delete(
                            prefix,
                            Some(etcd_client::DeleteOptions::new().with_prefix()),
                        )
                        .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

#[tokio::test]
async fn register_lookup_and_watch_additions_and_removals() {
    if shared_etcd().await.is_none() {
        return;
    }
    let prefix = format!("/{}", unique("mamey-test"));
    let _cleanup = Cleanup(prefix.clone());
    let registry = EtcdRegistry::connect(&config(
        "http://127.0.0.1:2379",
        &prefix,
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    let a = Instance::new("pricing", "pricing-a", "127.0.0.1", 7001);
    let b = Instance::new("pricing", "pricing-b", "127.0.0.1", 7002);
    registry.register(&a).await.unwrap();

    let mut watch = registry.watch("pricing");
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first, [Endpoint::new("http://127.0.0.1:7001")]);

    registry.register(&b).await.unwrap();
    let added = watch.next().await.unwrap().unwrap();
    assert_eq!(
        added,
        [
            Endpoint::new("http://127.0.0.1:7001"),
            Endpoint::new("http://127.0.0.1:7002")
        ]
    );
    assert_eq!(registry.heartbeat(&a).await.unwrap(), Presence::Registered);

    registry.deregister(&a).await.unwrap();
    let removed = watch.next().await.unwrap().unwrap();
    assert_eq!(removed, [Endpoint::new("http://127.0.0.1:7002")]);
    assert_eq!(registry.heartbeat(&a).await.unwrap(), Presence::Lost);
    // Deregistering twice is not an error.
    registry.deregister(&a).await.unwrap();

    // Another service under the same prefix is not in this watch.
    let other = Instance::new("billing", "billing-a", "127.0.0.1", 7003);
    registry.register(&other).await.unwrap();
    assert_eq!(
        registry.watch("billing").next().await.unwrap().unwrap(),
        [Endpoint::new("http://127.0.0.1:7003")]
    );
    registry.deregister(&b).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap(), Vec::<Endpoint>::new());
}

#[tokio::test]
async fn an_instance_whose_lease_is_not_kept_alive_disappears_within_its_ttl() {
    if shared_etcd().await.is_none() {
        return;
    }
    let prefix = format!("/{}", unique("mamey-test"));
    let _cleanup = Cleanup(prefix.clone());
    let ttl = Duration::from_secs(2);
    let registry = EtcdRegistry::connect(&config("http://127.0.0.1:2379", &prefix, ttl))
        .await
        .unwrap();
    let instance = Instance::new("pricing", "pricing-a", "127.0.0.1", 7001);
    registry.register(&instance).await.unwrap();
    let mut watch = registry.watch("pricing");
    assert_eq!(watch.next().await.unwrap().unwrap().len(), 1);
    let registered = tokio::time::Instant::now();
    // No heartbeat: the lease runs out.
    let gone = tokio::time::timeout(WITHIN, watch.next())
        .await
        .expect("the instance disappears")
        .unwrap()
        .unwrap();
    assert!(gone.is_empty());
    // etcd expires leases at TTL granularity; allow its scheduling slack.
    assert!(
        registered.elapsed() >= ttl - Duration::from_millis(500),
        "gone after {:?}, before its TTL",
        registered.elapsed()
    );
    assert_eq!(registry.heartbeat(&instance).await.unwrap(), Presence::Lost);
}

#[tokio::test]
async fn a_service_registers_when_ready_and_deregisters_when_stopped() {
    let Some(mut etcd) = shared_etcd().await else {
        return;
    };
    let prefix = format!("/{}", unique("mamey-test"));
    let _cleanup = Cleanup(prefix.clone());
    let settings = [
        ("discovery.backend", "etcd".to_owned()),
        ("discovery.etcd.prefix", prefix.clone()),
    ];
    // Two instances of one service in one process get distinct ids.
    let (first, first_address) = start(
        service("pricing", &settings)
            .plugin(Discovery::new())
            .plugin(whoami("a")),
    )
    .await;
    let (second, _) = start(
        service("pricing", &settings)
            .plugin(Discovery::new())
            .plugin(whoami("b")),
    )
    .await;
    let keys = |etcd: &mut etcd_client::Client| {
        let mut etcd = etcd.clone();
        let prefix = prefix.clone();
        async move {
            let found = etcd
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            found
                .kvs()
                .iter()
                .map(|kv| serde_json::from_slice::<Instance>(kv.value()).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let instances = eventually("both instances registered", WITHIN, || {
        let found = keys(&mut etcd);
        async move { Some(found.await).filter(|found| found.len() == 2) }
    })
    .await;
    assert_ne!(instances[0].id, instances[1].id);
    assert!(instances.iter().all(|i| i.id.starts_with("pricing-")));
    assert!(
        instances
            .iter()
            .any(|i| i.endpoint() == Endpoint::new(format!("http://{first_address}")))
    );
    assert!(instances.iter().all(|i| i.meta.contains_key("version")));

    first.stop().await.unwrap();
    // Deregistered on the way down, not left for the lease to expire.
    let left = keys(&mut etcd).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].endpoint() != Endpoint::new(format!("http://{first_address}")));
    second.stop().await.unwrap();
    assert!(keys(&mut etcd).await.is_empty());
}

#[tokio::test]
async fn an_outage_serves_the_last_known_endpoints_and_the_instance_comes_back() {
    let Some(mut etcd) = PrivateEtcd::start().await else {
        return;
    };
    let prefix = format!("/{}", unique("mamey-test"));
    let settings = [
        ("discovery.backend", "etcd".to_owned()),
        (
            "discovery.etcd.endpoints",
            format!("[\"{}\"]", etcd.endpoint()),
        ),
        ("discovery.etcd.prefix", prefix.clone()),
        ("discovery.etcd.lease_ttl", "3s".to_owned()),
        ("discovery.etcd.timeout", "1s".to_owned()),
        ("discovery.retry_backoff", "100ms".to_owned()),
        ("discovery.max_retry_backoff", "500ms".to_owned()),
    ];
    let service = service("pricing", &settings)
        .plugin(Discovery::new())
        .plugin(whoami("a"))
        .build()
        .await
        .unwrap();
    let resolver = service.resources().get::<ServiceResolver>().unwrap();
    let health = service.health().clone();
    let running = service.start().await.unwrap();

    let known = eventually("the instance is found", WITHIN, || {
        let resolver = resolver.clone();
        async move { resolver.resolve("pricing").await.ok() }
    })
    .await;
    assert_eq!(known.len(), 1);
    eventually("healthy", WITHIN, || {
        let health = health.clone();
        async move { (health.check(Probe::Ready).await.status == Status::Healthy).then_some(()) }
    })
    .await;

    // etcd goes away: lookups still answer, from memory; health degrades.
    etcd.down().await;
    let report = eventually("health degrades", WITHIN, || {
        let health = health.clone();
        async move {
            let report = health.check(Probe::Ready).await;
            (report.status == Status::Degraded).then_some(report)
        }
    })
    .await;
    assert!(report.is_serving());
    let detail = format!("{:?}", report.checks);
    assert!(detail.contains("discovery"), "{detail}");
    assert_eq!(resolver.resolve("pricing").await.unwrap(), known);

    // It comes back having lost everything: the instance registers again.
    etcd.wipe().await;
    etcd.up().await;
    let endpoint = etcd.endpoint();
    eventually(
        "the instance is registered again",
        Duration::from_secs(30),
        || {
            let endpoint = endpoint.clone();
            let prefix = prefix.clone();
            async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                let found = client
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .ok()?;
                (found.count() == 1).then_some(())
            }
        },
    )
    .await;
    eventually("healthy again", Duration::from_secs(30), || {
        let health = health.clone();
        async move { (health.check(Probe::Ready).await.status == Status::Healthy).then_some(()) }
    })
    .await;
    assert_eq!(resolver.resolve("pricing").await.unwrap(), known);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_etcd_fails_the_first_lookup_with_a_clear_error() {
    // Nothing listens on port 1.
    let settings = [
        ("discovery.backend", "etcd".to_owned()),
        (
            "discovery.etcd.endpoints",
            "[\"http://127.0.0.1:1\"]".to_owned(),
        ),
        ("discovery.etcd.timeout", "500ms".to_owned()),
        ("discovery.lookup_timeout", "3s".to_owned()),
        ("discovery.register", "false".to_owned()),
    ];
    let service = service("caller", &settings)
        .plugin(Discovery::new())
        .build()
        .await
        .unwrap();
    let resolver = service.resources().get::<ServiceResolver>().unwrap();
    let error = resolver.resolve("pricing").await.unwrap_err();
    assert_eq!(error.code(), "discovery.unreachable");
    assert!(error.message().contains("etcd"), "{error}");
    assert!(error.message().contains("pricing"), "{error}");
}
