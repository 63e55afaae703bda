//! Bearer-token authentication (JWT) and per-endpoint authorization.
//!
//! The web API and gRPC read the `authorization: Bearer …` header of every
//! request once, with the rest of its context ([`inbound`]): a valid
//! caller's [`Identity`] goes into the request's
//! [`MessageContext`], and each endpoint checks
//! its [`Auth`] requirement: `401` without a valid token, `403` without the
//! role or policy.
//!
//! A WebSocket upgrade without that header may carry its token in the
//! `access_token` query parameter instead ([`presented`]): browsers cannot
//! set headers on a WebSocket. Plain requests may not: a URL ends up in
//! logs, histories and `Referer` headers, so a token in it leaks.
//!
//! - `jwt.rs`: validating tokens against a secret, a public key, or a key
//!   set (`jwks.rs`, fetched and cached);
//! - `authorize.rs`: policies, and a requirement checked against what the
//!   token established;
//! - `require.rs`: the same for plain axum routes and handlers;
//! - `issuer.rs`: signing tokens.

pub(crate) mod authorize;
mod issuer;
mod jwks;
mod jwt;
mod require;
mod verified;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Version, header};
use mamey_core::{Identity, MessageContext};
use mamey_observability::propagation::OtelContext;

pub(crate) use authorize::Policies;
pub use issuer::JwtIssuer;
pub(crate) use jwt::Authenticator;
pub use require::{Caller, Require, RequireLayer, require};

/// Who may call an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// Anyone (the default).
    #[default]
    Anonymous,
    /// Any caller with a valid token.
    Authenticated,
    /// A caller with a valid token and at least one of these roles.
    Roles(Vec<String>),
    /// A caller with a valid token that the named policy (registered with
    /// [`WebApi::policy`](crate::WebApi::policy)) allows.
    Policy(String),
}

impl Auth {
    /// [`Auth::Roles`] from any list of names.
    pub fn roles<I, S>(roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Roles(roles.into_iter().map(Into::into).collect())
    }

    /// [`Auth::Policy`] by name.
    pub fn policy(name: impl Into<String>) -> Self {
        Self::Policy(name.into())
    }
}

/// What the request's bearer token established; a request extension.
#[derive(Debug, Clone)]
pub(crate) enum Authentication {
    /// No `authorization` header.
    Missing,
    /// A valid token.
    Valid(Identity),
    /// A token that failed validation, and why.
    Invalid(String),
}

/// What a request's head establishes before anything runs, for the web API
/// and gRPC alike.
pub(crate) struct Inbound {
    /// The context of the work the request starts: ids, trace, and a valid
    /// caller's identity.
    pub(crate) context: MessageContext,
    /// The remote span, for the server span to continue.
    pub(crate) otel: OtelContext,
    /// What the bearer token established.
    pub(crate) authentication: Authentication,
    /// The valid token, for the service client to forward.
    pub(crate) token: Option<Arc<str>>,
}

impl Inbound {
    /// The parts, to move each where it goes.
    pub(crate) fn into_parts(
        self,
    ) -> (
        MessageContext,
        OtelContext,
        Authentication,
        Option<Arc<str>>,
    ) {
        (self.context, self.otel, self.authentication, self.token)
    }
}

/// Reads a request's context from its headers (ids and trace, see
/// `mamey_observability::propagation::extract`) and validates the bearer
/// token it [presents](presented). Without an authenticator a token is
/// refused, naming `section`'s `jwt` key.
pub(crate) fn inbound<'a, B>(
    authenticator: Option<&'a Authenticator>,
    request: &'a Request<B>,
    section: &'a str,
) -> impl Future<Output = Inbound> + Send + 'a {
    let extracted = mamey_observability::propagation::extract(request.headers());
    // Read before the future: it holds the head's parts, never the request
    // (whose body need not be `Sync`).
    let presented = presented(request);
    authenticated(authenticator, extracted, presented, section)
}

/// [`inbound`] once the head is read.
async fn authenticated(
    authenticator: Option<&Authenticator>,
    extracted: mamey_observability::propagation::Extracted,
    presented: Presented<'_>,
    section: &str,
) -> Inbound {
    let mut context = extracted.context;
    let authentication = match (authenticator, &presented) {
        (Some(authenticator), _) => authenticator.authenticate(&presented).await,
        (None, Presented::Nothing) => Authentication::Missing,
        (None, _) => Authentication::Invalid(format!(
            "bearer tokens are not accepted: `{section}.jwt` is not configured"
        )),
    };
    let mut token = None;
    if let Authentication::Valid(identity) = &authentication {
        context.identity = Some(identity.clone());
        if let Presented::Token(valid) = presented {
            token = Some(Arc::from(valid));
        }
    }
    Inbound {
        context,
        otel: extracted.otel,
        authentication,
        token,
    }
}

/// The bearer token a request presents.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// None: no `authorization` header, and no `access_token` on an
    /// upgrade.
    Nothing,
    /// A token, to validate.
    Token(Cow<'a, str>),
    /// Something that is no bearer token, and why.
    Malformed(&'static str),
}

/// The bearer token of `request`: from `authorization: Bearer …`; or, when
/// it has no `authorization` header and is a WebSocket upgrade, from its
/// `access_token` query parameter (percent-decoded; more than one is
/// malformed). A plain request's query is never read.
pub(crate) fn presented<B>(request: &Request<B>) -> Presented<'_> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        return match bearer_token(value) {
            Some(token) => Presented::Token(Cow::Borrowed(token)),
            None => Presented::Malformed("expected `authorization: Bearer <token>`"),
        };
    }
    if !is_websocket_upgrade(request) {
        return Presented::Nothing;
    }
    let query = request.uri().query().unwrap_or_default();
    let mut tokens = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "access_token")
        .map(|(_, token)| token);
    match (tokens.next(), tokens.next()) {
        (None, _) => Presented::Nothing,
        (Some(token), None) => Presented::Token(token),
        (Some(_), Some(_)) => Presented::Malformed("expected one `access_token` query parameter"),
    }
}

/// Whether `request` asks to become a WebSocket (RFC 6455 §4.1): an
/// HTTP/1.1 `GET` with `upgrade: websocket` and `connection: upgrade`
/// (either among others, in any case).
fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && lists(request.headers(), &header::UPGRADE, "websocket")
        && lists(request.headers(), &header::CONNECTION, "upgrade")
}

/// Whether the comma-separated values of header `name` include `wanted`,
/// in any case.
fn lists(headers: &http::HeaderMap, name: &header::HeaderName, wanted: &str) -> bool {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(wanted))
}

/// The token of an `authorization: Bearer …` value.
fn bearer_token(value: &http::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

tokio::task_local! {
    /// The caller's validated bearer token, for the service client to
    /// forward (`http_client.forward_authorization`).
    static CALLER_TOKEN: Arc<str>;
}

/// The bearer token the current request or call was authenticated with, if
/// any.
pub(crate) fn caller_token() -> Option<Arc<str>> {
    CALLER_TOKEN.try_with(Arc::clone).ok()
}

/// Runs `future` as the caller: with the caller's valid bearer `token`, if
/// any, for the service client to forward.
pub(crate) async fn as_caller<F: Future>(token: Option<Arc<str>>, future: F) -> F::Output {
    match token {
        Some(token) => CALLER_TOKEN.scope(token, future).await,
        None => future.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    const UPGRADE: [(&str, &str); 2] = [("upgrade", "websocket"), ("connection", "Upgrade")];

    fn token(token: &str) -> Presented<'_> {
        Presented::Token(Cow::Borrowed(token))
    }

    #[test]
    fn an_upgrade_without_a_header_takes_its_token_from_the_query() {
        let upgrade = request(Method::GET, "/live?x=1&access_token=a%2Eb.c", &UPGRADE);
        assert_eq!(presented(&upgrade), token("a.b.c"), "percent-decoded");
        // Header values are lists, in any case.
        let listed = request(
            Method::GET,
            "/live?access_token=t",
            &[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive, upgrade"),
            ],
        );
        assert_eq!(presented(&listed), token("t"));
        let none = request(Method::GET, "/live?x=1", &UPGRADE);
        assert_eq!(presented(&none), Presented::Nothing);
        let twice = request(Method::GET, "/live?access_token=a&access_token=b", &UPGRADE);
        assert!(matches!(presented(&twice), Presented::Malformed(_)));
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let both = [
            UPGRADE[0],
            UPGRADE[1],
            ("authorization", "Bearer from-header"),
        ];
        let upgrade = request(Method::GET, "/live?access_token=from-query", &both);
        assert_eq!(presented(&upgrade), token("from-header"));
        let basic = [UPGRADE[0], UPGRADE[1], ("authorization", "Basic abc")];
        let upgrade = request(Method::GET, "/live?access_token=from-query", &basic);
        assert!(matches!(presented(&upgrade), Presented::Malformed(_)));
    }

    #[test]
    fn other_requests_never_read_the_query() {
        for plain in [
            request(Method::GET, "/me?access_token=t", &[]),
            request(Method::POST, "/live?access_token=t", &UPGRADE),
            request(
                Method::GET,
                "/live?access_token=t",
                &[("upgrade", "h2c"), ("connection", "upgrade")],
            ),
            request(
                Method::GET,
                "/live?access_token=t",
                &[("upgrade", "websocket"), ("connection", "keep-alive")],
            ),
        ] {
            assert_eq!(presented(&plain), Presented::Nothing, "{plain:?}");
        }
        let mut http2 = request(Method::GET, "/live?access_token=t", &UPGRADE);
        *http2.version_mut() = Version::HTTP_2;
        assert_eq!(presented(&http2), Presented::Nothing);
    }
}
