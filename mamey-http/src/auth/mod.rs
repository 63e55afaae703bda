//! Bearer-token authentication (JWT) and per-endpoint authorization.
//!
//! The web API and gRPC read the `authorization: Bearer …` header of every
//! request once, with the rest of its context ([`inbound`]): a valid
//! caller's [`Identity`] goes into the request's
//! [`MessageContext`], and each endpoint checks
//! its [`Auth`] requirement: `401` without a valid token, `403` without the
//! role or policy.
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

use std::future::Future;
use std::sync::Arc;

use http::{HeaderMap, header};
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

/// Reads a request's context from `headers` (ids and trace, see
/// `mamey_observability::propagation::extract`) and validates its bearer
/// token. Without an authenticator a token is refused, naming `section`'s
/// `jwt` key.
pub(crate) async fn inbound(
    authenticator: Option<&Authenticator>,
    headers: &HeaderMap,
    section: &str,
) -> Inbound {
    let extracted = mamey_observability::propagation::extract(headers);
    let mut context = extracted.context;
    let authentication = match authenticator {
        Some(authenticator) => authenticator.authenticate(headers).await,
        None if headers.contains_key(header::AUTHORIZATION) => Authentication::Invalid(format!(
            "bearer tokens are not accepted: `{section}.jwt` is not configured"
        )),
        None => Authentication::Missing,
    };
    let mut token = None;
    if let Authentication::Valid(identity) = &authentication {
        context.identity = Some(identity.clone());
        token = bearer_token(headers).map(Arc::from);
    }
    Inbound {
        context,
        otel: extracted.otel,
        authentication,
        token,
    }
}

/// The token of an `authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
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
