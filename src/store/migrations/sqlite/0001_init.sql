-- ap2-mandate schema, SQLite. Times are Unix seconds; JSON is TEXT.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    owner                 TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    audiences             TEXT NOT NULL,
    max_delegation_depth  INTEGER NOT NULL,
    federated_credentials TEXT NOT NULL,
    status                TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    disabled_at           INTEGER
);

CREATE TABLE agent_keys (
    agent_id TEXT NOT NULL REFERENCES agents(id),
    kid      TEXT NOT NULL,
    jkt      TEXT NOT NULL UNIQUE,
    jwk      TEXT NOT NULL,
    PRIMARY KEY (agent_id, kid)
);

CREATE TABLE grants (
    id                    TEXT PRIMARY KEY,
    user_id               TEXT NOT NULL,
    agent_id              TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    authorization_details TEXT,
    status                TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    revoked_at            INTEGER
);

CREATE TABLE tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT,
    agent_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    exp        INTEGER NOT NULL
);

CREATE TABLE consent_requests (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    grant_id   TEXT,
    token_jti  TEXT,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER
);

CREATE TABLE status_lists (
    id         TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    next_index INTEGER NOT NULL
);

CREATE TABLE mandates (
    id             TEXT PRIMARY KEY,
    hash           TEXT NOT NULL UNIQUE,
    status_list_id TEXT NOT NULL REFERENCES status_lists(id),
    status_index   INTEGER NOT NULL,
    user_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    grant_id       TEXT,
    consent_id     TEXT,
    exp            INTEGER NOT NULL,
    revoked_at     INTEGER,
    UNIQUE (status_list_id, status_index)
);

CREATE TABLE nonces (
    value    TEXT PRIMARY KEY,
    aud      TEXT NOT NULL,
    agent_id TEXT,
    exp      INTEGER NOT NULL,
    used_at  INTEGER
);

-- Single-use JWT ids: DPoP proofs, client assertions (scope says which).
CREATE TABLE seen_jtis (
    scope TEXT NOT NULL,
    jti   TEXT NOT NULL,
    exp   INTEGER NOT NULL,
    PRIMARY KEY (scope, jti)
);

CREATE TABLE redemptions (
    closed_hash    TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL UNIQUE,
    keep_until     INTEGER NOT NULL,
    decided_at     INTEGER NOT NULL,
    decision       TEXT NOT NULL
);

CREATE TABLE ledger (
    open_hash       TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    total_minor     INTEGER NOT NULL,
    uses            INTEGER NOT NULL,
    last_use        INTEGER,
    next_allowed_at INTEGER,
    keep_until      INTEGER NOT NULL
);

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    response     TEXT,
    created_at   INTEGER NOT NULL,
    exp          INTEGER NOT NULL
);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- The head follows every appended record, in the same statement.
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit
BEGIN
    UPDATE audit_head SET hash = NEW.hash WHERE id = 1;
END;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TABLE keys (
    kid         TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    public_jwk  TEXT NOT NULL,
    private_enc BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retire_at   INTEGER
);

CREATE INDEX nonces_exp ON nonces (exp);
CREATE INDEX seen_jtis_exp ON seen_jtis (exp);
CREATE INDEX idempotency_exp ON idempotency (exp);
CREATE INDEX tokens_exp ON tokens (exp);
CREATE INDEX redemptions_keep ON redemptions (keep_until);
CREATE INDEX tokens_grant ON tokens (grant_id);
CREATE INDEX mandates_grant ON mandates (grant_id);
CREATE INDEX mandates_agent ON mandates (agent_id);
CREATE INDEX grants_agent ON grants (agent_id);
CREATE INDEX tokens_agent ON tokens (agent_id);
