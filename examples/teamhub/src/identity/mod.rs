//! The identity service: accounts (e-mail, name, argon2 password hash),
//! sessions (an ES256 access token and a rotating refresh token), and the
//! public half of the signing key, for anyone who verifies the tokens.
//!
//! | Route | |
//! |---|---|
//! | `POST /sign-up` `{email, name, password}` | 201, `Location: /users/{id}`; publishes `UserSignedUp`; 409 `identity.email_taken` |
//! | `POST /sign-in` `{email, password}` | `{accessToken, refreshToken, expiresIn, userId}`; 401 when wrong |
//! | `POST /refresh` `{refreshToken}` | the same; the old refresh token is spent; 401 when unknown or used |
//! | `GET /me` | `{id, email, name}` (token) |
//! | `GET /users/{userId}` | `{id, name}` (token); 404 when unknown |
//! | `GET /.well-known/jwks.json` | the signing key as a JWK set |
//!
//! The signing key is the secret `teamhub/signing` (`signing_secret.rs`
//! makes one); every service verifies tokens with its public half, laid
//! over `http.jwt` from the secret `teamhub/jwt`. What is read from
//! `[identity]` and the secret store is in `plugin.rs`.

mod keys;
mod passwords;
mod plugin;
mod refresh_tokens;
mod sessions;
mod users;

use mamey_core::ServiceBuilder;
use mamey_http::{Auth, Endpoints, WebApi};
use mamey_persistence::postgres::Postgres;
use mamey_persistence::sqlite::Sqlite;

use crate::deploy::{Deployment, Mode};
use crate::sql::Sql;
use keys::GetSigningKeys;
pub use keys::signing_secret;
use users::{GetMe, GetUser, SignUp};

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "identity";

/// The service, ready to `.build()`.
#[must_use]
pub fn service(deploy: &Deployment) -> ServiceBuilder {
    match deploy.mode() {
        Mode::Embedded => wire::<Sqlite>(deploy),
        Mode::Distributed => wire::<Postgres>(deploy),
    }
}

fn wire<B: Sql>(deploy: &Deployment) -> ServiceBuilder {
    deploy
        .sql_service::<B>(NAME)
        .plugin(plugin::Credentials)
        .plugin(deploy.messaging().outbox::<B::Outbox>())
        .handlers(|d| {
            d.command(users::sign_up::<B>)
                .query(users::me::<B>)
                .query(users::user::<B>)
                .query(keys::signing_keys);
        })
        .plugin(
            WebApi::new()
                .endpoints(endpoints())
                .router(sessions::router::<B>()),
        )
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .post::<SignUp>("/sign-up")
        .summary("Create an account")
        .created(|account| format!("/users/{}", account.id))
        .get::<GetMe>("/me")
        .summary("Your account")
        .auth(Auth::Authenticated)
        .get::<GetUser>("/users/{userId}")
        .summary("A user's public profile")
        .auth(Auth::Authenticated)
        .get::<GetSigningKeys>("/.well-known/jwks.json")
        .summary("The public key that signs access tokens, as a JWK set")
        .into()
}
