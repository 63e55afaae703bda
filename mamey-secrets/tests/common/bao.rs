//! OpenBao as root, for set-up and clean-up, and PostgreSQL as its
//! database engine reaches it.

use serde_json::Value;

use super::{required, unique};

pub const ADDRESS: &str = "http://127.0.0.1:8200";
pub const ROOT_TOKEN: &str = "mamey-dev-root";

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
    /// Runs `test`, then the clean-up, then re-raises a failure, so a
    /// failing test leaves nothing behind either.
    pub async fn around(self, test: impl std::future::Future<Output = ()>) {
        use futures_util::FutureExt;
        let outcome = std::panic::AssertUnwindSafe(test).catch_unwind().await;
        self.run().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
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

/// Mounts a PKI engine with a root CA and a role `service` issuing for
/// `localhost` and IP addresses; answers the mount.
pub async fn pki_engine(bao: &Bao, cleanup: &mut Cleanup) -> String {
    let pki = unique("pki");
    bao.mount(&pki, "pki", serde_json::json!({ "max_lease_ttl": "1h" }))
        .await;
    cleanup.mount(&pki);
    bao.post(
        &format!("{pki}/root/generate/internal"),
        serde_json::json!({ "common_name": "mamey test CA", "ttl": "1h" }),
    )
    .await;
    bao.post(
        &format!("{pki}/roles/service"),
        serde_json::json!({
            "allowed_domains": ["localhost"],
            "allow_localhost": true,
            "allow_bare_domains": true,
            "allow_ip_sans": true,
            "max_ttl": "1h",
        }),
    )
    .await;
    pki
}
