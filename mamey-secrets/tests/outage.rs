//! OpenBao going away while a service runs, and being away at start. The
//! shared server is never stopped: the service reaches it through a TCP
//! proxy in the test, which can be cut (listener closed, live connections
//! dropped) and restored on the same port.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Bao, Cleanup, connect_as, eventually};
use mamey_core::Service;
use mamey_core::credentials::{CredentialSources, Credentials};
use mamey_core::health::{Health, HealthStatus, Probe, Status};
use mamey_secrets::{SecretError, Secrets};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A TCP proxy to `target` on a fixed local port.
struct Proxy {
    address: SocketAddr,
    target: SocketAddr,
    running: Option<(CancellationToken, TaskTracker)>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = listen("127.0.0.1:0".parse().unwrap());
        let mut proxy = Self {
            address: listener.local_addr().unwrap(),
            target: target.parse().unwrap(),
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    /// `http://127.0.0.1:<port>`.
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let target = self.target;
        let (accept_stop, accept_tasks) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let client = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let stop = accept_stop.clone();
                accept_tasks.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        self.running = Some((stop, tasks));
    }

    /// Closes the listener and every forwarded connection; returns once
    /// they are all gone.
    async fn cut(&mut self) {
        let (stop, tasks) = self.running.take().expect("the proxy is running");
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    /// Listens again on the same port.
    fn restore(&mut self) {
        assert!(self.running.is_none(), "the proxy is running");
        let listener = listen(self.address);
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.running.take() {
            stop.cancel();
        }
    }
}

fn listen(address: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(address).unwrap();
    socket.listen(128).unwrap()
}

/// What the `secrets` readiness check says now.
async fn secrets_check(health: &Health) -> HealthStatus {
    health
        .check(Probe::Ready)
        .await
        .checks
        .into_iter()
        .find(|check| check.name == "secrets")
        .expect("the secrets plug-in registers a `secrets` readiness check")
        .result
}

/// Waits until the `secrets` check is degraded; answers its detail.
async fn degraded(health: &Health) -> String {
    eventually(15, "the secrets check to report degraded", || async {
        let status = secrets_check(health).await;
        (status.status == Status::Degraded)
            .then(|| status.detail.expect("a degraded check says why"))
    })
    .await
}

async fn healthy(health: &Health) {
    eventually(30, "the secrets check to be healthy again", || async {
        (secrets_check(health).await.status == Status::Healthy).then_some(())
    })
    .await;
}

async fn assert_connects(credentials: &Credentials) {
    let user = connect_as(&credentials.username, credentials.password.expose())
        .await
        .unwrap_or_else(|e| panic!("cannot connect as {}: {e}", credentials.username));
    assert_eq!(user, credentials.username);
}

/// A running service holding database credentials `orders` (4 s leases,
/// renewed at half) from OpenBao through `proxy`.
struct Running {
    service: mamey_core::RunningService,
    health: Health,
    orders: watch::Receiver<Credentials>,
    _dir: tempfile::TempDir,
}

async fn start_service(bao: &Bao, cleanup: &mut Cleanup, proxy: &Proxy) -> Running {
    let (mount, role) = common::database_engine(bao, cleanup, 4, 60).await;
    let dir = common::config_dir(&format!(
        r#"
[secrets]
backend = "vault"

[secrets.vault]
address = "{address}"
connect_attempts = 3
connect_backoff = "50ms"
renew_at = 0.5
auth = {{ method = "token", token = "{token}" }}

[secrets.vault.database.orders]
mount = "{mount}"
role = "{role}"
"#,
        address = proxy.url(),
        token = common::ROOT_TOKEN,
    ));
    let service = Service::builder("outage")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap();
    let orders = service
        .resources()
        .get::<CredentialSources>()
        .unwrap()
        .get("orders")
        .expect("a credential source `orders`");
    let health = service.health().clone();
    let service = service.start().await.unwrap();
    Running {
        service,
        health,
        orders,
        _dir: dir,
    }
}

/// Stops the service; its lease is revoked, so the login role is dropped.
async fn stop(running: Running) {
    let username = running.orders.borrow().username.clone();
    running.service.stop().await.unwrap();
    eventually(10, "the revoked login role to be dropped", || async {
        (!common::role_exists(&username).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_short_outage_degrades_health_and_the_lease_is_renewed_after() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let mut proxy = Proxy::start("127.0.0.1:8200").await;
    let mut running = start_service(&bao, &mut cleanup, &proxy).await;
    let first = running.orders.borrow_and_update().clone();
    assert_connects(&first).await;
    assert_eq!(
        secrets_check(&running.health).await,
        HealthStatus::healthy()
    );

    proxy.cut().await;
    let cut_at = Instant::now();
    let detail = degraded(&running.health).await;
    assert!(detail.contains("database.orders"), "{detail}");
    assert!(detail.contains("current credentials valid for"), "{detail}");
    // The same credentials, and they still work: the lease is alive.
    assert!(!running.orders.has_changed().unwrap());
    assert_eq!(running.orders.borrow().username, first.username);
    assert!(
        cut_at.elapsed() < Duration::from_secs(4),
        "the lease may have ended already"
    );
    assert_connects(&first).await;

    // Back before the lease ends: renewed, not replaced.
    proxy.restore();
    healthy(&running.health).await;
    assert!(
        !running.orders.has_changed().unwrap(),
        "renewal should keep the credentials"
    );
    assert_eq!(running.orders.borrow().username, first.username);
    assert_connects(&first).await;
    // Renewal keeps working afterwards (two more 2 s periods).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        secrets_check(&running.health).await,
        HealthStatus::healthy()
    );
    assert_eq!(running.orders.borrow().username, first.username);
    assert_connects(&first).await;

    stop(running).await;
    cleanup.run().await;
}

#[tokio::test]
async fn an_outage_past_the_lease_keeps_the_credentials_until_openbao_returns_then_rotates() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let mut proxy = Proxy::start("127.0.0.1:8200").await;
    let mut running = start_service(&bao, &mut cleanup, &proxy).await;
    let first = running.orders.borrow_and_update().clone();
    assert_connects(&first).await;

    proxy.cut().await;
    let cut_at = Instant::now();
    let detail = degraded(&running.health).await;
    assert!(detail.contains("database.orders"), "{detail}");
    assert_eq!(running.orders.borrow().username, first.username);
    assert_connects(&first).await;

    // Past the end of the last lease (at most 4 s after the cut): nothing
    // can issue new credentials, so the old ones stay published and the
    // check stays degraded (not failing).
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed())).await;
    assert!(!running.orders.has_changed().unwrap());
    assert_eq!(running.orders.borrow().username, first.username);
    let status = secrets_check(&running.health).await;
    assert_eq!(status.status, Status::Degraded, "{status:?}");
    // They no longer work: the role's `VALID UNTIL` (the lease's end) has
    // passed, and no renewal could move it.
    assert!(
        connect_as(&first.username, first.password.expose())
            .await
            .is_err(),
        "the ended lease's role still logs in"
    );

    // Back: the lease has ended, so new credentials are issued and served.
    proxy.restore();
    healthy(&running.health).await;
    let second = eventually(10, "new credentials after the lease ended", || {
        let current = running.orders.borrow().clone();
        let first = first.username.clone();
        async move { (current.username != first).then_some(current) }
    })
    .await;
    assert!(
        running.orders.has_changed().unwrap(),
        "the rotation is notified"
    );
    assert_connects(&second).await;

    stop(running).await;
    cleanup.run().await;
}

#[tokio::test]
async fn openbao_down_at_start_fails_the_build_after_the_configured_tries() {
    // A port nothing listens on.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = common::config_dir(&format!(
        r#"
[secrets]
backend = "vault"

[secrets.vault]
address = "{address}"
connect_attempts = 3
connect_backoff = "50ms"
auth = {{ method = "token", token = "unused" }}
"#
    ));
    let (guard, logs) = common::capture_logs();
    let started = Instant::now();
    let error = Service::builder("down-at-start")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap_err();
    let took = started.elapsed();
    drop(guard);

    // Two waits: 50 ms, then 100 ms.
    assert!(
        took >= Duration::from_millis(150),
        "gave up after {took:?}, before backing off"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let text = error.to_string();
    assert!(text.contains("after 3 tries"), "{text}");
    assert!(text.contains(&address), "{text}");
    assert!(text.contains("secrets.vault.connect_attempts"), "{text}");
    let mamey_core::ServiceError::ConfigOverlay { source, .. } = &error else {
        panic!("expected the secrets overlay to fail, got {text}");
    };
    assert!(
        matches!(
            source.downcast_ref::<SecretError>(),
            Some(SecretError::Unavailable { .. })
        ),
        "{text}"
    );
    let logged = common::logged(&logs);
    assert_eq!(
        logged
            .matches("Vault not reachable yet; trying again")
            .count(),
        2,
        "{logged}"
    );
}
