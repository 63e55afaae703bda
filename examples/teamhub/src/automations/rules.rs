//! The rules, as plain decisions: given what automations knows of a card
//! before and after a change, and of the families it belongs to, what to
//! ask boards to do. No I/O here: the handlers read the projection, call
//! [`decide`], and send what it returns.
//!
//! 1. **Round-robin**: a new card with no assignee (and not already done)
//!    is given to the board's members in turn.
//! 2. **Parent done**: when every child of a parent is done (after one
//!    is moved, re-parented or deleted), the parent is moved to done,
//!    unless it is already.
//! 3. **Sum points**: a parent's story points are the sum of its
//!    children's, set when a child's points change, a child is made,
//!    changes parent or is deleted; and set back when the parent's own points
//!    change away from the sum (so commands that boards applied out of
//!    order still end at the sum).
//! 4. **Unassign on done**: a card that enters done with an assignee is
//!    unassigned; so is a done card an automation assigned.
//!
//! Every rule acts only when the state differs from what it wants, so the
//! events its commands cause lead to no further command once boards has
//! applied them: no loop.

use crate::contracts::DONE;

/// A card as automations keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Card {
    /// The card.
    pub(super) id: i64,
    /// Its board.
    pub(super) board_id: i64,
    /// The card it is a child of.
    pub(super) parent_id: Option<i64>,
    /// `todo`, `doing` or `done`.
    pub(super) list: String,
    /// Story points.
    pub(super) story_points: Option<i64>,
    /// The user it is assigned to.
    pub(super) assignee: Option<i64>,
}

/// Which rules are on for a board (all, unless turned off in its row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one switch per rule
pub(super) struct Rules {
    /// Rule 1.
    pub(super) round_robin: bool,
    /// Rule 2.
    pub(super) parent_done: bool,
    /// Rule 3.
    pub(super) sum_points: bool,
    /// Rule 4.
    pub(super) unassign_done: bool,
}

impl Rules {
    /// Every rule on.
    #[cfg(test)]
    const ALL: Self = Self {
        round_robin: true,
        parent_done: true,
        sum_points: true,
        unassign_done: true,
    };
}

/// What happened to the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// It was made (`CardCreated`).
    Created,
    /// It moved to another list (`CardMoved`).
    Moved,
    /// Its assignee changed (`CardAssigned`), by a user or an automation.
    Assigned {
        /// Whether an automation made the change (`by: 0`).
        by_automation: bool,
    },
    /// Its fields changed (`CardUpdated`).
    Updated,
    /// It was deleted (`CardDeleted`): its parent's family goes on without
    /// it.
    Deleted,
}

/// A parent card and its children, as the projection has them after the
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Family {
    /// The parent.
    pub(super) parent: Card,
    /// Its children.
    pub(super) children: Vec<Card>,
}

impl Family {
    /// Whether it has children and all are done.
    fn all_done(&self) -> bool {
        !self.children.is_empty() && self.children.iter().all(|child| child.list == DONE)
    }

    /// The sum of the children's story points; `None` when no child has
    /// any.
    fn points(&self) -> Option<i64> {
        self.children
            .iter()
            .filter_map(|child| child.story_points)
            .reduce(i64::saturating_add)
    }
}

/// What automations asks boards to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Rule 1: give the card to the board's next member in turn.
    AssignInTurn {
        /// The card.
        card: i64,
    },
    /// Rule 4: take the card from its assignee.
    Unassign {
        /// The card.
        card: i64,
    },
    /// Rule 2: move the parent to done.
    MoveToDone {
        /// The parent.
        card: i64,
    },
    /// Rule 3: set the parent's story points.
    SetPoints {
        /// The parent.
        card: i64,
        /// The sum of its children's.
        points: i64,
    },
}

/// What is known when a card changed: the change, the card before (`None`:
/// automations had not seen it) and after, and the families it touches —
/// its parent's (and its former parent's) with it among the children as it
/// is now, and its own as a parent when its points changed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// What happened.
    pub(super) change: Change,
    /// The card before the change, if automations knew it.
    pub(super) before: Option<&'a Card>,
    /// The card after the change.
    pub(super) after: &'a Card,
    /// The families the change touches.
    pub(super) families: &'a [Family],
}

/// The rules' decisions about one change, in rule order.
pub(super) fn decide(rules: Rules, facts: &Facts<'_>) -> Vec<Action> {
    let Facts {
        change,
        before,
        after,
        families,
    } = *facts;
    let mut actions = Vec::new();

    if rules.round_robin
        && change == Change::Created
        && after.assignee.is_none()
        && after.list != DONE
    {
        actions.push(Action::AssignInTurn { card: after.id });
    }

    let entered_done = after.list == DONE && before.is_none_or(|b| b.list != DONE);
    let moved_in = entered_done && matches!(change, Change::Created | Change::Moved);
    let assigned_while_done = after.list == DONE
        && change
            == (Change::Assigned {
                by_automation: true,
            });
    if rules.unassign_done && after.assignee.is_some() && (moved_in || assigned_while_done) {
        actions.push(Action::Unassign { card: after.id });
    }

    let left_its_family = change == Change::Deleted;
    let list_or_parent_changed = left_its_family
        || before.is_none_or(|b| b.list != after.list || b.parent_id != after.parent_id);
    let points_or_parent_changed = left_its_family
        || before
            .is_none_or(|b| b.story_points != after.story_points || b.parent_id != after.parent_id);
    let own_points_changed = before.is_some_and(|b| b.story_points != after.story_points);
    for family in families {
        let own = family.parent.id == after.id;
        if rules.parent_done
            && !own
            && list_or_parent_changed
            && family.all_done()
            && family.parent.list != DONE
        {
            actions.push(Action::MoveToDone {
                card: family.parent.id,
            });
        }
        let sum_wanted = if own {
            own_points_changed
        } else {
            points_or_parent_changed
        };
        if rules.sum_points
            && sum_wanted
            && let Some(points) = family.points()
            && family.parent.story_points != Some(points)
        {
            actions.push(Action::SetPoints {
                card: family.parent.id,
                points,
            });
        }
    }
    actions
}

/// The member whose turn is next after `last`: the smallest user id above
/// it, or the smallest of all once the turn has gone round (or when `last`
/// has left). `None` without members.
pub(super) fn next_in_turn(members: &[i64], last: Option<i64>) -> Option<i64> {
    members
        .iter()
        .copied()
        .filter(|member| last.is_none_or(|last| *member > last))
        .min()
        .or_else(|| members.iter().copied().min())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: i64, list: &str) -> Card {
        Card {
            id,
            board_id: 1,
            parent_id: None,
            list: list.to_owned(),
            story_points: None,
            assignee: None,
        }
    }

    fn child(id: i64, parent: i64, list: &str, points: Option<i64>) -> Card {
        Card {
            parent_id: Some(parent),
            story_points: points,
            ..card(id, list)
        }
    }

    fn decide_all(
        change: Change,
        before: Option<&Card>,
        after: &Card,
        families: &[Family],
    ) -> Vec<Action> {
        decide(
            Rules::ALL,
            &Facts {
                change,
                before,
                after,
                families,
            },
        )
    }

    #[test]
    fn a_new_unassigned_card_is_assigned_in_turn() {
        let new = card(7, "todo");
        assert_eq!(
            decide_all(Change::Created, None, &new, &[]),
            [Action::AssignInTurn { card: 7 }]
        );
        let assigned = Card {
            assignee: Some(3),
            ..new.clone()
        };
        assert!(decide_all(Change::Created, None, &assigned, &[]).is_empty());
        // Not for a card made in done, nor for other changes.
        assert!(decide_all(Change::Created, None, &card(7, DONE), &[]).is_empty());
        assert!(decide_all(Change::Updated, Some(&new), &new, &[]).is_empty());
        let off = Rules {
            round_robin: false,
            ..Rules::ALL
        };
        let facts = Facts {
            change: Change::Created,
            before: None,
            after: &new,
            families: &[],
        };
        assert!(decide(off, &facts).is_empty());
    }

    #[test]
    fn deleting_a_child_settles_its_parent() {
        // Children 11 (done, 3 points) and 12 (doing, 5 points) of parent
        // 10 (todo, 8 points): 12 is deleted, so 11 is all there is.
        let parent = Card {
            story_points: Some(8),
            ..card(10, "todo")
        };
        let deleted = child(12, 10, "doing", Some(5));
        let family = Family {
            parent: parent.clone(),
            children: vec![child(11, 10, DONE, Some(3))],
        };
        assert_eq!(
            decide_all(
                Change::Deleted,
                Some(&deleted),
                &deleted,
                std::slice::from_ref(&family)
            ),
            [
                Action::MoveToDone { card: 10 },
                Action::SetPoints {
                    card: 10,
                    points: 3
                }
            ]
        );
        // A deleted card is never assigned nor unassigned, even one
        // automations had not seen.
        let done = Card {
            assignee: Some(3),
            ..card(13, DONE)
        };
        assert!(decide_all(Change::Deleted, None, &done, &[]).is_empty());
        // The last child deleted: no sum to set, and no child to be done.
        let alone = Family {
            parent,
            children: vec![],
        };
        assert!(decide_all(Change::Deleted, Some(&deleted), &deleted, &[alone]).is_empty());
    }

    #[test]
    fn a_card_entering_done_is_unassigned() {
        let doing = Card {
            assignee: Some(3),
            ..card(7, "doing")
        };
        let done = Card {
            list: DONE.to_owned(),
            ..doing.clone()
        };
        assert_eq!(
            decide_all(Change::Moved, Some(&doing), &done, &[]),
            [Action::Unassign { card: 7 }]
        );
        // A user assigning a done card is left alone; an automation is not.
        let by_user = Change::Assigned {
            by_automation: false,
        };
        assert!(decide_all(by_user, Some(&done), &done, &[]).is_empty());
        let by_rule = Change::Assigned {
            by_automation: true,
        };
        assert_eq!(
            decide_all(by_rule, Some(&done), &done, &[]),
            [Action::Unassign { card: 7 }]
        );
        // The unassignment's own event asks for nothing more.
        let unassigned = Card {
            assignee: None,
            ..done.clone()
        };
        assert!(decide_all(by_rule, Some(&done), &unassigned, &[]).is_empty());
    }

    #[test]
    fn the_parent_is_done_when_every_child_is() {
        let parent = card(1, "doing");
        let before = child(2, 1, "doing", None);
        let after = child(2, 1, DONE, None);
        let family = |other: &str| Family {
            parent: parent.clone(),
            children: vec![after.clone(), child(3, 1, other, None)],
        };
        assert_eq!(
            decide_all(Change::Moved, Some(&before), &after, &[family(DONE)]),
            [Action::MoveToDone { card: 1 }]
        );
        assert!(decide_all(Change::Moved, Some(&before), &after, &[family("todo")]).is_empty());
        // Already done: nothing to do.
        let done_parent = Family {
            parent: card(1, DONE),
            ..family(DONE)
        };
        assert!(decide_all(Change::Moved, Some(&before), &after, &[done_parent]).is_empty());
        // A change that is not a move does not re-decide it.
        assert!(decide_all(Change::Updated, Some(&after), &after, &[family(DONE)]).is_empty());
    }

    #[test]
    fn a_former_parent_whose_other_children_are_done_is_done() {
        let old = card(1, "todo");
        let before = child(2, 1, "todo", None);
        let after = child(2, 9, "todo", None);
        let former = Family {
            parent: old,
            children: vec![child(3, 1, DONE, None)],
        };
        let new = Family {
            parent: card(9, "todo"),
            children: vec![after.clone()],
        };
        assert_eq!(
            decide_all(Change::Updated, Some(&before), &after, &[new, former]),
            [Action::MoveToDone { card: 1 }]
        );
    }

    #[test]
    fn the_parent_s_points_are_its_children_s_sum() {
        let parent = card(1, "todo");
        let first = child(2, 1, "todo", Some(3));
        let second = child(3, 1, "todo", Some(5));
        let family = Family {
            parent: parent.clone(),
            children: vec![first.clone(), second.clone()],
        };
        assert_eq!(
            decide_all(
                Change::Created,
                None,
                &second,
                std::slice::from_ref(&family)
            ),
            [
                Action::AssignInTurn { card: 3 },
                Action::SetPoints { card: 1, points: 8 }
            ]
        );
        // The parent has the sum already: nothing.
        let summed = Family {
            parent: Card {
                story_points: Some(8),
                ..parent
            },
            ..family.clone()
        };
        let before = Card {
            story_points: Some(4),
            ..second.clone()
        };
        assert!(decide_all(Change::Updated, Some(&before), &second, &[summed]).is_empty());
        // No child has points: nothing to sum.
        let pointless = Family {
            parent: card(1, "todo"),
            children: vec![child(2, 1, "todo", None)],
        };
        let no_points = child(2, 1, "todo", None);
        assert_eq!(
            decide_all(Change::Created, None, &no_points, &[pointless]),
            [Action::AssignInTurn { card: 2 }]
        );
    }

    #[test]
    fn a_parent_whose_points_left_the_sum_is_set_back() {
        let children = vec![child(2, 1, "todo", Some(3)), child(3, 1, "todo", Some(5))];
        let before = Card {
            story_points: Some(8),
            ..card(1, "todo")
        };
        let after = Card {
            story_points: Some(3),
            ..before.clone()
        };
        let own = Family {
            parent: after.clone(),
            children,
        };
        assert_eq!(
            decide_all(
                Change::Updated,
                Some(&before),
                &after,
                std::slice::from_ref(&own)
            ),
            [Action::SetPoints { card: 1, points: 8 }]
        );
        // Back at the sum: the loop ends.
        let settled = Family {
            parent: before.clone(),
            ..own
        };
        assert!(decide_all(Change::Updated, Some(&after), &before, &[settled]).is_empty());
    }

    #[test]
    fn turns_go_round_by_user_id() {
        let members = [30, 10, 20];
        assert_eq!(next_in_turn(&members, None), Some(10));
        assert_eq!(next_in_turn(&members, Some(10)), Some(20));
        assert_eq!(next_in_turn(&members, Some(20)), Some(30));
        assert_eq!(next_in_turn(&members, Some(30)), Some(10));
        // The last one left the list: the turn goes on from where it was.
        assert_eq!(next_in_turn(&members, Some(25)), Some(30));
        assert_eq!(next_in_turn(&[], Some(25)), None);
    }
}
