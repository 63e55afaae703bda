//! Accounts: signing up (publishing `UserSignedUp` through the outbox, in
//! the transaction that stores the account), your own account, and another
//! user's public profile.

use std::fmt;

use mamey_core::cqrs::{Command, Query, Res};
use mamey_core::{Error, ErrorKind, MessageContext};
use mamey_messaging::Publisher;
use mamey_persistence::Tx;
use serde::{Deserialize, Serialize};
use sqlx::Pool;
use utoipa::ToSchema;

use super::passwords::Passwords;
use crate::args;
use crate::contracts::UserSignedUp;
use crate::sql::Sql;

/// The longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// The longest display name, in characters.
const MAX_NAME: usize = 64;

/// `POST /sign-up`: a new account.
#[derive(Clone, Deserialize, ToSchema, garde::Validate)]
#[serde(rename_all = "camelCase")]
pub(super) struct SignUp {
    /// The new user's id, made while the request is read.
    #[serde(skip_deserializing, default = "crate::ids::next")]
    #[schema(read_only)]
    #[garde(skip)]
    pub(super) id: i64,
    /// An e-mail address, unique among accounts whatever its case.
    #[garde(custom(email_shape))]
    #[schema(max_length = 254, format = "email")]
    email: String,
    /// The display name, 1 to 64 characters besides surrounding white space.
    #[garde(custom(name_shape))]
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// 8 to 128 characters.
    #[garde(length(chars, min = 8, max = 128))]
    #[schema(min_length = 8, max_length = 128, format = "password")]
    password: String,
}

impl fmt::Debug for SignUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignUp")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Command for SignUp {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

/// `GET /me`: the caller's account.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct GetMe {}

impl Query for GetMe {
    type Output = Me;
}

/// The caller's account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct Me {
    /// User id.
    id: i64,
    /// E-mail address, lower-cased.
    email: String,
    /// Display name.
    name: String,
}

/// `GET /users/{userId}`: another user's public profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetUser {
    /// The user.
    user_id: i64,
}

impl Query for GetUser {
    type Output = User;
}

/// A user as others see them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct User {
    /// User id.
    id: i64,
    /// Display name.
    name: String,
}

/// Stores the account and publishes `UserSignedUp`, in one transaction.
/// The password is hashed before the first write: on Postgres the rows are
/// not locked while it is; on SQLite the unit of work holds the database's
/// writer turn from the start, so sign-ups on one identity database take
/// turns, hash included (see the persistence chapter, "Writers queue in
/// the process").
pub(super) async fn sign_up<B: Sql>(
    command: SignUp,
    mut tx: Tx<B>,
    Res(pool): Res<Pool<B::Db>>,
    Res(passwords): Res<Passwords>,
    Res(events): Res<Publisher>,
) -> Result<(), Error> {
    let email = normalized_email(&command.email);
    let name = command.name.trim().to_owned();
    // Spares a hash for an address that is taken; the unique index decides
    // a race.
    let taken = B::query(
        &pool,
        "SELECT id FROM users WHERE email = $1",
        args![&email],
    )
    .await?;
    if !taken.is_empty() {
        return Err(email_taken());
    }
    let hash = passwords.hash(command.password).await?;
    B::execute(
        &mut tx,
        "INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![command.id, &email, &name, hash, crate::request::now_ms()],
    )
    .await
    .map_err(|e| if e.kind() == ErrorKind::Conflict { email_taken() } else { e })?;
    events
        .publish(&UserSignedUp {
            user_id: command.id,
            name,
            email,
        })
        .await?;
    Ok(())
}

/// The caller's account.
pub(super) async fn me<B: Sql>(
    _: GetMe,
    Res(pool): Res<Pool<B::Db>>,
    ctx: MessageContext,
) -> Result<Me, Error> {
    let id = crate::request::caller(&ctx)?;
    let rows = B::query(
        &pool,
        "SELECT email, name FROM users WHERE id = $1",
        args![id],
    )
    .await?;
    let row = rows.first().ok_or_else(|| no_user(id))?;
    Ok(Me {
        id,
        email: row.text(0)?,
        name: row.text(1)?,
    })
}

/// A user's public profile.
pub(super) async fn user<B: Sql>(
    query: GetUser,
    Res(pool): Res<Pool<B::Db>>,
) -> Result<User, Error> {
    let rows = B::query(
        &pool,
        "SELECT name FROM users WHERE id = $1",
        args![query.user_id],
    )
    .await?;
    let row = rows.first().ok_or_else(|| no_user(query.user_id))?;
    Ok(User {
        id: query.user_id,
        name: row.text(0)?,
    })
}

/// An e-mail address as accounts are keyed: trimmed and lower-cased.
pub(super) fn normalized_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn email_taken() -> Error {
    Error::conflict(
        "identity.email_taken",
        "an account with this e-mail address exists",
    )
}

fn no_user(id: i64) -> Error {
    Error::not_found("identity.user_not_found", format!("no user {id}"))
}

/// garde rule: the shape of an e-mail address — one `@` with a local part
/// of at most 64 bytes before it and a dotted domain after, no white space,
/// at most 254 bytes.
fn email_shape(value: &str, (): &()) -> garde::Result {
    let value = value.trim();
    let shaped = value.len() <= MAX_EMAIL
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value.split_once('@').is_some_and(|(local, domain)| {
            (1..=64).contains(&local.len())
                && !domain.contains('@')
                && domain.contains('.')
                && domain
                    .split('.')
                    .all(|label| (1..=63).contains(&label.len()))
        });
    if shaped {
        Ok(())
    } else {
        Err(garde::Error::new(
            "expected an e-mail address such as ada@example.com",
        ))
    }
}

/// garde rule: a display name, 1 to 64 characters besides surrounding white
/// space, without control characters.
fn name_shape(value: &str, (): &()) -> garde::Result {
    let name = value.trim();
    if !(1..=MAX_NAME).contains(&name.chars().count()) {
        return Err(garde::Error::new(format!(
            "expected 1 to {MAX_NAME} characters besides surrounding white space"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(garde::Error::new("expected no control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_up(email: &str, name: &str, password: &str) -> SignUp {
        SignUp {
            id: 1,
            email: email.into(),
            name: name.into(),
            password: password.into(),
        }
    }

    #[test]
    fn good_input_passes() {
        assert!(
            sign_up(" Ada@Example.COM ", " Ada ", "correct horse")
                .validate()
                .is_ok()
        );
        assert!(
            sign_up("a@b.co", &"é".repeat(64), &"p".repeat(128))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        for (input, field) in [
            (sign_up("ada", "Ada", "correct horse"), "email"),
            (sign_up("ada@example", "Ada", "correct horse"), "email"),
            (sign_up("a da@example.com", "Ada", "correct horse"), "email"),
            (sign_up("@example.com", "Ada", "correct horse"), "email"),
            (sign_up("ada@@example.com", "Ada", "correct horse"), "email"),
            (sign_up("ada@example..com", "Ada", "correct horse"), "email"),
            (sign_up("ada@example.com", "   ", "correct horse"), "name"),
            (
                sign_up("ada@example.com", &"n".repeat(65), "correct horse"),
                "name",
            ),
            (
                sign_up("ada@example.com", "A\u{7}da", "correct horse"),
                "name",
            ),
            (sign_up("ada@example.com", "Ada", "short"), "password"),
            (
                sign_up("ada@example.com", "Ada", &"p".repeat(129)),
                "password",
            ),
        ] {
            let error = input.validate().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
            let fields: Vec<&str> = error.fields().iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, [field], "{input:?}");
        }
    }

    #[test]
    fn the_password_never_prints() {
        let input = sign_up("ada@example.com", "Ada", "correct horse");
        assert!(!format!("{input:?}").contains("horse"));
    }

    #[test]
    fn emails_are_keyed_in_lower_case() {
        assert_eq!(normalized_email("  Ada@Example.COM "), "ada@example.com");
    }
}
