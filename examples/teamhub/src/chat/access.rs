//! Who may use a channel: the caller's user id from the token, and the
//! membership rule of each kind of channel.

use mamey_core::Error;

use crate::boards::BoardsClient;
use crate::contracts::Channel;

/// Parses a channel name from a request.
///
/// # Errors
/// Neither `board:{id}` nor `dm:{a}:{b}` of two different users (400).
pub(super) fn channel(name: &str) -> Result<Channel, Error> {
    Channel::parse(name).ok_or_else(|| {
        Error::invalid_input(
            "chat.invalid_channel",
            "the channel must be `board:{id}` or `dm:{a}:{b}` (two different user ids)",
        )
    })
}

/// Lets `user` into `channel`: a board's channel is its workspace's
/// members', a direct one its two users'.
///
/// # Errors
/// An unknown board (404), a user outside the channel (403), boards
/// unavailable (503).
pub(super) async fn enter(boards: &BoardsClient, channel: Channel, user: i64) -> Result<(), Error> {
    let inside = match channel {
        Channel::Board(board) => boards.members(board).await?.user_ids.contains(&user),
        Channel::Direct(a, b) => user == a || user == b,
    };
    if inside {
        Ok(())
    } else {
        Err(Error::forbidden(
            "chat.not_a_member",
            format!("you are not a member of channel `{channel}`"),
        ))
    }
}
