//! The distributed system on loopback: every service its own process
//! (`teamhub serve NAME`, profile `distributed`) over the real servers —
//! Postgres (a database per service), RabbitMQ, Redis, etcd and OpenBao.
//! `teamhub run-local` runs it until Ctrl-C; the system tests start it with
//! a run id, so that their databases, exchange, registry prefix and Redis
//! keys are their own, and drop the databases afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::BoxError;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::{boards, identity, notifications, system};

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
    drop_databases: bool,
}

/// The Postgres server's admin URL: `DATABASE_URL`, or the local default.
fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

impl LocalSystem {
    /// Prepares the servers (databases, the signing key in OpenBao), starts
    /// every process, and waits until the gateway reaches every public
    /// service.
    ///
    /// # Errors
    /// A server is unreachable, a process failed to start, or the system was
    /// not ready within 60 s (the processes are stopped then).
    pub async fn start(options: &Options) -> Result<Self, BoxError> {
        std::fs::create_dir_all(&options.log_dir)?;
        let admin = admin_url();
        let prefix = options
            .run_id
            .as_ref()
            .map_or_else(|| "teamhub".to_owned(), |run| format!("teamhub_{run}"));
        let mut databases = Vec::new();
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .map_err(|e| format!("connecting to Postgres at DATABASE_URL: {e}"))?;
        for service in system::SERVICES {
            if service == crate::gateway::NAME {
                continue;
            }
            let database = format!("{prefix}_{service}");
            let exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&database)
                    .fetch_optional(&mut connection)
                    .await?;
            if exists.is_none() {
                sqlx::query(&format!("CREATE DATABASE \"{database}\""))
                    .execute(&mut connection)
                    .await?;
            }
            databases.push(database);
        }
        connection.close().await?;
        seed_signing_key().await?;

        let mut shared: Vec<(String, String)> = options.env.clone();
        if let Some(run) = &options.run_id {
            shared.push((
                "MAMEY__DISCOVERY__ETCD__PREFIX".into(),
                format!("/teamhub-{run}/services/"),
            ));
        }
        let vault_token = std::env::var("VAULT_TOKEN").unwrap_or_else(|_| "mamey-dev-root".into());
        shared.push(("MAMEY__SECRETS__VAULT__AUTH__TOKEN".into(), vault_token));

        let gateway_port = if options.gateway_port == 0 {
            free_port()?
        } else {
            options.gateway_port
        };
        let mut system = Self {
            processes: Vec::new(),
            gateway: format!("http://127.0.0.1:{gateway_port}"),
            databases,
            admin_url: admin.clone(),
            drop_databases: options.run_id.is_some(),
        };
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
                    let database = format!("{prefix}_{service}");
                    env.push((
                        "MAMEY__POSTGRES__URL".into(),
                        with_database(&admin, &database),
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

    /// Stops every process (SIGTERM, then SIGKILL after 20 s), gateway first,
    /// and drops this run's databases.
    pub async fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            terminate(&mut process.child).await;
        }
        if self.drop_databases
            && let Ok(mut connection) = sqlx::PgConnection::connect(&self.admin_url).await
        {
            for database in &self.databases {
                let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                let _ = sqlx::query(&drop).execute(&mut connection).await;
            }
            let _ = connection.close().await;
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

/// Writes a signing key to OpenBao's KV (`secret/teamhub/signing`, and its
/// public half to `secret/teamhub/jwt`) unless one is there.
async fn seed_signing_key() -> Result<(), BoxError> {
    let address = std::env::var("VAULT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".into());
    let token = std::env::var("VAULT_TOKEN").unwrap_or_else(|_| "mamey-dev-root".into());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let request = Request::builder()
            .method(method)
            .uri(format!("{address}/v1/secret/data/{path}"))
            .header("x-vault-token", &token)
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )));
        let client = client.clone();
        async move {
            let response = client.request(request?).await?;
            let status = response.status();
            let _ = response.into_body().collect().await?;
            Ok::<StatusCode, BoxError>(status)
        }
    };
    let present = call(Method::GET, "teamhub/signing", None)
        .await
        .map_err(|e| format!("reaching OpenBao at VAULT_ADDR ({address}): {e}"))?;
    if present == StatusCode::OK {
        return Ok(());
    }
    let (private_pem, public_pem, key_id) = identity::signing_secret()?;
    for (path, data) in [
        (
            "teamhub/signing",
            json!({ "private_key_pem": private_pem, "key_id": key_id }),
        ),
        ("teamhub/jwt", json!({ "public_key_pem": public_pem })),
    ] {
        let status = call(Method::POST, path, Some(json!({ "data": data }))).await?;
        if !status.is_success() {
            return Err(format!("OpenBao refused writing secret/{path}: {status}").into());
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_swap_the_database() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "teamhub_boards"
            ),
            "postgres://postgres@127.0.0.1:5432/teamhub_boards"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432/x?sslmode=require", "y"),
            "postgres://u:p@db:5432/y?sslmode=require"
        );
    }
}
