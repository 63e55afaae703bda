//! Authorization: named policies, and checking an [`Auth`] requirement
//! against what a request's token established (`401` or `403`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mamey_core::Identity;

use super::{Auth, Authentication};
use crate::problem::Problem;

type PolicyFn = Arc<dyn Fn(&Identity) -> bool + Send + Sync>;

/// Named authorization rules over the caller's identity.
#[derive(Clone, Default)]
pub(crate) struct Policies(HashMap<String, PolicyFn>);

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Policies {
    pub(crate) fn insert(&mut self, name: String, policy: PolicyFn) {
        self.0.insert(name, policy);
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Checks `requirement` against what the request established.
    pub(crate) fn authorize(
        &self,
        requirement: &Auth,
        authentication: Option<&Authentication>,
    ) -> Result<(), Denied> {
        let identity = match (requirement, authentication) {
            (Auth::Anonymous, _) => return Ok(()),
            (_, Some(Authentication::Valid(identity))) => identity,
            (_, Some(Authentication::Invalid(reason))) => {
                return Err(Denied::Unauthenticated(reason.clone()));
            }
            (_, Some(Authentication::Missing) | None) => {
                return Err(Denied::Unauthenticated(
                    "a bearer token is required".to_owned(),
                ));
            }
        };
        match requirement {
            Auth::Anonymous | Auth::Authenticated => Ok(()),
            Auth::Roles(roles) if roles.iter().any(|r| identity.has_role(r)) => Ok(()),
            Auth::Roles(roles) => Err(Denied::Forbidden(format!(
                "requires one of the roles: {}",
                roles.join(", ")
            ))),
            Auth::Policy(name) if self.0.get(name).is_some_and(|policy| policy(identity)) => Ok(()),
            Auth::Policy(name) => Err(Denied::Forbidden(format!("denied by policy `{name}`"))),
        }
    }
}

/// Why a request may not proceed: `401` or `403`.
#[derive(Debug)]
pub(crate) enum Denied {
    Unauthenticated(String),
    Forbidden(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated(reason) => unauthorized(&reason),
            Self::Forbidden(reason) => {
                Problem::new(StatusCode::FORBIDDEN, "auth.forbidden", reason).into_response()
            }
        }
    }
}

/// A `401` problem with `www-authenticate: Bearer`.
pub(crate) fn unauthorized(reason: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "auth.unauthorized", reason).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}
