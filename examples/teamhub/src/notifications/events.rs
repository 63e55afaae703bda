//! The events notifications consumes, each turned into feed items in one
//! unit of work with its inbox record (a redelivery is skipped), then
//! pushed live after the commit as one batch (see [`super::push`]).
//!
//! | Event | Kind | Told |
//! |---|---|---|
//! | `BoardCreated`, `CardCreated`, `CardMoved`, `CardAssigned`, `CardUpdated`, `CardDeleted` | `board_created`, `card_*` | the board's members |
//! | `CommentAdded` | `comment_added` | the board's members and who is `@mentioned` |
//! | `MemberAdded` | `member_added` | the user added and who added them |
//! | `MessagePosted` | `message_posted` | the channel's other users and who is `@mentioned` |
//!
//! See [`super::recipients`] for the rules. Events are handled as they
//! come, in no particular order: a board's event carries its `seq` to the
//! replicas, which put the board's batches back in order before the sockets
//! ([`super::sequencer`]); the feed is ordered by id.

use mamey_core::cqrs::Res;
use mamey_core::{Error, ErrorKind};
use mamey_persistence::Tx;
use serde::Serialize;

use super::backplane::{Backplane, BoardSeq, LiveBatch};
use super::feed::{self, Addressed, Draft, Kind};
use super::push::after_commit;
use super::recipients::{Addressees, Audience};
use super::users;
use crate::boards::BoardsClient;
use crate::contracts::{
    BoardCreated, CardAssigned, CardCreated, CardDeleted, CardMoved, CardUpdated, CommentAdded,
    MemberAdded, MessagePosted,
};
use crate::sql::Sql;

/// An event of one board, numbered by its `seq`.
pub(crate) trait BoardEvent: Serialize {
    /// Its kind of notification.
    const KIND: Kind;
    /// The board.
    fn board_id(&self) -> i64;
    /// The board's number of this event.
    fn seq(&self) -> i64;
    /// Who is told.
    fn addressees(&self) -> Addressees {
        Addressees::board(self.board_id())
    }
}

impl BoardEvent for BoardCreated {
    const KIND: Kind = Kind::BoardCreated;
    fn board_id(&self) -> i64 {
        self.board_id
    }
    fn seq(&self) -> i64 {
        self.seq
    }
}

macro_rules! card_event {
    ($event:ty, $kind:ident) => {
        impl BoardEvent for $event {
            const KIND: Kind = Kind::$kind;
            fn board_id(&self) -> i64 {
                self.card.board_id
            }
            fn seq(&self) -> i64 {
                self.seq
            }
        }
    };
}

card_event!(CardCreated, CardCreated);
card_event!(CardMoved, CardMoved);
card_event!(CardAssigned, CardAssigned);
card_event!(CardUpdated, CardUpdated);
card_event!(CardDeleted, CardDeleted);

impl BoardEvent for CommentAdded {
    const KIND: Kind = Kind::CommentAdded;
    fn board_id(&self) -> i64 {
        self.board_id
    }
    fn seq(&self) -> i64 {
        self.seq
    }
    fn addressees(&self) -> Addressees {
        Addressees::comment(self)
    }
}

/// Notifies a board's event to its members; the push carries its `seq`.
pub(crate) async fn on_board_event<B: Sql, E: BoardEvent>(
    event: E,
    mut tx: Tx<B>,
    boards: BoardsClient,
    Res(backplane): Res<Backplane>,
) -> Result<(), Error> {
    let (board_id, seq) = (event.board_id(), event.seq());
    let draft = Draft::new(E::KIND, &event)?.on_board(board_id, Some(seq));
    let items = notify(&mut tx, &boards, &draft, &event.addressees()).await?;
    let board = Some(BoardSeq { board_id, seq });
    after_commit(backplane, LiveBatch { board, items });
    Ok(())
}

/// Notifies a workspace's new member and who added them.
pub(crate) async fn on_member_added<B: Sql>(
    event: MemberAdded,
    mut tx: Tx<B>,
    boards: BoardsClient,
    Res(backplane): Res<Backplane>,
) -> Result<(), Error> {
    let draft = Draft::new(Kind::MemberAdded, &event)?;
    let items = notify(&mut tx, &boards, &draft, &Addressees::member_added(&event)).await?;
    after_commit(backplane, LiveBatch { board: None, items });
    Ok(())
}

/// Notifies a chat message to the channel's other users and those it
/// mentions.
pub(crate) async fn on_message_posted<B: Sql>(
    event: MessagePosted,
    mut tx: Tx<B>,
    boards: BoardsClient,
    Res(backplane): Res<Backplane>,
) -> Result<(), Error> {
    let Some(addressees) = Addressees::message(&event) else {
        tracing::warn!(channel = %event.channel, "a message in a channel that does not parse; nobody told");
        return Ok(());
    };
    let mut draft = Draft::new(Kind::MessagePosted, &event)?;
    if let Audience::Board(board_id) = addressees.audience {
        draft = draft.on_board(board_id, None);
    }
    let draft = draft.in_channel(event.channel.clone());
    let items = notify(&mut tx, &boards, &draft, &addressees).await?;
    after_commit(backplane, LiveBatch { board: None, items });
    Ok(())
}

/// Resolves who is told and writes their feed items inside `tx`.
async fn notify<B: Sql>(
    tx: &mut Tx<B>,
    boards: &BoardsClient,
    draft: &Draft,
    addressees: &Addressees,
) -> Result<Vec<Addressed>, Error> {
    let members = match addressees.audience {
        Audience::Board(board_id) => match boards.members(board_id).await {
            Ok(members) => members.user_ids,
            // A board boards does not know: nobody to tell but mentions.
            Err(error) if error.kind() == ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        },
        Audience::Users(_) => Vec::new(),
    };
    let mentioned = users::named(tx, &addressees.mentions).await?;
    let recipients = addressees.resolve(&members, &mentioned);
    feed::write(tx, draft, &recipients).await
}
