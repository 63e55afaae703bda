-- automations: its own view of boards (it never writes boards' tables).
-- BIGINT and TEXT only (SQLite and Postgres alike): booleans 0/1, times
-- Unix milliseconds.

-- Each board's rules, all on unless a flag is set to 0, and the
-- round-robin turn.
CREATE TABLE rules (
    board_id BIGINT PRIMARY KEY,
    workspace_id BIGINT NOT NULL,
    round_robin BIGINT NOT NULL DEFAULT 1,
    parent_done BIGINT NOT NULL DEFAULT 1,
    sum_points BIGINT NOT NULL DEFAULT 1,
    unassign_done BIGINT NOT NULL DEFAULT 1,
    -- The member the board's last card went to in turn.
    last_assignee BIGINT,
    -- Events applied after the first; counting them locks the row, so a
    -- board's events are applied one at a time.
    events BIGINT NOT NULL DEFAULT 0
);

-- The cards automations has seen, as the newest event it took had them.
CREATE TABLE cards (
    id BIGINT PRIMARY KEY,
    board_id BIGINT NOT NULL,
    parent_id BIGINT,
    list TEXT NOT NULL,
    story_points BIGINT,
    assignee BIGINT,
    -- The board's seq of that event (0: read from boards directly).
    seq BIGINT NOT NULL
);

CREATE INDEX cards_by_parent ON cards (parent_id);

-- Workspaces' members, from MemberAdded and from boards.
CREATE TABLE members (
    workspace_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- The workspaces whose whole member list automations has had from boards;
-- MemberAdded keeps it whole from then on.
CREATE TABLE member_lists (
    workspace_id BIGINT PRIMARY KEY,
    recorded_at BIGINT NOT NULL
);
