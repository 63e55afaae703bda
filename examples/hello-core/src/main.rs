//! The smallest complete mamey service: a plug-in of its own with a config
//! section, a command and an event with their handlers, a health check, and
//! a background task. It greets on a timer until Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run -p hello-core                    # run; Ctrl-C to stop
//! cargo run -p hello-core -- --print-config  # print the effective config
//! MAMEY__GREETER__GREETING=Hi cargo run -p hello-core
//! ```

mod greeter;

use mamey_core::{BoxError, Service};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let service = Service::builder("hello-core")
        .version(env!("CARGO_PKG_VERSION"))
        .config_dir(config_dir())
        .plugin(greeter::GreeterPlugin::default())
        .build()
        .await?;

    if std::env::args().any(|arg| arg == "--print-config") {
        print!("{}", service.effective_config());
        return Ok(());
    }
    service.run().await?;
    Ok(())
}

/// `MAMEY_CONFIG_DIR` if set, else `config/` beside this crate's manifest
/// when run through cargo, else `config/` in the working directory.
fn config_dir() -> std::path::PathBuf {
    std::env::var_os("MAMEY_CONFIG_DIR")
        .map(Into::into)
        .or_else(|| {
            std::env::var_os("CARGO_MANIFEST_DIR").map(|d| std::path::Path::new(&d).join("config"))
        })
        .unwrap_or_else(|| "config".into())
}
