-- A sweep's report, one line per account with a notice due, an expired password, or no
-- way to be notified: written as the sweep goes, so that neither the sweep nor the CLI
-- holds the list in memory; the digest's CSV is built from it when the digest is sent.
-- Lines are stored in blocks (a JSON array of consecutive lines, `first_seq` to
-- `last_seq`): a report is written once and read in order, and one row per thousand
-- lines costs a fraction of one row per line. Reports of runs older than the retention
-- are pruned by later sweeps.
CREATE TABLE sweep_report (
    sweep_id   TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    lines      TEXT NOT NULL,
    PRIMARY KEY (sweep_id, first_seq)
) WITHOUT ROWID;
