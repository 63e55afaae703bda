//! The REST API's routes. Every one needs a user's bearer token; the
//! handlers let only a workspace's members touch it (403), and answer 404
//! for what does not exist and 400 for values that are not valid.

use mamey_http::{Auth, Endpoints};

use super::cards::{AddComment, CreateCard, DeleteCard, EditCard, MoveCard, SetAssignee};
use super::queries::{GetBoard, GetCard, GetComment, GetWorkspace};
use super::workspaces::{AddMember, CreateBoard, CreateWorkspace};

/// The routes, as the gateway forwards them (`/api/boards/{rest}` →
/// `/{rest}`).
pub(super) fn endpoints() -> Endpoints {
    Endpoints::new()
        .post::<CreateWorkspace>("/workspaces")
        .summary("Make a workspace; you become its first member")
        .auth(Auth::Authenticated)
        .created(|workspace| format!("/workspaces/{}", workspace.id))
        .get::<GetWorkspace>("/workspaces/{workspaceId}")
        .summary("A workspace, its members and its boards")
        .auth(Auth::Authenticated)
        .post::<AddMember>("/workspaces/{workspaceId}/members")
        .summary("Add a user to a workspace")
        .auth(Auth::Authenticated)
        .post::<CreateBoard>("/workspaces/{workspaceId}/boards")
        .summary("Make a board in a workspace")
        .auth(Auth::Authenticated)
        .created(|board| format!("/boards/{}", board.id))
        .get::<GetBoard>("/boards/{boardId}")
        .summary("A board with its cards, in the order they were made")
        .auth(Auth::Authenticated)
        .post::<CreateCard>("/boards/{boardId}/cards")
        .summary("Make a card on a board")
        .auth(Auth::Authenticated)
        .created(|card| format!("/cards/{}", card.id))
        .get::<GetCard>("/cards/{cardId}")
        .summary("A card")
        .auth(Auth::Authenticated)
        .patch::<EditCard>("/cards/{cardId}")
        .summary("Change a card's title, description, labels, story points, due date or parent")
        .auth(Auth::Authenticated)
        .delete::<DeleteCard>("/cards/{cardId}")
        .summary("Delete a card without children, and its comments")
        .auth(Auth::Authenticated)
        .post::<MoveCard>("/cards/{cardId}/move")
        .summary("Move a card to another list")
        .auth(Auth::Authenticated)
        .post::<SetAssignee>("/cards/{cardId}/assign")
        .summary("Give a card to a member of its workspace, or to nobody")
        .auth(Auth::Authenticated)
        .post::<AddComment>("/cards/{cardId}/comments")
        .summary("Comment on a card")
        .auth(Auth::Authenticated)
        .created(|comment| format!("/comments/{}", comment.id))
        .get::<GetComment>("/comments/{commentId}")
        .summary("A comment")
        .auth(Auth::Authenticated)
        .into()
}
