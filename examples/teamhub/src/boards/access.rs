//! Who is calling, and whether they may touch a workspace: its members
//! may, everyone else gets a `403`.

use mamey_core::{Error, MessageContext};

use super::store;
use crate::sql::{Conn, Sql};

/// The caller's user id: the token's subject, a positive decimal.
///
/// # Errors
/// No identity, or a subject that is not a user id (401).
pub(super) fn caller(ctx: &MessageContext) -> Result<i64, Error> {
    ctx.identity
        .as_ref()
        .and_then(|identity| identity.subject.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            Error::unauthorized("auth.unauthorized", "a user's bearer token is required")
        })
}

/// Lets `user` into `workspace`.
///
/// # Errors
/// Not a member (403); the database failed.
pub(super) async fn require_member<B: Sql>(
    conn: &mut Conn<B>,
    workspace: i64,
    user: i64,
) -> Result<(), Error> {
    if store::is_member::<B>(conn, workspace, user).await? {
        Ok(())
    } else {
        Err(Error::forbidden(
            "boards.not_a_member",
            format!("you are not a member of workspace {workspace}"),
        ))
    }
}
