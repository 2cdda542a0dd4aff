-- One verification decision in one statement, so it costs one round trip instead of one per
-- write: consume the nonce, redeem the closed mandate, add the spend within its limits, complete
-- the idempotency key, then append the audit record chained to the head. Each step is the same
-- conditional write the store would otherwise send on its own; the first that changes nothing
-- is named in `refused`, and the inner block's rollback undoes every write before it, so a
-- refusal writes nothing (the caller reads why and audits the refusal separately).
--
-- A NULL first argument of a step skips it. Parameters come in the order the store binds them:
-- nonce (value, aud, now, agent), redemption (closed hash, transaction id, keep until, now,
-- correlation id), spend (open hash, currency, amount, now, budget, max uses, next allowed at,
-- keep until), idempotency (key, request hash, response, keep until), audit (record, at).
-- The audit hash is unpadded base64url of SHA-256 over "prev\nseq\nrecord", as in the store.
CREATE FUNCTION ap2_decide(
    n_value TEXT, n_aud TEXT, n_now BIGINT, n_agent TEXT,
    r_closed_hash TEXT, r_transaction_id TEXT, r_keep_until BIGINT, r_now BIGINT, r_decision TEXT,
    s_open_hash TEXT, s_currency TEXT, s_amount BIGINT, s_now BIGINT, s_budget BIGINT,
    s_max_uses BIGINT, s_next_allowed_at BIGINT, s_keep_until BIGINT,
    i_key TEXT, i_request_hash TEXT, i_response TEXT, i_keep_until BIGINT,
    a_record TEXT, a_at BIGINT
) RETURNS TABLE (refused TEXT, spent_total BIGINT, spent_uses BIGINT, audit_seq BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    step      TEXT;
    head_seq  BIGINT;
    head_hash TEXT;
BEGIN
    BEGIN
        IF n_value IS NOT NULL THEN
            step := 'nonce';
            UPDATE nonces SET used_at = n_now
             WHERE value = n_value AND aud = n_aud AND used_at IS NULL AND exp > n_now
               AND (agent_id IS NULL OR agent_id = n_agent);
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'AP2RF';
            END IF;
        END IF;

        IF r_closed_hash IS NOT NULL THEN
            step := 'redemption';
            INSERT INTO redemptions (closed_hash, transaction_id, keep_until, decided_at, decision)
            VALUES (r_closed_hash, r_transaction_id, r_keep_until, r_now, r_decision)
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'AP2RF';
            END IF;
        END IF;

        IF s_open_hash IS NOT NULL THEN
            step := 'spend';
            INSERT INTO ledger AS l (open_hash, currency, total_minor, uses, last_use,
                                     next_allowed_at, keep_until)
            SELECT s_open_hash, s_currency, s_amount, 1, s_now, s_next_allowed_at, s_keep_until
             WHERE (s_budget IS NULL OR s_amount <= s_budget)
               AND (s_max_uses IS NULL OR 1 <= s_max_uses)
            ON CONFLICT (open_hash) DO UPDATE SET
                total_minor = l.total_minor + excluded.total_minor,
                uses = l.uses + 1,
                last_use = excluded.last_use,
                next_allowed_at = excluded.next_allowed_at,
                keep_until = GREATEST(l.keep_until, excluded.keep_until)
             WHERE l.currency = excluded.currency
               AND (s_budget IS NULL OR l.total_minor + excluded.total_minor <= s_budget)
               AND (s_max_uses IS NULL OR l.uses + 1 <= s_max_uses)
               AND (l.next_allowed_at IS NULL OR l.next_allowed_at <= excluded.last_use)
            RETURNING l.total_minor, l.uses INTO spent_total, spent_uses;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'AP2RF';
            END IF;
        END IF;

        IF i_key IS NOT NULL THEN
            step := 'idempotency';
            UPDATE idempotency SET state = 'done', response = i_response, exp = i_keep_until
             WHERE key = i_key AND request_hash = i_request_hash AND state = 'in_progress';
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'AP2RF';
            END IF;
        END IF;

        UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash
          INTO head_seq, head_hash;
        INSERT INTO audit (seq, prev_hash, hash, record, created_at)
        VALUES (head_seq, head_hash,
                rtrim(translate(encode(sha256(convert_to(
                    head_hash || E'\n' || head_seq::text || E'\n' || a_record, 'UTF8')),
                    'base64'), '+/', '-_'), '='),
                a_record, a_at);
    EXCEPTION WHEN SQLSTATE 'AP2RF' THEN
        RETURN QUERY SELECT step, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END;
    RETURN QUERY SELECT NULL::TEXT, spent_total, spent_uses, head_seq;
END;
$fn$;
