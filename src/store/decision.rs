//! Verification decisions: challenges (nonces), single use of closed mandates and transaction
//! ids, the spending ledger of open mandates, idempotency keys, and the audit record, all in
//! one transaction.
//!
//! Each check is a conditional write whose row count is the answer (`UPDATE … WHERE used_at IS
//! NULL`, `INSERT … ON CONFLICT DO NOTHING`, `UPDATE ledger … WHERE total + amount <= max`), so
//! two instances racing on one database cannot both win. A refusal rolls everything back and
//! writes nothing; the caller then records the refusal with [`DecisionLedger::record_refusal`].

use std::sync::OnceLock;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row as _};

use super::audit::{append_in, insert_in, AuditRecord, ADVANCE_HEAD};
use super::{batch_answers, AnyQuery, Backend, Store, StoreError};

/// The challenge a presentation answers.
#[derive(Debug, Clone, Copy)]
pub struct NonceUse<'a> {
    /// The nonce value.
    pub value: &'a str,
    /// The audience it was issued for.
    pub aud: &'a str,
    /// The agent presenting it: a nonce issued to one agent is refused to every other.
    pub agent: Option<&'a str>,
}

/// A closed mandate being spent, keyed on its signed payload (never on signature bytes).
#[derive(Debug, Clone, Copy)]
pub struct Redemption<'a> {
    /// SHA-256 of the closed mandate's signed bytes.
    pub closed_hash: &'a str,
    /// The checkout it pays (`transaction_id` / `checkout_hash`).
    pub transaction_id: &'a str,
    /// Keep the record at least until then (the mandate's `exp` plus skew).
    pub keep_until: i64,
}

/// An amount added to an open mandate's running total, within its limits.
#[derive(Debug, Clone, Copy)]
pub struct Spend<'a> {
    /// Identity of the open mandate (SHA-256 of its signed bytes).
    pub open_hash: &'a str,
    /// Currency of the amount (the ledger refuses another currency for the same mandate).
    pub currency: &'a str,
    /// The amount, in minor units.
    pub amount_minor: i64,
    /// `payment.budget` in minor units, if any.
    pub budget_max_minor: Option<i64>,
    /// `payment.agent_recurrence.max_occurrences`, if any.
    pub max_uses: Option<i64>,
    /// When the next use may come, if this one is accepted (from the frequency).
    pub next_allowed_at: Option<i64>,
    /// Keep the ledger row at least until then.
    pub keep_until: i64,
}

/// The idempotency key under which the decision's answer is kept.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyDone<'a> {
    /// The key.
    pub key: &'a str,
    /// SHA-256 of the request body.
    pub request_hash: &'a str,
    /// The answer to return on an exact retry.
    pub response: &'a str,
    /// Keep it until then.
    pub keep_until: i64,
}

/// Everything one decision writes.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// The verifier's clock.
    pub now: i64,
    /// The nonce to consume.
    pub nonce: Option<NonceUse<'a>>,
    /// The closed mandate to redeem.
    pub redemption: Option<Redemption<'a>>,
    /// The amount to add to the open mandate's ledger.
    pub spend: Option<Spend<'a>>,
    /// The idempotency key to complete.
    pub idempotency: Option<IdempotencyDone<'a>>,
    /// The audit record of the decision.
    pub audit: &'a AuditRecord,
}

/// Why the state refuses a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The nonce was never issued here, or for another audience.
    #[error("nonce unknown")]
    NonceUnknown,
    /// The nonce has expired.
    #[error("nonce expired")]
    NonceExpired,
    /// The nonce was issued to another agent.
    #[error("nonce issued to another agent")]
    NonceOtherAgent,
    /// The nonce was used already.
    #[error("nonce already used")]
    NonceUsed,
    /// This closed mandate, or its transaction id, was redeemed already.
    #[error("already redeemed")]
    Replayed,
    /// The running total would pass the budget.
    #[error("budget exceeded")]
    BudgetExceeded,
    /// The open mandate's uses are exhausted.
    #[error("recurrence limit reached")]
    RecurrenceLimitReached,
    /// The previous use is too recent for the frequency.
    #[error("too soon after the previous use")]
    RecurrenceTooSoon,
    /// The ledger of this open mandate is kept in another currency.
    #[error("currency differs from the ledger's")]
    CurrencyMismatch,
    /// The idempotency key is not held by this request.
    #[error("idempotency key not held")]
    IdempotencyLost,
}

/// Running totals after a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Total of accepted payments, minor units.
    pub total_minor: i64,
    /// Accepted payments.
    pub uses: i64,
}

/// A committed decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The audit record's sequence number.
    pub audit_seq: i64,
    /// The open mandate's totals after this payment.
    pub ledger: Option<LedgerTotals>,
}

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: this request now holds the key.
    Started,
    /// Done before with the same body: here is the first answer.
    Replay(String),
    /// The key was used with another body.
    Conflict,
    /// Another request with this key is being decided right now.
    InProgress,
}

/// The decision state a verifier needs.
pub trait DecisionLedger {
    /// Stores a fresh challenge.
    fn issue_nonce(
        &self,
        value: &str,
        aud: &str,
        agent_id: Option<&str>,
        exp: i64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Records a JWT id as used within `scope` (DPoP proofs, client assertions); `false` if seen.
    fn remember_jti(
        &self,
        scope: &str,
        jti: &str,
        exp: i64,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send;

    /// Claims an idempotency key for a request (see [`Begin`]).
    fn begin_idempotent(
        &self,
        key: &str,
        request_hash: &str,
        now: i64,
        hold_for: i64,
    ) -> impl std::future::Future<Output = Result<Begin, StoreError>> + Send;

    /// Lets go of an idempotency key held by a request that ends without a decision.
    fn release_idempotent(
        &self,
        key: &str,
        request_hash: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Reads an open mandate's usage so far (for evaluating constraints before deciding).
    fn usage(
        &self,
        open_hash: &str,
    ) -> impl std::future::Future<Output = Result<Option<Usage>, StoreError>> + Send;

    /// Commits a decision atomically, or refuses it and writes nothing.
    fn commit(
        &self,
        decision: &Decision<'_>,
    ) -> impl std::future::Future<Output = Result<Result<Committed, Refusal>, StoreError>> + Send;

    /// Records a refused decision: its audit record and, if held, the idempotency answer.
    fn record_refusal(
        &self,
        audit: &AuditRecord,
        idempotency: Option<IdempotencyDone<'_>>,
    ) -> impl std::future::Future<Output = Result<i64, StoreError>> + Send;
}

/// An open mandate's ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Currency of the totals.
    pub currency: String,
    /// Total accepted, minor units.
    pub total_minor: i64,
    /// Accepted uses.
    pub uses: i64,
    /// Last accepted use.
    pub last_use: Option<i64>,
}

impl DecisionLedger for Store {
    async fn issue_nonce(
        &self,
        value: &str,
        aud: &str,
        agent_id: Option<&str>,
        exp: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nonces (value, aud, agent_id, exp, used_at) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(value)
        .bind(aud)
        .bind(agent_id)
        .bind(exp)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remember_jti(&self, scope: &str, jti: &str, exp: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO seen_jtis (scope, jti, exp) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(jti)
        .bind(exp)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn begin_idempotent(
        &self,
        key: &str,
        request_hash: &str,
        now: i64,
        hold_for: i64,
    ) -> Result<Begin, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency (key, request_hash, state, response, created_at, exp) \
             VALUES ($1, $2, 'in_progress', NULL, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(now + hold_for)
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Begin::Started);
        }
        // A holder that died leaves an expired claim: take it over, atomically.
        let taken = sqlx::query(
            "UPDATE idempotency SET request_hash = $2, created_at = $3, exp = $4 \
             WHERE key = $1 AND state = 'in_progress' AND exp <= $3",
        )
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(now + hold_for)
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(Begin::Started);
        }
        let row =
            sqlx::query("SELECT request_hash, state, response FROM idempotency WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(Begin::InProgress);
        };
        let (hash, state, response): (String, String, Option<String>) = (
            row.try_get("request_hash")?,
            row.try_get("state")?,
            row.try_get("response")?,
        );
        Ok(match (hash == request_hash, state.as_str(), response) {
            (false, _, _) => Begin::Conflict,
            (true, "done", Some(response)) => Begin::Replay(response),
            _ => Begin::InProgress,
        })
    }

    async fn release_idempotent(&self, key: &str, request_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND request_hash = $2 AND state = 'in_progress'")
            .bind(key)
            .bind(request_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn usage(&self, open_hash: &str) -> Result<Option<Usage>, StoreError> {
        let row = sqlx::query(
            "SELECT currency, total_minor, uses, last_use FROM ledger WHERE open_hash = $1",
        )
        .bind(open_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Usage {
                currency: r.try_get("currency")?,
                total_minor: r.try_get("total_minor")?,
                uses: r.try_get("uses")?,
                last_use: r.try_get("last_use")?,
            })
        })
        .transpose()
    }

    async fn commit(&self, d: &Decision<'_>) -> Result<Result<Committed, Refusal>, StoreError> {
        match self.backend {
            Backend::Sqlite => commit_batched(self, d).await,
            Backend::Postgres => commit_in_function(self, d).await,
        }
    }

    async fn record_refusal(
        &self,
        audit: &AuditRecord,
        idempotency: Option<IdempotencyDone<'_>>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(done) = idempotency {
            finish_idempotent(&mut tx, &done).await?;
        }
        let seq = append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(seq)
    }
}

/// Consumes a nonce: value, aud, now, agent.
const CONSUME_NONCE: &str = "UPDATE nonces SET used_at = $3 WHERE value = $1 AND aud = $2 \
     AND used_at IS NULL AND exp > $3 AND (agent_id IS NULL OR agent_id = $4)";

/// Redeems a closed mandate and its transaction id: closed hash, transaction id, keep until,
/// now, correlation id.
const REDEEM: &str =
    "INSERT INTO redemptions (closed_hash, transaction_id, keep_until, decided_at, decision) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// Adds a spend within every limit, in one statement: the first spend inserts the row (if it
/// fits on its own), later ones update it only where the new totals stay within every limit.
/// Open hash, currency, amount, now, budget, max uses, next allowed at, keep until.
const SPEND: &str = "INSERT INTO ledger (open_hash, currency, total_minor, uses, last_use, next_allowed_at, keep_until) \
     SELECT $1, $2, $3, 1, $4, $7, $8 WHERE ($5 IS NULL OR $3 <= $5) AND ($6 IS NULL OR 1 <= $6) \
     ON CONFLICT (open_hash) DO UPDATE SET \
         total_minor = ledger.total_minor + excluded.total_minor, uses = ledger.uses + 1, \
         last_use = excluded.last_use, next_allowed_at = excluded.next_allowed_at, \
         keep_until = CASE WHEN ledger.keep_until > excluded.keep_until \
             THEN ledger.keep_until ELSE excluded.keep_until END \
     WHERE ledger.currency = excluded.currency \
       AND ($5 IS NULL OR ledger.total_minor + excluded.total_minor <= $5) \
       AND ($6 IS NULL OR ledger.uses + 1 <= $6) \
       AND (ledger.next_allowed_at IS NULL OR ledger.next_allowed_at <= excluded.last_use) \
     RETURNING total_minor, uses";

/// Completes the idempotency key this request holds: key, request hash, response, keep until.
const FINISH_IDEMPOTENT: &str = "UPDATE idempotency SET state = 'done', response = $3, exp = $4 \
     WHERE key = $1 AND request_hash = $2 AND state = 'in_progress'";

fn bind_nonce<'q>(q: AnyQuery<'q>, n: Option<NonceUse<'q>>, now: i64) -> AnyQuery<'q> {
    q.bind(n.map(|n| n.value))
        .bind(n.map(|n| n.aud))
        .bind(now)
        .bind(n.and_then(|n| n.agent))
}

fn bind_redemption<'q>(q: AnyQuery<'q>, d: &'q Decision<'q>) -> AnyQuery<'q> {
    let r = d.redemption;
    q.bind(r.map(|r| r.closed_hash))
        .bind(r.map(|r| r.transaction_id))
        .bind(r.map(|r| r.keep_until))
        .bind(d.now)
        .bind(d.audit.correlation_id.as_str())
}

fn bind_spend<'q>(q: AnyQuery<'q>, s: Option<Spend<'q>>, now: i64) -> AnyQuery<'q> {
    q.bind(s.map(|s| s.open_hash))
        .bind(s.map(|s| s.currency))
        .bind(s.map(|s| s.amount_minor))
        .bind(now)
        .bind(s.and_then(|s| s.budget_max_minor))
        .bind(s.and_then(|s| s.max_uses))
        .bind(s.and_then(|s| s.next_allowed_at))
        .bind(s.map(|s| s.keep_until))
}

fn bind_finish<'q>(q: AnyQuery<'q>, i: Option<IdempotencyDone<'q>>) -> AnyQuery<'q> {
    q.bind(i.map(|i| i.key))
        .bind(i.map(|i| i.request_hash))
        .bind(i.map(|i| i.response))
        .bind(i.map(|i| i.keep_until))
}

/// `BEGIN IMMEDIATE`, the statements of a decision with `parts` (nonce, redemption, spend,
/// idempotency) present, then the audit head's move, as one SQLite batch. Every part's
/// parameters are bound whether present or not, so each statement's `$N` are its own shifted
/// past the earlier parts'.
fn batch(parts: [bool; 4]) -> &'static str {
    static BATCHES: OnceLock<Vec<String>> = OnceLock::new();
    let batches = BATCHES.get_or_init(|| {
        (0..16)
            .map(|mask: usize| {
                let mut sql = vec!["BEGIN IMMEDIATE".to_owned()];
                let mut offset = 0;
                for (i, (statement, count)) in [
                    (CONSUME_NONCE, 4),
                    (REDEEM, 5),
                    (SPEND, 8),
                    (FINISH_IDEMPOTENT, 4),
                ]
                .into_iter()
                .enumerate()
                {
                    if mask & (1 << i) != 0 {
                        sql.push(shift_parameters(statement, offset));
                    }
                    offset += count;
                }
                sql.push(ADVANCE_HEAD.to_owned());
                sql.join(";\n")
            })
            .collect()
    });
    let mask = parts
        .iter()
        .enumerate()
        .fold(0, |m, (i, &on)| if on { m | (1 << i) } else { m });
    &batches[mask]
}

/// `sql` with every `$N` renumbered `$N+offset`.
fn shift_parameters(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = rest[..digits].parse().unwrap_or(0);
        out.push_str(&(n + offset).to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A pooled connection inside a transaction begun by a plain `BEGIN`, which sqlx does not
/// track: unless marked ended after its `COMMIT` or `ROLLBACK`, the connection is closed
/// instead of going back to the pool, and closing it rolls the transaction back. An error, or
/// a caller that stopped waiting, can never leave a transaction open on a pooled connection.
struct OpenTransaction {
    conn: PoolConnection<Any>,
    ended: bool,
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

/// SQLite: a decision in two hand-offs to the database thread instead of one per statement.
/// The first runs `BEGIN IMMEDIATE` and every write but the audit record; every statement runs,
/// then the answers are read in order, so the first refusal is the one named, and any refusal
/// rolls the whole transaction back, as on PostgreSQL. The second writes the audit record
/// (chained to the head the first one moved) and commits.
async fn commit_batched(
    store: &Store,
    d: &Decision<'_>,
) -> Result<Result<Committed, Refusal>, StoreError> {
    let mut open = OpenTransaction {
        conn: store.pool.acquire().await?,
        ended: false,
    };
    match apply_batched(&mut open.conn, d).await? {
        Ok((ledger, (seq, prev))) => {
            insert_in(&mut open.conn, seq, &prev, d.audit, true).await?;
            open.ended = true;
            Ok(Ok(Committed {
                audit_seq: seq,
                ledger,
            }))
        }
        Err(refusal) => {
            sqlx::query("ROLLBACK").execute(&mut *open.conn).await?;
            open.ended = true;
            Ok(Err(refusal))
        }
    }
}

/// The first hand-off of [`commit_batched`]: the ledger totals and the audit head (`seq`,
/// previous hash) when nothing is refused.
async fn apply_batched(
    conn: &mut AnyConnection,
    d: &Decision<'_>,
) -> Result<Result<(Option<LedgerTotals>, (i64, String)), Refusal>, StoreError> {
    let parts = [
        d.nonce.is_some(),
        d.redemption.is_some(),
        d.spend.is_some(),
        d.idempotency.is_some(),
    ];
    let q = sqlx::query(batch(parts));
    let q = bind_nonce(q, d.nonce, d.now);
    let q = bind_redemption(q, d);
    let q = bind_spend(q, d.spend, d.now);
    let q = bind_finish(q, d.idempotency);
    let answers = batch_answers(&mut *conn, q).await?;
    // BEGIN, the parts present, the head.
    let expected = parts.iter().filter(|&&on| on).count() + 2;
    if answers.len() != expected {
        return Err(StoreError::Corrupt("decision batch"));
    }
    let mut answers = answers.into_iter().skip(1);
    let mut next = || answers.next().unwrap_or((0, None));
    if let Some(nonce) = d.nonce {
        if next().0 != 1 {
            return Ok(Err(why_not_consumed(conn, nonce).await?));
        }
    }
    if d.redemption.is_some() && next().0 != 1 {
        return Ok(Err(Refusal::Replayed));
    }
    let mut totals = None;
    if let Some(spend) = d.spend {
        match next().1 {
            Some(row) => {
                totals = Some(LedgerTotals {
                    total_minor: row.try_get("total_minor")?,
                    uses: row.try_get("uses")?,
                })
            }
            None => return Ok(Err(why_not_spent(conn, &spend, d.now).await?)),
        }
    }
    if d.idempotency.is_some() && next().0 != 1 {
        return Ok(Err(Refusal::IdempotencyLost));
    }
    let head = next().1.ok_or(StoreError::Corrupt("audit head"))?;
    let head = (head.try_get("seq")?, head.try_get("hash")?);
    Ok(Ok((totals, head)))
}

/// PostgreSQL: a decision in one round trip, the `ap2_decide` function (migration 4) running
/// the same conditional writes in the same order inside the statement's own transaction. It
/// names the step that refused, having rolled back every write; why it refused is then read
/// as on SQLite, a moment later (reads see committed rows at that moment either way).
async fn commit_in_function(
    store: &Store,
    d: &Decision<'_>,
) -> Result<Result<Committed, Refusal>, StoreError> {
    const DECIDE: &str = "SELECT refused, spent_total, spent_uses, audit_seq FROM ap2_decide(\
         $1::TEXT, $2::TEXT, $3::BIGINT, $4::TEXT, \
         $5::TEXT, $6::TEXT, $7::BIGINT, $8::BIGINT, $9::TEXT, \
         $10::TEXT, $11::TEXT, $12::BIGINT, $13::BIGINT, $14::BIGINT, $15::BIGINT, $16::BIGINT, \
         $17::BIGINT, $18::TEXT, $19::TEXT, $20::TEXT, $21::BIGINT, $22::TEXT, $23::BIGINT)";
    let record = serde_json::to_string(d.audit).map_err(|_| StoreError::Corrupt("audit record"))?;
    let q = sqlx::query(DECIDE);
    let q = bind_nonce(q, d.nonce, d.now);
    let q = bind_redemption(q, d);
    let q = bind_spend(q, d.spend, d.now);
    let q = bind_finish(q, d.idempotency);
    let row = q
        .bind(record)
        .bind(d.audit.at)
        .fetch_one(&store.pool)
        .await?;
    let refused: Option<String> = row.try_get("refused")?;
    let refusal = match (refused.as_deref(), d.nonce, d.spend) {
        (None, _, _) => {
            let ledger = match d.spend {
                Some(_) => Some(LedgerTotals {
                    total_minor: row.try_get("spent_total")?,
                    uses: row.try_get("spent_uses")?,
                }),
                None => None,
            };
            return Ok(Ok(Committed {
                audit_seq: row.try_get("audit_seq")?,
                ledger,
            }));
        }
        (Some("nonce"), Some(nonce), _) => {
            why_not_consumed(&mut *store.pool.acquire().await?, nonce).await?
        }
        (Some("redemption"), _, _) if d.redemption.is_some() => Refusal::Replayed,
        (Some("spend"), _, Some(spend)) => {
            why_not_spent(&mut *store.pool.acquire().await?, &spend, d.now).await?
        }
        (Some("idempotency"), _, _) if d.idempotency.is_some() => Refusal::IdempotencyLost,
        _ => return Err(StoreError::Corrupt("decision answer")),
    };
    Ok(Err(refusal))
}

/// Names why a nonce could not be consumed.
async fn why_not_consumed(
    conn: &mut AnyConnection,
    n: NonceUse<'_>,
) -> Result<Refusal, StoreError> {
    let row =
        sqlx::query("SELECT exp, used_at, agent_id FROM nonces WHERE value = $1 AND aud = $2")
            .bind(n.value)
            .bind(n.aud)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(Refusal::NonceUnknown);
    };
    let used_at: Option<i64> = row.try_get("used_at")?;
    let bound: Option<String> = row.try_get("agent_id")?;
    Ok(if used_at.is_some() {
        Refusal::NonceUsed
    } else if bound.is_some_and(|b| Some(b.as_str()) != n.agent) {
        Refusal::NonceOtherAgent
    } else {
        Refusal::NonceExpired
    })
}

/// Names the limit that stopped a spend.
async fn why_not_spent(
    conn: &mut AnyConnection,
    s: &Spend<'_>,
    now: i64,
) -> Result<Refusal, StoreError> {
    let row =
        sqlx::query("SELECT currency, uses, next_allowed_at FROM ledger WHERE open_hash = $1")
            .bind(s.open_hash)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        // No earlier use: this amount alone is over a limit.
        return Ok(if s.max_uses.is_some_and(|m| m < 1) {
            Refusal::RecurrenceLimitReached
        } else {
            Refusal::BudgetExceeded
        });
    };
    let currency: String = row.try_get("currency")?;
    let uses: i64 = row.try_get("uses")?;
    let next: Option<i64> = row.try_get("next_allowed_at")?;
    Ok(if currency != s.currency {
        Refusal::CurrencyMismatch
    } else if s.max_uses.is_some_and(|m| uses + 1 > m) {
        Refusal::RecurrenceLimitReached
    } else if next.is_some_and(|n| n > now) {
        Refusal::RecurrenceTooSoon
    } else {
        Refusal::BudgetExceeded
    })
}

async fn finish_idempotent(
    conn: &mut AnyConnection,
    done: &IdempotencyDone<'_>,
) -> Result<bool, StoreError> {
    let updated = bind_finish(sqlx::query(FINISH_IDEMPOTENT), Some(*done))
        .execute(&mut *conn)
        .await?;
    Ok(updated.rows_affected() == 1)
}
