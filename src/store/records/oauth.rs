//! Short-lived state of the token service: authorization codes, sign-in sessions, failed
//! sign-in counters, and the standing of an issued token.
//!
//! Codes and session ids are stored by their SHA-256, never as issued, so reading the database
//! gives nobody a usable code or cookie. Redeeming a code is one conditional update (RFC 6749
//! §4.1.2: a code is used once); a second redemption is told apart so the caller can revoke
//! what the first one produced (§10.5). Nothing here checks PKCE or client authentication.

use std::future::Future;

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::{text, RecordError};
use crate::store::{batch_answers, Backend, Store, StoreError};

/// An authorization code as stored (its hash, never the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// base64url SHA-256 of the code.
    pub code_hash: String,
    /// The agent it was issued to.
    pub client_id: String,
    /// The user who approved.
    pub user_id: String,
    /// The grant the approval created.
    pub grant_id: String,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The RFC 8707 resource asked for at authorization, if any.
    pub resource: Option<String>,
    /// The DPoP key the code is bound to (`dpop_jkt`, RFC 9449 §10), if any.
    pub dpop_jkt: Option<String>,
    /// When it stops being redeemable.
    pub exp: i64,
}

/// Why a code did not redeem; `Replayed` carries the grant that the first redemption used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRefusal {
    /// No such code.
    Unknown,
    /// Redeemed before: whatever it produced should be revoked.
    Replayed {
        /// The grant the code was issued under.
        grant_id: String,
    },
    /// Past its `exp` (now consumed).
    Expired,
    /// Issued to another client (now consumed).
    OtherClient,
}

/// A signed-in browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The signed-in user.
    pub user_id: String,
    /// The anti-forgery token every form of this session must carry.
    pub csrf: String,
    /// When it ends.
    pub exp: i64,
}

/// Whether an issued token still holds, read in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Active, its grant and local user (if any) active, every registered actor of its chain
    /// active.
    Active,
    /// Revoked, its grant revoked, its user or one of its actors disabled.
    Revoked,
    /// Never recorded here.
    Unknown,
}

/// Records of the authorization endpoint and of token checks.
pub trait OAuthRecords {
    /// Stores a fresh authorization code.
    fn create_auth_code(
        &self,
        code: &AuthCode,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// Consumes a code for `client_id` at `now`: its record, or why it cannot be redeemed.
    fn redeem_auth_code(
        &self,
        code_hash: &str,
        client_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Result<AuthCode, CodeRefusal>, StoreError>> + Send;

    /// Stores a session under the hash of its cookie value.
    fn create_session(
        &self,
        id_hash: &str,
        session: &Session,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The unexpired session with this cookie hash.
    fn session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Counts a failed sign-in for `username` in a window of `window` seconds; returns the
    /// failures in the current window, this one included.
    fn count_signin_failure(
        &self,
        username: &str,
        now: i64,
        window: i64,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Failed sign-ins for `username` in the current window.
    fn signin_failures(
        &self,
        username: &str,
        now: i64,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The standing of the token with this `jti`.
    fn token_standing(
        &self,
        jti: &str,
    ) -> impl Future<Output = Result<Standing, StoreError>> + Send;

    /// Records a proof's id as used within `scope` until `exp` (as `remember_jti` does) and
    /// reads the standing of the token `token_jti` it came with, in one round trip: `false`
    /// first if the id was seen before.
    fn remember_proof_with_standing(
        &self,
        scope: &str,
        proof_jti: &str,
        exp: i64,
        token_jti: &str,
    ) -> impl Future<Output = Result<(bool, Standing), StoreError>> + Send;
}

/// The columns a token's standing is read from, for a token row `t` (absent: all NULL or 0).
macro_rules! standing_columns {
    () => {
        "t.status AS status, \
         (SELECT g.status FROM grants g WHERE g.id = t.grant_id) AS grant_status, \
         (SELECT u.status FROM users u WHERE u.id = t.user_id) AS user_status, \
         (SELECT COUNT(*) FROM token_actors ta JOIN agents a ON a.id = ta.agent_id \
           WHERE ta.jti = t.jti AND a.status <> 'active') AS inactive_actors"
    };
}

/// The proof's id: scope, jti, exp; the token: jti.
macro_rules! remember_proof {
    () => {
        "INSERT INTO seen_jtis (scope, jti, exp) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    };
}

/// Joins the token `$4` to one row, so its standing reads as a row whether or not it is known.
macro_rules! from_one_token_4 {
    () => {
        " FROM (SELECT 1 AS here) AS one LEFT JOIN tokens t ON t.jti = $4"
    };
}

const CODE_COLUMNS: &str = "code_hash, client_id, user_id, grant_id, redirect_uri, \
     code_challenge, resource, dpop_jkt, exp";

impl OAuthRecords for Store {
    async fn create_auth_code(&self, code: &AuthCode) -> Result<(), RecordError> {
        for (field, value) in [
            ("code.code_hash", &code.code_hash),
            ("code.client_id", &code.client_id),
            ("code.user_id", &code.user_id),
            ("code.grant_id", &code.grant_id),
            ("code.redirect_uri", &code.redirect_uri),
            ("code.code_challenge", &code.code_challenge),
        ] {
            text(field, value)?;
        }
        let sql = format!(
            "INSERT INTO auth_codes ({CODE_COLUMNS}, used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
        );
        sqlx::query(&sql)
            .bind(code.code_hash.as_str())
            .bind(code.client_id.as_str())
            .bind(code.user_id.as_str())
            .bind(code.grant_id.as_str())
            .bind(code.redirect_uri.as_str())
            .bind(code.code_challenge.as_str())
            .bind(code.resource.as_deref())
            .bind(code.dpop_jkt.as_deref())
            .bind(code.exp)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn redeem_auth_code(
        &self,
        code_hash: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Result<AuthCode, CodeRefusal>, StoreError> {
        let sql = format!(
            "UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
             RETURNING {CODE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            let grant: Option<String> =
                sqlx::query_scalar("SELECT grant_id FROM auth_codes WHERE code_hash = $1")
                    .bind(code_hash)
                    .fetch_optional(&self.pool)
                    .await?;
            return Ok(Err(grant.map_or(CodeRefusal::Unknown, |grant_id| {
                CodeRefusal::Replayed { grant_id }
            })));
        };

        let code = code_from(&row)?;
        if code.exp <= now {
            return Ok(Err(CodeRefusal::Expired));
        }
        if code.client_id != client_id {
            return Ok(Err(CodeRefusal::OtherClient));
        }
        Ok(Ok(code))
    }

    async fn create_session(&self, id_hash: &str, session: &Session) -> Result<(), RecordError> {
        text("session.id_hash", id_hash)?;
        text("session.user_id", &session.user_id)?;
        sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf, exp) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(session.user_id.as_str())
            .bind(session.csrf.as_str())
            .bind(session.exp)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<Session>, StoreError> {
        let row =
            sqlx::query("SELECT user_id, csrf, exp FROM sessions WHERE id_hash = $1 AND exp > $2")
                .bind(id_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(Session {
                user_id: row.try_get("user_id")?,
                csrf: row.try_get("csrf")?,
                exp: row.try_get("exp")?,
            })
        })
        .transpose()
    }

    async fn count_signin_failure(
        &self,
        username: &str,
        now: i64,
        window: i64,
    ) -> Result<i64, StoreError> {
        // One statement: a new window starts over, the current one counts up.
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO signin_failures (username, window_start, failures, exp) \
             VALUES ($1, $2, 1, $3) \
             ON CONFLICT (username) DO UPDATE SET \
               failures = CASE WHEN signin_failures.exp <= $2 THEN 1 \
                               ELSE signin_failures.failures + 1 END, \
               window_start = CASE WHEN signin_failures.exp <= $2 THEN $2 \
                                   ELSE signin_failures.window_start END, \
               exp = CASE WHEN signin_failures.exp <= $2 THEN $3 \
                          ELSE signin_failures.exp END \
             RETURNING failures",
        )
        .bind(username)
        .bind(now)
        .bind(now + window)
        .fetch_one(&self.pool)
        .await?;
        Ok(failures)
    }

    async fn signin_failures(&self, username: &str, now: i64) -> Result<i64, StoreError> {
        let failures: Option<i64> = sqlx::query_scalar(
            "SELECT failures FROM signin_failures WHERE username = $1 AND exp > $2",
        )
        .bind(username)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(failures.unwrap_or(0))
    }

    async fn token_standing(&self, jti: &str) -> Result<Standing, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            standing_columns!(),
            " FROM tokens t WHERE t.jti = $1"
        ))
        .bind(jti)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => standing_from(&row),
            None => Ok(Standing::Unknown),
        }
    }

    async fn remember_proof_with_standing(
        &self,
        scope: &str,
        proof_jti: &str,
        exp: i64,
        token_jti: &str,
    ) -> Result<(bool, Standing), StoreError> {
        // SQLite runs the two as one batch (each statement commits on its own); PostgreSQL as
        // one statement whose insert is a common table expression.
        const SQLITE: &str = concat!(
            remember_proof!(),
            ";\nSELECT ",
            standing_columns!(),
            from_one_token_4!()
        );
        const POSTGRES: &str = concat!(
            "WITH fresh AS (",
            remember_proof!(),
            " RETURNING 1) SELECT (SELECT COUNT(*) FROM fresh) AS fresh, ",
            standing_columns!(),
            from_one_token_4!()
        );
        let query = |sql| {
            sqlx::query(sql)
                .bind(scope)
                .bind(proof_jti)
                .bind(exp)
                .bind(token_jti)
        };
        match self.backend {
            Backend::Postgres => {
                let row = query(POSTGRES).fetch_one(&self.pool).await?;
                let fresh: i64 = row.try_get("fresh")?;
                Ok((fresh == 1, standing_from(&row)?))
            }
            Backend::Sqlite => match &batch_answers(&self.pool, query(SQLITE)).await?[..] {
                [(inserted, _), (_, Some(row))] => Ok((*inserted == 1, standing_from(row)?)),
                _ => Err(StoreError::Corrupt("proof and standing batch")),
            },
        }
    }
}

fn code_from(row: &AnyRow) -> Result<AuthCode, StoreError> {
    Ok(AuthCode {
        code_hash: row.try_get("code_hash")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        grant_id: row.try_get("grant_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        code_challenge: row.try_get("code_challenge")?,
        resource: row.try_get("resource")?,
        dpop_jkt: row.try_get("dpop_jkt")?,
        exp: row.try_get("exp")?,
    })
}

/// A token's standing from the columns of `standing_columns!`; a NULL status is no token.
fn standing_from(row: &AnyRow) -> Result<Standing, StoreError> {
    let Some(status) = row.try_get::<Option<String>, _>("status")? else {
        return Ok(Standing::Unknown);
    };
    let grant: Option<String> = row.try_get("grant_status")?;
    let user: Option<String> = row.try_get("user_status")?;
    let inactive: i64 = row.try_get("inactive_actors")?;
    // No grant or no local user: an external subject, which has neither.
    let grant_ok = grant.as_deref().is_none_or(|g| g == "active");
    let user_ok = user.as_deref().is_none_or(|u| u == "active");
    Ok(
        match status == "active" && grant_ok && user_ok && inactive == 0 {
            true => Standing::Active,
            false => Standing::Revoked,
        },
    )
}
