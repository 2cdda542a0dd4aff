-- Wallet: the signed root mandates of each approved consent request, as the agent fetches them.
CREATE TABLE issued_mandates (
    mandate_id TEXT PRIMARY KEY REFERENCES mandates(id),
    consent_id TEXT NOT NULL REFERENCES consent_requests(id),
    kind       TEXT NOT NULL,
    sd_jwt     TEXT NOT NULL,
    UNIQUE (consent_id, kind)
);
