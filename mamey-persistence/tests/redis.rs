//! The Redis plug-in against a real server (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), and against a private `redis-server` this
//! test starts and kills for the restart. Each test's service has a name of
//! its own, so its keys have a prefix of their own; they are deleted at the
//! end.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mamey_core::health::{Health, Probe, Status};
use mamey_core::{Error, ErrorKind, Service, ServiceBuilder};
use mamey_persistence::redis::{MessagesLost, Redis, RedisClient};
use serde::{Deserialize, Serialize};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn required() -> bool {
    std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Whether the shared Redis answers; when it does not, the test skips with a
/// visible line, or fails under `MAMEY_REQUIRE_SERVICES=1`.
async fn redis_up() -> bool {
    let ping = async {
        let client = redis::Client::open(url())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let error = match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => return true,
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 3s".to_owned(),
    };
    assert!(
        !required(),
        "Redis is required (MAMEY_REQUIRE_SERVICES=1) but unreachable at {}: {error}",
        url()
    );
    eprintln!("SKIPPED: Redis unreachable at {}: {error}", url());
    false
}

/// A service for one test, named `it-{random}` (so its default key prefix
/// is its own): no signal handling, no configuration files, `vars` as its
/// whole environment.
fn test_service(name: &str, vars: &[(&str, &str)]) -> ServiceBuilder {
    Service::builder(name)
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .plugin(Redis::new())
}

fn unique_name() -> String {
    format!("it-{}", &mamey_core::new_id()[..8])
}

/// A running service on the shared Redis, and the deletion of its keys.
struct Fixture {
    service: Service,
    client: RedisClient,
    _keys: Keys,
}

async fn fixture() -> Option<Fixture> {
    if !redis_up().await {
        return None;
    }
    let name = unique_name();
    let service = test_service(&name, &[("MAMEY__REDIS__URL", &url())])
        .build()
        .await
        .unwrap();
    let client = service.resources().get::<RedisClient>().unwrap();
    assert_eq!(client.prefix(), format!("{name}:"));
    Some(Fixture {
        _keys: Keys {
            url: url(),
            prefix: client.prefix().to_owned(),
        },
        service,
        client,
    })
}

/// Deletes every key under `prefix` when dropped — also when the test
/// fails.
struct Keys {
    url: String,
    prefix: String,
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let mut cursor = 0_u64;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<String>)>(&mut connection)
            else {
                return;
            };
            if !keys.is_empty() {
                let _ = redis::cmd("DEL").arg(keys).query::<u64>(&mut connection);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// Polls `check` until it holds, failing the test after 20 s.
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn raw<T: redis::FromRedisValue>(cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut connection).await.unwrap()
}

/// Whether the `redis` readiness check passes.
async fn redis_ready(health: &Health) -> bool {
    let report = health.check(Probe::Ready).await;
    let check = report.checks.iter().find(|check| check.name == "redis");
    check.expect("a `redis` readiness check").result.status == Status::Healthy
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    items: Vec<String>,
}

#[tokio::test]
async fn cache_values_round_trip_as_json_and_expire() {
    let Some(fixture) = fixture().await else {
        return;
    };
    assert!(redis_ready(fixture.service.health()).await);
    let cache = fixture.client.cache();
    let order = Order {
        id: 7,
        items: vec!["tea".into()],
    };
    cache
        .set("order:7", &order, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get::<Order>("order:7").await.unwrap(), Some(order));
    assert_eq!(cache.get::<Order>("order:8").await.unwrap(), None);
    let wrong = cache.get::<u64>("order:7").await.unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Internal);
    assert!(cache.delete("order:7").await.unwrap());
    assert!(!cache.delete("order:7").await.unwrap());

    cache
        .set("short", &1_u8, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(cache.get::<u8>("short").await.unwrap(), Some(1));
    eventually("the entry to expire", async || {
        cache.get::<u8>("short").await.unwrap().is_none()
    })
    .await;

    let zero = cache.set("never", &1_u8, Duration::ZERO).await.unwrap_err();
    assert_eq!(zero.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_concurrent_get_or_load_calls_run_the_loader_once() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let calls = (0..100).map(|_| {
        let cache = fixture.client.cache();
        let loads = Arc::clone(&loads);
        tokio::spawn(async move {
            cache
                .get_or_load("report", Duration::from_secs(60), || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(vec![1_u32, 2, 3])
                })
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap(), vec![1, 2, 3]);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Now in Redis: no load at all.
    let again: Vec<u32> = fixture
        .client
        .cache()
        .get_or_load("report", Duration::from_secs(60), || async {
            Err(Error::internal("must not load"))
        })
        .await
        .unwrap();
    assert_eq!(again, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_the_loaders_error_and_nothing_is_cached() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let calls = (0..20).map(|_| {
        let cache = fixture.client.cache();
        let loads = Arc::clone(&loads);
        tokio::spawn(async move {
            cache
                .get_or_load::<u32, _, _>("broken", Duration::from_secs(60), || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(Error::not_found("stock.missing", "no such item"))
                })
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        let error = call.unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert_eq!(error.code(), "stock.missing");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let cached: Option<u32> = fixture.client.cache().get("broken").await.unwrap();
    assert_eq!(cached, None);
}

#[tokio::test]
async fn a_lock_expires_checks_its_token_and_can_be_extended() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let lock = fixture.client.lock("nightly");
    let first = lock
        .try_acquire(Duration::from_millis(500))
        .await
        .unwrap()
        .expect("a free lock");
    assert!(
        lock.try_acquire(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );

    // Extension: the expiry moves out.
    assert!(first.extend(Duration::from_secs(30)).await.unwrap());
    let left: i64 = raw(redis::cmd("PTTL").arg(fixture.client.key("lock:nightly"))).await;
    assert!(left > 10_000, "PTTL {left} ms after extending to 30 s");

    // Expiry: another holder gets it once the lease runs out.
    assert!(first.extend(Duration::from_millis(200)).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let second = loop {
        if let Some(lease) = lock.try_acquire(Duration::from_secs(30)).await.unwrap() {
            break lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(second.fencing_token() > first.fencing_token());

    // The first holder can neither extend nor release the second's lock.
    assert!(!first.extend(Duration::from_secs(30)).await.unwrap());
    assert!(!first.release().await.unwrap());
    assert!(
        lock.try_acquire(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );

    assert!(second.release().await.unwrap());
    let third = lock
        .acquire(Duration::from_secs(5), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(third.unwrap().release().await.unwrap());
}

#[tokio::test]
async fn every_key_and_channel_goes_through_the_prefix() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let client = &fixture.client;
    let prefix = client.prefix().to_owned();
    client
        .cache()
        .set("greeting", &"hello", Duration::from_secs(60))
        .await
        .unwrap();
    let stored: Option<String> = raw(redis::cmd("GET").arg(format!("{prefix}greeting"))).await;
    assert_eq!(stored.as_deref(), Some("\"hello\""));
    let unprefixed: u64 = raw(redis::cmd("EXISTS").arg("greeting")).await;
    assert_eq!(unprefixed, 0);

    let lease = client
        .lock("job")
        .try_acquire(Duration::from_secs(30))
        .await
        .unwrap();
    let exists: u64 = raw(redis::cmd("EXISTS")
        .arg(format!("{prefix}lock:job"))
        .arg(format!("{prefix}lock:job:fence")))
    .await;
    assert_eq!(exists, 2);
    assert!(lease.unwrap().release().await.unwrap());

    client
        .rate_limiter()
        .hit("api", 10, Duration::from_secs(60))
        .await
        .unwrap();
    let hits: u64 = raw(redis::cmd("GET").arg(format!("{prefix}rate:api"))).await;
    assert_eq!(hits, 1);

    // A message published on the raw, prefixed channel reaches a
    // subscriber of the unprefixed name.
    let mut subscription = client.subscribe(["news"]).await.unwrap();
    let receivers: u64 = raw(redis::cmd("PUBLISH")
        .arg(format!("{prefix}news"))
        .arg("raw"))
    .await;
    assert_eq!(receivers, 1);
    let message = tokio::time::timeout(Duration::from_secs(5), subscription.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message.channel(), "news");
    assert_eq!(&message.payload()[..], b"raw");
}

#[tokio::test]
async fn pub_sub_round_trip() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let client = &fixture.client;
    let mut subscription = client.subscribe(["orders", "payments"]).await.unwrap();
    assert_eq!(subscription.channels(), ["orders", "payments"]);
    assert_eq!(client.publish("orders", b"placed:1").await.unwrap(), 1);
    assert_eq!(client.publish("payments", "paid:1").await.unwrap(), 1);
    assert_eq!(client.publish("elsewhere", "unheard").await.unwrap(), 0);
    let mut received = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(5), subscription.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received.push((message.channel().to_owned(), message.payload().clone()));
    }
    assert_eq!(
        received,
        [
            ("orders".to_owned(), "placed:1".into()),
            ("payments".to_owned(), "paid:1".into())
        ]
    );
    drop(subscription);
    eventually("the subscription to close", async || {
        client.publish("orders", "gone").await.unwrap() == 0
    })
    .await;
}

#[tokio::test]
async fn the_rate_limit_allows_n_hits_then_refuses_with_a_retry_after() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let limiter = fixture.client.rate_limiter();
    let window = Duration::from_secs(2);
    for remaining in [2, 1, 0] {
        let decision = limiter.hit("client-a", 3, window).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, remaining);
        assert_eq!(decision.retry_after, None);
    }
    let refused = limiter.hit("client-a", 3, window).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let retry_after = refused.retry_after.expect("a retry-after when refused");
    assert!(retry_after > Duration::ZERO && retry_after <= window);
    // Another key counts on its own.
    assert!(limiter.hit("client-b", 3, window).await.unwrap().allowed);

    // A new window begins once the old one ends.
    let short = Duration::from_millis(300);
    assert!(limiter.hit("client-c", 1, short).await.unwrap().allowed);
    assert!(!limiter.hit("client-c", 1, short).await.unwrap().allowed);
    eventually("a new window", async || {
        limiter.hit("client-c", 1, short).await.unwrap().allowed
    })
    .await;
}

#[tokio::test]
async fn bad_settings_fail_the_start_naming_the_key() {
    // Without the `tls` feature a `rediss://` URL is refused, saying why.
    let tls_case = if cfg!(feature = "tls") {
        (
            "MAMEY__REDIS__CA_FILE",
            "/nonexistent/ca.pem",
            "redis.ca_file",
        )
    } else {
        ("MAMEY__REDIS__URL", "rediss://127.0.0.1:6379", "TLS")
    };
    let cases = [
        ("MAMEY__REDIS__URL", "http://127.0.0.1:6379", "redis.url"),
        tls_case,
        (
            "MAMEY__REDIS__RESPONSE_TIMEOUT",
            "0s",
            "redis.response_timeout",
        ),
        (
            "MAMEY__REDIS__RECONNECT_MAX_DELAY",
            "1ms",
            "redis.reconnect_max_delay",
        ),
    ];
    for (var, value, expected) in cases {
        let error = test_service("bad", &[(var, value)])
            .build()
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{var}={value}: {error}");
    }
    // Nothing listens on the port: the start fails, naming the address and
    // never the password.
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let error = test_service(
        "bad",
        &[
            ("MAMEY__REDIS__URL", nowhere.as_str()),
            ("MAMEY__REDIS__PASSWORD", "hunter2"),
            ("MAMEY__REDIS__RECONNECT_ATTEMPTS", "0"),
        ],
    )
    .build()
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cannot connect to Redis at 127.0.0.1:"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of this test's own, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port, or `None` (the test skips) when
    /// `redis-server` is not installed and services are not required.
    async fn start() -> Option<Self> {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        match redis.spawn() {
            Ok(()) => {}
            Err(error) => {
                assert!(
                    !required(),
                    "redis-server is required but cannot start: {error}"
                );
                eprintln!("SKIPPED: cannot start redis-server: {error}");
                return None;
            }
        }
        redis.wait_until_up().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_until_up(&self) {
        let url = self.url();
        eventually("the private redis-server to answer", async || {
            let ping = async {
                let client = redis::Client::open(url.as_str())?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(1), ping).await,
                Ok(Ok(_))
            )
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_redis_restart_and_the_service_recovers_without_a_restart() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let url = redis.url();
    let service = test_service(
        &unique_name(),
        &[
            ("MAMEY__REDIS__URL", url.as_str()),
            ("MAMEY__REDIS__RESPONSE_TIMEOUT", "500ms"),
            ("MAMEY__REDIS__CONNECT_TIMEOUT", "500ms"),
            ("MAMEY__REDIS__RECONNECT_MAX_DELAY", "500ms"),
            ("MAMEY__REDIS__RECONNECT_ATTEMPTS", "3"),
        ],
    )
    .build()
    .await
    .unwrap();
    let client = service.resources().get::<RedisClient>().unwrap();
    let health = service.health().clone();
    let running = service.start().await.unwrap();
    let is_ready = async || health.check(Probe::Ready).await.status == Status::Healthy;
    assert!(is_ready().await);
    assert!(redis_ready(&health).await);
    let cache = client.cache();
    cache
        .set("before", &1_u8, Duration::from_secs(60))
        .await
        .unwrap();
    let mut subscription = client.subscribe(["events"]).await.unwrap();

    redis.kill();
    eventually("readiness to fail", async || !redis_ready(&health).await).await;
    assert!(!is_ready().await);
    let down = cache.get::<u8>("before").await.unwrap_err();
    assert_eq!(down.kind(), ErrorKind::Unavailable);
    // Long enough for the manager to use up its reconnection attempts: the
    // readiness probe has to start the next round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!redis_ready(&health).await);

    redis.spawn().unwrap();
    redis.wait_until_up().await;
    eventually("readiness to recover", async || is_ready().await).await;
    cache
        .set("after", &2_u8, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get::<u8>("after").await.unwrap(), Some(2));
    // Nothing was persisted: the restart emptied Redis.
    assert_eq!(cache.get::<u8>("before").await.unwrap(), None);

    // The subscription says it lost messages, then receives again.
    let gap = tokio::time::timeout(Duration::from_secs(20), subscription.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gap, Err(MessagesLost::Reconnected));
    assert_eq!(client.publish("events", "back").await.unwrap(), 1);
    let message = tokio::time::timeout(Duration::from_secs(5), subscription.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload()[..], b"back");
    running.stop().await.unwrap();
}

/// Over TLS: a private `redis-server` serving only on a TLS port with a
/// certificate made here; the service trusts it through `redis.ca_file`,
/// and the cache and pub/sub work over it.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_over_tls_trusting_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(error) => {
            assert!(
                !required(),
                "redis-server is required but cannot start: {error}"
            );
            eprintln!("SKIPPED: cannot start redis-server: {error}");
            return;
        }
    };
    let _server = PrivateRedis {
        port,
        child: Some(child),
    };
    let url = format!("rediss://localhost:{port}");
    let ca_file = cert.display().to_string();
    let vars = [
        ("MAMEY__REDIS__URL", url.as_str()),
        ("MAMEY__REDIS__CA_FILE", ca_file.as_str()),
    ];
    // The server may need a moment to listen: build until it answers.
    let service = eventually_some("a service over TLS", async || {
        test_service(&unique_name(), &vars).build().await.ok()
    })
    .await;
    let client = service.resources().get::<RedisClient>().unwrap();
    let cache = client.cache();
    cache
        .set("tls", &7_u32, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>("tls").await.unwrap(), Some(7));
    let report = service.health().check(Probe::Ready).await;
    let redis = report.checks.iter().find(|c| c.name == "redis").unwrap();
    assert_eq!(redis.result.status, Status::Healthy, "{report:?}");

    // Without the CA the same server is not trusted: the build fails.
    let untrusted = test_service(
        &unique_name(),
        &[
            ("MAMEY__REDIS__URL", url.as_str()),
            ("MAMEY__REDIS__RECONNECT_ATTEMPTS", "0"),
        ],
    )
    .build()
    .await;
    assert!(
        untrusted.is_err(),
        "a certificate nobody signed was trusted"
    );
}

/// Polls `probe` until it returns `Some`, for at most 15 s.
#[cfg(feature = "tls")]
async fn eventually_some<T>(what: &str, probe: impl AsyncFn() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
