//! Kubernetes login against the real OpenBao, with a service-account JWT
//! signed in the test and a fake Kubernetes API server answering OpenBao's
//! `TokenReview` calls.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Bao, Cleanup, unique};
use mamey_core::Service;
use mamey_core::config::{ConfigSection, Secret};
use mamey_secrets::{SecretError, Secrets};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A service account, as the JWT's claims and the `TokenReview` answer name it.
struct ServiceAccount {
    namespace: String,
    name: String,
    uid: String,
}

impl ServiceAccount {
    fn new() -> Self {
        Self {
            namespace: unique("ns"),
            name: unique("sa"),
            uid: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// A service-account JWT (the claims a legacy Kubernetes token has),
    /// signed ES256 with `private_pem`.
    fn jwt(&self, private_pem: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": "kubernetes/serviceaccount",
            "sub": self.username(),
            "iat": now,
            "exp": now + 3600,
            "kubernetes.io/serviceaccount/namespace": self.namespace,
            "kubernetes.io/serviceaccount/secret.name": format!("{}-token", self.name),
            "kubernetes.io/serviceaccount/service-account.name": self.name,
            "kubernetes.io/serviceaccount/service-account.uid": self.uid,
        });
        let key = jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    }
}

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// A fake Kubernetes API server: answers every `TokenReview` (plain HTTP/1.1)
/// as authenticating `account`, and records what it was asked.
struct FakeApiServer {
    host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    async fn start(account: &ServiceAccount) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": {
                "authenticated": true,
                "user": {
                    "username": account.username(),
                    "uid": account.uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", account.namespace)],
                },
            },
        })
        .to_string();
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    if let Some(seen) = serve_one(stream, &answer).await {
                        recorded.lock().unwrap().push(seen);
                    }
                });
            }
        });
        Self { host, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request and answers it: the `TokenReview` for a POST
/// to the `TokenReview` path, 404 otherwise; then closes the connection.
async fn serve_one(mut stream: TcpStream, answer: &str) -> Option<Seen> {
    let mut buffer = Vec::new();
    let header_end = loop {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut length = 0;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_owned());
            }
        }
    }
    while buffer.len() < header_end + length {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[header_end..]).unwrap_or(serde_json::Value::Null);
    let (status, reply) = if request_line
        .starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")
    {
        ("201 Created", answer.to_owned())
    } else {
        (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    let _ = stream.shutdown().await;
    Some(Seen {
        request_line,
        authorization,
        body,
    })
}

/// The section the overlay lands in.
#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(default)]
struct K8sApp {
    password: Secret<String>,
    user: String,
}

impl ConfigSection for K8sApp {
    const KEY: &'static str = "k8sapp";
}

/// Everything on the OpenBao side: a Kubernetes auth mount trusting
/// `public_pem` and calling `host` for `TokenReview`, a role bound to the
/// service account with a policy on a fresh KV v2 mount holding `app`.
struct Setup {
    auth: String,
    role: String,
    kv: String,
}

async fn set_up(
    bao: &Bao,
    cleanup: &mut Cleanup,
    account: &ServiceAccount,
    public_pem: &str,
    host: &str,
) -> Setup {
    let auth = unique("k8s");
    bao.enable_auth(&auth, "kubernetes").await;
    cleanup.auth(&auth);
    // OpenBao needs a CA certificate once the local service-account files
    // are disabled, even for an http:// host (where it is never used).
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = rcgen::CertificateParams::new(vec!["fake-kubernetes".to_owned()])
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    bao.post(
        &format!("auth/{auth}/config"),
        json!({
            "kubernetes_host": host,
            "kubernetes_ca_cert": ca.pem(),
            "pem_keys": [public_pem],
            "disable_local_ca_jwt": true,
        }),
    )
    .await;

    let kv = unique("kv");
    bao.mount(&kv, "kv", json!({ "version": "2" })).await;
    cleanup.mount(&kv);
    bao.post(
        &format!("{kv}/data/app"),
        json!({ "data": { "password": "from-kubernetes-login", "user": "k8s-app" } }),
    )
    .await;
    let policy = unique("k8s-policy");
    bao.policy(&policy, &[&format!("{kv}/*")]).await;
    cleanup.policy(&policy);

    let role = unique("role");
    bao.post(
        &format!("auth/{auth}/role/{role}"),
        json!({
            "bound_service_account_names": [account.name],
            "bound_service_account_namespaces": [account.namespace],
            "token_policies": [policy],
            "token_ttl": "60s",
            "token_max_ttl": "120s",
        }),
    )
    .await;
    Setup { auth, role, kv }
}

fn config(setup: &Setup, jwt_file: &std::path::Path) -> String {
    format!(
        r#"
[secrets]
backend = "vault"
overlay = [{{ path = "app", into = "k8sapp", mount = "{kv}" }}]

[secrets.vault]
address = "{address}"
connect_attempts = 1
auth = {{ method = "kubernetes", mount = "{auth}", role = "{role}", jwt_file = "{jwt}" }}
"#,
        kv = setup.kv,
        address = common::ADDRESS,
        auth = setup.auth,
        role = setup.role,
        jwt = jwt_file.display(),
    )
}

fn key_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    (key.serialize_pem(), key.public_key_pem())
}

#[tokio::test]
async fn kubernetes_login_overlays_secrets_readable_by_the_role() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let account = ServiceAccount::new();
    let api = FakeApiServer::start(&account).await;
    let (private_pem, public_pem) = key_pair();
    let setup = set_up(&bao, &mut cleanup, &account, &public_pem, &api.host).await;

    let jwt = account.jwt(&private_pem);
    let secrets_dir = tempfile::tempdir().unwrap();
    let jwt_file = secrets_dir.path().join("token");
    std::fs::write(&jwt_file, format!("{jwt}\n")).unwrap();
    let dir = common::config_dir(&config(&setup, &jwt_file));

    let service = Service::builder("k8s-login")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap();
    let app: K8sApp = service.config().section().unwrap();
    assert_eq!(app.password.expose(), "from-kubernetes-login");
    assert_eq!(app.user, "k8s-app");
    assert!(!service.effective_config().contains("from-kubernetes-login"));

    // OpenBao asked the (fake) API server to review the very token the
    // service sent, with that token as its bearer (no reviewer JWT set).
    let seen = api.seen();
    let review = seen
        .iter()
        .find(|s| {
            s.request_line
                .starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")
        })
        .unwrap_or_else(|| panic!("no TokenReview reached the fake API server: {seen:?}"));
    assert_eq!(review.body["spec"]["token"], jwt.as_str());
    assert_eq!(
        review.authorization.as_deref(),
        Some(format!("Bearer {jwt}").as_str())
    );

    // It runs (the token is renewable, kept alive) and stops cleanly,
    // revoking its token.
    let running = service.start().await.unwrap();
    running.stop().await.unwrap();
    cleanup.run().await;
}

#[tokio::test]
async fn kubernetes_login_with_a_jwt_signed_by_another_key_is_denied() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let account = ServiceAccount::new();
    let api = FakeApiServer::start(&account).await;
    let (_, trusted_public) = key_pair();
    let (other_private, _) = key_pair();
    let setup = set_up(&bao, &mut cleanup, &account, &trusted_public, &api.host).await;

    let secrets_dir = tempfile::tempdir().unwrap();
    let jwt_file = secrets_dir.path().join("token");
    let jwt = account.jwt(&other_private);
    std::fs::write(&jwt_file, &jwt).unwrap();
    let dir = common::config_dir(&config(&setup, &jwt_file));

    let started = std::time::Instant::now();
    let error = Service::builder("k8s-denied")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap_err();
    let text = error.to_string();
    // Refused at once: a denial is not retried as if Vault were away.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let source = match &error {
        mamey_core::ServiceError::ConfigOverlay { source, .. }
        | mamey_core::ServiceError::PluginInit { source, .. } => source,
        other => panic!("expected the secrets plug-in to fail, got {other}"),
    };
    let secret_error = source
        .downcast_ref::<SecretError>()
        .unwrap_or_else(|| panic!("expected a SecretError, got {text}"));
    assert!(
        matches!(secret_error, SecretError::Denied { path, .. } if path == &format!("auth/{}/login", setup.auth)),
        "expected Denied for auth/{}/login, got {secret_error:?}",
        setup.auth
    );
    assert!(
        text.contains(&format!("auth/{}/login", setup.auth)),
        "{text}"
    );
    // The JWT never shows in the error.
    // OpenBao checked the signature against `pem_keys` and refused before
    // asking the API server: the refusal is the key's, not the review's.
    assert!(api.seen().is_empty(), "{:?}", api.seen());
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "{text}");
    cleanup.run().await;
}

#[tokio::test]
async fn kubernetes_login_without_the_token_file_names_the_file() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    let account = ServiceAccount::new();
    let api = FakeApiServer::start(&account).await;
    let (_, public_pem) = key_pair();
    let setup = set_up(&bao, &mut cleanup, &account, &public_pem, &api.host).await;
    let secrets_dir = tempfile::tempdir().unwrap();
    let missing = secrets_dir.path().join("no-token-here");
    let dir = common::config_dir(&config(&setup, &missing));

    let error = Service::builder("k8s-no-token")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .build()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("secrets.vault.auth.jwt_file"), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(api.seen().is_empty(), "{:?}", api.seen());
    cleanup.run().await;
}
