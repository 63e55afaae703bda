//! The values a caller may give a workspace, board, card or comment, and
//! what makes them valid: plain functions that return the value as it is
//! stored (trimmed, normalised) or a `400` saying what is wrong.

use mamey_core::Error;

use crate::contracts::LISTS;

/// The longest workspace or board name, in characters.
const MAX_NAME: usize = 100;
/// The longest card title, in characters.
const MAX_TITLE: usize = 200;
/// The longest card description, in characters.
const MAX_DESCRIPTION: usize = 10_000;
/// The most labels a card may have.
const MAX_LABELS: usize = 20;
/// The longest label, in characters.
const MAX_LABEL: usize = 40;
/// The most story points a card may have.
const MAX_POINTS: i64 = 1000;
/// The longest comment, in characters.
const MAX_COMMENT: usize = 4000;

/// `text` trimmed, when it has `1..=max` characters; else a `400` with
/// `code` naming the field.
fn bounded<'a>(
    text: &'a str,
    max: usize,
    code: &'static str,
    what: &str,
) -> Result<&'a str, Error> {
    let trimmed = text.trim();
    if (1..=max).contains(&trimmed.chars().count()) {
        Ok(trimmed)
    } else {
        Err(Error::invalid_input(
            code,
            format!("`{what}` must have 1 to {max} characters besides surrounding white space"),
        ))
    }
}

/// A workspace's or board's name: 1 to 100 characters, trimmed.
///
/// # Errors
/// Empty or too long (400).
pub(super) fn name(text: &str) -> Result<&str, Error> {
    bounded(text, MAX_NAME, "boards.invalid_name", "name")
}

/// A card's title: 1 to 200 characters, trimmed.
///
/// # Errors
/// Empty or too long (400).
pub(super) fn title(text: &str) -> Result<&str, Error> {
    bounded(text, MAX_TITLE, "boards.invalid_title", "title")
}

/// A card's description: up to 10 000 characters, trimmed (may be empty).
///
/// # Errors
/// Too long (400).
pub(super) fn description(text: &str) -> Result<&str, Error> {
    let trimmed = text.trim();
    if trimmed.chars().count() <= MAX_DESCRIPTION {
        Ok(trimmed)
    } else {
        Err(Error::invalid_input(
            "boards.invalid_description",
            format!("`description` must have at most {MAX_DESCRIPTION} characters"),
        ))
    }
}

/// A comment's text: 1 to 4000 characters, trimmed.
///
/// # Errors
/// Empty or too long (400).
pub(super) fn comment(text: &str) -> Result<&str, Error> {
    bounded(text, MAX_COMMENT, "boards.invalid_comment", "text")
}

/// A card's labels: at most 20, each 1 to 40 characters once trimmed;
/// repeats are dropped, the first spelling's place kept.
///
/// # Errors
/// Too many, or one empty or too long (400).
pub(super) fn labels(labels: &[String]) -> Result<Vec<String>, Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid_input(
            "boards.invalid_labels",
            format!("a card has at most {MAX_LABELS} labels"),
        ));
    }
    let mut kept: Vec<String> = Vec::with_capacity(labels.len());
    for label in labels {
        let label = bounded(label, MAX_LABEL, "boards.invalid_labels", "labels[]")?;
        if !kept.iter().any(|k| k == label) {
            kept.push(label.to_owned());
        }
    }
    Ok(kept)
}

/// Story points: 0 to 1000.
///
/// # Errors
/// Out of range (400).
pub(super) fn story_points(points: i64) -> Result<i64, Error> {
    if (0..=MAX_POINTS).contains(&points) {
        Ok(points)
    } else {
        Err(Error::invalid_input(
            "boards.invalid_story_points",
            format!("`storyPoints` must be 0 to {MAX_POINTS}"),
        ))
    }
}

/// A list name: `todo`, `doing` or `done`.
///
/// # Errors
/// Any other (400).
pub(super) fn list(name: &str) -> Result<&'static str, Error> {
    LISTS.into_iter().find(|l| *l == name).ok_or_else(|| {
        Error::invalid_input(
            "boards.invalid_list",
            format!("`list` must be one of {}", LISTS.join(", ")),
        )
    })
}

/// A due date: `YYYY-MM-DD`, a day that exists (years 1 to 9999).
///
/// # Errors
/// Another shape, or a day that does not exist (400).
pub(super) fn due(text: &str) -> Result<&str, Error> {
    let invalid = || {
        Error::invalid_input(
            "boards.invalid_due",
            "`due` must be a date written YYYY-MM-DD",
        )
    };
    let mut parts = text.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let number = |digits: &str, width: usize| -> Option<u32> {
        (digits.len() == width && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (number(year, 4), number(month, 2), number(day, 2))
    else {
        return Err(invalid());
    };
    if year == 0 || !(1..=days_in_month(year, month)).contains(&day) {
        return Err(invalid());
    }
    Ok(text)
}

/// The days of `month` (1 to 12) of `year`; 0 for a month that does not
/// exist.
fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_titles_are_trimmed_and_bounded() {
        assert_eq!(name("  team  ").ok(), Some("team"));
        assert!(name("   ").is_err());
        assert!(name(&"é".repeat(MAX_NAME)).is_ok());
        assert!(name(&"é".repeat(MAX_NAME + 1)).is_err());
        assert!(title("").is_err());
        assert!(title(&"x".repeat(MAX_TITLE + 1)).is_err());
        assert_eq!(description("  ").ok(), Some(""));
        assert!(description(&"x".repeat(MAX_DESCRIPTION + 1)).is_err());
        assert!(comment(" ").is_err());
    }

    #[test]
    fn labels_are_trimmed_deduplicated_and_bounded() {
        let given = vec![" docs ".to_owned(), "ops".to_owned(), "docs".to_owned()];
        assert_eq!(
            labels(&given).ok(),
            Some(vec!["docs".to_owned(), "ops".to_owned()])
        );
        assert!(labels(&[" ".to_owned()]).is_err());
        assert!(labels(&vec!["x".to_owned(); MAX_LABELS + 1]).is_err());
        assert!(labels(&["x".repeat(MAX_LABEL + 1)]).is_err());
    }

    #[test]
    fn points_and_lists() {
        assert_eq!(story_points(0).ok(), Some(0));
        assert!(story_points(-1).is_err());
        assert!(story_points(MAX_POINTS + 1).is_err());
        assert_eq!(list("doing").ok(), Some("doing"));
        assert!(list("Done").is_err());
        assert!(list("").is_err());
    }

    #[test]
    fn due_dates_must_exist() {
        for good in ["2026-01-31", "2024-02-29", "2000-02-29", "0001-12-01"] {
            assert!(due(good).is_ok(), "{good}");
        }
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "0000-01-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "2026-01-01-",
            "2026-01-0a",
            "",
            "+026-01-01",
            "2026-01-01T00:00",
        ] {
            assert!(due(bad).is_err(), "{bad}");
        }
    }
}
