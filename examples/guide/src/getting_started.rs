//! The chapter "Getting started" (`docs/src/getting-started.md`).

// ANCHOR: minimal
use mamey_core::config::ConfigSection;
use mamey_core::cqrs::{Command, Res};
use mamey_core::{BoxError, Error, InitContext, Plugin, Service, StartContext};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The `[greeter]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreeterConfig {
    /// What to say. Default: "Hello".
    pub greeting: String,
}

impl Default for GreeterConfig {
    fn default() -> Self {
        Self {
            greeting: "Hello".to_owned(),
        }
    }
}

impl ConfigSection for GreeterConfig {
    const KEY: &'static str = "greeter";
}

/// A command: greet someone.
#[derive(Debug)]
pub struct SayHello {
    /// Whom to greet.
    pub name: String,
}

impl Command for SayHello {
    fn validate(&self) -> Result<(), Error> {
        if self.name.trim().is_empty() {
            return Err(
                Error::invalid_input("greeting.invalid", "nobody to greet").with_field(
                    "name",
                    "required",
                    "must not be empty",
                ),
            );
        }
        Ok(())
    }
}

/// The command's handler: the command first, then what it needs, which the
/// dispatcher supplies — here the configuration, as a resource.
async fn say_hello(cmd: SayHello, Res(config): Res<GreeterConfig>) -> Result<(), Error> {
    tracing::info!("{}, {}!", config.greeting, cmd.name);
    Ok(())
}

/// The service's own plug-in.
#[derive(Debug)]
pub struct Greeter;

impl Plugin for Greeter {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<GreeterConfig>()?;
        ctx.provide(config)?; // a resource, for `say_hello`
        ctx.dispatcher().command(say_hello);
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        // Nothing sends commands yet (no HTTP or broker plug-in), so greet once.
        ctx.dispatcher()
            .send(SayHello {
                name: "mamey".into(),
            })
            .await?;
        Ok(())
    }
}

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    Service::builder("hello")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Greeter)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
// ANCHOR_END: minimal

// ANCHOR: print_config
/// The program, with a `--print-config` flag.
pub async fn main_with_print_config() -> Result<(), BoxError> {
    let service = Service::builder("hello")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Greeter)
        .build()
        .await?;
    if std::env::args().any(|arg| arg == "--print-config") {
        print!("{}", service.effective_config());
        return Ok(());
    }
    service.run().await?;
    Ok(())
}
// ANCHOR_END: print_config
