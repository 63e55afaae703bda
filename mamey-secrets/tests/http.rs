//! Secrets reaching mamey-http: a certificate from OpenBao's PKI served over
//! TLS and renewed without a restart, and JWT keys from a secret.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use axum::routing::get;
use common::{Bao, Cleanup, config_dir, eventually};
use mamey_core::Identity;
use mamey_core::Service;
use mamey_http::{Caller, HttpAddress, JwtIssuer, WebApi};
use mamey_secrets::{SecretStore, Secrets};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificate a fresh HTTPS connection to `url` is served, trusting
/// only `ca_pem`.
async fn served_certificate(url: &str, ca_pem: &[u8]) -> Option<Vec<u8>> {
    let ca = reqwest::Certificate::from_pem(ca_pem).ok()?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// The first certificate of a PEM chain file, as DER.
fn first_certificate(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let first: CertificateDer<'static> = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    first.to_vec()
}

#[tokio::test]
async fn a_pki_certificate_is_served_over_tls_and_its_renewal_picked_up() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let pki = common::pki_engine(&bao, &mut cleanup).await;
    let files = tempfile::tempdir().unwrap();
    let cert = files.path().join("tls.crt");
    let key = files.path().join("tls.key");
    let ca = files.path().join("ca.crt");
    let dir = config_dir(&format!(
        "[secrets]\nbackend = \"vault\"\n[secrets.vault]\naddress = \"{}\"\nauth = {{ method = \"token\", token = \"mamey-dev-root\" }}\nrenew_at = 0.5\n\
         [secrets.vault.pki]\nmount = \"{pki}\"\nrole = \"service\"\ncommon_name = \"localhost\"\nip_sans = [\"127.0.0.1\"]\nttl = \"6s\"\n\
         cert_file = \"{cert}\"\nkey_file = \"{key}\"\nca_file = \"{ca}\"\n\n\
         [http]\naddress = \"127.0.0.1:0\"\n[http.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nreload_interval = \"200ms\"\n",
        common::ADDRESS,
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    ));
    let service = Service::builder("pki-tls")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .plugin(WebApi::new().router(Router::new().route("/ping", get(|| async { "pong" }))))
        .build()
        .await;
    let outcome = async {
        let service = service.unwrap();
        let HttpAddress(address) = service.resources().get().unwrap();
        let running = service.start().await.unwrap();
        let url = format!("https://localhost:{}/ping", address.port());
        let ca_pem = std::fs::read(&ca).unwrap();
        let first = first_certificate(&cert);
        let served = served_certificate(&url, &ca_pem)
            .await
            .expect("HTTPS answers with the issued certificate");
        assert_eq!(served, first);
        // Renewed at half of its 6 s: new connections get the new one.
        eventually(10, "the renewed certificate to be served", || {
            let url = url.clone();
            let ca_pem = ca_pem.clone();
            let first = first.clone();
            let cert = cert.clone();
            async move {
                let on_disk = first_certificate(&cert);
                let served = served_certificate(&url, &ca_pem).await?;
                (on_disk != first && served == on_disk).then_some(())
            }
        })
        .await;
        running.stop().await.unwrap();
    };
    cleanup.around(outcome).await;
}

#[tokio::test]
async fn jwt_keys_come_from_a_secret() {
    let signing = "a-signing-secret-of-more-than-32-bytes-from-the-store";
    let dir = config_dir(
        "[secrets]\noverlay = [{ path = \"identity/jwt\", into = \"http.jwt\" }]\n[http]\naddress = \"127.0.0.1:0\"\n",
    );
    let service = Service::builder("jwt-secret")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new().env_vars([("MAMEY_SECRET__IDENTITY__JWT__SECRET", signing)]))
        .plugin(WebApi::new().router(Router::new().route(
            "/me",
            get(|Caller(identity): Caller| async move { identity.subject }),
        )))
        .build()
        .await
        .unwrap();
    assert!(!service.effective_config().contains(signing));
    let HttpAddress(address) = service.resources().get().unwrap();
    // The issuing side reads the same secret at runtime.
    let store: SecretStore = service.resources().get().unwrap();
    let key = store
        .read_data(&"identity/jwt".into())
        .await
        .unwrap()
        .get("secret")
        .unwrap();
    let running = service.start().await.unwrap();
    let token = JwtIssuer::hs256(key.expose())
        .issue(&Identity::new("ada"))
        .unwrap();
    let forged = JwtIssuer::hs256("another-secret-of-more-than-32-bytes-long!!")
        .issue(&Identity::new("mallory"))
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{address}/me");
    let ok = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ada");
    let refused = client.get(&url).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    running.stop().await.unwrap();
}
