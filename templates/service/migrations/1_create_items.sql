-- Applied once, at start, by the {{ persistence }} plug-in ({{ persistence }}.migrations).
-- Add a new file for each change; never edit an applied one.
CREATE TABLE items (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL
);
