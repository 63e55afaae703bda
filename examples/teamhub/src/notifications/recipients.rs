//! Who is told about what: plain functions over the events, no I/O.
//!
//! - a board's events: every member of its workspace, plus the users a
//!   comment `@mentions`;
//! - `MemberAdded` (a workspace's, no board): the user added and the one who
//!   added them;
//! - `MessagePosted`: on `board:{id}` the board's members but the author, on
//!   `dm:{a}:{b}` the other user; plus the users the text `@mentions`.
//!
//! Nobody is told twice, the author of a message is never told of it, and
//! `0` (an automation as `by`) is nobody.

use crate::contracts::{Channel, CommentAdded, MemberAdded, MessagePosted};

/// The most names one text can mention; the rest are ignored.
const MAX_MENTIONS: usize = 20;

/// Whom an event is for, before a board's members are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    /// The members of this board's workspace.
    Board(i64),
    /// These users.
    Users(Vec<i64>),
}

/// The recipients of an event, to be resolved: an audience, a user left
/// out, and the names mentioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addressees {
    /// Who is told in any case.
    pub(crate) audience: Audience,
    /// Who is never told (a message's author).
    pub(crate) except: Option<i64>,
    /// Names `@mentioned`, lower-cased.
    pub(crate) mentions: Vec<String>,
}

impl Addressees {
    /// A board event without text: the board's members.
    pub(crate) fn board(board_id: i64) -> Self {
        Self {
            audience: Audience::Board(board_id),
            except: None,
            mentions: Vec::new(),
        }
    }

    /// A comment: the board's members and whom it mentions.
    pub(crate) fn comment(event: &CommentAdded) -> Self {
        Self {
            mentions: mentions(&event.text),
            ..Self::board(event.board_id)
        }
    }

    /// A workspace's new member: the user added and who added them.
    pub(crate) fn member_added(event: &MemberAdded) -> Self {
        Self {
            audience: Audience::Users(vec![event.user_id, event.by]),
            except: None,
            mentions: Vec::new(),
        }
    }

    /// A chat message: the channel's other users and whom it mentions;
    /// `None` for a channel name that does not parse.
    pub(crate) fn message(event: &MessagePosted) -> Option<Self> {
        let audience = match Channel::parse(&event.channel)? {
            Channel::Board(board) => Audience::Board(board),
            Channel::Direct(a, b) => Audience::Users(vec![a, b]),
        };
        Some(Self {
            audience,
            except: Some(event.author),
            mentions: mentions(&event.text),
        })
    }

    /// The users to tell, given the audience's members (the board's when
    /// the audience is a board, else ignored) and the ids of the users
    /// mentioned: each once, the audience first, without `except` and
    /// without ids that are no user's. A mention never reaches past who may
    /// read the text: a mentioned user outside the audience (not a member of
    /// the board, not in the conversation) is not told.
    pub(crate) fn resolve(&self, board_members: &[i64], mentioned: &[i64]) -> Vec<i64> {
        let audience = match &self.audience {
            Audience::Board(_) => board_members,
            Audience::Users(users) => users.as_slice(),
        };
        let mut recipients: Vec<i64> = Vec::with_capacity(audience.len() + mentioned.len());
        let readable = mentioned.iter().filter(|user| audience.contains(user));
        for &user in audience.iter().chain(readable) {
            if user > 0 && Some(user) != self.except && !recipients.contains(&user) {
                recipients.push(user);
            }
        }
        recipients
    }
}

/// The names `@mentioned` in `text`, lower-cased, each once, in the order
/// first mentioned (at most 20).
///
/// A mention is `@` at the start or after a character that cannot be part
/// of a name (so `ada@example.com` mentions nobody), followed by letters,
/// digits, `_`, `-` and `.`; a `.` at its end closes the sentence, not the
/// name. Display names are matched whole, so a name with a space in it
/// cannot be mentioned.
pub(crate) fn mentions(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let starts = c == '@' && !previous.is_some_and(is_name_char);
        previous = Some(c);
        if !starts {
            continue;
        }
        let begin = at + c.len_utf8();
        let mut end = begin;
        while let Some(&(index, next)) = chars.peek() {
            if !is_name_char(next) {
                break;
            }
            end = index + next.len_utf8();
            previous = Some(next);
            chars.next();
        }
        let name = text[begin..end].trim_end_matches('.').to_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
            if names.len() == MAX_MENTIONS {
                break;
            }
        }
    }
    names
}

/// Whether `c` can be part of a mentioned name.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(channel: &str, author: i64, text: &str) -> MessagePosted {
        MessagePosted {
            message_id: 1,
            channel: channel.into(),
            author,
            text: text.into(),
        }
    }

    #[test]
    fn mentions_are_names_after_an_at_sign() {
        assert_eq!(mentions("hi @Ada and @bob_2, @ada again"), ["ada", "bob_2"]);
        assert_eq!(mentions("@grace."), ["grace"]);
        assert_eq!(mentions("(@j.doe) @x-y"), ["j.doe", "x-y"]);
        assert_eq!(mentions("@Åsa: ok"), ["åsa"]);
    }

    #[test]
    fn addresses_and_lone_at_signs_mention_nobody() {
        assert!(mentions("mail ada@example.com").is_empty());
        assert!(mentions("@ @. @@ a@").is_empty());
        assert!(mentions("").is_empty());
    }

    #[test]
    fn mentions_are_capped() {
        let text: String = (0..30).map(|n| format!("@user{n} ")).collect();
        assert_eq!(mentions(&text).len(), MAX_MENTIONS);
    }

    #[test]
    fn a_board_event_tells_every_member_once_and_those_mentioned() {
        let comment = CommentAdded {
            comment_id: 1,
            card_id: 2,
            board_id: 3,
            author: 10,
            text: "ping @eve".into(),
            seq: 4,
        };
        let addressees = Addressees::comment(&comment);
        assert_eq!(addressees.audience, Audience::Board(3));
        assert_eq!(addressees.mentions, ["eve"]);
        assert_eq!(addressees.resolve(&[10, 11, 12], &[12, 30]), [10, 11, 12]);
        assert_eq!(Addressees::board(3).resolve(&[10, 11], &[]), [10, 11]);
    }

    #[test]
    fn a_board_message_skips_its_author() {
        let addressees = Addressees::message(&posted("board:3", 11, "hello @ann")).unwrap();
        assert_eq!(addressees.audience, Audience::Board(3));
        assert_eq!(addressees.resolve(&[10, 11, 12], &[11, 40]), [10, 12]);
    }

    #[test]
    fn a_direct_message_tells_the_other_user() {
        let addressees = Addressees::message(&posted("dm:9:4", 9, "hi")).unwrap();
        assert_eq!(addressees.resolve(&[], &[]), [4]);
        assert!(Addressees::message(&posted("room:1", 9, "hi")).is_none());
    }

    #[test]
    fn a_new_member_and_who_added_them_are_told_but_not_automations() {
        let added = MemberAdded {
            workspace_id: 1,
            user_id: 5,
            by: 6,
        };
        assert_eq!(Addressees::member_added(&added).resolve(&[], &[]), [5, 6]);
        let by_itself = MemberAdded {
            by: 5,
            ..added.clone()
        };
        assert_eq!(Addressees::member_added(&by_itself).resolve(&[], &[]), [5]);
        let by_nobody = MemberAdded { by: 0, ..added };
        assert_eq!(Addressees::member_added(&by_nobody).resolve(&[], &[]), [5]);
    }
}
