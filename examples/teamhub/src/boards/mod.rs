//! The boards service: workspaces and their members, boards, cards (with
//! labels, story points, a due date, a parent card and a list) and
//! comments, over one SQL handler body for SQLite and Postgres (see
//! [`crate::sql`]).
//!
//! Every change is written in one transaction with its event, staged in
//! the outbox. Each board numbers its events: the `seq` every boards event
//! carries is taken from the board's row in the change's transaction, so
//! a board's events are numbered 1, 2, 3, ... without gaps, `BoardCreated`
//! first.
//!
//! | Route | |
//! |---|---|
//! | `POST /workspaces` `{name}` | 201 `Location: /workspaces/{id}` |
//! | `GET /workspaces/{workspaceId}` | `{id, name, members, boards: [{id, name}]}` |
//! | `POST /workspaces/{workspaceId}/members` `{userId}` | 204 (`MemberAdded`) |
//! | `POST /workspaces/{workspaceId}/boards` `{name}` | 201 `Location: /boards/{id}` (`BoardCreated`) |
//! | `GET /boards/{boardId}` | `{id, workspaceId, name, seq, cards}` |
//! | `POST /boards/{boardId}/cards` `{title, description?, parentId?, storyPoints?, labels?, due?, list?}` | 201 `Location: /cards/{id}` (`CardCreated`) |
//! | `GET /cards/{cardId}` | the card |
//! | `PATCH /cards/{cardId}` `{title?, description?, labels?, storyPoints?, due?, parentId?}` | 204 (`CardUpdated`) |
//! | `DELETE /cards/{cardId}` | 204 (`CardDeleted`); 409 while it has children |
//! | `POST /cards/{cardId}/move` `{list}` | 204 (`CardMoved`) |
//! | `POST /cards/{cardId}/assign` `{assignee}` | 204 (`CardAssigned`) |
//! | `POST /cards/{cardId}/comments` `{text}` | 201 `Location: /comments/{id}` (`CommentAdded`) |
//! | `GET /comments/{commentId}` | the comment |
//!
//! It also consumes the commands automations sends (`AssignCard`,
//! `UpdateCard`, each applied once through the inbox) and serves the
//! internal gRPC API ([`proto`], called through [`BoardsClient`]).

mod access;
mod automation;
mod cards;
mod changes;
mod client;
mod endpoints;
mod fields;
mod grpc;
mod queries;
mod store;
mod workspaces;

use mamey_core::ServiceBuilder;
use mamey_http::WebApi;
use mamey_persistence::postgres::Postgres;
use mamey_persistence::sqlite::Sqlite;

use crate::contracts::{AssignCard, UpdateCard};
use crate::deploy::{Deployment, Mode};
use crate::sql::Sql;

pub use client::{BoardsClient, GRPC_SERVICE, Members};
pub use grpc::proto;

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "boards";

/// The service, ready to `.build()`.
#[must_use]
// ANCHOR: service
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
                .subscribe_command::<AssignCard>()
                .subscribe_command::<UpdateCard>()
                .outbox::<B::Outbox>(),
        )
        .handlers(|d| {
            d.command(workspaces::create_workspace::<B>)
                .command(workspaces::add_member::<B>)
                .command(workspaces::create_board::<B>)
                .command(cards::create_card::<B>)
                .command(cards::edit_card::<B>)
                .command(cards::move_card::<B>)
                .command(cards::set_assignee::<B>)
                .command(cards::delete_card::<B>)
                .command(cards::add_comment::<B>)
                .command(automation::assign_card::<B>)
                .command(automation::update_card::<B>)
                .query(queries::get_workspace::<B>)
                .query(queries::get_board::<B>)
                .query(queries::get_card::<B>)
                .query(queries::get_comment::<B>);
        })
        .plugin(WebApi::new().endpoints(endpoints::endpoints()))
        .plugin(grpc::Grpc::<B>::new())
}
// ANCHOR_END: service
