-- Password-expiry sweeps: mail classes and bulk pacing, the notice ledger, leases, sweep
-- history and run-time settings. Times use the format of 0001 (text order is time order).

-- Outbox: the class of a message decides its pacing. "transactional" mail (temporary
-- passwords) is never held back; "bulk" mail (expiry notices, digests) goes out only
-- while under outbox.max_bulk_per_minute and outbox.max_bulk_per_day.
ALTER TABLE outbox ADD COLUMN class TEXT NOT NULL DEFAULT 'transactional'
    CHECK (class IN ('transactional', 'bulk'));
-- When a due message was first left pending by a bulk limit (each message is counted
-- once by the "held back" metric).
ALTER TABLE outbox ADD COLUMN held_at TEXT;
-- A message still unsent at this time is out of date ("expires in 7 days" sent a week
-- late): it is dead-lettered without being sent.
ALTER TABLE outbox ADD COLUMN stale_after TEXT;

-- Due messages of one class, oldest first (claiming, holding).
CREATE INDEX outbox_class_due ON outbox (class, next_attempt_at, id) WHERE status = 'pending';
-- Messages of one class sent since a time (the bulk limits).
CREATE INDEX outbox_class_sent ON outbox (class, sent_at) WHERE status = 'sent';
-- Dead letters, newest first (the API).
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';
-- Pending messages that can go out of date.
CREATE INDEX outbox_stale ON outbox (stale_after) WHERE status = 'pending' AND stale_after IS NOT NULL;

-- The notice ledger: one row per notice ever queued, keyed by the caller (for expiry:
-- user, password-changed time, threshold). A key is recorded in the same transaction as
-- its outbox row, so a notice is queued at most once, across reruns, crashes and
-- concurrent sweeps. Kept when its outbox row is purged (the key still means "done").
CREATE TABLE notice_ledger (
    key         TEXT PRIMARY KEY NOT NULL,
    sweep_id    TEXT,
    outbox_id   INTEGER REFERENCES outbox (id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX notice_ledger_outbox ON notice_ledger (outbox_id);
CREATE INDEX notice_ledger_sweep ON notice_ledger (sweep_id);

-- Named leases: at most one holder at a time, until held_until.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    held_until  TEXT NOT NULL
) WITHOUT ROWID;

-- Sweep history, and the progress of sweeps running now. Counters are updated while a
-- sweep runs; summary is JSON.
CREATE TABLE sweep_runs (
    id                TEXT PRIMARY KEY NOT NULL,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    status            TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    dry_run           INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    triggered_by      TEXT NOT NULL,
    sweep_at          TEXT NOT NULL,
    scanned           INTEGER NOT NULL DEFAULT 0,
    notified          INTEGER NOT NULL DEFAULT 0,
    already_notified  INTEGER NOT NULL DEFAULT 0,
    no_mail           INTEGER NOT NULL DEFAULT 0,
    expired           INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    summary           TEXT CHECK (summary IS NULL OR json_valid(summary))
);
CREATE INDEX sweep_runs_started ON sweep_runs (started_at, id);
CREATE INDEX sweep_runs_running ON sweep_runs (id) WHERE status = 'running';

-- Settings admins change at run time (the expiration policy, ...), as JSON.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL CHECK (json_valid(value)),
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
