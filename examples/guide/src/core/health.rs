//! Health checks.

use std::net::SocketAddr;
use std::time::Duration;

use mamey_core::config::ConfigSection;
use mamey_core::{BoxError, InitContext, Plugin};
use serde::{Deserialize, Serialize};

/// The `[database]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Where the database listens. Default: `127.0.0.1:5432`.
    pub address: SocketAddr,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 5432)),
        }
    }
}

impl ConfigSection for DatabaseConfig {
    const KEY: &'static str = "database";
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pool {
    address: SocketAddr,
}

impl Pool {
    /// Whether the database accepts a connection within a second.
    pub async fn ping(&self) -> Result<(), std::io::Error> {
        let connect = tokio::net::TcpStream::connect(self.address);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(connected) => connected.map(drop),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Connects to the database.
pub async fn connect(config: &DatabaseConfig) -> Result<Pool, BoxError> {
    let pool = Pool {
        address: config.address,
    };
    pool.ping().await?;
    Ok(pool)
}

/// Provides the [`Pool`], with a readiness check.
#[derive(Debug)]
pub struct Database;

// ANCHOR: health
use mamey_core::health::{HealthStatus, Probe};

impl Plugin for Database {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let pool = connect(&ctx.section::<DatabaseConfig>()?).await?;
        let probe_pool = pool.clone();
        ctx.health().register("database", &[Probe::Ready], move || {
            let pool = probe_pool.clone();
            async move {
                match pool.ping().await {
                    Ok(()) => HealthStatus::healthy(),
                    Err(error) => HealthStatus::unhealthy(error.to_string()),
                }
            }
        });
        ctx.provide(pool)?;
        Ok(())
    }
}
// ANCHOR_END: health
