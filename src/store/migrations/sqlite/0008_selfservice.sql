-- Self-service: a verification in progress ("flow"), bound to one browser by a cookie
-- of which only a keyed hash is kept. `state` is the flow's JSON (stage, the codes'
-- keyed hashes, tries), opaque to the store; `version` makes each update conditional,
-- so two requests of one browser cannot both spend the same code.
CREATE TABLE selfservice_flows (
    id          TEXT PRIMARY KEY NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    purpose     TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX selfservice_flows_expires ON selfservice_flows (expires_at);

-- "Contact an administrator": one open request per user at a time.
CREATE TABLE reset_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    user_dn     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'closed', 'dismissed')),
    created_at  TEXT NOT NULL,
    closed_at   TEXT,
    closed_by   TEXT,
    reason      TEXT
);
CREATE UNIQUE INDEX reset_requests_one_open ON reset_requests (user_dn) WHERE status = 'open';
CREATE INDEX reset_requests_by_time ON reset_requests (created_at, id);
