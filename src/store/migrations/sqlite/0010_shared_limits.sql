-- State several instances on one database share (issue 16).
--
-- Rate-limit buckets (GCRA, src/store/rate.rs): one row per key, `tat` the instant in
-- microseconds since the epoch at which the bucket is full again. A row whose `tat`
-- has passed is a full bucket and may be deleted at any time. `granted` is what the
-- last take gave, so the one UPSERT can return it.
CREATE TABLE rate_buckets (
    key      TEXT PRIMARY KEY NOT NULL,
    tat      INTEGER NOT NULL,
    granted  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX rate_buckets_tat ON rate_buckets (tat);

-- One counter, raised in the same transaction as every token revocation and every
-- ended session, which each instance polls to drop its cache of valid tokens.
CREATE TABLE revocations (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    counter  INTEGER NOT NULL
);
INSERT INTO revocations (id, counter) VALUES (1, 0);
