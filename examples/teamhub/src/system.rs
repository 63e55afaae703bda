//! Building the system: all six services in one process (embedded), or one
//! service of the distributed system per process.

use std::net::SocketAddr;
use std::path::Path;

use mamey_core::discovery::HttpAddress;
use mamey_core::{BoxError, ServiceBuilder, ServiceGroup};

use crate::deploy::Deployment;
use crate::{automations, boards, chat, gateway, identity, notifications};

/// The services, callees before callers: a group starts them in this order
/// and stops them in reverse, so callers drain while what they call still
/// answers.
pub const SERVICES: [&str; 6] = [
    identity::NAME,
    boards::NAME,
    automations::NAME,
    chat::NAME,
    notifications::NAME,
    gateway::NAME,
];

/// The builder of the service called `name`, or `None` for a name that is
/// not one of [`SERVICES`].
#[must_use]
pub fn service(name: &str, deploy: &Deployment) -> Option<ServiceBuilder> {
    Some(match name {
        identity::NAME => identity::service(deploy),
        boards::NAME => boards::service(deploy),
        automations::NAME => automations::service(deploy),
        chat::NAME => chat::service(deploy),
        notifications::NAME => notifications::service(deploy),
        gateway::NAME => gateway::service(deploy),
        _ => return None,
    })
}

/// The embedded system, built and not yet started.
#[derive(Debug)]
pub struct Embedded {
    /// The six services; `start` or `run` it.
    pub group: ServiceGroup,
    /// Where the gateway listens.
    pub gateway: SocketAddr,
}

/// Builds all six services in one process over `deploy` (which must be
/// [`Deployment::embedded`]): creates the data directory and, on first run,
/// the dev signing key.
///
/// # Errors
/// The data directory cannot be written, or a service fails to build (its
/// error names it).
pub async fn embedded(deploy: &Deployment) -> Result<Embedded, BoxError> {
    prepare_data_dir(deploy.data_dir())?;
    let mut group = ServiceGroup::new();
    let mut gateway = None;
    for name in SERVICES {
        let Some(builder) = service(name, deploy) else {
            continue;
        };
        let built = builder
            .build()
            .await
            .map_err(|e| format!("building `{name}`: {e}"))?;
        if name == gateway::NAME {
            gateway = built
                .resources()
                .get::<HttpAddress>()
                .ok()
                .map(|HttpAddress(at)| at);
        }
        group = group.service(built);
    }
    let gateway = gateway.ok_or("the gateway has no web API address")?;
    Ok(Embedded { group, gateway })
}

/// The secrets file of an embedded system in `data_dir`.
#[must_use]
pub fn secrets_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("secrets.toml")
}

/// Creates `data_dir` and, when it has none, a secrets file with a fresh
/// signing key (mode 0600): `teamhub/signing` (the private key, for
/// identity) and `teamhub/jwt` (the public key, laid over every service's
/// `http.jwt`).
///
/// # Errors
/// The directory or the file cannot be written.
pub fn prepare_data_dir(data_dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("creating the data directory {}: {e}", data_dir.display()))?;
    let file = secrets_file(data_dir);
    if file.exists() {
        return Ok(());
    }
    let (private_pem, public_pem, key_id) = identity::signing_secret()?;
    let text = format!(
        "# The embedded teamhub's secrets, made on first run. Dev only.\n\
         [teamhub.signing]\nkey_id = \"{key_id}\"\nprivate_key_pem = '''\n{private_pem}'''\n\n\
         [teamhub.jwt]\npublic_key_pem = '''\n{public_pem}'''\n"
    );
    write_private(&file, &text)
        .map_err(|e| format!("writing the dev signing key to {}: {e}", file.display()))?;
    Ok(())
}

/// Writes `text` to `path` readable by the owner only, atomically (a
/// temporary file renamed into place).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
