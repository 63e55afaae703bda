//! Configuration: overlays, sections of your own, secrets.

use mamey_core::config::ConfigSection;
use mamey_core::{BoxError, InitContext, Plugin, Service, ServiceBuilder};

// ANCHOR: overlay
use mamey_core::config::figment::value::{Dict, Value};
use mamey_core::config::{Config, ConfigOverlay};

/// Reads the database password from a mounted secret file.
#[derive(Debug)]
pub struct MountedSecret {
    path: std::path::PathBuf,
}

impl ConfigOverlay for MountedSecret {
    fn name(&self) -> &str {
        "mounted-secret"
    }

    async fn fetch(&mut self, _base: &Config) -> Result<Dict, BoxError> {
        let password = std::fs::read_to_string(&self.path)?;
        let mut database = Dict::new();
        database.insert("password".into(), Value::from(password.trim().to_owned()));
        Ok(Dict::from([("database".to_owned(), Value::from(database))]))
    }
}

/// The service, with the overlay.
pub fn service() -> ServiceBuilder {
    Service::builder("orders").config_overlay(MountedSecret {
        path: "/run/secrets/db_password".into(),
    })
    // .plugin(...)
}
// ANCHOR_END: overlay

// ANCHOR: section
use std::time::Duration;

use mamey_core::config::Secret;
use serde::{Deserialize, Serialize};

/// The `[mailer]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailerConfig {
    /// SMTP server. Default: `localhost`.
    pub host: String,
    /// SMTP port. Default: `25`.
    pub port: u16,
    /// SMTP password. Default: empty.
    pub password: Secret<String>,
    /// How long one delivery may take. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub timeout: Duration,
}

impl Default for MailerConfig {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 25,
            password: Secret::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl ConfigSection for MailerConfig {
    const KEY: &'static str = "mailer";
}
// ANCHOR_END: section

/// Sends mail.
#[derive(Debug)]
pub struct Mailer;

// ANCHOR: validate
impl Plugin for Mailer {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<MailerConfig>()?;
        if config.port == 0 {
            return Err(ctx.config().invalid("mailer.port", "must not be 0").into());
        }
        // connect, provide, register ...
        Ok(())
    }
}
// ANCHOR_END: validate

/// A connection to an SMTP server.
#[derive(Debug)]
pub struct SmtpClient {
    /// `host:port`.
    pub address: String,
    authenticated: bool,
}

/// Connects to the SMTP server (here: only remembers where it is).
pub fn smtp_connect(host: &str, port: u16, password: &str) -> SmtpClient {
    SmtpClient {
        address: format!("{host}:{port}"),
        authenticated: !password.is_empty(),
    }
}

impl SmtpClient {
    /// Whether a password was given.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }
}

// ANCHOR: secret
/// Reads the section, logs it, and connects with the password.
pub fn connect(ctx: &InitContext<'_>) -> Result<SmtpClient, BoxError> {
    let config = ctx.section::<MailerConfig>()?;
    tracing::info!(?config, "mailer configured"); // password = [redacted]
    let client = smtp_connect(&config.host, config.port, config.password.expose());
    Ok(client)
}
// ANCHOR_END: secret

#[cfg(test)]
mod tests {
    use mamey_core::config::Secret;

    use super::MailerConfig;

    #[test]
    fn the_password_is_redacted() {
        let config = MailerConfig {
            password: Secret::from("hunter2".to_owned()),
            ..MailerConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(config.password.expose(), "hunter2");
    }
}
