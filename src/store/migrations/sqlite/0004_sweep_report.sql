-- A sweep's report, one line per account with a notice due, an expired password, or no
-- way to be notified: written in batches as the sweep goes, so that neither the sweep
-- nor the CLI holds the list in memory; the digest's CSV is built from it when the
-- digest is sent. Lines of runs older than the retention are pruned by later sweeps.
CREATE TABLE sweep_report (
    sweep_id          TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    user_name         TEXT NOT NULL,
    display_name      TEXT,
    mail              TEXT,
    notice            TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    expires_at_local  TEXT NOT NULL,
    days_left         INTEGER NOT NULL,
    status            TEXT NOT NULL,
    reason            TEXT,
    PRIMARY KEY (sweep_id, seq)
) WITHOUT ROWID;
