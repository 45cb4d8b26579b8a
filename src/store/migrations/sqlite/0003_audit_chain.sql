-- Tamper evidence for the audit log. Each record carries the SHA-256 of the record
-- before it (prev_hash) and its own (hash), computed by lockbridge (store/chain.rs)
-- when the record is written; records written before this migration get theirs at the
-- first start after it. audit_seals holds the chain's head, signed now and then with a
-- key derived from the master key.
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN hash BLOB;

-- Still append-only. The one update allowed is filling in the chain of a record that
-- has none yet, leaving everything else as it was.
DROP TRIGGER audit_log_no_update;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN OLD.hash IS NOT NULL
    OR NEW.id IS NOT OLD.id
    OR NEW.at IS NOT OLD.at
    OR NEW.request_id IS NOT OLD.request_id
    OR NEW.actor IS NOT OLD.actor
    OR NEW.action IS NOT OLD.action
    OR NEW.target IS NOT OLD.target
    OR NEW.outcome IS NOT OLD.outcome
    OR NEW.detail IS NOT OLD.detail
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Signed chain heads: record_id's hash was head_hash at `at`; mac is
-- HMAC-SHA256(seal key, at || record_id || head_hash). Append-only.
CREATE TABLE audit_seals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    record_id   INTEGER NOT NULL,
    head_hash   BLOB NOT NULL,
    mac         BLOB NOT NULL
);
CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
BEGIN
    SELECT RAISE(ABORT, 'audit_seals is append-only');
END;
CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
BEGIN
    SELECT RAISE(ABORT, 'audit_seals is append-only');
END;
