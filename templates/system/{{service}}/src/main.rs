//! Runs {{service}} until Ctrl-C or SIGTERM: `cargo run -p {{service}}` from
//! the workspace's root (it reads `config/`). `--print-config` prints the
//! configuration it would run with and exits.

use mamey_core::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let service = {{service | replace: "-", "_"}}::service().build().await?;
    if std::env::args().any(|arg| arg == "--print-config") {
        print!("{}", service.effective_config());
        return Ok(());
    }
    service.run().await?;
    Ok(())
}
