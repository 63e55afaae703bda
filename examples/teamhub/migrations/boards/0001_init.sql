-- boards: workspaces, their members and boards, cards and comments.
-- BIGINT and TEXT only (SQLite and Postgres alike): booleans 0/1, times
-- Unix milliseconds, lists JSON text. Ids come from the service
-- (time-ordered Snowflake ids), never from the database.

CREATE TABLE workspaces (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set by every change of the workspace's members or boards (it also
    -- locks the row for the change).
    updated_at BIGINT NOT NULL
);

CREATE TABLE members (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id),
    user_id BIGINT NOT NULL,
    added_by BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE boards (
    id BIGINT PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    -- The number of the board's last event: BoardCreated is 1, and each
    -- change takes the next in its own transaction.
    seq BIGINT NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX boards_by_workspace ON boards (workspace_id, id);

CREATE TABLE cards (
    id BIGINT PRIMARY KEY,
    board_id BIGINT NOT NULL REFERENCES boards (id),
    -- A card of the same board; never the card itself nor a descendant.
    parent_id BIGINT REFERENCES cards (id),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    assignee BIGINT,
    -- A JSON array of strings.
    labels TEXT NOT NULL,
    story_points BIGINT,
    -- YYYY-MM-DD.
    due TEXT,
    -- todo, doing or done.
    list TEXT NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX cards_by_board ON cards (board_id, id);
CREATE INDEX cards_by_parent ON cards (parent_id);

CREATE TABLE comments (
    id BIGINT PRIMARY KEY,
    card_id BIGINT NOT NULL REFERENCES cards (id),
    author BIGINT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX comments_by_card ON comments (card_id, id);
