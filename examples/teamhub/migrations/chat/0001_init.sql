-- Chat messages. BIGINT and TEXT only, so that SQLite and Postgres share
-- this file: booleans are 0/1, times Unix milliseconds.
CREATE TABLE messages (
    id BIGINT PRIMARY KEY,          -- time-ordered (Snowflake) id
    channel TEXT NOT NULL,          -- `board:{id}` or `dm:{a}:{b}` (a < b)
    author BIGINT NOT NULL,
    text TEXT NOT NULL,
    edited BIGINT NOT NULL,         -- 0/1
    deleted BIGINT NOT NULL,        -- 0/1: soft delete
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A channel's history, in id order.
CREATE INDEX messages_by_channel ON messages (channel, id);
