//! The distributed system on loopback: every service its own process
//! (`teamhub serve NAME`, profile `distributed`) over the real servers —
//! Postgres (a database per service, reached with credentials OpenBao
//! issues), RabbitMQ, Redis, etcd and OpenBao. `teamhub run-local` runs it
//! until Ctrl-C; the system tests start it with a run id, so that their
//! databases, roles, OpenBao engine, exchange, registry prefix and Redis
//! keys are their own, and remove them afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::BoxError;
use tokio::process::{Child, Command};

use crate::{boards, identity, notifications, system};

mod provision;

use provision::{Bao, ServerUrl};

/// How to start the system.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `teamhub` executable.
    pub exe: PathBuf,
    /// Replicas of boards and of notifications.
    pub replicas: usize,
    /// The gateway's port (0: any free one).
    pub gateway_port: u16,
    /// Names this run's resources apart (databases `teamhub_{run}_{service}`,
    /// exchange `teamhub-{run}`, registry prefix, Redis keys); `None`: the
    /// plain names, kept between runs.
    pub run_id: Option<String>,
    /// Where each process's log goes (`{dir}/{service}-{n}.log`).
    pub log_dir: PathBuf,
    /// Extra variables for every process.
    pub env: Vec<(String, String)>,
}

/// One running process.
#[derive(Debug)]
struct Process {
    service: &'static str,
    child: Child,
}

/// The running system.
#[derive(Debug)]
pub struct LocalSystem {
    processes: Vec<Process>,
    gateway: String,
    databases: Vec<String>,
    admin_url: String,
    bao: Bao,
    /// OpenBao's database engine for this system.
    mount: String,
    /// A test run's: its databases, roles and engine go when it stops.
    temporary: bool,
}

/// The Postgres server's admin URL: `DATABASE_URL`, or the local default.
fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl LocalSystem {
    /// Prepares the servers (each database and its role, OpenBao's database
    /// engine and the signing key), starts every process, and
    /// waits until the gateway reaches every public service.
    ///
    /// # Errors
    /// A server is unreachable, a process failed to start, or the system was
    /// not ready within 60 s (the processes are stopped then).
    pub async fn start(options: &Options) -> Result<Self, BoxError> {
        std::fs::create_dir_all(&options.log_dir)?;
        let admin = admin_url();
        let server = ServerUrl::parse(&admin)?;
        let (prefix, mount) = options.run_id.as_ref().map_or_else(
            || ("teamhub".to_owned(), "teamhub-database".to_owned()),
            |run| (format!("teamhub_{run}"), format!("teamhub-{run}-database")),
        );
        let databases: Vec<(&'static str, String)> = system::SERVICES
            .into_iter()
            .filter(|service| *service != crate::gateway::NAME)
            .map(|service| (service, format!("{prefix}_{service}")))
            .collect();
        let names: Vec<String> = databases.iter().map(|(_, d)| d.clone()).collect();
        let bao = Bao::from_env();
        let mut system = Self {
            processes: Vec::new(),
            gateway: String::new(),
            databases: names.clone(),
            admin_url: admin.clone(),
            bao: bao.clone(),
            mount: mount.clone(),
            temporary: options.run_id.is_some(),
        };
        let prepared = async {
            provision::databases(&admin, &names).await?;
            bao.database_engine(&mount, &server, &databases).await?;
            bao.signing_key().await
        }
        .await;
        if let Err(e) = prepared {
            system.stop().await;
            return Err(e);
        }

        let mut shared: Vec<(String, String)> = options.env.clone();
        if let Some(run) = &options.run_id {
            shared.push((
                "MAMEY__DISCOVERY__ETCD__PREFIX".into(),
                format!("/teamhub-{run}/services/"),
            ));
        }
        shared.push(("MAMEY__SECRETS__VAULT__AUTH__TOKEN".into(), Bao::token()));

        let gateway_port = if options.gateway_port == 0 {
            free_port()?
        } else {
            options.gateway_port
        };
        system.gateway = format!("http://127.0.0.1:{gateway_port}");
        for service in system::SERVICES {
            let replicas = if service == boards::NAME || service == notifications::NAME {
                options.replicas.max(1)
            } else {
                1
            };
            for n in 0..replicas {
                let mut env = shared.clone();
                if let Some(run) = &options.run_id {
                    if service != crate::gateway::NAME {
                        env.push((
                            "MAMEY__MESSAGING__CONVENTIONS__EXCHANGE".into(),
                            format!("teamhub-{run}"),
                        ));
                        env.push((
                            "MAMEY__SECRETS__VAULT__DATABASE__DB__MOUNT".into(),
                            mount.clone(),
                        ));
                    }
                    if service == notifications::NAME {
                        env.push(("MAMEY__REDIS__KEY_PREFIX".into(), format!("teamhub-{run}:")));
                    }
                }
                if service == crate::gateway::NAME {
                    env.push((
                        "MAMEY__HTTP__ADDRESS".into(),
                        format!("127.0.0.1:{gateway_port}"),
                    ));
                } else {
                    env.push((
                        "MAMEY__POSTGRES__URL".into(),
                        server.service_url(&format!("{prefix}_{service}")),
                    ));
                }
                let log = options.log_dir.join(format!("{service}-{n}.log"));
                match spawn(&options.exe, service, &env, &log) {
                    Ok(child) => system.processes.push(Process { service, child }),
                    Err(e) => {
                        system.stop().await;
                        return Err(e);
                    }
                }
            }
        }
        if let Err(e) = system.wait_ready(Duration::from_secs(60)).await {
            system.stop().await;
            return Err(e);
        }
        Ok(system)
    }

    /// The gateway's base URL.
    #[must_use]
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Process ids of `service`'s replicas.
    #[must_use]
    pub fn pids(&self, service: &str) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|p| p.service == service)
            .filter_map(|p| p.child.id())
            .collect()
    }

    /// Kills one replica of `service` at once (SIGKILL: no deregistration,
    /// no draining), as a crash would.
    ///
    /// # Errors
    /// No running replica of it.
    pub async fn kill_one(&mut self, service: &str) -> Result<(), BoxError> {
        let index = self
            .processes
            .iter()
            .position(|p| p.service == service)
            .ok_or_else(|| format!("no running `{service}`"))?;
        let mut process = self.processes.remove(index);
        process.child.kill().await?;
        Ok(())
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), BoxError> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let deadline = tokio::time::Instant::now() + within;
        let routed = [
            identity::NAME,
            boards::NAME,
            crate::chat::NAME,
            notifications::NAME,
        ];
        loop {
            for process in &mut self.processes {
                if let Some(status) = process.child.try_wait()? {
                    return Err(format!(
                        "`{}` exited during start-up ({status}); see its log",
                        process.service
                    )
                    .into());
                }
            }
            let mut ready = get_status(&client, &format!("{}/health/ready", self.gateway)).await
                == Some(StatusCode::OK);
            for service in routed {
                if !ready {
                    break;
                }
                let url = format!("{}/api/{service}/health/ready", self.gateway);
                ready = get_status(&client, &url).await == Some(StatusCode::OK);
            }
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the system was not ready within {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s), gateway
    /// first; for a test run, then removes its database engine (revoking
    /// every lease it issued), databases and roles.
    pub async fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            terminate(&mut process.child).await;
        }
        if self.temporary {
            self.bao.unmount(&self.mount).await;
            provision::drop_databases(&self.admin_url, &self.databases).await;
        }
    }
}

/// Starts `exe serve service` with `env`, its output into `log`.
fn spawn(
    exe: &Path,
    service: &str,
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, BoxError> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .args(["serve", service])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting `{service}`: {e}"))?;
    Ok(child)
}

/// SIGTERM (through `kill`, which needs no unsafe code), then SIGKILL.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// A port free now on 127.0.0.1.
fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn get_status(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> Option<StatusCode> {
    let request = Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status())
}

/// `teamhub run-local`: the system with `replicas` of boards and
/// notifications, gateway on 8080, until Ctrl-C.
///
/// # Errors
/// As [`LocalSystem::start`].
pub async fn run(replicas: usize) -> Result<(), BoxError> {
    let options = Options {
        exe: std::env::current_exe()?,
        replicas,
        gateway_port: 8080,
        run_id: None,
        log_dir: PathBuf::from("teamhub-data/logs"),
        env: Vec::new(),
    };
    println!(
        "starting the distributed system (logs in {})",
        options.log_dir.display()
    );
    let system = LocalSystem::start(&options).await?;
    println!(
        "teamhub is running: {} processes; gateway {}",
        system.processes.len(),
        system.gateway()
    );
    println!("Ctrl-C stops them all.");
    tokio::signal::ctrl_c().await?;
    println!("stopping…");
    system.stop().await;
    Ok(())
}
