//! Helpers for the tests against a real OpenBao (`scripts/services.sh up
//! openbao`): the server's HTTP API with the root token for set-up and
//! clean-up, unique names, a config directory, and captured logs.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub const ADDRESS: &str = "http://127.0.0.1:8200";
pub const ROOT_TOKEN: &str = "mamey-dev-root";

/// Whether a missing server fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// OpenBao's HTTP API as root, for set-up and clean-up.
#[derive(Clone)]
pub struct Bao {
    http: reqwest::Client,
}

impl Bao {
    /// The dev server, or `None` (after saying why) when it is not running
    /// and servers are not required.
    pub async fn connect() -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bao = Self {
            http: reqwest::Client::builder().build().unwrap(),
        };
        match bao
            .http
            .get(format!("{ADDRESS}/v1/sys/health"))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => Some(bao),
            other => {
                assert!(
                    !required(),
                    "OpenBao is required (MAMEY_REQUIRE_SERVICES=1) but not answering at {ADDRESS}: {other:?}; run `scripts/services.sh up openbao`"
                );
                eprintln!(
                    "SKIPPED: OpenBao is not running at {ADDRESS} (scripts/services.sh up openbao)"
                );
                None
            }
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{ADDRESS}/v1/{path}"))
            .header("X-Vault-Token", ROOT_TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Deletes, ignoring failures (clean-up).
    pub async fn delete(&self, path: &str) {
        let _ = self
            .http
            .delete(format!("{ADDRESS}/v1/{path}"))
            .header("X-Vault-Token", ROOT_TOKEN)
            .send()
            .await;
    }

    /// Mounts a secrets engine at `path`.
    pub async fn mount(&self, path: &str, kind: &str, options: Value) {
        self.post(
            &format!("sys/mounts/{path}"),
            serde_json::json!({ "type": kind, "options": options }),
        )
        .await;
    }

    /// Enables an auth method at `path`.
    pub async fn enable_auth(&self, path: &str, kind: &str) {
        self.post(
            &format!("sys/auth/{path}"),
            serde_json::json!({ "type": kind }),
        )
        .await;
    }

    /// A policy allowing everything under the given path globs.
    pub async fn policy(&self, name: &str, paths: &[&str]) {
        let rules: String = paths
            .iter()
            .map(|p| format!("path \"{p}\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n"))
            .collect();
        self.post(
            &format!("sys/policies/acl/{name}"),
            serde_json::json!({ "policy": rules }),
        )
        .await;
    }
}

/// Removes mounts, auth methods and policies when dropped.
pub struct Cleanup {
    bao: Bao,
    mounts: Vec<String>,
    auths: Vec<String>,
    policies: Vec<String>,
}

impl Cleanup {
    pub fn new(bao: &Bao) -> Self {
        Self {
            bao: bao.clone(),
            mounts: Vec::new(),
            auths: Vec::new(),
            policies: Vec::new(),
        }
    }
    pub fn mount(&mut self, path: &str) {
        self.mounts.push(path.to_owned());
    }
    pub fn auth(&mut self, path: &str) {
        self.auths.push(path.to_owned());
    }
    pub fn policy(&mut self, name: &str) {
        self.policies.push(name.to_owned());
    }
    pub async fn run(self) {
        for mount in &self.mounts {
            self.bao.delete(&format!("sys/mounts/{mount}")).await;
        }
        for auth in &self.auths {
            self.bao.delete(&format!("sys/auth/{auth}")).await;
        }
        for policy in &self.policies {
            self.bao.delete(&format!("sys/policies/acl/{policy}")).await;
        }
    }
}

/// A config directory holding `default.toml` with `text`.
pub fn config_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), text).unwrap();
    dir
}

/// Log lines written while the returned guard lives (this thread; the
/// tests run on a current-thread runtime).
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Buffer(Arc::clone(&buffer));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), buffer)
}

pub fn logged(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` until it answers `Some`, or panics after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// PostgreSQL as the database engine reaches it (trust auth locally).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Mounts a database secrets engine wired to the local PostgreSQL, with a
/// role issuing login roles for `ttl` seconds, renewable up to `max_ttl`.
/// Answers the mount and the role name.
pub async fn database_engine(
    bao: &Bao,
    cleanup: &mut Cleanup,
    ttl: u64,
    max_ttl: u64,
) -> (String, String) {
    let mount = unique("db");
    bao.mount(&mount, "database", serde_json::json!({})).await;
    cleanup.mount(&mount);
    bao.post(
        &format!("{mount}/config/pg"),
        serde_json::json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
            "username": "postgres",
            "password": "unused-under-trust-auth",
            "allowed_roles": ["app"],
            "verify_connection": true,
        }),
    )
    .await;
    bao.post(
        &format!("{mount}/roles/app"),
        serde_json::json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "default_ttl": format!("{ttl}s"),
            "max_ttl": format!("{max_ttl}s"),
        }),
    )
    .await;
    (mount, "app".to_owned())
}

/// Whether `username` exists as a login role in PostgreSQL now.
pub async fn role_exists(username: &str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(POSTGRES_URL).await.unwrap();
    let found: Option<(String,)> =
        sqlx::query_as("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
            .bind(username)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    found.is_some()
}

/// Connects as `username`/`password` and answers `current_user`.
pub async fn connect_as(username: &str, password: &str) -> Result<String, sqlx::Error> {
    use sqlx::Connection;
    use sqlx::postgres::PgConnectOptions;
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(5432)
        .database("postgres")
        .username(username)
        .password(password);
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    let (user,): (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await?;
    Ok(user)
}
