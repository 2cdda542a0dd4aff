-- Token service: redirect URIs, actors of each token, authorization codes, sign-in sessions
-- and failed sign-in counters.

ALTER TABLE agents ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';

-- Every registered agent named in a token's act chain, so disabling any of them revokes it.
CREATE TABLE token_actors (
    jti      TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    exp      INTEGER NOT NULL,
    PRIMARY KEY (jti, agent_id)
);
CREATE INDEX token_actors_agent ON token_actors (agent_id);
CREATE INDEX token_actors_exp ON token_actors (exp);

-- Authorization codes (RFC 6749 §4.1), stored by the SHA-256 of the code, single use.
CREATE TABLE auth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    grant_id       TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT,
    dpop_jkt       TEXT,
    exp            INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE INDEX auth_codes_exp ON auth_codes (exp);

-- Signed-in browser sessions, stored by the SHA-256 of the cookie value.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf    TEXT NOT NULL,
    exp     INTEGER NOT NULL
);
CREATE INDEX sessions_exp ON sessions (exp);

-- Failed sign-ins per username within a window.
CREATE TABLE signin_failures (
    username     TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    exp          INTEGER NOT NULL
);
