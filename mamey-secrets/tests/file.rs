//! The file and environment backends through the plug-in: overlays,
//! watching a rotation, and the permission warning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{capture_logs, config_dir, logged};
use mamey_core::Service;
use mamey_core::config::{ConfigSection, Secret};
use mamey_secrets::{FileBackend, SecretStore, Secrets};

#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
struct Mail {
    user: String,
    password: Secret<String>,
}

impl ConfigSection for Mail {
    const KEY: &'static str = "mail";
}

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_secrets_file_others_can_read_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, "[mail]\npassword = \"hunter2\"\n").unwrap();

    chmod(&path, 0o644);
    let (guard, logs) = capture_logs();
    let _backend = FileBackend::new(&path);
    drop(guard);
    let text = logged(&logs);
    assert!(text.contains("readable by group or others"), "{text}");
    assert!(text.contains("644"), "{text}");

    chmod(&path, 0o600);
    let (guard, logs) = capture_logs();
    let _backend = FileBackend::new(&path);
    drop(guard);
    assert!(!logged(&logs).contains("readable by group or others"));
}

#[tokio::test]
async fn a_file_overlays_the_config_and_a_watch_sees_an_edit() {
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("secrets.json");
    std::fs::write(&path, r#"{"mail": {"smtp": {"password": "first-pw"}}}"#).unwrap();
    #[cfg(unix)]
    chmod(&path, 0o600);
    let dir = config_dir(&format!(
        "[secrets]\nbackend = \"file\"\nrefresh = \"100ms\"\nfile.path = \"{}\"\noverlay = [{{ path = \"mail/smtp\", into = \"mail\" }}]\n\n[mail]\nuser = \"mailer\"\npassword = \"from-file\"\n",
        path.display()
    ));
    let service = Service::builder("file-secrets")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap();
    let mail: Mail = service.config().section().unwrap();
    assert_eq!(mail.user, "mailer");
    assert_eq!(mail.password.expose(), "first-pw");
    assert!(!service.effective_config().contains("first-pw"));

    let store: SecretStore = service.resources().get().unwrap();
    let mut watch = store.watch("mail/smtp").await.unwrap();
    let running = service.start().await.unwrap();
    std::fs::write(&path, r#"{"mail": {"smtp": {"password": "second-pw"}}}"#).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("the edit is noticed within the refresh")
        .unwrap();
    let rotated: Mail = watch.read().unwrap_or_default();
    assert_eq!(rotated.password.expose(), "second-pw");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn env_secrets_overlay_and_a_wrong_shape_names_the_key_not_the_value() {
    let dir = config_dir("[secrets]\noverlay = [{ path = \"mail\", into = \"mail\" }]\n");
    let service = Service::builder("env-secrets")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new().env_vars([
            ("MAMEY_SECRET__MAIL__USER", "mailer"),
            ("MAMEY_SECRET__MAIL__PASSWORD", "hunter2"),
        ]))
        .build()
        .await
        .unwrap();
    let mail: Mail = service.config().section().unwrap();
    assert_eq!(mail.password.expose(), "hunter2");

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        password: u32,
    }
    let store: SecretStore = service.resources().get().unwrap();
    let error = store.read::<Wrong>("mail").await.unwrap_err().to_string();
    assert!(error.contains("password"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn vault_without_its_feature_or_a_bad_fraction_is_a_config_error() {
    let dir = config_dir("[secrets.vault]\nrenew_at = 1.5\n");
    let error = Service::builder("bad")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(error.contains("secrets.vault.renew_at"), "{error}");
}
