//! The automations service: per-board rules that act on cards — new cards
//! assigned to the members in turn, a parent done when all its children
//! are, children's story points summed into their parent, cards unassigned
//! when done (see `rules.rs`).
//!
//! It consumes boards' events (`BoardCreated`, `MemberAdded`,
//! `CardCreated`, `CardMoved`, `CardAssigned`, `CardUpdated`,
//! `CardDeleted`), each applied once through the inbox, and keeps its own projection of cards, rules
//! and members in its own database (SQL: SQLite embedded, Postgres
//! distributed). It never writes boards' tables: it acts by sending boards
//! the commands `AssignCard` and `UpdateCard`, staged in its outbox in the
//! transaction that updated the projection. It asks boards over gRPC
//! ([`BoardsClient`](crate::boards::BoardsClient)) only for what its
//! projection lacks: a workspace's members the first time, a parent card it
//! has not seen. Its web API has only the operational endpoints (health,
//! metrics).

mod handlers;
mod projection;
mod rules;

use mamey_core::ServiceBuilder;
use mamey_http::WebApi;
use mamey_persistence::postgres::Postgres;
use mamey_persistence::sqlite::Sqlite;

use crate::contracts::{
    BoardCreated, CardAssigned, CardCreated, CardDeleted, CardMoved, CardUpdated, MemberAdded,
};
use crate::deploy::{Deployment, Mode};
use crate::sql::Sql;

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "automations";

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
        .plugin(
            deploy
                .messaging()
                .subscribe_event::<BoardCreated>()
                .subscribe_event::<MemberAdded>()
                .subscribe_event::<CardCreated>()
                .subscribe_event::<CardMoved>()
                .subscribe_event::<CardAssigned>()
                .subscribe_event::<CardUpdated>()
                .subscribe_event::<CardDeleted>()
                .outbox::<B::Outbox>(),
        )
        .handlers(|d| {
            d.event(handlers::on_board_created::<B>)
                .event(handlers::on_member_added::<B>)
                .event(handlers::on_card_created::<B>)
                .event(handlers::on_card_moved::<B>)
                .event(handlers::on_card_assigned::<B>)
                .event(handlers::on_card_updated::<B>)
                .event(handlers::on_card_deleted::<B>);
        })
        .plugin(WebApi::new())
}
