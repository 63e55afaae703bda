//! The example's own plug-in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mamey_core::config::ConfigSection;
use mamey_core::cqrs::{Command, Dispatcher, Event, Res};
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, Error, InitContext, MessageContext, Plugin, StartContext};
use serde::{Deserialize, Serialize};

/// The `[greeter]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GreeterConfig {
    /// The word to greet with. Default: `"Hello"`.
    pub(crate) greeting: String,
    /// Who to greet, in turn. Default: `["world"]`.
    pub(crate) names: Vec<String>,
    /// How often to greet. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub(crate) interval: Duration,
}

impl Default for GreeterConfig {
    fn default() -> Self {
        Self {
            greeting: "Hello".into(),
            names: vec!["world".into()],
            interval: Duration::from_secs(1),
        }
    }
}

impl ConfigSection for GreeterConfig {
    const KEY: &'static str = "greeter";
}

/// Command: greet someone.
pub(crate) struct Greet {
    /// Who.
    pub(crate) name: String,
}

impl Command for Greet {
    fn validate(&self) -> Result<(), Error> {
        if self.name.trim().is_empty() {
            return Err(
                Error::invalid_input("greet.invalid", "nobody to greet").with_field(
                    "name",
                    "required",
                    "must not be empty",
                ),
            );
        }
        Ok(())
    }
}

/// Event: someone was greeted.
#[derive(Clone)]
pub(crate) struct Greeted {
    /// Who.
    pub(crate) name: String,
}

impl Event for Greeted {}

/// Greetings so far; a resource other plug-ins and handlers can read.
#[derive(Clone, Default)]
pub(crate) struct GreetingCount(Arc<AtomicU64>);

impl GreetingCount {
    /// The count.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The configured greeting, provided by the plug-in for the `Greet` handler.
#[derive(Clone)]
struct Greeting(Arc<str>);

/// Greets, then tells everyone interested through the service's dispatcher.
async fn greet(
    cmd: Greet,
    Res(Greeting(greeting)): Res<Greeting>,
    Res(dispatcher): Res<Dispatcher>,
) -> Result<(), Error> {
    tracing::info!("{greeting}, {}!", cmd.name);
    dispatcher.publish(Greeted { name: cmd.name }).await
}

async fn count_greeting(_: Greeted, Res(count): Res<GreetingCount>) -> Result<(), Error> {
    count.0.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn log_greeting(event: Greeted, ctx: MessageContext) -> Result<(), Error> {
    tracing::debug!(name = %event.name, correlation_id = %ctx.correlation_id, "greeted");
    Ok(())
}

/// Greets the configured names on a timer.
#[derive(Default)]
pub(crate) struct GreeterPlugin {
    config: GreeterConfig,
    count: GreetingCount,
}

impl Plugin for GreeterPlugin {
    fn name(&self) -> &'static str {
        "greeter"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        self.config = ctx.section::<GreeterConfig>()?;
        if self.config.names.is_empty() {
            return Err(ctx
                .config()
                .invalid("greeter.names", "expected at least one name")
                .into());
        }
        if self.config.interval.is_zero() {
            return Err(ctx
                .config()
                .invalid("greeter.interval", "expected a positive duration")
                .into());
        }
        ctx.provide(self.count.clone())?;
        ctx.provide(Greeting(self.config.greeting.as_str().into()))?;
        ctx.dispatcher()
            .command(greet)
            .event(count_greeting)
            .event(log_greeting);

        ctx.health().register("greeter", &[Probe::Ready], || async {
            HealthStatus::healthy()
        });
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let dispatcher = ctx.dispatcher().clone();
        let stop = ctx.shutdown_token();
        let (names, period) = (self.config.names.clone(), self.config.interval);
        ctx.spawn("greet-timer", async move {
            let mut ticks = tokio::time::interval(period);
            for name in names.iter().cycle() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                // Each tick is a unit of work of its own, with its own ids.
                let greet = Greet { name: name.clone() };
                if let Err(error) = MessageContext::new().scope(dispatcher.send(greet)).await {
                    tracing::warn!(%error, "greeting failed");
                }
            }
            Ok(())
        });
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        tracing::info!(greetings = self.count.get(), "greeter stopping");
        Ok(())
    }
}
