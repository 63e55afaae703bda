//! Connections over real sockets: every connection must make progress
//! within its deadline (silent, idle and half-started ones are closed, so
//! they cannot fill `http.max_connections`), and a stop cuts the requests
//! that outlive `http.drain_timeout` instead of failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_http::WebApi;
use support::{Served, serve, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a test waits for what should take a fraction of a second.
const PATIENCE: Duration = Duration::from_secs(5);

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

const GOAWAY: u8 = 7;
const PING: u8 = 6;

/// A web API with `/slow` (answers after 600 ms) and `/upload` (counts
/// entries, then reads the whole body), and `config` on top of short
/// deadlines.
async fn api(config: &[(&str, &str)]) -> (Served, Arc<AtomicUsize>) {
    let entered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&entered);
    let router = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "done"
            }),
        )
        .route(
            "/upload",
            post(move |body: axum::body::Body| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = body.collect().await.map_err(|_| StatusCode::BAD_REQUEST)?;
                    Ok::<_, StatusCode>(format!("{} bytes", body.to_bytes().len()))
                }
            }),
        );
    let served = serve(service("connections", config), WebApi::new().router(router)).await;
    (served, entered)
}

/// Reads until the server closes `stream` (end of stream or reset) and
/// returns what it sent; panics if it is still open after [`PATIENCE`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the server kept the connection open for {PATIENCE:?} (received {:?})",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Ok(Err(error)) => {
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
                return received;
            }
        }
    }
}

/// The types of the HTTP/2 frames in `bytes` (from the server: no preface).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.unwrap()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "200ms"),
        ("http.idle_timeout", "60s"),
    ])
    .await;
    let mut silent = connect(api.address).await;
    assert_eq!(read_until_closed(&mut silent).await, b"");
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn an_http2_preface_followed_by_silence_is_closed() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "200ms"),
        ("http.idle_timeout", "60s"),
        ("http.http2_ping_interval", "0s"),
    ])
    .await;
    let mut silent = connect(api.address).await;
    silent.write_all(PREFACE).await.unwrap();
    read_until_closed(&mut silent).await;
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "60s"),
        ("http.idle_timeout", "200ms"),
        ("http.http2_ping_interval", "0s"),
        ("http.http2_ping_timeout", "200ms"),
    ])
    .await;
    let mut idle = connect(api.address).await;
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(SETTINGS).await.unwrap();
    // The client never acknowledges the GOAWAY's ping either.
    let received = read_until_closed(&mut idle).await;
    assert!(
        frame_types(&received).contains(&GOAWAY),
        "frames {:?}",
        frame_types(&received)
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn an_http2_peer_that_does_not_answer_pings_is_closed() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "60s"),
        ("http.idle_timeout", "60s"),
        ("http.http2_ping_interval", "200ms"),
        ("http.http2_ping_timeout", "200ms"),
    ])
    .await;
    let mut deaf = connect(api.address).await;
    deaf.write_all(PREFACE).await.unwrap();
    deaf.write_all(SETTINGS).await.unwrap();
    let received = read_until_closed(&mut deaf).await;
    assert!(
        frame_types(&received).contains(&PING),
        "frames {:?}",
        frame_types(&received)
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "60s"),
        ("http.idle_timeout", "200ms"),
    ])
    .await;
    let mut idle = connect(api.address).await;
    idle.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut idle).await;
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.ends_with("done"), "{received}");
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn silent_connections_cannot_lock_out_health_probes() {
    let (api, _) = api(&[
        ("http.max_connections", "4"),
        ("http.header_read_timeout", "200ms"),
    ])
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(api.address).await);
    }
    // The probe waits in the backlog until a silent connection is closed.
    let probe = tokio::time::timeout(PATIENCE, support::get(&api.url("/health/live")))
        .await
        .expect("the probe was answered");
    assert_eq!(probe.status, StatusCode::OK);
    for stream in &mut silent {
        read_until_closed(stream).await;
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn requests_longer_than_the_deadlines_are_not_cut() {
    let (api, _) = api(&[
        ("http.header_read_timeout", "200ms"),
        ("http.idle_timeout", "200ms"),
        ("http.http2_ping_interval", "200ms"),
        ("http.http2_ping_timeout", "2s"),
    ])
    .await;
    let http1 = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let http2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for client in [http1, http2] {
        // Twice, the second time on the kept-alive connection.
        for _ in 0..2 {
            let request = Request::get(api.url("/slow"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "done");
        }
    }
    api.service.stop().await.unwrap();
}

/// Log output, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[tokio::test]
async fn a_stop_cuts_a_request_whose_body_never_completes() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(lines.clone())
        .finish();
    // The test's runtime has one thread, so the server's tasks log here.
    let _logging = tracing::subscriber::set_default(subscriber);
    let (api, entered) = api(&[
        ("http.drain_timeout", "200ms"),
        ("http.request_timeout", "60s"),
        ("shutdown.timeout", "60s"),
    ])
    .await;
    let mut slow = connect(api.address).await;
    slow.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten..")
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while entered.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stopped = tokio::time::timeout(PATIENCE, api.service.stop())
        .await
        .expect("the stop did not wait for the slow request");
    stopped.expect("the stop succeeds");
    let received = read_until_closed(&mut slow).await;
    assert!(
        !String::from_utf8_lossy(&received).contains("bytes"),
        "the slow request was not answered as complete"
    );
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("cut 1 connection(s) still open") && logged.contains("cut=1"),
        "{logged}"
    );
}

/// Sends `head` on a fresh HTTP/1.1 connection and returns the answer's
/// status line, content type and body.
async fn answer_to(address: SocketAddr, head: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let received = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[tokio::test]
async fn an_overlong_uri_and_oversized_headers_get_problem_documents() {
    let (served, _) = api(&[
        ("http.max_uri_length", "1024"),
        ("http.max_header_bytes", "4096"),
    ])
    .await;
    let address = served.address;

    let long_uri = format!("/slow?q={}", "a".repeat(2000));
    let (status, content_type, body) = answer_to(
        address,
        &format!("GET {long_uri} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(status.contains(" 414 "), "{status}");
    assert_eq!(content_type, "application/problem+json");
    assert!(body.contains("\"code\":\"request.uri_too_long\""), "{body}");

    let big_headers: String = (0..50)
        .map(|i| format!("x-filler-{i}: {}\r\n", "b".repeat(100)))
        .collect();
    let (status, content_type, body) = answer_to(
        address,
        &format!("GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{big_headers}\r\n"),
    )
    .await;
    assert!(status.contains(" 431 "), "{status}");
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body.contains("\"code\":\"request.headers_too_large\""),
        "{body}"
    );

    // More than 100 header fields, however small: hyper's own 431 (no
    // problem body; a cap above hyper's default costs every request).
    let many_headers: String = (0..150).map(|i| format!("x-{i}: y\r\n")).collect();
    let (status, _, _) = answer_to(
        address,
        &format!("GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{many_headers}\r\n"),
    )
    .await;
    assert!(status.contains(" 431 "), "{status}");

    // Within the limits, the same route answers.
    let (status, _, body) = answer_to(
        address,
        "GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.ends_with("done"), "{body}");
    served.service.stop().await.unwrap();
}
