//! Sessions: `POST /sign-in` and `POST /refresh` answer an access token
//! and a refresh token. They are plain axum routes, since the endpoint DSL's
//! commands answer no body; each runs its own short transaction, opened
//! only after the password is checked.
//!
//! A wrong password and an unknown e-mail address are the same `401`, and
//! take the same time (see [`Passwords::verify`]). A refresh token is spent
//! when used: its row is deleted in the transaction that stores its
//! successor, so a token used twice (or concurrently) wins once.

use std::fmt;

use axum::Router;
use axum::routing::post;
use mamey_core::Error;
use mamey_http::{ApiError, Json, Resource};
use serde::{Deserialize, Serialize};
use sqlx::Pool;

use super::keys::AccessTokens;
use super::passwords::Passwords;
use super::plugin::RefreshTtl;
use super::refresh_tokens::RefreshToken;
use super::users::normalized_email;
use crate::args;
use crate::sql::{Conn, Sql};

/// The routes, over database `B`.
pub(super) fn router<B: Sql>() -> Router {
    Router::new()
        .route("/sign-in", post(sign_in::<B>))
        .route("/refresh", post(refresh::<B>))
}

/// `POST /sign-in`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignIn {
    email: String,
    password: String,
}

impl fmt::Debug for SignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignIn")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// `POST /refresh`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refresh {
    refresh_token: String,
}

/// What both answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    /// The bearer token for every service.
    access_token: String,
    /// Trades for a new session at `/refresh`, once.
    refresh_token: String,
    /// Seconds the access token is valid.
    expires_in: u64,
    /// Who signed in.
    user_id: i64,
}

/// Stores a new refresh token of `user` in `conn` (inside the caller's
/// transaction), valid for `ttl`, and makes the session.
async fn new_session<B: Sql>(
    conn: &mut Conn<B>,
    tokens: &AccessTokens,
    RefreshTtl(ttl): RefreshTtl,
    user: i64,
    now: i64,
) -> Result<Session, Error> {
    let token = RefreshToken::generate()?;
    let expires_at = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    B::execute(
        conn,
        "INSERT INTO refresh_tokens (id, user_id, secret_hash, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![token.id, user, token.secret_hash()?, expires_at, now],
    )
    .await?;
    Ok(Session {
        access_token: tokens.issue(user)?,
        refresh_token: token.to_string(),
        expires_in: tokens.ttl_seconds(),
        user_id: user,
    })
}

/// Checks the password; a new session, or `401`.
async fn sign_in<B: Sql>(
    Resource(pool): Resource<Pool<B::Db>>,
    Resource(tokens): Resource<AccessTokens>,
    Resource(refresh_ttl): Resource<RefreshTtl>,
    Resource(passwords): Resource<Passwords>,
    Json(body): Json<SignIn>,
) -> Result<Json<Session>, ApiError> {
    let rows = B::query(
        &pool,
        "SELECT id, password_hash FROM users WHERE email = $1",
        args![normalized_email(&body.email)],
    )
    .await?;
    let account = rows
        .first()
        .map(|row| Ok::<_, Error>((row.int(0)?, row.text(1)?)))
        .transpose()?;
    let (user, hash) = account.unzip();
    let (true, Some(user)) = (passwords.verify(body.password, hash).await?, user) else {
        return Err(Error::unauthorized(
            "identity.invalid_credentials",
            "the e-mail address or the password is wrong",
        )
        .into());
    };
    let now = crate::request::now_ms();
    let mut tx = pool.begin().await.map_err(mamey_persistence::error)?;
    // The user's expired tokens go as a new one comes (writing first, so
    // SQLite takes its write lock at once).
    B::execute(
        &mut tx,
        "DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at <= $2",
        args![user, now],
    )
    .await?;
    let session = new_session::<B>(&mut tx, &tokens, refresh_ttl, user, now).await?;
    tx.commit().await.map_err(mamey_persistence::error)?;
    Ok(Json(session))
}

/// Spends the refresh token; a new session, or `401`.
async fn refresh<B: Sql>(
    Resource(pool): Resource<Pool<B::Db>>,
    Resource(tokens): Resource<AccessTokens>,
    Resource(refresh_ttl): Resource<RefreshTtl>,
    Json(body): Json<Refresh>,
) -> Result<Json<Session>, ApiError> {
    let refused = || {
        Error::unauthorized(
            "identity.invalid_refresh_token",
            "the refresh token is unknown, used or expired; sign in again",
        )
    };
    let presented = RefreshToken::parse(&body.refresh_token).ok_or_else(refused)?;
    let now = crate::request::now_ms();
    let mut tx = pool.begin().await.map_err(mamey_persistence::error)?;
    let spent = B::fetch(
        &mut tx,
        "DELETE FROM refresh_tokens WHERE id = $1 AND secret_hash = $2 AND expires_at > $3 \
         RETURNING user_id",
        args![presented.id, presented.secret_hash()?, now],
    )
    .await?;
    let user = spent
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .ok_or_else(refused)?;
    let session = new_session::<B>(&mut tx, &tokens, refresh_ttl, user, now).await?;
    tx.commit().await.map_err(mamey_persistence::error)?;
    Ok(Json(session))
}
