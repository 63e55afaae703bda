//! Plain axum handlers.

use mamey_core::Error;
use mamey_core::cqrs::Command;
use serde::{Deserialize, Serialize};

/// A price.
#[derive(Debug, Serialize, Deserialize)]
pub struct Price {
    /// In cents.
    pub cents: u64,
}

/// The body of `PUT /orders/{id}/name`.
#[derive(Debug, Deserialize)]
pub struct NewName {
    /// The new name.
    pub name: String,
}

/// Rename an order.
#[derive(Debug)]
pub struct Rename {
    /// The order.
    pub id: u64,
    /// Its new name.
    pub name: String,
    /// Who renamed it.
    pub by: String,
}
impl Command for Rename {}

/// Handles `Rename`.
pub async fn handle_rename(rename: Rename) -> Result<(), Error> {
    tracing::info!(
        order = rename.id,
        name = rename.name,
        by = rename.by,
        "renamed"
    );
    Ok(())
}

// ANCHOR: axum
use mamey_core::cqrs::Dispatcher;
use mamey_http::axum::{
    Router,
    http::StatusCode,
    routing::{get, put},
};
use mamey_http::{ApiError, Caller, Json, Path, Resource, ServiceClient, WebApi};

async fn price(
    Path(id): Path<u64>,
    Resource(client): Resource<ServiceClient>,
) -> Result<Json<Price>, ApiError> {
    let price: Price = client
        .get("pricing", &format!("/prices/{id}"))
        .send()
        .await?
        .json()?;
    Ok(Json(price))
}

async fn rename(
    Caller(identity): Caller,
    Path(id): Path<u64>,
    Resource(dispatcher): Resource<Dispatcher>,
    Json(body): Json<NewName>, // the body extractor comes last
) -> Result<StatusCode, ApiError> {
    dispatcher
        .send(Rename {
            id,
            name: body.name,
            by: identity.subject,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The web API of these routes.
pub fn web_api() -> WebApi {
    WebApi::new().router(
        Router::new()
            .route("/orders/{id}/price", get(price))
            .route("/orders/{id}/name", put(rename)),
    )
}
// ANCHOR_END: axum
