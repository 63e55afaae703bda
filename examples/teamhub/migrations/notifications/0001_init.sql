-- Notifications. BIGINT and TEXT only, so that SQLite and Postgres share
-- this file: times are Unix milliseconds, JSON is text.

-- Each user's feed: one row per recipient of a notification.
CREATE TABLE feed (
    id BIGINT PRIMARY KEY,          -- time-ordered (Snowflake) id: the cursor
    user_id BIGINT NOT NULL,        -- the recipient
    kind TEXT NOT NULL,             -- card_created, message_posted, ...
    board_id BIGINT,
    seq BIGINT,                     -- the board's event number
    channel TEXT,                   -- chat messages' channel
    created_at BIGINT NOT NULL,
    data TEXT NOT NULL              -- the event as published (JSON)
);

CREATE INDEX feed_by_user ON feed (user_id, id);

-- Users and their display names, from UserSignedUp, for @mentions.
CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL          -- trimmed, lower-cased name
);

CREATE INDEX users_by_name ON users (name_key);
