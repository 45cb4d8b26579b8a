-- Bulk jobs on many accounts (password resets, forced changes): one row per job, one per
-- account it covers, so a job killed mid-way resumes where it stopped.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    actor_dn      TEXT,
    roles         TEXT NOT NULL,
    -- Non-secret parameters (JSON); a chosen password is only ever in sealed_secret.
    params        TEXT NOT NULL,
    sealed_secret BLOB,
    status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    total         INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    finished_at   TEXT,
    error         TEXT,
    -- When the report (with the new passwords) was downloaded; its secrets are erased then.
    report_taken_at TEXT
);
CREATE INDEX jobs_running ON jobs (created_at) WHERE status = 'running';

-- One account of a job. `writing`: its new password is sealed here and may be in force
-- (the directory was, or was about to be, asked); a resumed job checks which before
-- doing anything, so nobody is reset twice.
CREATE TABLE job_items (
    job_id           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    user_name        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'writing', 'done', 'refused', 'failed')),
    code             TEXT,
    changed          INTEGER NOT NULL DEFAULT 0,
    sealed_password  BLOB,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE INDEX job_items_open ON job_items (job_id, seq) WHERE status IN ('pending', 'writing');
