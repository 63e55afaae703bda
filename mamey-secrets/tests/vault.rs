//! The Vault backend against a real OpenBao: KV overlays, login methods,
//! token renewal, transit, dynamic database credentials and PKI.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Bao, Cleanup, capture_logs, config_dir, eventually, logged, unique};
use mamey_core::Service;
use mamey_core::config::{ConfigSection, Secret};
use mamey_core::credentials::CredentialSources;
use mamey_secrets::vault::Transit;
use mamey_secrets::{SecretStore, Secrets};
use serde_json::json;

/// What the tests read from the configuration.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
struct Demo {
    password: Secret<String>,
    user: String,
    from_file_only: String,
    pinned: String,
}

impl ConfigSection for Demo {
    const KEY: &'static str = "demo";
}

fn vault_section(token_line: &str) -> String {
    format!(
        "[secrets]\nbackend = \"vault\"\n[secrets.vault]\naddress = \"{}\"\nconnect_attempts = 2\nconnect_backoff = \"50ms\"\n{token_line}\n",
        common::ADDRESS
    )
}

const ROOT_AUTH: &str = "auth = { method = \"token\", token = \"mamey-dev-root\" }";

#[tokio::test]
async fn kv_v1_and_v2_lay_over_files_and_env_and_never_print() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let v1 = unique("kv1");
    let v2 = unique("kv2");
    bao.mount(&v1, "kv", json!({ "version": "1" })).await;
    cleanup.mount(&v1);
    bao.mount(&v2, "kv", json!({ "version": "2" })).await;
    cleanup.mount(&v2);
    bao.post(
        &format!("{v1}/orders/db"),
        json!({ "password": "v1-hunter2" }),
    )
    .await;
    bao.post(
        &format!("{v2}/data/orders/meta"),
        json!({ "data": { "pinned": "first" } }),
    )
    .await;
    bao.post(
        &format!("{v2}/data/orders/meta"),
        json!({ "data": { "pinned": "second", "user": "orders" } }),
    )
    .await;

    let dir = config_dir(&format!(
        "{}\n[[secrets.overlay]]\npath = \"orders/db\"\ninto = \"demo\"\nmount = \"{v1}\"\nkv_version = 1\n\n\
         [[secrets.overlay]]\npath = \"orders/meta\"\ninto = \"demo\"\nmount = \"{v2}\"\n\n\
         [[secrets.overlay]]\npath = \"orders/meta\"\ninto = \"demo\"\nmount = \"{v2}\"\nversion = 1\nrequired = false\n\n\
         [demo]\npassword = \"from-file\"\nuser = \"from-file\"\nfrom_file_only = \"kept\"\n",
        vault_section(ROOT_AUTH)
    ));
    let (guard, logs) = capture_logs();
    let service = Service::builder("kv-overlay")
        .config_dir(dir.path())
        .env_vars([
            ("MAMEY__DEMO__PASSWORD", "from-env"),
            ("MAMEY__DEMO__USER", "from-env"),
        ])
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .map_err(|e| e.to_string());
    drop(guard);
    cleanup
        .around(async {
            let service = service.unwrap();
            // Vault wins over files and environment; keys it lacks stay.
            let demo: Demo = service.config().section().unwrap();
            assert_eq!(demo.password.expose(), "v1-hunter2");
            assert_eq!(demo.user, "orders");
            // Later entries win: the pinned version 1 of orders/meta came last.
            assert_eq!(demo.pinned, "first");
            assert_eq!(demo.from_file_only, "kept");
            // A pinned KV v2 version reads that version.
            let store: SecretStore = service.resources().get().unwrap();
            let first = store
                .read_data(
                    &mamey_secrets::SecretRef::new("orders/meta")
                        .mount(v2.as_str())
                        .version(1),
                )
                .await
                .unwrap();
            assert_eq!(first.get("pinned").unwrap().expose(), "first");
            // Never printed: Debug, the configuration dump, the logs.
            assert!(!format!("{demo:?}").contains("hunter2"));
            assert!(!format!("{first:?}").contains("first"));
            assert!(!service.effective_config().contains("hunter2"));
            let logs = logged(&logs);
            assert!(
                logs.contains("secret laid over the configuration"),
                "{logs}"
            );
            assert!(!logs.contains("hunter2"), "{logs}");
            assert!(!logs.contains("mamey-dev-root"), "{logs}");
        })
        .await;
}

#[tokio::test]
async fn a_missing_secret_names_its_path_and_mount() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let kv = unique("kv");
    bao.mount(&kv, "kv", json!({ "version": "2" })).await;
    cleanup.mount(&kv);
    let dir = config_dir(&format!(
        "{}\n[[secrets.overlay]]\npath = \"nothing/here\"\nmount = \"{kv}\"\n",
        vault_section(ROOT_AUTH)
    ));
    let error = Service::builder("missing")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .err()
        .map(|e| e.to_string());
    cleanup.run().await;
    let error = error.expect("a required secret that is missing fails the build");
    assert!(error.contains(&format!("{kv}/nothing/here")), "{error}");
    assert!(error.contains("secrets"), "{error}");
}

#[tokio::test]
async fn approle_logs_in_and_keeps_its_token_past_its_max_ttl() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let kv = unique("kv");
    let approle = unique("approle");
    let policy = unique("policy");
    bao.mount(&kv, "kv", json!({ "version": "2" })).await;
    cleanup.mount(&kv);
    bao.enable_auth(&approle, "approle").await;
    cleanup.auth(&approle);
    bao.policy(&policy, &[&format!("{kv}/*")]).await;
    cleanup.policy(&policy);
    bao.post(
        &format!("{kv}/data/app"),
        json!({ "data": { "password": "approle-pw" } }),
    )
    .await;
    // Tokens live 2 s and at most 4 s: the service must renew, then log in again.
    bao.post(
        &format!("auth/{approle}/role/app"),
        json!({ "token_policies": [policy], "token_ttl": "2s", "token_max_ttl": "4s" }),
    )
    .await;
    let role_id = bao.get(&format!("auth/{approle}/role/app/role-id")).await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .post(&format!("auth/{approle}/role/app/secret-id"), json!({}))
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{secret_id}\n")).unwrap();
    let dir = config_dir(&format!(
        "{}\n[[secrets.overlay]]\npath = \"app\"\ninto = \"demo\"\nmount = \"{kv}\"\n",
        vault_section(&format!(
            "auth = {{ method = \"approle\", mount = \"{approle}\", role_id = \"{role_id}\", secret_id_file = \"{}\" }}",
            secret_file.path().display()
        ))
    ));
    let service = Service::builder("approle")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            let demo: Demo = service.config().section().unwrap();
            assert_eq!(demo.password.expose(), "approle-pw");
            let store: SecretStore = service.resources().get().unwrap();
            let running = service.start().await.unwrap();
            // Three token lifetimes later, reads still work: renewed and re-logged-in.
            keeps_reading(&store, &kv, Duration::from_secs(7)).await;
            running.stop().await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn a_renewable_token_is_renewed_before_it_expires() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let kv = unique("kv");
    let policy = unique("policy");
    bao.mount(&kv, "kv", json!({ "version": "2" })).await;
    cleanup.mount(&kv);
    bao.policy(&policy, &[&format!("{kv}/*")]).await;
    cleanup.policy(&policy);
    bao.post(
        &format!("{kv}/data/app"),
        json!({ "data": { "password": "token-pw" } }),
    )
    .await;
    let token = bao
        .post(
            "auth/token/create",
            json!({ "policies": [policy], "ttl": "2s", "renewable": true, "no_parent": true }),
        )
        .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = config_dir(&vault_section(&format!(
        "auth = {{ method = \"token\", token = \"{token}\" }}"
    )));
    let service = Service::builder("token")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            let store: SecretStore = service.resources().get().unwrap();
            let running = service.start().await.unwrap();
            keeps_reading(&store, &kv, Duration::from_secs(5)).await;
            running.stop().await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn transit_round_trip() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let transit = unique("transit");
    bao.mount(&transit, "transit", json!({})).await;
    cleanup.mount(&transit);
    bao.post(&format!("{transit}/keys/orders"), json!({})).await;
    let dir = config_dir(&format!(
        "{}transit = {{ mount = \"{transit}\" }}\n",
        vault_section(ROOT_AUTH)
    ));
    let service = Service::builder("transit")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            let transit: Transit = service.resources().get().unwrap();
            let ciphertext = transit
                .encrypt("orders", b"4111 1111 1111 1111")
                .await
                .unwrap();
            assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");
            let plaintext = transit.decrypt("orders", &ciphertext).await.unwrap();
            assert_eq!(plaintext.expose(), b"4111 1111 1111 1111");
            let unknown = transit.encrypt("no-such-key-and-no-create", b"x").await;
            // Transit creates keys on first encrypt unless forbidden; decrypting
            // garbage is refused either way.
            drop(unknown);
            assert!(
                transit
                    .decrypt("orders", "vault:v1:not-base64!")
                    .await
                    .is_err()
            );
        })
        .await;
}

#[tokio::test]
async fn dynamic_credentials_connect_renew_and_rotate_before_max_ttl() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let (mount, role) = common::database_engine(&bao, &mut cleanup, 2, 6).await;
    let dir = config_dir(&format!(
        "{}renew_at = 0.5\n[secrets.vault.database.orders]\nmount = \"{mount}\"\nrole = \"{role}\"\n",
        vault_section(ROOT_AUTH)
    ));
    let service = Service::builder("dynamic")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            let sources: CredentialSources = service.resources().get().unwrap();
            let running = service.start().await.unwrap();
            let mut orders = sources.get("orders").unwrap();
            let first = orders.borrow_and_update().clone();
            assert_eq!(
                common::connect_as(&first.username, first.password.expose())
                    .await
                    .unwrap(),
                first.username
            );
            // Past the first lease's 2 s time to live the same credentials still
            // work: the lease was renewed.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                orders.borrow().username,
                first.username,
                "rotated before max TTL was near"
            );
            assert!(
                common::role_exists(&first.username).await,
                "lease not renewed: the role was revoked"
            );
            // Before the 6 s maximum, new credentials arrive.
            tokio::time::timeout(Duration::from_secs(8), orders.changed())
                .await
                .unwrap()
                .unwrap();
            let second = orders.borrow_and_update().clone();
            assert_ne!(second.username, first.username);
            assert_eq!(
                common::connect_as(&second.username, second.password.expose())
                    .await
                    .unwrap(),
                second.username
            );
            // Stopping revokes the leases: the roles are dropped.
            running.stop().await.unwrap();
            let second_user = second.username.clone();
            eventually(10, "the revoked role to be dropped", || {
                let user = second_user.clone();
                async move { (!common::role_exists(&user).await).then_some(()) }
            })
            .await;
        })
        .await;
}

#[tokio::test]
async fn pki_certificate_is_issued_and_renewed_before_expiry() {
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
        "{}renew_at = 0.5\n[secrets.vault.pki]\nmount = \"{pki}\"\nrole = \"service\"\ncommon_name = \"localhost\"\nip_sans = [\"127.0.0.1\"]\nttl = \"4s\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        vault_section(ROOT_AUTH),
        cert.display(),
        key.display(),
        ca.display()
    ));
    let service = Service::builder("pki")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            // Issued at init, before plug-ins after it (the web server) start.
            let first = std::fs::read_to_string(&cert).unwrap();
            assert!(first.contains("BEGIN CERTIFICATE"));
            assert!(
                std::fs::read_to_string(&key)
                    .unwrap()
                    .contains("PRIVATE KEY")
            );
            assert!(
                std::fs::read_to_string(&ca)
                    .unwrap()
                    .contains("BEGIN CERTIFICATE")
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
            let running = service.start().await.unwrap();
            // Renewed at half of its 4 s validity: a new certificate in the file.
            eventually(6, "the certificate to be renewed", || {
            let current = std::fs::read_to_string(&cert).unwrap_or_default();
            let first = first.clone();
            async move { (current.contains("BEGIN CERTIFICATE") && current != first).then_some(()) }
        })
        .await;
            running.stop().await.unwrap();
        })
        .await;
}

/// Reads `app` from the KV mount `kv` every half second for `how_long`;
/// every read must succeed (the token stays valid throughout).
async fn keeps_reading(store: &SecretStore, kv: &str, how_long: Duration) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < how_long {
        let data = store
            .read_data(&mamey_secrets::SecretRef::new("app").mount(kv))
            .await;
        assert!(
            data.is_ok(),
            "read failed after {:?}: {data:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
