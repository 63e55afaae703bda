//! The users projection: each user's id and display name, from
//! `UserSignedUp`, so that `@mentions` find whom they name.

use mamey_core::Error;
use mamey_persistence::Tx;

use crate::args;
use crate::contracts::UserSignedUp;
use crate::sql::{Sql, Value};

/// Records a new user (a redelivery changes nothing).
pub(crate) async fn on_user_signed_up<B: Sql>(
    event: UserSignedUp,
    mut tx: Tx<B>,
) -> Result<(), Error> {
    B::execute(
        &mut tx,
        "INSERT INTO users (id, name, name_key) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, name_key = excluded.name_key",
        args![event.user_id, &event.name, name_key(&event.name)],
    )
    .await?;
    Ok(())
}

/// The ids of the users called one of `names` (lower-cased), in id order.
///
/// # Errors
/// The database failed.
pub(crate) async fn named<B: Sql>(tx: &mut Tx<B>, names: &[String]) -> Result<Vec<i64>, Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=names.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT id FROM users WHERE name_key IN ({}) ORDER BY id",
        placeholders.join(", ")
    );
    let args: Vec<Value> = names.iter().map(Value::from).collect();
    B::fetch(tx, &sql, args)
        .await?
        .iter()
        .map(|row| row.int(0))
        .collect()
}

/// How a name is matched: trimmed and lower-cased, as mentions are.
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whatever_their_case() {
        assert_eq!(name_key(" Ada "), "ada");
        assert_eq!(name_key("ÅSA"), "åsa");
    }
}
