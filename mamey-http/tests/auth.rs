//! Bearer-token authentication and per-endpoint authorization, over real
//! HTTP: HS256, RS256, ES256, a rotating JWKS, and the attacks on each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use mamey_core::cqrs::Command;
use mamey_core::{Identity, MessageContext};
use mamey_http::utoipa::ToSchema;
use mamey_http::{Auth, Caller, Endpoints, JwtIssuer, WebApi, require};
use serde::Deserialize;
use support::{Reply, Served, send, serve, service};

const SECRET: &str = "orders-test-secret-that-is-long-enough";
const RSA_A: &str = include_str!("keys/rsa-a.pem");
const RSA_A_PUBLIC: &str = include_str!("keys/rsa-a.pub.pem");
const RSA_B: &str = include_str!("keys/rsa-b.pem");
const EC: &str = include_str!("keys/ec.pem");
const EC_PUBLIC: &str = include_str!("keys/ec.pub.pem");

#[derive(Debug, Deserialize, ToSchema)]
struct ApproveOrder {
    id: u64,
}
impl Command for ApproveOrder {}

#[derive(Debug, Deserialize, ToSchema)]
struct ArchiveOrder {
    id: u64,
}
impl Command for ArchiveOrder {}

/// `/me` answers the caller's subject and the context's; `/orders/{id}/approval`
/// needs role `manager`; `/orders/{id}/archive` needs policy `even-orders`.
fn api() -> WebApi {
    WebApi::new()
        .router(axum::Router::new().route(
            "/me",
            get(|Caller(identity): Caller| async move {
                let in_context = MessageContext::current()
                    .and_then(|c| c.identity.clone())
                    .map(|i| i.subject)
                    .unwrap_or_default();
                format!("{} {in_context}", identity.subject)
            }),
        ))
        .router(
            axum::Router::new()
                .route("/reports", get(|| async { "report" }))
                .route_layer(require(Auth::roles(["manager"]))),
        )
        .router(
            axum::Router::new()
                .route("/archive", get(|| async { "archive" }))
                .route_layer(require(Auth::policy("even-orders"))),
        )
        .endpoints(
            Endpoints::new()
                .post::<ApproveOrder>("/orders/{id}/approval")
                .auth(Auth::roles(["manager"]))
                .post::<ArchiveOrder>("/orders/{id}/archive")
                .auth(Auth::policy("even-orders")),
        )
        .policy("even-orders", |identity: &Identity| {
            identity.claims.get("order_parity").and_then(|v| v.as_str()) == Some("even")
        })
}

async fn start(config: &[(&str, &str)]) -> Served {
    serve(
        service("orders", config).handlers(|d| {
            d.command(|c: ApproveOrder| async move { known(c.id) })
                .command(|c: ArchiveOrder| async move { known(c.id) });
        }),
        api(),
    )
    .await
}

fn known(order: u64) -> Result<(), mamey_core::Error> {
    if order == 0 {
        Err(mamey_core::Error::not_found(
            "order.not_found",
            "no order 0",
        ))
    } else {
        Ok(())
    }
}

async fn call(api: &Served, method: Method, path: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    send(method, &api.url(path), &headers, Bytes::new()).await
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn user(subject: &str) -> Identity {
    Identity::new(subject)
}

fn with_claim(identity: Identity, name: &str, value: serde_json::Value) -> Identity {
    let mut identity = identity;
    identity.claims.insert(name.to_owned(), value);
    identity
}

fn hs256() -> JwtIssuer {
    JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .audience("orders")
}

async fn expect_unauthorized(reply: Reply, why: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{why}: {:?}",
        reply.body
    );
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"),
        "{why}"
    );
    assert_eq!(reply.problem().code, "auth.unauthorized", "{why}");
}

#[tokio::test]
async fn hs256_tokens_are_checked_claim_by_claim() {
    let api = start(&[
        ("http.jwt.secret", SECRET),
        ("http.jwt.issuer", "identity"),
        ("http.jwt.audiences", "[\"orders\"]"),
        ("http.jwt.leeway", "0s"),
    ])
    .await;

    let valid = hs256().issue(&user("ada")).unwrap();
    let me = call(&api, Method::GET, "/me", Some(&valid)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.body, "ada ada",
        "the identity is in the message context too"
    );

    expect_unauthorized(call(&api, Method::GET, "/me", None).await, "no token").await;

    let expired = hs256()
        .issue(&with_claim(user("ada"), "exp", (now() - 60).into()))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&expired)).await,
        "expired",
    )
    .await;

    let early = hs256()
        .issue(&with_claim(user("ada"), "nbf", (now() + 3600).into()))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&early)).await,
        "not yet valid",
    )
    .await;

    let foreign_issuer = JwtIssuer::hs256(SECRET)
        .issuer("elsewhere")
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&foreign_issuer)).await,
        "issuer",
    )
    .await;

    let foreign_audience = JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .audience("billing")
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&foreign_audience)).await,
        "audience",
    )
    .await;

    let no_issuer = JwtIssuer::hs256(SECRET)
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&no_issuer)).await,
        "no iss",
    )
    .await;
    let no_audience = JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&no_audience)).await,
        "no aud",
    )
    .await;

    let forged = JwtIssuer::hs256("another-secret-that-is-also-long-enough")
        .issuer("identity")
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&forged)).await,
        "bad signature",
    )
    .await;

    // `alg: none` with the valid token's claims and no signature.
    let claims = valid.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&unsigned)).await,
        "alg none",
    )
    .await;

    expect_unauthorized(
        call(&api, Method::GET, "/me", Some("not-a-token")).await,
        "garbage",
    )
    .await;

    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn roles_and_policies_guard_endpoints() {
    let api = start(&[("http.jwt.secret", SECRET)]).await;
    let issuer = JwtIssuer::hs256(SECRET);

    let clerk = issuer.issue(&user("bob").with_role("clerk")).unwrap();
    let manager = issuer.issue(&user("eve").with_role("manager")).unwrap();

    expect_unauthorized(
        call(&api, Method::POST, "/orders/1/approval", None).await,
        "anonymous",
    )
    .await;
    let forbidden = call(&api, Method::POST, "/orders/1/approval", Some(&clerk)).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.problem().code, "auth.forbidden");
    let approved = call(&api, Method::POST, "/orders/1/approval", Some(&manager)).await;
    assert_eq!(approved.status, StatusCode::NO_CONTENT);

    let even = issuer
        .issue(&with_claim(user("bob"), "order_parity", "even".into()))
        .unwrap();
    let odd = issuer
        .issue(&with_claim(user("bob"), "order_parity", "odd".into()))
        .unwrap();
    assert_eq!(
        call(&api, Method::POST, "/orders/2/archive", Some(&even))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&api, Method::POST, "/orders/2/archive", Some(&odd))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // The same requirements on plain axum routes.
    expect_unauthorized(
        call(&api, Method::GET, "/reports", None).await,
        "plain, anonymous",
    )
    .await;
    assert_eq!(
        call(&api, Method::GET, "/reports", Some(&clerk))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let report = call(&api, Method::GET, "/reports", Some(&manager)).await;
    assert_eq!(
        (report.status, report.body.as_ref()),
        (StatusCode::OK, b"report".as_ref())
    );
    assert_eq!(
        call(&api, Method::GET, "/archive", Some(&even))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&api, Method::GET, "/archive", Some(&odd)).await.status,
        StatusCode::FORBIDDEN
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn an_rsa_key_is_never_an_hmac_secret() {
    let api = start(&[("http.jwt.public_key_pem", RSA_A_PUBLIC)]).await;

    let valid = JwtIssuer::rs256(RSA_A)
        .unwrap()
        .issue(&user("ada"))
        .unwrap();
    assert_eq!(
        call(&api, Method::GET, "/me", Some(&valid)).await.status,
        StatusCode::OK
    );

    // The classic confusion: HS256 "signed" with the public key as secret.
    let confused = JwtIssuer::hs256(RSA_A_PUBLIC).issue(&user("ada")).unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&confused)).await,
        "HS/RS confusion",
    )
    .await;

    let other_key = JwtIssuer::rs256(RSA_B)
        .unwrap()
        .issue(&user("ada"))
        .unwrap();
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&other_key)).await,
        "other key",
    )
    .await;
    api.service.stop().await.unwrap();

    let api = start(&[("http.jwt.public_key_pem", EC_PUBLIC)]).await;
    let valid = JwtIssuer::es256(EC).unwrap().issue(&user("ada")).unwrap();
    assert_eq!(
        call(&api, Method::GET, "/me", Some(&valid)).await.status,
        StatusCode::OK
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_are_refused_when_no_key_is_configured() {
    let api = start(&[]).await;
    let token = JwtIssuer::hs256(SECRET).issue(&user("ada")).unwrap();
    expect_unauthorized(call(&api, Method::GET, "/me", Some(&token)).await, "no key").await;
    api.service.stop().await.unwrap();
}

fn jwk(pem: &str, kid: &str) -> Jwk {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

/// Serves the key set in `keys` at `/jwks.json` on a free port.
async fn key_server(keys: Arc<Mutex<JwkSet>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = Arc::clone(&keys);
            async move { axum::Json(keys.lock().unwrap().clone()) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test]
async fn jwks_keys_rotate() {
    let keys = Arc::new(Mutex::new(JwkSet {
        keys: vec![jwk(RSA_A, "a")],
    }));
    let jwks = key_server(Arc::clone(&keys)).await;
    let url = format!("http://{jwks}/jwks.json");
    let api = start(&[
        ("http.jwt.jwks_url", &url),
        ("http.jwt.jwks_refresh", "10m"),
    ])
    .await;

    let old = JwtIssuer::rs256(RSA_A)
        .unwrap()
        .key_id("a")
        .issue(&user("ada"))
        .unwrap();
    assert_eq!(
        call(&api, Method::GET, "/me", Some(&old)).await.status,
        StatusCode::OK
    );

    // The identity service rotates to key "b" and retires "a".
    *keys.lock().unwrap() = JwkSet {
        keys: vec![jwk(RSA_B, "b")],
    };
    let new = JwtIssuer::rs256(RSA_B)
        .unwrap()
        .key_id("b")
        .issue(&user("ada"))
        .unwrap();
    // An unknown key id fetches the set again (at most once a second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = call(&api, Method::GET, "/me", Some(&new)).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_unauthorized(
        call(&api, Method::GET, "/me", Some(&old)).await,
        "retired key",
    )
    .await;
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_jwt_config_names_the_key() {
    let error = service("orders", &[("http.jwt.secret", "short")])
        .plugin(api())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("http.jwt.secret"), "{error}");
    assert!(error.contains("32 bytes"), "{error}");

    let error = service("orders", &[("http.jwt.public_key_pem", "not a key")])
        .plugin(api())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("http.jwt.public_key_pem"), "{error}");
}
