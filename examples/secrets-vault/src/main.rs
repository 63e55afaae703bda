//! A service whose database password lives in Vault (tested on OpenBao),
//! never in its files.
//!
//! - `cargo run -p secrets-vault`: the `postgres.password` key comes from
//!   the KV secret `secret/orders/db`; the service connects and shows that
//!   its printed configuration keeps the password out.
//! - `cargo run -p secrets-vault -- --dynamic [--seconds 20]`: Vault's
//!   database engine issues the service its own login role; the lease is
//!   renewed, and new credentials are issued before it reaches its maximum.
//!   The service queries all along and prints each rotation, then how many
//!   queries failed (none).
//!
//! Needs PostgreSQL on 127.0.0.1:5432 and OpenBao on 127.0.0.1:8200
//! (`scripts/services.sh up openbao`).

mod setup;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use mamey_core::credentials::CredentialSources;
use mamey_core::{BoxError, Service};
use mamey_persistence::postgres::{PgPool, Postgres};
use mamey_secrets::Secrets;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dynamic = args.iter().any(|a| a == "--dynamic");
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(20), |s| s.parse())
        .map_err(|_| "--seconds takes a whole number")?;
    let address = std::env::var("VAULT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".into());
    setup::prepare(&address, dynamic).await?;

    let config = std::env::var_os("MAMEY_CONFIG_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
        PathBuf::from,
    );
    let service = Service::builder("orders")
        .config_dir(config)
        .profile(if dynamic { "dynamic" } else { "kv" })
        .env_vars(std::env::vars().chain([("MAMEY__SECRETS__VAULT__ADDRESS".to_owned(), address)]))
        .plugin(Secrets::new())
        .plugin(Postgres::new())
        .build()
        .await?;
    let pool: PgPool = service.resources().get()?;

    if !dynamic {
        let user: String = current_user(&pool).await?;
        println!(
            "connected to Postgres as `{user}` with the password from Vault KV secret/orders/db"
        );
        for line in service
            .effective_config()
            .lines()
            .filter(|l| l.starts_with("password"))
        {
            println!("printed configuration: {line}");
        }
        return Ok(());
    }

    let mut credentials = service
        .resources()
        .get::<CredentialSources>()?
        .get("orders")
        .ok_or("no credentials source `orders`")?;
    println!("serving as `{}`", credentials.borrow_and_update().username);
    let running = service.start().await?;
    let rotations = tokio::spawn(async move {
        let mut count = 0u32;
        while credentials.changed().await.is_ok() {
            count += 1;
            println!(
                "rotation {count}: new credentials `{}`",
                credentials.borrow_and_update().username
            );
        }
    });

    let (mut queries, mut failed) = (0u32, 0u32);
    let mut users = BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < until {
        queries += 1;
        match current_user(&pool).await {
            Ok(user) => {
                users.insert(user);
            }
            Err(error) => {
                failed += 1;
                eprintln!("query failed: {error}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await?;
    rotations.abort();
    println!(
        "{queries} queries, {failed} failed, served as {} roles",
        users.len()
    );
    if failed > 0 {
        return Err(format!("{failed} queries failed").into());
    }
    Ok(())
}

async fn current_user(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await
}
