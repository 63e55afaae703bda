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
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&expired)).await,
        "the token has expired",
        "expired",
    );

    let early = hs256()
        .issue(&with_claim(user("ada"), "nbf", (now() + 3600).into()))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&early)).await,
        "the token is not valid yet",
        "not yet valid",
    );

    let foreign_issuer = JwtIssuer::hs256(SECRET)
        .issuer("elsewhere")
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&foreign_issuer)).await,
        "the token's issuer is not accepted",
        "issuer",
    );

    let foreign_audience = JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .audience("billing")
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&foreign_audience)).await,
        "the token's audience is not accepted",
        "audience",
    );

    let no_issuer = JwtIssuer::hs256(SECRET)
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&no_issuer)).await,
        "the token lacks the `iss` claim",
        "no iss",
    );
    let no_audience = JwtIssuer::hs256(SECRET)
        .issuer("identity")
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&no_audience)).await,
        "the token lacks the `aud` claim",
        "no aud",
    );

    let forged = JwtIssuer::hs256("another-secret-that-is-also-long-enough")
        .issuer("identity")
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&forged)).await,
        "the token's signature is not valid",
        "bad signature",
    );

    // `alg: none` with the valid token's claims and no signature.
    let claims = valid.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&unsigned)).await,
        "the token's algorithm is not accepted",
        "alg none",
    );

    expect_refused(
        &call(&api, Method::GET, "/me", Some("not-a-token")).await,
        "the token is malformed",
        "garbage",
    );

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
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&confused)).await,
        "the token's algorithm is not accepted",
        "HS/RS confusion",
    );

    let other_key = JwtIssuer::rs256(RSA_B)
        .unwrap()
        .issue(&user("ada"))
        .unwrap();
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&other_key)).await,
        "the token's signature is not valid",
        "other key",
    );
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
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&old)).await,
        "the token's key id is not known",
        "retired key",
    );
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

// Tokens the library would refuse to create, forged by hand: base64url of
// hand-written JSON, signed with HMAC-SHA256 and the configured secret, so
// the signature is valid and only what each test varies can be the reason
// for a refusal.

/// base64url without padding (RFC 7515 §2).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// `header.claims.signature` with the given segments, HS256-signed with
/// [`SECRET`] over whatever the first two segments are.
fn sign_segments(header: &str, claims: &str) -> String {
    let message = format!("{header}.{claims}");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// A token of hand-written JSON header and claims, validly signed.
fn forge(header: &str, claims: &str) -> String {
    sign_segments(&b64url(header.as_bytes()), &b64url(claims.as_bytes()))
}

const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Claims that [`forged_api`] accepts, with `overrides` (name, raw JSON
/// value) replacing or adding claims.
fn claims(overrides: &[(&str, &str)]) -> String {
    let now = now();
    let mut claims: Vec<(String, String)> = vec![
        ("sub".into(), r#""ada""#.into()),
        ("iss".into(), r#""identity""#.into()),
        ("aud".into(), r#""orders""#.into()),
        ("iat".into(), now.to_string()),
        ("nbf".into(), now.to_string()),
        ("exp".into(), (now + 3600).to_string()),
    ];
    for (name, value) in overrides {
        match claims.iter_mut().find(|(n, _)| n == name) {
            Some(claim) => claim.1 = (*value).to_owned(),
            None => claims.push(((*name).to_owned(), (*value).to_owned())),
        }
    }
    let fields: Vec<String> = claims
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The service the forged tokens are sent to: HS256 with [`SECRET`],
/// issuer `identity`, audience `orders`.
async fn forged_api() -> Served {
    let api = start(&[
        ("http.jwt.secret", SECRET),
        ("http.jwt.issuer", "identity"),
        ("http.jwt.audiences", "[\"orders\"]"),
    ])
    .await;
    // The forging itself is sound: well-formed forged tokens are accepted.
    let control = forge(HS256_HEADER, &claims(&[]));
    let me = call(&api, Method::GET, "/me", Some(&control)).await;
    assert_eq!(
        (me.status, me.body.as_ref()),
        (StatusCode::OK, b"ada ada".as_ref())
    );
    api
}

/// A `401` problem whose detail is exactly `reason`, also in the
/// `www-authenticate` header when that carries a description.
fn expect_refused(reply: &Reply, reason: &str, why: &str) {
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    let problem = reply.problem();
    assert_eq!(problem.code, "auth.unauthorized", "{why}");
    assert_eq!(problem.detail, reason, "{why}: {body}");
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer"), "{why}: {challenge}");
    if let Some((_, description)) = challenge.split_once("error_description=") {
        assert_eq!(description.trim_matches('"'), reason, "{why}: {challenge}");
    }
}

#[tokio::test]
async fn an_issuer_must_be_one_string() {
    let api = forged_api().await;
    for iss in [
        r#"["identity"]"#,
        r#"["identity","elsewhere"]"#,
        r#"["elsewhere","identity"]"#,
        r#"{"identity":true}"#,
        "42",
        "null",
    ] {
        let token = forge(HS256_HEADER, &claims(&[("iss", iss)]));
        let reply = call(&api, Method::GET, "/me", Some(&token)).await;
        if iss == "null" {
            // `null` is no issuer at all.
            expect_refused(&reply, "the token lacks the `iss` claim", iss);
        } else {
            expect_refused(&reply, "the token's issuer is not accepted", iss);
        }
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    let api = forged_api().await;
    for header in [
        // An extension mamey does not understand (RFC 7515 §4.1.11).
        r#"{"alg":"HS256","typ":"JWT","crit":["urn:example:ext"],"urn:example:ext":"on"}"#,
        // One the JWS spec defines; mamey understands none.
        r#"{"alg":"HS256","typ":"JWT","crit":["b64"],"b64":"false"}"#,
        // Present but empty, or not an array.
        r#"{"alg":"HS256","typ":"JWT","crit":[]}"#,
        r#"{"alg":"HS256","typ":"JWT","crit":null}"#,
        r#"{"alg":"HS256","typ":"JWT","crit":"urn:example:ext"}"#,
        r#"{"alg":"HS256","typ":"JWT","crit":{}}"#,
        r#"{"alg":"HS256","typ":"JWT","crit":[7]}"#,
    ] {
        let token = forge(header, &claims(&[]));
        expect_refused(
            &call(&api, Method::GET, "/me", Some(&token)).await,
            "the token's `crit` header is not supported",
            header,
        );
    }
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn time_claims_must_be_numeric_dates() {
    let api = forged_api().await;
    let later = now() + 3600;
    let later_string = format!("\"{later}\"");
    let later_fraction = format!("{later}.5");
    for (claim, value) in [
        // Too large for any seconds type.
        ("exp", "1e20"),
        ("exp", "-1e20"),
        ("exp", "-1"),
        ("exp", later_string.as_str()),
        ("exp", "true"),
        ("exp", "[1]"),
        ("nbf", "1e20"),
        ("nbf", "\"0\""),
        ("nbf", "{}"),
        ("iat", "1e20"),
        ("iat", "\"yesterday\""),
        ("iat", "-5"),
    ] {
        let token = forge(HS256_HEADER, &claims(&[(claim, value)]));
        expect_refused(
            &call(&api, Method::GET, "/me", Some(&token)).await,
            &format!("the token's `{claim}` claim is not a valid time"),
            &format!("{claim}: {value}"),
        );
    }

    // `exp` is required; `null` is no `exp`.
    let without = forge(HS256_HEADER, &claims(&[("exp", "null")]));
    expect_refused(
        &call(&api, Method::GET, "/me", Some(&without)).await,
        "the token lacks the `exp` claim",
        "exp: null",
    );

    // A NumericDate may have a fraction (RFC 7519 §2).
    let fractional = forge(
        HS256_HEADER,
        &claims(&[("exp", later_fraction.as_str()), ("iat", "1700000000.25")]),
    );
    assert_eq!(
        call(&api, Method::GET, "/me", Some(&fractional))
            .await
            .status,
        StatusCode::OK
    );
    api.service.stop().await.unwrap();
}

/// Words of jsonwebtoken's, serde's and base64's error messages.
const LIBRARY_TEXT: [&str; 6] = [
    "variant",
    "expected one of",
    "Base64",
    "Invalid symbol",
    "JSON error",
    "at line",
];

fn expect_no_library_text(reply: &Reply, reason: &str, why: &str) {
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    for text in LIBRARY_TEXT {
        assert!(!body.contains(text), "{why}: {text:?} in {body}");
        assert!(!challenge.contains(text), "{why}: {text:?} in {challenge}");
    }
    expect_refused(reply, reason, why);
}

#[tokio::test]
async fn refusals_give_a_stable_reason_not_library_errors() {
    let api = forged_api().await;
    let valid_claims = b64url(claims(&[]).as_bytes());

    // `alg: none`, unsigned.
    let unsigned = format!(
        "{}.{valid_claims}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#)
    );
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&unsigned)).await,
        "the token's algorithm is not accepted",
        "alg none",
    );
    // An algorithm the library has never heard of.
    let unknown = forge(r#"{"alg":"XS999","typ":"JWT"}"#, &claims(&[]));
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&unknown)).await,
        "the token's algorithm is not accepted",
        "alg XS999",
    );

    // `!` (33) is no base64url symbol: in the header, in the claims (with a
    // signature valid over them), and in the signature.
    let bad_header = format!("ey!{}.{valid_claims}.c2ln", b64url(HS256_HEADER.as_bytes()));
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&bad_header)).await,
        "the token is malformed",
        "bad base64 in the header",
    );
    let bad_claims = sign_segments(
        &b64url(HS256_HEADER.as_bytes()),
        &format!("ey!{valid_claims}"),
    );
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&bad_claims)).await,
        "the token is malformed",
        "bad base64 in the claims",
    );
    let good = forge(HS256_HEADER, &claims(&[]));
    let bad_signature = format!("{}!", &good[..good.len() - 1]);
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&bad_signature)).await,
        "the token is malformed",
        "bad base64 in the signature",
    );

    // Not JSON, JSON that is not an object, and a member named twice
    // (readers that keep the first and ones that keep the last disagree).
    let twice = format!("{{\"iss\":\"elsewhere\",{}", &claims(&[])[1..]);
    for (header, body) in [
        ("{\"alg\":", claims(&[])),
        ("[]", claims(&[])),
        (HS256_HEADER, "{\"sub\":".to_owned()),
        (HS256_HEADER, "[1,2]".to_owned()),
        (HS256_HEADER, twice),
        (r#"{"alg":"none","alg":"HS256"}"#, claims(&[])),
    ] {
        expect_no_library_text(
            &call(&api, Method::GET, "/me", Some(&forge(header, &body))).await,
            "the token is malformed",
            &format!("{header} {body}"),
        );
    }
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some("not-a-token")).await,
        "the token is malformed",
        "garbage",
    );
    let four_segments = format!("{good}.{valid_claims}");
    expect_no_library_text(
        &call(&api, Method::GET, "/me", Some(&four_segments)).await,
        "the token is malformed",
        "four segments",
    );

    // The claims checks say which claim, in the same fixed words.
    let signed_elsewhere = JwtIssuer::hs256("another-secret-that-is-also-long-enough")
        .issuer("identity")
        .audience("orders")
        .issue(&user("ada"))
        .unwrap();
    let (past, future) = ((now() - 3600).to_string(), (now() + 3600).to_string());
    let expired = forge(HS256_HEADER, &claims(&[("exp", past.as_str())]));
    let early = forge(HS256_HEADER, &claims(&[("nbf", future.as_str())]));
    let elsewhere = forge(HS256_HEADER, &claims(&[("iss", r#""elsewhere""#)]));
    let billing = forge(HS256_HEADER, &claims(&[("aud", r#"["billing"]"#)]));
    let no_aud = forge(HS256_HEADER, &claims(&[("aud", "null")]));
    for (token, reason) in [
        (signed_elsewhere, "the token's signature is not valid"),
        (expired, "the token has expired"),
        (early, "the token is not valid yet"),
        (elsewhere, "the token's issuer is not accepted"),
        (billing, "the token's audience is not accepted"),
        (no_aud, "the token lacks the `aud` claim"),
    ] {
        expect_no_library_text(
            &call(&api, Method::GET, "/me", Some(&token)).await,
            reason,
            reason,
        );
    }
    api.service.stop().await.unwrap();
}
