-- Accounts and refresh tokens. BIGINT and TEXT only, so that SQLite and
-- Postgres share this file: times are Unix milliseconds.
CREATE TABLE users (
    id BIGINT PRIMARY KEY,          -- time-ordered (Snowflake) id
    email TEXT NOT NULL,            -- trimmed and lower-cased
    name TEXT NOT NULL,             -- display name, trimmed
    password_hash TEXT NOT NULL,    -- argon2id PHC string
    created_at BIGINT NOT NULL
);

-- One account per e-mail address: a second sign-up is a unique violation
-- (409).
CREATE UNIQUE INDEX users_by_email ON users (email);

-- Refresh tokens `{id}.{secret}`: only a hash of the secret is kept. A row
-- is deleted when its token is used (and replaced by a new one).
CREATE TABLE refresh_tokens (
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    secret_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A user's tokens, for sweeping the expired ones at sign-in.
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id, expires_at);
