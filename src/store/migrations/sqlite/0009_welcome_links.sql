-- Single-use links to choose a first password (`/welcome/{token}`), mailed after an
-- account is created without one. Only a keyed hash of each link's token is kept.
CREATE TABLE welcome_links (
    hash        BLOB PRIMARY KEY NOT NULL,
    user_dn     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
CREATE INDEX welcome_links_expires ON welcome_links (expires_at);
