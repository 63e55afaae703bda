//! What an operator does once, done here against the dev server so the
//! example runs on its own: the KV secret, and the database engine with a
//! role for the service. Re-running it is harmless.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mamey_core::BoxError;
use serde_json::{Value, json};

const ROOT_TOKEN: &str = "mamey-dev-root";

/// Prepares Vault for the chosen mode.
pub(crate) async fn prepare(address: &str, dynamic: bool) -> Result<(), BoxError> {
    let vault = Admin {
        http: Client::builder(TokioExecutor::new()).build_http(),
        address: address.trim_end_matches('/').to_owned(),
    };
    if dynamic {
        // Allowed to fail when the engine is already mounted.
        let _ = vault
            .put("sys/mounts/database", json!({ "type": "database" }))
            .await;
        vault
            .put(
                "database/config/orders-pg",
                json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
                    "username": "postgres",
                    "password": "unused-under-local-trust-auth",
                    "allowed_roles": ["orders"],
                }),
            )
            .await?;
        // Short lives so rotations show within seconds; hours in production.
        vault
            .put(
                "database/roles/orders",
                json!({
                    "db_name": "orders-pg",
                    "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                    "default_ttl": "4s",
                    "max_ttl": "10s",
                }),
            )
            .await?;
        println!("setup: database engine with role `orders` (credentials live 4 s, at most 10 s)");
    } else {
        vault
            .put(
                "secret/data/orders/db",
                json!({ "data": { "password": "example-password" } }),
            )
            .await?;
        println!("setup: KV secret secret/orders/db with key `password`");
    }
    Ok(())
}

/// Vault's HTTP API as root, over plain HTTP: the dev server listens on
/// loopback without TLS.
struct Admin {
    http: Client<HttpConnector, Full<Bytes>>,
    address: String,
}

impl Admin {
    async fn put(&self, path: &str, body: Value) -> Result<(), BoxError> {
        let request = http::Request::put(format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.http.request(request).await.map_err(|e| {
            format!(
                "Vault at {} is not answering ({e}); run `scripts/services.sh up openbao`",
                self.address
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.into_body().collect().await?.to_bytes();
            return Err(format!(
                "setting up {path}: {status} {}",
                String::from_utf8_lossy(&text)
            )
            .into());
        }
        Ok(())
    }
}
