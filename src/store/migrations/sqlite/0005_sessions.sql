-- Administrators' sessions (POST /api/v1/sessions): only a keyed hash of each session
-- token is kept. Roles are fixed at sign-in for the session's short life.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    user_dn     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    roles       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX sessions_expires ON sessions (expires_at);
