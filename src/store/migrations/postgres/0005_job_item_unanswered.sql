-- Runs in which an item's password write was sent and went unanswered: after a few, the
-- item is reported failed instead of tried again (bulk::MAX_UNANSWERED_WRITES).
ALTER TABLE job_items ADD COLUMN unanswered integer NOT NULL DEFAULT 0;
