-- ap2-mandate schema, PostgreSQL. Times are Unix seconds; JSON is TEXT.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    owner                 TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    audiences             TEXT NOT NULL,
    max_delegation_depth  BIGINT NOT NULL,
    federated_credentials TEXT NOT NULL,
    status                TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    disabled_at           BIGINT
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
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    revoked_at            BIGINT
);

CREATE TABLE tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT,
    agent_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    exp        BIGINT NOT NULL
);

CREATE TABLE consent_requests (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    grant_id   TEXT,
    token_jti  TEXT,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT
);

CREATE TABLE status_lists (
    id         TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    next_index BIGINT NOT NULL
);

CREATE TABLE mandates (
    id             TEXT PRIMARY KEY,
    hash           TEXT NOT NULL UNIQUE,
    status_list_id TEXT NOT NULL REFERENCES status_lists(id),
    status_index   BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    grant_id       TEXT,
    consent_id     TEXT,
    exp            BIGINT NOT NULL,
    revoked_at     BIGINT,
    UNIQUE (status_list_id, status_index)
);

CREATE TABLE nonces (
    value    TEXT PRIMARY KEY,
    aud      TEXT NOT NULL,
    agent_id TEXT,
    exp      BIGINT NOT NULL,
    used_at  BIGINT
);

-- Single-use JWT ids: DPoP proofs, client assertions (scope says which).
CREATE TABLE seen_jtis (
    scope TEXT NOT NULL,
    jti   TEXT NOT NULL,
    exp   BIGINT NOT NULL,
    PRIMARY KEY (scope, jti)
);

CREATE TABLE redemptions (
    closed_hash    TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL UNIQUE,
    keep_until     BIGINT NOT NULL,
    decided_at     BIGINT NOT NULL,
    decision       TEXT NOT NULL
);

CREATE TABLE ledger (
    open_hash       TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    total_minor     BIGINT NOT NULL,
    uses            BIGINT NOT NULL,
    last_use        BIGINT,
    next_allowed_at BIGINT,
    keep_until      BIGINT NOT NULL
);

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    response     TEXT,
    created_at   BIGINT NOT NULL,
    exp          BIGINT NOT NULL
);

CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'audit records are append-only';
END;
$fn$;

-- The head follows every appended record, in the same statement.
CREATE FUNCTION audit_head_follows() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE audit_head SET hash = NEW.hash WHERE id = 1;
    RETURN NEW;
END;
$fn$;

CREATE TRIGGER audit_head_follows AFTER INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_head_follows();

CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();

CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE keys (
    kid         TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    public_jwk  TEXT NOT NULL,
    private_enc BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retire_at   BIGINT
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
