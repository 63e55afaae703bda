//! The chat service: a channel per board (`board:{id}`, its workspace's
//! members) and direct conversations (`dm:{a}:{b}`, the two users), with
//! messages whose ids are time-ordered (Snowflake-style, see
//! [`crate::ids`]). Posting a message publishes `MessagePosted` through the
//! outbox, in the transaction that stores it.
//!
//! | Route | |
//! |---|---|
//! | `POST /channels/{channel}/messages` `{text}` | 201, `Location: /messages/{id}` |
//! | `GET /channels/{channel}/messages?after=&limit=` | `{items, next}`, ascending ids after the cursor |
//! | `PATCH /messages/{messageId}` `{text}` | 204; the author only |
//! | `DELETE /messages/{messageId}` | 204; the author only (a soft delete) |
//!
//! Every route needs a token; a board channel needs the caller to be a
//! member of the board's workspace (asked of boards over gRPC), a direct
//! channel one of its two users.

mod access;
mod messages;

use mamey_core::ServiceBuilder;
use mamey_http::{Auth, Endpoints, WebApi};
use mamey_persistence::postgres::Postgres;
use mamey_persistence::sqlite::Sqlite;

use crate::deploy::{Deployment, Mode};
use crate::sql::Sql;
use messages::{DeleteMessage, EditMessage, ListMessages, PostMessage};

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "chat";

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
        .plugin(deploy.messaging().outbox::<B::Outbox>())
        .handlers(|d| {
            d.command(messages::post_message::<B>)
                .command(messages::edit_message::<B>)
                .command(messages::delete_message::<B>)
                .query(messages::list_messages::<B>);
        })
        .plugin(WebApi::new().endpoints(endpoints()))
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .post::<PostMessage>("/channels/{channel}/messages")
        .summary("Post a message in a channel")
        .auth(Auth::Authenticated)
        .created(|message| format!("/messages/{}", message.id))
        .get::<ListMessages>("/channels/{channel}/messages")
        .summary("A channel's messages after a cursor, oldest first")
        .auth(Auth::Authenticated)
        .patch::<EditMessage>("/messages/{messageId}")
        .summary("Change the text of one of your messages")
        .auth(Auth::Authenticated)
        .delete::<DeleteMessage>("/messages/{messageId}")
        .summary("Delete one of your messages")
        .auth(Auth::Authenticated)
        .into()
}
