//! What the distributed system needs from the servers before its processes
//! start, and its removal after a test run:
//!
//! - **Postgres**: per service, a database and a role of the same name
//!   (`teamhub_boards`, no login) that owns it and everything in it;
//! - **OpenBao**: a database secrets engine that issues each service login
//!   roles which are members of its role and act as it (`ALTER ROLE … SET
//!   role`), so tables made by one lease's user stay usable after a rotation
//!   and revoking a lease drops a role that owns nothing; and the JWT
//!   signing key in KV (`secret/teamhub/signing`, public half
//!   `secret/teamhub/jwt`).
//!
//! Services connect with those credentials (`postgres.credentials = "db"`,
//! `secrets.vault.database.db` in each `config/{service}-distributed.toml`):
//! the launcher gives them the database's URL without a user.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mamey_core::BoxError;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::identity;

/// How long a lease's user lives before the service renews it, and at most.
const LEASE_TTL: &str = "1h";
const LEASE_MAX_TTL: &str = "24h";

/// A Postgres server URL taken apart: `postgres://user[:password]@host[:port]/database[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerUrl {
    user: String,
    password: Option<String>,
    /// `host[:port]`.
    address: String,
    database: String,
    query: Option<String>,
}

impl ServerUrl {
    /// Parses `url`; the error names `DATABASE_URL`, where it comes from.
    pub(super) fn parse(url: &str) -> Result<Self, BoxError> {
        let shape = || {
            format!(
                "DATABASE_URL: expected postgres://user[:password]@host[:port]/database, got `{}`",
                url.rsplit_once('@').map_or(url, |(_, at)| at)
            )
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(shape)?;
        let (rest, query) = rest
            .split_once('?')
            .map_or((rest, None), |(r, q)| (r, Some(q.to_owned())));
        let (credentials, rest) = rest.rsplit_once('@').ok_or_else(shape)?;
        let (address, database) = rest.split_once('/').ok_or_else(shape)?;
        let (user, password) = credentials
            .split_once(':')
            .map_or((credentials, None), |(u, p)| (u, Some(p.to_owned())));
        if user.is_empty() || address.is_empty() || database.is_empty() {
            return Err(shape().into());
        }
        Ok(Self {
            user: user.to_owned(),
            password,
            address: address.to_owned(),
            database: database.to_owned(),
            query,
        })
    }

    /// The URL of `database` on this server, without a user: a service
    /// connects to it with the credentials OpenBao issues.
    pub(super) fn service_url(&self, database: &str) -> String {
        let query = self
            .query
            .as_ref()
            .map_or(String::new(), |q| format!("?{q}"));
        format!("postgres://{}/{database}{query}", self.address)
    }

    /// The URL OpenBao's database engine connects with, in its template form.
    fn engine_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}?sslmode=disable",
            self.address, self.database
        )
    }
}

/// Creates, where missing, each database in `databases` and the role of the
/// same name that owns it.
///
/// # Errors
/// Postgres is unreachable, or a database exists owned by another role (made
/// by an older teamhub): the error says how to remove it.
pub(super) async fn databases(admin: &str, databases: &[String]) -> Result<(), BoxError> {
    let mut connection = sqlx::PgConnection::connect(admin)
        .await
        .map_err(|e| format!("connecting to Postgres at DATABASE_URL: {e}"))?;
    for database in databases {
        let role: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(database)
            .fetch_optional(&mut connection)
            .await?;
        if role.is_none() {
            sqlx::query(&format!("CREATE ROLE \"{database}\" NOLOGIN"))
                .execute(&mut connection)
                .await?;
        }
        let owner: Option<(String,)> = sqlx::query_as(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(database)
        .fetch_optional(&mut connection)
        .await?;
        match owner {
            None => {
                sqlx::query(&format!(
                    "CREATE DATABASE \"{database}\" OWNER \"{database}\""
                ))
                .execute(&mut connection)
                .await?;
            }
            Some((owner,)) if owner != *database => {
                return Err(format!(
                    "the database `{database}` is owned by `{owner}`, not by the role \
                     `{database}` the services act as; drop it (`dropdb {database}`) and \
                     start again"
                )
                .into());
            }
            Some(_) => {}
        }
    }
    connection.close().await?;
    Ok(())
}

/// Drops `databases` and their roles (a test run's).
pub(super) async fn drop_databases(admin: &str, databases: &[String]) {
    let Ok(mut connection) = sqlx::PgConnection::connect(admin).await else {
        return;
    };
    for database in databases {
        for statement in [
            format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS \"{database}\""),
        ] {
            if let Err(e) = sqlx::query(&statement).execute(&mut connection).await {
                eprintln!("teamhub: {statement}: {e}");
            }
        }
    }
    let _ = connection.close().await;
}

/// OpenBao's HTTP API, with the token of `VAULT_TOKEN`.
#[derive(Debug, Clone)]
pub(super) struct Bao {
    address: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Bao {
    /// OpenBao at `VAULT_ADDR` (default `http://127.0.0.1:8200`) with
    /// `VAULT_TOKEN` (default the dev server's `mamey-dev-root`).
    pub(super) fn from_env() -> Self {
        Self {
            address: std::env::var("VAULT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".into()),
            token: Self::token(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The token the services log in with too.
    pub(super) fn token() -> String {
        std::env::var("VAULT_TOKEN").unwrap_or_else(|_| "mamey-dev-root".into())
    }

    /// `method /v1/{path}`: the status and the JSON answer (`null` when
    /// empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), BoxError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", self.address))
            .header("x-vault-token", &self.token)
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("reaching OpenBao at VAULT_ADDR ({}): {e}", self.address))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, answer))
    }

    /// `call`, failing with OpenBao's errors unless the status is a success.
    async fn expect(&self, method: Method, path: &str, body: Value) -> Result<Value, BoxError> {
        let (status, answer) = self.call(method.clone(), path, Some(body)).await?;
        if !status.is_success() {
            return Err(format!(
                "OpenBao refused {method} {path}: {status} {}",
                answer["errors"]
            )
            .into());
        }
        Ok(answer)
    }

    /// Mounts a database engine at `mount` (unless one is there) wired to
    /// the Postgres of `admin`, with a role per service issuing login roles
    /// that act as the service's database role (`databases`, by service).
    pub(super) async fn database_engine(
        &self,
        mount: &str,
        admin: &ServerUrl,
        databases: &[(&str, String)],
    ) -> Result<(), BoxError> {
        let (_, mounts) = self.call(Method::GET, "sys/mounts", None).await?;
        if mounts["data"][format!("{mount}/")].is_null() && mounts[format!("{mount}/")].is_null() {
            self.expect(
                Method::POST,
                &format!("sys/mounts/{mount}"),
                json!({ "type": "database" }),
            )
            .await?;
        }
        self.expect(
            Method::POST,
            &format!("{mount}/config/postgres"),
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": admin.engine_url(),
                "username": admin.user,
                "password": admin.password.clone().unwrap_or_default(),
                "allowed_roles": "*",
                "verify_connection": true,
            }),
        )
        .await?;
        for (service, database) in databases {
            self.expect(
                Method::POST,
                &format!("{mount}/roles/{service}"),
                json!({
                    "db_name": "postgres",
                    "creation_statements": [
                        format!("CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{database}\";"),
                        format!("ALTER ROLE \"{{{{name}}}}\" SET role = '{database}';"),
                    ],
                    "default_ttl": LEASE_TTL,
                    "max_ttl": LEASE_MAX_TTL,
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Unmounts `mount`, which revokes every lease it issued (and so drops
    /// their login roles).
    pub(super) async fn unmount(&self, mount: &str) {
        match self
            .call(Method::DELETE, &format!("sys/mounts/{mount}"), None)
            .await
        {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, answer)) => {
                eprintln!("teamhub: unmounting {mount}: {status} {}", answer["errors"]);
            }
            Err(e) => eprintln!("teamhub: unmounting {mount}: {e}"),
        }
    }

    /// Writes a signing key to KV (`secret/teamhub/signing`, and its public
    /// half to `secret/teamhub/jwt`) unless one is there.
    pub(super) async fn signing_key(&self) -> Result<(), BoxError> {
        let (present, _) = self
            .call(Method::GET, "secret/data/teamhub/signing", None)
            .await?;
        if present == StatusCode::OK {
            return Ok(());
        }
        let (private_pem, public_pem, key_id) = identity::signing_secret()?;
        self.expect(
            Method::POST,
            "secret/data/teamhub/signing",
            json!({ "data": { "private_key_pem": private_pem, "key_id": key_id } }),
        )
        .await?;
        self.expect(
            Method::POST,
            "secret/data/teamhub/jwt",
            json!({ "data": { "public_key_pem": public_pem } }),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_come_apart_and_lose_their_user_for_services() {
        let url = ServerUrl::parse("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(url.user, "postgres");
        assert_eq!(url.password, None);
        assert_eq!(
            url.service_url("teamhub_boards"),
            "postgres://127.0.0.1:5432/teamhub_boards"
        );
        assert_eq!(
            url.engine_url(),
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
        );

        let url = ServerUrl::parse("postgresql://u:p@w@db:5433/x?sslmode=require").unwrap();
        assert_eq!(
            (url.user.as_str(), url.password.as_deref()),
            ("u", Some("p@w"))
        );
        assert_eq!(url.service_url("y"), "postgres://db:5433/y?sslmode=require");
    }

    #[test]
    fn a_malformed_server_url_is_named_without_its_password() {
        for bad in [
            "mysql://a@b/c",
            "postgres://127.0.0.1/db",
            "postgres://u:secret@host",
        ] {
            let error = ServerUrl::parse(bad).unwrap_err().to_string();
            assert!(error.starts_with("DATABASE_URL: expected"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
