-- lockbridge store, PostgreSQL dialect: the same tables and rules as the SQLite schema
-- (migrations/sqlite/0001..0009) in one step, with PostgreSQL's types. Times are
-- timestamptz (microseconds, like SQLite's fixed-width text), secrets and hashes bytea,
-- JSON jsonb (except the audit record's detail, whose exact text the chain hash covers).

-- API tokens: only a keyed hash of each token is kept.
CREATE TABLE api_tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL,
    hash        bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
-- A name is unique among tokens in force; a revoked token's name can be reused.
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Audit log: append-only, hash-chained (store/chain.rs). The id is part of the hash, so
-- the writer chooses it before the insert, from audit_chain_head below, while it holds
-- that row's lock: ids grow in chain order and are never reused, and a rolled-back
-- append leaves no gap (a gap means a removed record).
CREATE TABLE audit_log (
    id          bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    request_id  text,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    outcome     text NOT NULL,
    detail      text,
    prev_hash   bytea,
    hash        bytea
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- One row: the last id given to an audit record. Appends lock it (FOR UPDATE), which
-- makes appends from every instance on this database one queue, hence one chain.
CREATE TABLE audit_chain_head (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id     bigint NOT NULL
);
INSERT INTO audit_chain_head (singleton, last_id) VALUES (true, 0);

CREATE FUNCTION lockbridge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION lockbridge_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION lockbridge_append_only();

-- Signed chain heads: record_id's hash was head_hash at `at`; mac is
-- HMAC-SHA256(seal key, at || record_id || head_hash). Append-only.
CREATE TABLE audit_seals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    record_id   bigint NOT NULL,
    head_hash   bytea NOT NULL,
    mac         bytea NOT NULL
);
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION lockbridge_append_only();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION lockbridge_append_only();

-- Outbox: mail waiting for (or done with) delivery. A row that is no longer pending
-- can never hold a secret (the CHECK below), so "sent" and "dead" imply "erased".
-- "transactional" mail is never held back; "bulk" mail goes out within the bulk limits.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       text NOT NULL UNIQUE,
    template         text NOT NULL,
    recipient        text NOT NULL,
    context          jsonb NOT NULL,
    sealed_secret    bytea,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    lease_until      timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    class            text NOT NULL DEFAULT 'transactional' CHECK (class IN ('transactional', 'bulk')),
    -- When a due message was first left pending by a bulk limit.
    held_at          timestamptz,
    -- A message still unsent at this time is out of date: dead-lettered unsent.
    stale_after      timestamptz,
    CHECK (status = 'pending' OR sealed_secret IS NULL)
);
CREATE INDEX outbox_class_due ON outbox (class, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_class_sent ON outbox (class, sent_at) WHERE status = 'sent';
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';
CREATE INDEX outbox_stale ON outbox (stale_after) WHERE status = 'pending' AND stale_after IS NOT NULL;

-- The notice ledger: one row per notice ever queued, written in the same transaction as
-- its outbox row, so a notice is queued at most once across reruns, crashes and
-- concurrent sweeps. Kept when its outbox row is purged.
CREATE TABLE notice_ledger (
    key         text PRIMARY KEY,
    sweep_id    text,
    outbox_id   bigint REFERENCES outbox (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX notice_ledger_outbox ON notice_ledger (outbox_id);
CREATE INDEX notice_ledger_sweep ON notice_ledger (sweep_id);

-- Named leases: at most one holder at a time, until held_until.
CREATE TABLE leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    held_until  timestamptz NOT NULL
);

-- Sweep history, and the progress of sweeps running now.
CREATE TABLE sweep_runs (
    id                text PRIMARY KEY,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    status            text NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    dry_run           boolean NOT NULL,
    triggered_by      text NOT NULL,
    sweep_at          timestamptz NOT NULL,
    scanned           bigint NOT NULL DEFAULT 0,
    notified          bigint NOT NULL DEFAULT 0,
    already_notified  bigint NOT NULL DEFAULT 0,
    no_mail           bigint NOT NULL DEFAULT 0,
    expired           bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    error             text,
    summary           jsonb
);
CREATE INDEX sweep_runs_started ON sweep_runs (started_at, id);
CREATE INDEX sweep_runs_running ON sweep_runs (id) WHERE status = 'running';

-- A sweep's report, in blocks of consecutive lines (a JSON array each).
CREATE TABLE sweep_report (
    sweep_id   text NOT NULL,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL,
    lines      jsonb NOT NULL,
    PRIMARY KEY (sweep_id, first_seq)
);

-- Settings admins change at run time, as JSON.
CREATE TABLE settings (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Administrators' sessions: only a keyed hash of each session token is kept.
CREATE TABLE sessions (
    id          text PRIMARY KEY,
    hash        bytea NOT NULL UNIQUE,
    user_dn     text NOT NULL,
    user_name   text NOT NULL,
    roles       jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Bulk jobs on many accounts: one row per job, one per account it covers.
CREATE TABLE jobs (
    id              text PRIMARY KEY,
    kind            text NOT NULL,
    actor           text NOT NULL,
    actor_dn        text,
    roles           jsonb NOT NULL,
    -- Non-secret parameters; a chosen password is only ever in sealed_secret.
    params          jsonb NOT NULL,
    sealed_secret   bytea,
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    total           bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    error           text,
    -- When the report (with the new passwords) was downloaded; its secrets are erased then.
    report_taken_at timestamptz,
    done            bigint NOT NULL DEFAULT 0,
    refused         bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_running ON jobs (created_at) WHERE status = 'running';

CREATE TABLE job_items (
    job_id           text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq              bigint NOT NULL,
    user_name        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'writing', 'done', 'refused', 'failed')),
    code             text,
    changed          boolean NOT NULL DEFAULT false,
    sealed_password  bytea,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_items_open ON job_items (job_id, seq) WHERE status IN ('pending', 'writing');

-- Self-service flows; `version` makes each update conditional.
CREATE TABLE selfservice_flows (
    id          text PRIMARY KEY,
    hash        bytea NOT NULL UNIQUE,
    purpose     text NOT NULL,
    state       jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX selfservice_flows_expires ON selfservice_flows (expires_at);

-- "Contact an administrator": one open request per user at a time.
CREATE TABLE reset_requests (
    id          text PRIMARY KEY,
    user_dn     text NOT NULL,
    user_name   text NOT NULL,
    status      text NOT NULL CHECK (status IN ('open', 'closed', 'dismissed')),
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    closed_by   text,
    reason      text
);
CREATE UNIQUE INDEX reset_requests_one_open ON reset_requests (user_dn) WHERE status = 'open';
CREATE INDEX reset_requests_by_time ON reset_requests (created_at, id);

-- Single-use links to choose a first password; only a keyed hash of each token is kept.
CREATE TABLE welcome_links (
    hash        bytea PRIMARY KEY,
    user_dn     text NOT NULL,
    user_name   text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX welcome_links_expires ON welcome_links (expires_at);
