//! TLS (feature `tls`). Outgoing: the service client and JWKS fetches
//! against an in-process TLS server whose certificate is trusted only
//! through `ca_file`. Serving: the web API and gRPC over TLS with a test
//! CA's certificates (`http.tls`, `grpc.tls`), mutual TLS, certificate
//! reload, the handshake deadline, and configuration errors.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use mamey_core::discovery::{ServiceResolver, StaticResolver};
use mamey_core::{ErrorKind, Identity};
use mamey_http::{Caller, ClientConfig, JwtIssuer, RetryConfig, ServiceClient, WebApi};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{send, serve, service};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

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

    // Without the CA the self-signed certificate is refused: in the
    // handshake, before any of the request is sent.
    let error = client(&server, None)
        .get("secure", "/ping")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.code(), "client.connect_failed");

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

// Serving TLS.

/// How long a test waits for what should take a fraction of a second.
const PATIENCE: Duration = Duration::from_secs(5);

/// A test CA in a temporary directory (removed when dropped), issuing
/// certificates for `localhost` and 127.0.0.1.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A certificate and its key, as DER and as PEM files.
struct Issued {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_file: String,
    key_file: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Self { dir, ca, ca_key }
    }

    fn ca_file(&self) -> String {
        self.path("ca.crt")
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Issues a certificate named `name` (a server's, or a client's when
    /// `client`) with `extra` names besides `localhost` and 127.0.0.1, and
    /// writes it to `{file}.crt` and `{file}.key`, replacing the files
    /// whole (as a rotation would).
    fn issue(&self, file: &str, name: &str, extra: &[&str], client: bool) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra.iter().map(|n| (*n).to_owned()));
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_file, key_file) = (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        );
        replace(&key_file, &key.serialize_pem());
        replace(&cert_file, &cert.pem());
        Issued {
            der: cert.der().clone(),
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            cert_file,
            key_file,
        }
    }

    /// A client trusting this CA, offering `alpn`, with `identity` as its
    /// client certificate. Without resumption, so that every connection
    /// sees the certificate served now.
    fn client(&self, alpn: &[&[u8]], identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match identity {
            Some(issued) => builder
                .with_client_auth_cert(vec![issued.der.clone()], issued.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// Writes `path` whole: a new file renamed over the old one.
fn replace(path: &str, content: &str) {
    let staged = format!("{path}.new");
    std::fs::write(&staged, content).unwrap();
    std::fs::rename(&staged, Path::new(path)).unwrap();
}

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

async fn connect(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// GETs `path` over `stream` with the protocol ALPN chose.
async fn get_over(
    stream: TlsStream<TcpStream>,
    path: &str,
) -> Result<(StatusCode, Bytes), mamey_core::BoxError> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        let request =
            Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    };
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Connects with `config` and GETs `path`.
async fn https_get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(StatusCode, Bytes), mamey_core::BoxError> {
    let stream = connect(address, config).await?;
    get_over(stream, path).await
}

/// A web API serving `/ping` with `config`.
async fn https_api(config: &[(&str, &str)]) -> support::Served {
    serve(
        service("secure", config),
        WebApi::new().router(Router::new().route("/ping", get(|| async { "pong" }))),
    )
    .await
}

#[tokio::test]
async fn the_web_api_serves_https_with_http2_and_http1() {
    let pki = Pki::new("test CA");
    let server = pki.issue("server", "server", &[], false);
    let api = https_api(&[
        ("http.tls.cert_file", &server.cert_file),
        ("http.tls.key_file", &server.key_file),
    ])
    .await;

    for (offered, chosen) in [(&[H2, HTTP1][..], H2), (&[HTTP1][..], HTTP1)] {
        let stream = connect(api.address, pki.client(offered, None))
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(chosen));
        let (status, body) = get_over(stream, "/ping").await.unwrap();
        assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"pong"[..]));
    }
    // Plain HTTP gets no answer.
    let plain = support::client()
        .request(
            Request::get(api.url("/ping"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert!(plain.is_err(), "{plain:?}");
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_closed_during_the_handshake_and_frees_its_slot() {
    let pki = Pki::new("test CA");
    let server = pki.issue("server", "server", &[], false);
    let api = https_api(&[
        ("http.tls.cert_file", &server.cert_file),
        ("http.tls.key_file", &server.key_file),
        ("http.header_read_timeout", "200ms"),
        ("http.max_connections", "1"),
    ])
    .await;

    let mut silent = TcpStream::connect(api.address).await.unwrap();
    // The only connection slot is the silent client's until its deadline;
    // then this one gets it.
    let answered = tokio::time::timeout(
        PATIENCE,
        https_get(api.address, pki.client(&[H2], None), "/ping"),
    )
    .await
    .expect("the silent connection gave up its slot")
    .unwrap();
    assert_eq!(answered.0, StatusCode::OK);
    let closed = tokio::time::timeout(PATIENCE, silent.read(&mut [0_u8; 64]))
        .await
        .expect("the silent connection was closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = Pki::new("test CA");
    let server = pki.issue("server", "server", &[], false);
    let clients = Pki::new("clients CA");
    let ada = clients.issue("ada", "ada", &[], true);
    let stranger = pki.issue("stranger", "stranger", &[], true);
    let client_ca = clients.ca_file();
    let api = https_api(&[
        ("http.tls.cert_file", &server.cert_file),
        ("http.tls.key_file", &server.key_file),
        ("http.tls.client_ca_file", &client_ca),
    ])
    .await;

    // With TLS 1.3 the refusal may come after the client's side of the
    // handshake: at the latest, the request fails.
    let anonymous = https_get(api.address, pki.client(&[H2, HTTP1], None), "/ping").await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    let untrusted = https_get(
        api.address,
        pki.client(&[H2, HTTP1], Some(&stranger)),
        "/ping",
    )
    .await;
    assert!(untrusted.is_err(), "{untrusted:?}");

    let (status, body) = https_get(api.address, pki.client(&[H2, HTTP1], Some(&ada)), "/ping")
        .await
        .unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"pong"[..]));
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections() {
    let pki = Pki::new("test CA");
    let first = pki.issue("server", "first", &[], false);
    let api = https_api(&[
        ("http.tls.cert_file", &first.cert_file),
        ("http.tls.key_file", &first.key_file),
        ("http.tls.reload_interval", "50ms"),
    ])
    .await;
    let served = || async {
        let stream = connect(api.address, pki.client(&[H2], None)).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served().await, first.der);

    let second = pki.issue("server", "second", &["renewed.localhost"], false);
    let deadline = Instant::now() + PATIENCE;
    while served().await != second.der {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = https_get(api.address, pki.client(&[H2], None), "/ping")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn tls_configuration_errors_name_the_key_and_file() {
    let pki = Pki::new("test CA");
    let server = pki.issue("server", "server", &[], false);
    let build = |config: Vec<(&'static str, String)>| async move {
        let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
        service("secure", &config)
            .plugin(WebApi::new())
            .build()
            .await
            .unwrap_err()
            .to_string()
    };

    let error = build(vec![("http.tls.cert_file", server.cert_file.clone())]).await;
    assert!(error.contains("http.tls.key_file"), "{error}");
    let error = build(vec![("http.tls.key_file", server.key_file.clone())]).await;
    assert!(error.contains("http.tls.cert_file"), "{error}");

    let missing = pki.path("missing.crt");
    let error = build(vec![
        ("http.tls.cert_file", missing.clone()),
        ("http.tls.key_file", server.key_file.clone()),
    ])
    .await;
    assert!(
        error.contains("http.tls.cert_file") && error.contains(&missing),
        "{error}"
    );

    // A broken key is named, and what the file holds is not repeated.
    let broken = pki.path("broken.key");
    std::fs::write(
        &broken,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n",
    )
    .unwrap();
    let error = build(vec![
        ("http.tls.cert_file", server.cert_file.clone()),
        ("http.tls.key_file", broken.clone()),
    ])
    .await;
    assert!(
        error.contains("http.tls.key_file") && error.contains(&broken),
        "{error}"
    );
    assert!(!error.contains("c2VjcmV0"), "{error}");

    // Another certificate's key does not fit.
    let other = pki.issue("other", "other", &[], false);
    let error = build(vec![
        ("http.tls.cert_file", server.cert_file.clone()),
        ("http.tls.key_file", other.key_file.clone()),
    ])
    .await;
    assert!(error.contains("http.tls.key_file"), "{error}");
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn grpc_is_served_over_tls() {
    use mamey_http::grpc::{GrpcAddress, GrpcServer};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let pki = Pki::new("test CA");
    let server = pki.issue("server", "server", &[], false);
    let service = service(
        "secure",
        &[
            ("grpc.address", "127.0.0.1:0"),
            ("grpc.tls.cert_file", &server.cert_file),
            ("grpc.tls.key_file", &server.key_file),
        ],
    )
    .plugin(GrpcServer::new())
    .build()
    .await
    .unwrap();
    let GrpcAddress(address) = service.resources().get::<GrpcAddress>().unwrap();
    let service = service.start().await.unwrap();

    let config = pki.client(&[H2], None);
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let config = Arc::clone(&config);
            async move { connect(address, config).await.map(TokioIo::new) }
        }))
        .await
        .unwrap();
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);

    // gRPC is HTTP/2 only: a client that offers only HTTP/1.1 is refused.
    let http1 = connect(address, pki.client(&[HTTP1], None)).await;
    assert!(
        http1.is_err(),
        "negotiated {:?}",
        http1.map(|s| s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    );

    let error = grpc_error_with_cert_file_alone(&pki).await;
    assert!(error.contains("grpc.tls.key_file"), "{error}");
    service.stop().await.unwrap();
}

/// Building gRPC with `grpc.tls.cert_file` alone.
#[cfg(feature = "grpc")]
async fn grpc_error_with_cert_file_alone(pki: &Pki) -> String {
    let cert_file = pki.path("server.crt");
    service(
        "secure",
        &[
            ("grpc.address", "127.0.0.1:0"),
            ("grpc.tls.cert_file", &cert_file),
        ],
    )
    .plugin(mamey_http::grpc::GrpcServer::new())
    .build()
    .await
    .unwrap_err()
    .to_string()
}
