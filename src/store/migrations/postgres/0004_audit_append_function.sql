-- An audit append in one statement, hence one round trip and one implicit transaction,
-- instead of four (BEGIN, lock and read the head, insert, COMMIT): per record that is
-- PostgreSQL's largest cost under password pushes.
--
-- The hash is computed here exactly as store/chain.rs computes it (the store's tests
-- verify every chain written this way with the Rust code):
--   SHA-256("lockbridge-audit-v1\0" || field(prev_hash) || id as 8 bytes big-endian ||
--           field(at) || field(request_id) || field(actor) || field(action) ||
--           field(target) || field(outcome) || field(detail))
-- where field(NULL) = 0x00 and field(v) = 0x01 || length(v) as 8 bytes big-endian || v.
CREATE FUNCTION lockbridge_audit_field(value bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || int8send(length(value)::bigint) || value END
$$;

-- Appends records after the chain's head and returns the id before the first of them
-- (the records get the ids that follow, in order). `at_texts` are the times as hashed:
-- the stored `ats` in the chain's fixed-width text, computed by the caller.
--
-- Appends from every instance queue on a transaction-scoped advisory lock (held until
-- commit; nothing written for it), and each reads the log's tail after taking it: the
-- commit before it is visible by then. That replaces locking and updating the one row of
-- audit_chain_head, whose new version per append (and the lock's own WAL record) cost
-- PostgreSQL twice what the insert does. The head row stays as a floor: set when a log
-- is copied in (`lockbridge store copy`) or by migration 0003, and read, not written.
CREATE FUNCTION lockbridge_audit_append(
    ats timestamptz[], at_texts text[], request_ids text[], actors text[], actions text[],
    targets text[], outcomes text[], details text[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    floor_id bigint;
    floor_hash bytea;
    tail_id bigint;
    tail_hash bytea;
    after bigint;
    prev bytea;
    n integer := coalesce(cardinality(ats), 0);
    ids bigint[] := '{}';
    prevs bytea[] := '{}';
    hashes bytea[] := '{}';
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot taken before the lock would not see the append before this one.
        RAISE EXCEPTION 'audit appends need READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    -- 'lkbr', 1: the audit chain (sqlx's migrations use a single-key advisory lock).
    PERFORM pg_advisory_xact_lock(1819042418, 1);
    SELECT last_id, last_hash INTO floor_id, floor_hash FROM audit_chain_head WHERE singleton;
    SELECT id, hash INTO tail_id, tail_hash FROM audit_log ORDER BY id DESC LIMIT 1;
    IF tail_id IS NULL OR coalesce(floor_id, 0) >= tail_id THEN
        after := coalesce(floor_id, 0);
        prev := floor_hash;
    ELSE
        after := tail_id;
        prev := tail_hash;
        IF prev IS NULL THEN
            -- The newest rows were written around lockbridge (`audit verify` reports
            -- them): build on the newest chained record, as the verifier expects.
            SELECT hash INTO prev FROM audit_log
             WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1;
        END IF;
    END IF;
    prev := coalesce(prev, decode(repeat('00', 32), 'hex'));
    FOR i IN 1..n LOOP
        ids := ids || (after + i);
        prevs := prevs || prev;
        prev := sha256(
            convert_to('lockbridge-audit-v1', 'UTF8') || '\x00'::bytea
            || lockbridge_audit_field(prev)
            || int8send(after + i)
            || lockbridge_audit_field(convert_to(at_texts[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(request_ids[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(actors[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(actions[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(targets[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(outcomes[i], 'UTF8'))
            || lockbridge_audit_field(convert_to(details[i], 'UTF8')));
        hashes := hashes || prev;
    END LOOP;
    INSERT INTO audit_log (id, at, request_id, actor, action, target, outcome, detail,
                           prev_hash, hash)
    SELECT * FROM unnest(ids, ats, request_ids, actors, actions, targets, outcomes, details,
                         prevs, hashes);
    RETURN after;
END;
$$;
