//! The notifications service: a feed per user, filled from boards', chat's
//! and identity's events, and pushed live over a WebSocket.
//!
//! | Route | |
//! |---|---|
//! | `GET /feed?after=&limit=` | `{items: [Notification...], next}`, ascending |
//! | `GET /live` | WebSocket: one text frame per new notification |
//! | `GET /presence/{userId}` | `{online}`: whether the user has a live socket open |
//!
//! Every route needs a token. How an event becomes feed items is in
//! `events.rs`; who is told in `recipients.rs`; how items are pushed after
//! the commit in `push.rs`; how they reach the replica holding the socket in
//! `backplane.rs`; how a board's events are put back in `seq` order there in
//! `sequencer.rs`.
//!
//! What a user is promised:
//!
//! - **The feed** (`/feed`) is complete and ordered by id, that is by when
//!   each item was written (each carries its board `seq`): every event is
//!   written, with its inbox record, in one unit of work; one that fails
//!   (boards unreachable) is retried by the broker, and nothing waits for
//!   it. One that still fails after its retries (`config/notifications.toml`)
//!   waits in the dead-letter queue until it is replayed.
//! - **A live socket** gets each board's events in `seq` order, unless one
//!   is missing for longer than `sequencer::HOLD` (5 s): then the ones
//!   after it go on, and it arrives late if it comes. Chat messages and
//!   new members go at once.
//! - What a replica misses on the backplane (Redis restarting, a crash
//!   between commit and push, a socket too slow) is in the feed: a client
//!   reconnects and reads `/feed?after=` from its last id.

mod backplane;
mod events;
mod feed;
mod hub;
mod live;
mod plugin;
mod presence;
mod push;
mod recipients;
mod sequencer;
mod users;

use mamey_core::ServiceBuilder;
use mamey_http::{Auth, Endpoints, WebApi};
use mamey_messaging::Messaging;
use mamey_persistence::postgres::Postgres;
use mamey_persistence::redis::Redis;
use mamey_persistence::sqlite::Sqlite;

use crate::contracts::{
    BoardCreated, CardAssigned, CardCreated, CardDeleted, CardMoved, CardUpdated, CommentAdded,
    MemberAdded, MessagePosted, UserSignedUp,
};
use crate::deploy::{Deployment, Mode};
use crate::sql::Sql;
use events::{on_board_event, on_member_added, on_message_posted};
use feed::GetFeed;
use plugin::Live;
use presence::GetPresence;

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "notifications";

/// The service, ready to `.build()`.
#[must_use]
pub fn service(deploy: &Deployment) -> ServiceBuilder {
    match deploy.mode() {
        Mode::Embedded => wire::<Sqlite>(deploy, Live::local(deploy.local_backplane().clone())),
        Mode::Distributed => wire::<Postgres>(deploy, Live::redis()),
    }
}

fn wire<B: Sql>(deploy: &Deployment, live: Live) -> ServiceBuilder {
    let mut builder = deploy.sql_service::<B>(NAME);
    if deploy.mode() == Mode::Distributed {
        builder = builder.plugin(Redis::new());
    }
    builder
        .plugin(live)
        .plugin(subscriptions(deploy.messaging()))
        .handlers(|d| {
            d.event(on_board_event::<B, BoardCreated>)
                .event(on_board_event::<B, CardCreated>)
                .event(on_board_event::<B, CardMoved>)
                .event(on_board_event::<B, CardAssigned>)
                .event(on_board_event::<B, CardUpdated>)
                .event(on_board_event::<B, CardDeleted>)
                .event(on_board_event::<B, CommentAdded>)
                .event(on_member_added::<B>)
                .event(on_message_posted::<B>)
                .event(users::on_user_signed_up::<B>)
                .query(feed::get_feed::<B>)
                .query(presence::get_presence);
        })
        .plugin(WebApi::new().endpoints(endpoints()).router(live::router()))
}

/// Every event notifications consumes.
fn subscriptions(messaging: Messaging) -> Messaging {
    messaging
        .subscribe_event::<UserSignedUp>()
        .subscribe_event::<MemberAdded>()
        .subscribe_event::<BoardCreated>()
        .subscribe_event::<CardCreated>()
        .subscribe_event::<CardMoved>()
        .subscribe_event::<CardAssigned>()
        .subscribe_event::<CardUpdated>()
        .subscribe_event::<CardDeleted>()
        .subscribe_event::<CommentAdded>()
        .subscribe_event::<MessagePosted>()
}

fn endpoints() -> Endpoints {
    Endpoints::new()
        .get::<GetFeed>("/feed")
        .summary("Your notifications after a cursor, oldest first")
        .auth(Auth::Authenticated)
        .get::<GetPresence>("/presence/{userId}")
        .summary("Whether a user has a live socket open")
        .auth(Auth::Authenticated)
        .into()
}
