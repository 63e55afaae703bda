//! Roles, policies, and tokens.

use mamey_core::cqrs::Command;
use mamey_http::axum::routing::get;
use mamey_http::utoipa::{self, ToSchema};
use serde::Deserialize;

/// Approve an order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ApproveOrder {
    /// The order.
    pub id: u64,
}
impl Command for ApproveOrder {}

/// Archive an order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ArchiveOrder {
    /// The order.
    pub id: u64,
}
impl Command for ArchiveOrder {}

// ANCHOR: policies
use mamey_core::Identity;
use mamey_http::{Auth, Endpoints, WebApi};

/// Managers approve; a policy decides who archives.
pub fn web_api() -> WebApi {
    WebApi::new()
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
// ANCHOR_END: policies

async fn reports() -> &'static str {
    "no reports yet"
}

// ANCHOR: require
use mamey_http::axum::Router;
use mamey_http::require;

/// `GET /reports`, for managers only.
pub fn reports_api() -> WebApi {
    let reports = Router::new()
        .route("/reports", get(reports))
        .route_layer(require(Auth::roles(["manager"])));
    WebApi::new().router(reports)
}
// ANCHOR_END: require

// ANCHOR: issuer
use std::time::Duration;

use mamey_core::Error;
use mamey_http::JwtIssuer;

/// A token for an administrator.
pub fn admin_token() -> Result<String, Error> {
    let issuer = JwtIssuer::hs256("a-secret-of-at-least-32-bytes-long") // or rs256(pem)?, es256(pkcs8_pem)?
        .key_id("2026-03") // the `kid` header
        .issuer("identity") // `iss`
        .audience("orders") // `aud`
        .ttl(Duration::from_secs(900)); // default one hour
    let token = issuer.issue(&Identity::new("user-1").with_role("admin"))?;
    Ok(token)
}
// ANCHOR_END: issuer

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_has_three_parts() -> Result<(), mamey_core::Error> {
        let token = super::admin_token()?;
        assert_eq!(token.split('.').count(), 3, "{token}");
        Ok(())
    }
}
