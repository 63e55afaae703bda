-- A card deleted on boards stays as a tombstone (deleted = 1), so that an
-- event about it arriving late (out of order, or redelivered) does not
-- bring it back; it counts as no family's child any more.
ALTER TABLE cards ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;
