//! Who is calling, and whether they may touch a workspace: its members
//! may, everyone else gets a `403`.

use mamey_core::Error;

use super::store;
use crate::sql::{Conn, Sql};

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
