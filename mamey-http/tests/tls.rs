//! HTTPS for outgoing calls (feature `tls`): the service client and JWKS
//! fetches against an in-process TLS server whose certificate is trusted
//! only through `ca_file`.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use mamey_core::discovery::{ServiceResolver, StaticResolver};
use mamey_core::{ErrorKind, Identity};
use mamey_http::{Caller, ClientConfig, JwtIssuer, RetryConfig, ServiceClient, WebApi};
use support::{send, serve, service};

const RSA: &str = include_str!("keys/rsa-a.pem");

/// A TLS server for `localhost` with a fresh self-signed certificate,
/// serving `app`; the certificate's PEM is written to a file of its own.
struct TlsServer {
    address: SocketAddr,
    ca_file: PathBuf,
}

impl TlsServer {
    async fn start(app: Router) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_file = std::env::temp_dir().join(format!("mamey-tls-{}.pem", mamey_core::new_id()));
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        Self { address, ca_file }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.address.port())
    }

    fn ca_file(&self) -> String {
        self.ca_file.display().to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

fn client(server: &TlsServer, ca_file: Option<String>) -> ServiceClient {
    let resolver = StaticResolver::new().service("secure", [server.url()]);
    let config = ClientConfig {
        ca_file,
        retry: RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        },
        ..ClientConfig::default()
    };
    ServiceClient::new(config, ServiceResolver::new(resolver)).unwrap()
}

#[tokio::test]
async fn the_service_client_calls_https_endpoints_it_trusts() {
    let server = TlsServer::start(Router::new().route("/ping", get(|| async { "pong" }))).await;

    let trusting = client(&server, Some(server.ca_file()));
    let reply = trusting.get("secure", "/ping").send().await.unwrap();
    assert_eq!(reply.body, "pong");

    // Without the CA the self-signed certificate is refused.
    let error = client(&server, None)
        .get("secure", "/ping")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.code(), "client.unreachable");

    let missing = ServiceClient::new(
        ClientConfig {
            ca_file: Some("/nonexistent/ca.pem".to_owned()),
            ..ClientConfig::default()
        },
        ServiceResolver::new(StaticResolver::new()),
    )
    .unwrap_err();
    assert!(
        missing.to_string().contains("http_client.ca_file"),
        "{missing}"
    );
}

#[tokio::test]
async fn jwks_are_fetched_over_https() {
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(RSA.as_bytes()).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    jwk.common.key_id = Some("a".to_owned());
    let keys = JwkSet { keys: vec![jwk] };
    let server = TlsServer::start(Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys) }
        }),
    ))
    .await;
    let jwks_url = format!("{}/jwks.json", server.url());
    let ca_file = server.ca_file();
    let api = serve(
        service(
            "secure",
            &[
                ("http.jwt.jwks_url", &jwks_url),
                ("http.jwt.ca_file", &ca_file),
            ],
        ),
        WebApi::new().router(Router::new().route(
            "/me",
            get(|Caller(identity): Caller| async move { identity.subject }),
        )),
    )
    .await;
    let token = JwtIssuer::rs256(RSA)
        .unwrap()
        .key_id("a")
        .issue(&Identity::new("ada"))
        .unwrap();
    let bearer = format!("Bearer {token}");
    let me = send(
        Method::GET,
        &api.url("/me"),
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body, "ada");
    api.service.stop().await.unwrap();
}
