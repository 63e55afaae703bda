//! Vault over HTTPS: a private OpenBao in `-dev-tls` mode, trusted through
//! `secrets.vault.ca_file` — the rustls path with the ring provider.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};

use common::{config_dir, eventually};
use mamey_core::Service;
use mamey_secrets::{SecretStore, Secrets};

/// A private OpenBao dev server with TLS, killed when dropped.
struct TlsBao {
    child: Child,
    certs: tempfile::TempDir,
    port: u16,
}

impl Drop for TlsBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBao {
    async fn start() -> Option<Self> {
        let Some(binary) = common::bao_binary() else {
            assert!(
                !common::required(),
                "the bao binary is required (MAMEY_REQUIRE_SERVICES=1): run `scripts/services.sh up openbao`"
            );
            eprintln!("SKIPPED: the bao binary is not installed (scripts/services.sh up openbao)");
            return None;
        };
        let certs = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = Command::new(binary)
            .args([
                "server",
                "-dev",
                "-dev-tls",
                "-dev-root-token-id=tls-root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-tls-cert-dir={}", certs.path().display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bao = Self { child, certs, port };
        let ca = bao.ca_file();
        eventually(30, "the TLS dev server to write its CA and listen", || {
            let ca = ca.clone();
            async move {
                (ca.is_file()
                    && tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok())
                .then_some(())
            }
        })
        .await;
        Some(bao)
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.certs.path().join("vault-ca.pem")
    }

    fn config(&self, ca_file: Option<&std::path::Path>, attempts: u32) -> tempfile::TempDir {
        let ca_line =
            ca_file.map_or_else(String::new, |ca| format!("ca_file = \"{}\"", ca.display()));
        config_dir(&format!(
            "[secrets]\nbackend = \"vault\"\n[secrets.vault]\naddress = \"https://127.0.0.1:{}\"\n{ca_line}\nconnect_attempts = {attempts}\nconnect_backoff = \"100ms\"\nauth = {{ method = \"token\", token = \"tls-root\" }}\n",
            self.port
        ))
    }
}

#[tokio::test]
async fn https_with_the_servers_ca_works_and_without_it_is_refused() {
    let Some(bao) = TlsBao::start().await else {
        return;
    };
    let dir = bao.config(Some(&bao.ca_file()), 20);
    // The dev server may still be unsealing: the bounded retries cover it.
    let service = Service::builder("vault-tls")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap();
    let store: SecretStore = service.resources().get().unwrap();
    // The dev server mounts KV v2 at `secret/`; nothing is there yet.
    let missing = store.read_data(&"nothing".into()).await.unwrap_err();
    assert!(
        matches!(missing, mamey_secrets::SecretError::NotFound { .. }),
        "{missing}"
    );

    let untrusted = bao.config(None, 1);
    let error = Service::builder("vault-untrusted")
        .config_dir(untrusted.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .err()
        .map(|e| e.to_string())
        .expect("a server certificate from an unknown CA is refused");
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
}
