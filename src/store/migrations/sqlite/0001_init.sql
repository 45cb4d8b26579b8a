-- lockbridge store, SQLite dialect. Times are TEXT in one fixed-width UTC format
-- (2024-05-01T12:00:00.000000Z), so text order is time order.

-- API tokens: only a keyed hash of each token is kept.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
-- A name is unique among tokens in force; a revoked token's name can be reused.
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Audit log: append-only. AUTOINCREMENT keeps ids from ever being reused, so keyset
-- paging by id is stable.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    request_id  TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Outbox: mail waiting for (or done with) delivery. A row that is no longer pending
-- can never hold a secret (the CHECK below), so "sent" and "dead" imply "erased".
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL UNIQUE,
    template         TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    context          TEXT NOT NULL,
    sealed_secret    BLOB,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_until      TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    sent_at          TEXT,
    CHECK (status = 'pending' OR sealed_secret IS NULL)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
