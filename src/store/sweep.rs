//! Removing what has expired, in small batches so requests are never held up for long.
//!
//! Nothing that guards single use is removed before it can matter: a redemption stays until its
//! mandate's `exp` plus skew (`keep_until`), after which the mandate itself no longer verifies;
//! a nonce, JWT id or token stays until its own expiry has passed.

use super::{Store, StoreError};

/// Rows removed per statement.
const BATCH: i64 = 500;

/// How many rows a sweep removed, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired nonces.
    pub nonces: u64,
    /// Expired JWT ids.
    pub jtis: u64,
    /// Expired idempotency records.
    pub idempotency: u64,
    /// Expired tokens.
    pub tokens: u64,
    /// Redemptions past their mandate's expiry.
    pub redemptions: u64,
    /// Expired authorization codes, sessions, sign-in counters and token actor rows.
    pub oauth: u64,
}

impl Store {
    /// Removes everything that expired before `now`, in batches.
    pub async fn sweep(&self, now: i64) -> Result<SweepReport, StoreError> {
        Ok(SweepReport {
            nonces: self.sweep_table("nonces", "value", "exp", now).await?,
            jtis: self.sweep_table("seen_jtis", "jti", "exp", now).await?,
            idempotency: self.sweep_table("idempotency", "key", "exp", now).await?,
            tokens: self.sweep_table("tokens", "jti", "exp", now).await?,
            redemptions: self
                .sweep_table("redemptions", "closed_hash", "keep_until", now)
                .await?,
            oauth: self
                .sweep_table("auth_codes", "code_hash", "exp", now)
                .await?
                + self.sweep_table("sessions", "id_hash", "exp", now).await?
                + self
                    .sweep_table("signin_failures", "username", "exp", now)
                    .await?
                + self.sweep_table("token_actors", "jti", "exp", now).await?,
        })
    }

    async fn sweep_table(
        &self,
        table: &str,
        key: &str,
        column: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        // Names come from the fixed list above, never from input.
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)"
        );
        let mut total = 0;
        loop {
            let done = sqlx::query(&sql)
                .bind(now)
                .bind(BATCH)
                .execute(&self.pool)
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < BATCH as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

impl Store {
    /// Sweeps every `every`, in the background, until the returned handle is aborted or the
    /// runtime stops. A failed sweep is logged and retried at the next tick.
    pub fn spawn_sweeper(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match store.sweep(super::unix_now()).await {
                    Ok(report) => tracing::debug!(?report, "swept expired rows"),
                    Err(e) => tracing::warn!(error = %e, "sweep failed; retrying at the next tick"),
                }
            }
        })
    }
}
