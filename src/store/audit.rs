//! The audit log: who did what, for whom, under what authority, with what outcome.
//!
//! Each record carries the hash of the one before it: `hash = SHA-256(prev_hash ‖ "\n" ‖ seq ‖
//! "\n" ‖ record)`, base64url, where `record` is the JSON text as stored. A one-row head table
//! (`audit_head`) holds the last sequence number and hash; appending takes the next number from
//! it (which serializes appends in commit order) and a trigger moves its hash forward. Records are appended inside the transaction of the decision they
//! describe. The database refuses updates and deletes of `audit` (triggers), and [`verify`]
//! names the first record that does not fit, including a missing tail.
//!
//! [`verify`]: AuditLog::verify

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use sqlx::{Any, AnyConnection, Row as _, Transaction};

use super::{Store, StoreError};
use crate::jose::sha256_b64;

/// One audited action. Amounts are strings in the currency's own format; no secret goes here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (Unix seconds).
    pub at: i64,
    /// What was done: `token.exchange`, `mandate.issue`, `payment.verify`, …
    pub action: String,
    /// `success`, `refused` or `error`.
    pub outcome: String,
    /// Our precise reason code for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The acting agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Earlier actors, outermost first (token `act` chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_chain: Vec<String>,
    /// The human on whose behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Authority: the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// Authority: the consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    /// Authority: the mandate (hash of its signed bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate_hash: Option<String>,
    /// Authority: the access token's `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_jti: Option<String>,
    /// Authority: the scope used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The merchant or payee id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// The amount, e.g. `158.00 USD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Ties together the records of one run or request.
    pub correlation_id: String,
}

/// A stored record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position, from 1.
    pub seq: i64,
    /// The record.
    pub record: AuditRecord,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {why}")]
pub struct ChainBreak {
    /// The first record that does not fit (or the first missing one).
    pub seq: i64,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Reading and checking the audit log.
pub trait AuditLog {
    /// Walks the whole chain; `Ok(n)` when all `n` records fit, else the first break.
    fn verify(
        &self,
    ) -> impl std::future::Future<Output = Result<Result<i64, ChainBreak>, StoreError>> + Send;

    /// The last `limit` records, oldest first.
    fn tail(
        &self,
        limit: i64,
    ) -> impl std::future::Future<Output = Result<Vec<StoredRecord>, StoreError>> + Send;

    /// Appends one record in its own transaction (for actions that change nothing else).
    fn append(
        &self,
        record: &AuditRecord,
    ) -> impl std::future::Future<Output = Result<i64, StoreError>> + Send;
}

impl AuditLog for Store {
    async fn verify(&self) -> Result<Result<i64, ChainBreak>, StoreError> {
        let rows = sqlx::query("SELECT seq, prev_hash, hash, record FROM audit ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        let mut prev = String::new();
        let mut expected_seq = 1;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            if seq != expected_seq {
                return Ok(Err(ChainBreak {
                    seq: expected_seq,
                    why: "record missing",
                }));
            }
            let (prev_hash, hash, record): (String, String, String) = (
                row.try_get("prev_hash")?,
                row.try_get("hash")?,
                row.try_get("record")?,
            );
            if prev_hash != prev {
                return Ok(Err(ChainBreak {
                    seq,
                    why: "does not follow the record before it",
                }));
            }
            if hash != chain_hash(&prev, seq, &record) {
                return Ok(Err(ChainBreak {
                    seq,
                    why: "content changed",
                }));
            }
            prev = hash;
            expected_seq += 1;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(Err(ChainBreak {
                seq: expected_seq,
                why: "records missing at the end",
            }));
        }
        Ok(Ok(expected_seq - 1))
    }

    async fn tail(&self, limit: i64) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            let text: String = row.try_get("record")?;
            let record =
                serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("audit record"))?;
            out.push(StoredRecord {
                seq: row.try_get("seq")?,
                record,
            });
        }
        Ok(out)
    }

    async fn append(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq = append_in(&mut tx, record).await?;
        tx.commit().await?;
        Ok(seq)
    }
}

/// Appends `record` inside `tx`. Call it last: the head row stays locked until the commit, so
/// the sequence follows commit order, and every writer locks the head after its other rows,
/// never before (no lock-order cycle).
pub(crate) async fn append_in(
    tx: &mut Transaction<'_, Any>,
    record: &AuditRecord,
) -> Result<i64, StoreError> {
    let head = sqlx::query(ADVANCE_HEAD).fetch_one(&mut **tx).await?;
    let (seq, prev): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
    insert_in(tx, seq, &prev, record, false).await?;
    Ok(seq)
}

/// Moves the chain's head on by one, returning the new `seq` and the previous record's `hash`.
pub(crate) const ADVANCE_HEAD: &str =
    "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash";

const INSERT_RECORD: &str =
    "INSERT INTO audit (seq, prev_hash, hash, record, created_at) VALUES ($1, $2, $3, $4, $5)";

/// Writes `record` as number `seq` after the record whose hash is `prev` (the head just moved
/// with [`ADVANCE_HEAD`] in the same transaction); with `then_commit`, a transaction begun by a
/// plain `BEGIN` on `conn` is committed by the same call (SQLite runs both in one hand-off).
pub(crate) async fn insert_in(
    conn: &mut AnyConnection,
    seq: i64,
    prev: &str,
    record: &AuditRecord,
    then_commit: bool,
) -> Result<(), StoreError> {
    static WITH_COMMIT: OnceLock<String> = OnceLock::new();
    let sql = match then_commit {
        true => WITH_COMMIT.get_or_init(|| format!("{INSERT_RECORD};\nCOMMIT")),
        false => INSERT_RECORD,
    };
    let text = serde_json::to_string(record).map_err(|_| StoreError::Corrupt("audit record"))?;
    let hash = chain_hash(prev, seq, &text);
    sqlx::query(sql)
        .bind(seq)
        .bind(prev)
        .bind(&hash)
        .bind(&text)
        .bind(record.at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn chain_hash(prev: &str, seq: i64, record: &str) -> String {
    sha256_b64(format!("{prev}\n{seq}\n{record}").as_bytes())
}
