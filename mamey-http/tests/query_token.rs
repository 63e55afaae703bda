//! Bearer tokens in the `access_token` query parameter: accepted on
//! WebSocket upgrades that carry no `authorization` header (browsers cannot
//! set one on a WebSocket), refused on every other request, and never
//! written to the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use bytes::Bytes;
use http::{Method, StatusCode};
use mamey_core::Identity;
use mamey_http::{Caller, JwtIssuer, WebApi};
use mamey_observability::Observability;
use support::{Reply, send, serve, service};

const SECRET: &str = "a-query-token-secret-long-enough-for-hs256";

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

/// The caller's subject, on `GET` and `POST /live`.
fn api() -> WebApi {
    async fn subject(Caller(identity): Caller) -> String {
        identity.subject
    }
    WebApi::new().router(
        axum::Router::new()
            .route("/live", get(subject))
            .route("/live", post(subject)),
    )
}

const UPGRADE: [(&str, &str); 4] = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

async fn call(url: &str, method: Method, headers: &[(&str, &str)]) -> Reply {
    send(method, url, headers, Bytes::new()).await
}

#[tokio::test]
async fn an_upgrade_may_carry_its_token_in_the_query_and_nothing_else_may() {
    let lines = Lines::default();
    let api = serve(
        service(
            "live",
            &[("http.jwt.secret", SECRET), ("logging.level", "debug")],
        )
        .plugin(Observability::new().with_writer(lines.clone())),
        api(),
    )
    .await;
    let token = JwtIssuer::hs256(SECRET)
        .issue(&Identity::new("ada"))
        .unwrap();
    let with_token = api.url(&format!("/live?access_token={token}"));

    // A WebSocket upgrade without `authorization`: the query's token.
    let upgrade = call(&with_token, Method::GET, &UPGRADE).await;
    assert_eq!(upgrade.status, StatusCode::OK, "{:?}", upgrade.body);
    assert_eq!(upgrade.body, "ada");

    // An invalid one is refused as a header's would be.
    let forged = api.url("/live?access_token=not.a.token");
    let refused = call(&forged, Method::GET, &UPGRADE).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.problem().detail, "the token is malformed");

    // The header, when there is one, is the only token read.
    let mut with_header = UPGRADE.to_vec();
    with_header.push(("authorization", "Bearer not.a.token"));
    let header_first = call(&with_token, Method::GET, &with_header).await;
    assert_eq!(header_first.status, StatusCode::UNAUTHORIZED);

    // A plain request, or an upgrade by another method, is not read from
    // the query: its URL is logged and kept far more widely than headers.
    for (method, headers) in [
        (Method::GET, &[][..]),
        (Method::GET, &UPGRADE[..1]),
        (Method::POST, &UPGRADE[..]),
    ] {
        let plain = call(&with_token, method.clone(), headers).await;
        assert_eq!(
            plain.status,
            StatusCode::UNAUTHORIZED,
            "{method} {headers:?}"
        );
        assert_eq!(plain.problem().detail, "a bearer token is required");
    }

    // The log has the requests, but never the token.
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("/live"),
        "the requests are logged: {logged}"
    );
    assert!(!logged.contains(&token), "the token is logged: {logged}");
    assert!(!logged.contains("access_token"), "{logged}");

    api.service.stop().await.unwrap();
}
