//! Runs {{project-name}} until Ctrl-C or SIGTERM, then stops it gracefully.
//! `--print-config` prints the configuration it would run with, secrets
//! redacted, and exits.

use mamey_core::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let service = {{crate_name}}::service().build().await?;
    if std::env::args().any(|arg| arg == "--print-config") {
        print!("{}", service.effective_config());
        return Ok(());
    }
    service.run().await?;
    Ok(())
}
