//! Records of the wallet: consent requests, status lists and issued mandates.
//!
//! Deciding a consent and taking a mandate's index in its status list (the OAuth Token Status
//! List, DESIGN §6) are one conditional statement each: racing requests get one winner. A mandate
//! is stored only while its agent (and grant, if any) rows are held active and its consent, if
//! any, is approved. Nothing here signs a mandate or renders a status list.

use std::future::Future;

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::{
    exists, hold_active_agent, hold_active_grant, optional_text, text, ConsentRefusal,
    ConsentRequest, ConsentStatus, GrantStatus, MandateRecord, NewMandate, RecordError,
    StatusListRecord, MAX_CONSENT_BODY_LEN, MAX_STATUS_LIST_SIZE,
};
use crate::store::{Store, StoreError};

/// Records of the wallet: consent requests, status lists and issued mandates.
pub trait WalletRecords {
    /// Stores a new, pending consent request.
    fn create_consent(
        &self,
        consent: &ConsentRequest,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The consent request with this id.
    fn consent(&self, id: &str) -> impl Future<Output = Result<ConsentRequest, StoreError>> + Send;

    /// The human's decision, in one conditional statement: of racing decisions exactly one wins.
    fn decide_consent(
        &self,
        id: &str,
        user_id: &str,
        approve: bool,
        now: i64,
    ) -> impl Future<Output = Result<Result<(), ConsentRefusal>, StoreError>> + Send;

    /// Creates an empty status list of `size` entries.
    fn create_status_list(
        &self,
        id: &str,
        size: i64,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The status list with this id.
    fn status_list(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<StatusListRecord, StoreError>> + Send;

    /// Takes the next index of the mandate's status list and stores the mandate under it, in one
    /// transaction; returns the index.
    fn allocate_mandate(
        &self,
        mandate: &NewMandate,
    ) -> impl Future<Output = Result<i64, RecordError>> + Send;

    /// The mandate with this id.
    fn mandate(&self, id: &str) -> impl Future<Output = Result<MandateRecord, StoreError>> + Send;

    /// The mandate with this hash.
    fn mandate_by_hash(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<MandateRecord, StoreError>> + Send;

    /// What a presented mandate's delegation evidence names, as it stands now: the grant and
    /// consent request (when named), and this store's record of the mandate whose root has
    /// `mandate_hash`; one statement, so a verification pays one round trip for all three.
    fn delegation_state(
        &self,
        grant_id: Option<&str>,
        consent_id: Option<&str>,
        mandate_hash: &str,
    ) -> impl Future<Output = Result<DelegationState, StoreError>> + Send;

    /// Revokes a mandate: `true` if this call revoked it, `false` if it was revoked already.
    fn revoke_mandate(
        &self,
        id: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes every mandate issued under a grant; returns how many this call revoked.
    fn revoke_mandates_of_grant(
        &self,
        grant_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Revokes every mandate bound to an agent; returns how many this call revoked.
    fn revoke_mandates_of_agent(
        &self,
        agent_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The indexes of revoked mandates in a status list, ascending (empty for an unknown list).
    fn revoked_indexes(
        &self,
        status_list_id: &str,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;
}

/// What [`WalletRecords::delegation_state`] reads; `None` where nothing was named or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationState {
    /// The grant named by the evidence.
    pub grant: Option<GrantState>,
    /// The consent request named by the evidence.
    pub consent: Option<ConsentState>,
    /// This store's record of the mandate (present when this store's wallet issued it).
    pub mandate: Option<MandateState>,
}

/// A grant as a verifier checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantState {
    /// Active or revoked.
    pub status: GrantStatus,
    /// When it lapses (Unix seconds).
    pub expires_at: i64,
    /// The human who granted it.
    pub user_id: String,
    /// The agent it was granted to.
    pub agent_id: String,
}

/// A consent request as a verifier checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentState {
    /// As stored; see [`ConsentState::status_at`].
    pub status: ConsentStatus,
    /// When a pending request lapses (Unix seconds).
    pub expires_at: i64,
    /// The human asked.
    pub user_id: String,
    /// The agent that asked.
    pub agent_id: String,
}

impl ConsentState {
    /// The status at `now`: a pending request past its `expires_at` is expired.
    pub fn status_at(&self, now: i64) -> ConsentStatus {
        match self.status {
            ConsentStatus::Pending if self.expires_at <= now => ConsentStatus::Expired,
            status => status,
        }
    }
}

/// A mandate record as a verifier checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MandateState {
    /// The human it was issued for.
    pub user_id: String,
    /// The agent it was issued to.
    pub agent_id: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// One row whatever is found: each table joins on its own key, and a key not given (NULL)
/// matches nothing.
const DELEGATION_STATE: &str = "SELECT \
       g.status AS g_status, g.expires_at AS g_expires_at, g.user_id AS g_user_id, \
       g.agent_id AS g_agent_id, \
       c.status AS c_status, c.expires_at AS c_expires_at, c.user_id AS c_user_id, \
       c.agent_id AS c_agent_id, \
       m.user_id AS m_user_id, m.agent_id AS m_agent_id, m.revoked_at AS m_revoked_at \
     FROM (SELECT 1 AS here) AS one \
     LEFT JOIN grants g ON g.id = $1 \
     LEFT JOIN consent_requests c ON c.id = $2 \
     LEFT JOIN mandates m ON m.hash = $3";

const MANDATE_SELECT: &str = "SELECT id, hash, status_list_id, status_index, user_id, agent_id, \
     grant_id, consent_id, exp, revoked_at FROM mandates";

impl WalletRecords for Store {
    async fn create_consent(&self, consent: &ConsentRequest) -> Result<(), RecordError> {
        consent.check()?;
        sqlx::query(
            "INSERT INTO consent_requests (id, user_id, agent_id, grant_id, token_jti, body, \
             status, created_at, expires_at, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(consent.id.as_str())
        .bind(consent.user_id.as_str())
        .bind(consent.agent_id.as_str())
        .bind(consent.grant_id.as_deref())
        .bind(consent.token_jti.as_deref())
        .bind(consent.body.as_str())
        .bind(consent.status.as_str())
        .bind(consent.created_at)
        .bind(consent.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn consent(&self, id: &str) -> Result<ConsentRequest, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, agent_id, grant_id, token_jti, body, status, created_at, \
             expires_at, decided_at FROM consent_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        consent_from(&row)
    }

    async fn decide_consent(
        &self,
        id: &str,
        user_id: &str,
        approve: bool,
        now: i64,
    ) -> Result<Result<(), ConsentRefusal>, StoreError> {
        let status = if approve {
            ConsentStatus::Approved
        } else {
            ConsentStatus::Denied
        };
        let decided = sqlx::query(
            "UPDATE consent_requests SET status = $3, decided_at = $4 \
             WHERE id = $1 AND user_id = $2 AND status = 'pending' AND expires_at > $4",
        )
        .bind(id)
        .bind(user_id)
        .bind(status.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        if decided.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(self.why_not_decided(id, user_id).await?))
    }

    async fn create_status_list(&self, id: &str, size: i64) -> Result<(), RecordError> {
        text("status_list.id", id)?;
        if !(1..=MAX_STATUS_LIST_SIZE).contains(&size) {
            return Err(RecordError::Invalid("status_list.size"));
        }
        sqlx::query("INSERT INTO status_lists (id, size, next_index) VALUES ($1, $2, 0)")
            .bind(id)
            .bind(size)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn status_list(&self, id: &str) -> Result<StatusListRecord, StoreError> {
        let row = sqlx::query("SELECT id, size, next_index FROM status_lists WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(StatusListRecord {
            id: row.try_get("id")?,
            size: row.try_get("size")?,
            next_index: row.try_get("next_index")?,
        })
    }

    async fn allocate_mandate(&self, mandate: &NewMandate) -> Result<i64, RecordError> {
        mandate.check()?;
        let mut tx = self.pool.begin().await?;
        hold_active_agent(&mut tx, &mandate.agent_id).await?;
        if let Some(grant_id) = &mandate.grant_id {
            hold_active_grant(&mut tx, grant_id, &mandate.agent_id, &mandate.user_id).await?;
        }
        if let Some(consent_id) = &mandate.consent_id {
            require_approved_consent(&mut tx, consent_id, mandate).await?;
        }

        let index = take_status_index(&mut tx, &mandate.status_list_id).await?;
        insert_mandate(&mut tx, mandate, index).await?;
        tx.commit().await?;
        Ok(index)
    }

    async fn mandate(&self, id: &str) -> Result<MandateRecord, StoreError> {
        self.mandate_where("id", id).await
    }

    async fn mandate_by_hash(&self, hash: &str) -> Result<MandateRecord, StoreError> {
        self.mandate_where("hash", hash).await
    }

    async fn delegation_state(
        &self,
        grant_id: Option<&str>,
        consent_id: Option<&str>,
        mandate_hash: &str,
    ) -> Result<DelegationState, StoreError> {
        let row = sqlx::query(DELEGATION_STATE)
            .bind(grant_id)
            .bind(consent_id)
            .bind(mandate_hash)
            .fetch_one(&self.pool)
            .await?;
        // `user_id` is NOT NULL in every table, so a NULL there means no row joined.
        let grant = match row.try_get::<Option<String>, _>("g_user_id")? {
            None => None,
            Some(user_id) => Some(GrantState {
                status: GrantStatus::from_stored(
                    &row.try_get::<String, _>("g_status")?,
                    "grants.status",
                )?,
                expires_at: row.try_get("g_expires_at")?,
                user_id,
                agent_id: row.try_get("g_agent_id")?,
            }),
        };
        let consent = match row.try_get::<Option<String>, _>("c_user_id")? {
            None => None,
            Some(user_id) => Some(ConsentState {
                status: ConsentStatus::from_stored(
                    &row.try_get::<String, _>("c_status")?,
                    "consent_requests.status",
                )?,
                expires_at: row.try_get("c_expires_at")?,
                user_id,
                agent_id: row.try_get("c_agent_id")?,
            }),
        };
        let mandate = match row.try_get::<Option<String>, _>("m_user_id")? {
            None => None,
            Some(user_id) => Some(MandateState {
                user_id,
                agent_id: row.try_get("m_agent_id")?,
                revoked_at: row.try_get("m_revoked_at")?,
            }),
        };
        Ok(DelegationState {
            grant,
            consent,
            mandate,
        })
    }

    async fn revoke_mandate(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_mandates_where(&mut tx, "id", id, now).await?;
        if revoked == 0 && !exists(&mut tx, "mandates", "id", id).await? {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(revoked == 1)
    }

    async fn revoke_mandates_of_grant(&self, grant_id: &str, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_mandates_where(&mut tx, "grant_id", grant_id, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoke_mandates_of_agent(&self, agent_id: &str, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_mandates_where(&mut tx, "agent_id", agent_id, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoked_indexes(&self, status_list_id: &str) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT status_index FROM mandates \
             WHERE status_list_id = $1 AND revoked_at IS NOT NULL ORDER BY status_index",
        )
        .bind(status_list_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// What every mandate signed for one approved consent request shares.
#[derive(Debug, Clone, Copy)]
pub struct IssueBatch<'a> {
    /// The approved consent request.
    pub consent_id: &'a str,
    /// The consenting user.
    pub user_id: &'a str,
    /// The agent the mandates bind.
    pub agent_id: &'a str,
    /// The grant the agent asked under.
    pub grant_id: Option<&'a str>,
    /// The status list the mandates' `status` claims point into.
    pub status_list_id: &'a str,
    /// The mandates' `exp`.
    pub exp: i64,
}

/// A signed root mandate, as the wallet keeps it for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedMandate {
    /// The mandate id.
    pub mandate_id: String,
    /// `checkout` or `payment`.
    pub kind: String,
    /// The root SD-JWT with all its disclosures.
    pub sd_jwt: String,
    /// Its index in the status list.
    pub status_index: i64,
}

/// Signs one mandate once its status index is known: `(kind, index, mandate id)` →
/// `(hash of its signed bytes, SD-JWT)`.
pub type SignMandate<'a> =
    dyn FnMut(&str, i64, &str) -> Result<(String, String), RecordError> + Send + 'a;

impl Store {
    /// Approves a pending consent request and issues its mandates in one transaction: the
    /// approval is a conditional update (of racing decisions one wins), then, while the agent and
    /// the grant are held, each `(kind, id)` takes a status index, `sign` signs it, and the
    /// mandate and its SD-JWT are stored. The approval and all mandates, or nothing.
    pub async fn approve_and_issue(
        &self,
        batch: &IssueBatch<'_>,
        now: i64,
        kinds: &[(&str, String)],
        sign: &mut SignMandate<'_>,
    ) -> Result<Result<Vec<IssuedMandate>, ConsentRefusal>, RecordError> {
        let mut tx = self.pool.begin().await?;
        let decided = sqlx::query(
            "UPDATE consent_requests SET status = 'approved', decided_at = $3 \
             WHERE id = $1 AND user_id = $2 AND status = 'pending' AND expires_at > $3",
        )
        .bind(batch.consent_id)
        .bind(batch.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if decided.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Err(self
                .why_not_decided(batch.consent_id, batch.user_id)
                .await?));
        }
        hold_active_agent(&mut tx, batch.agent_id).await?;
        if let Some(grant_id) = batch.grant_id {
            hold_active_grant(&mut tx, grant_id, batch.agent_id, batch.user_id).await?;
        }
        let mut issued = Vec::new();
        for (kind, id) in kinds {
            let index = take_status_index(&mut tx, batch.status_list_id).await?;
            let (hash, sd_jwt) = sign(kind, index, id)?;
            let mandate = NewMandate {
                id: id.clone(),
                hash,
                status_list_id: batch.status_list_id.to_owned(),
                user_id: batch.user_id.to_owned(),
                agent_id: batch.agent_id.to_owned(),
                grant_id: batch.grant_id.map(str::to_owned),
                consent_id: Some(batch.consent_id.to_owned()),
                exp: batch.exp,
            };
            mandate.check()?;
            require_approved_consent(&mut tx, batch.consent_id, &mandate).await?;
            insert_mandate(&mut tx, &mandate, index).await?;
            sqlx::query(
                "INSERT INTO issued_mandates (mandate_id, consent_id, kind, sd_jwt) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id.as_str())
            .bind(batch.consent_id)
            .bind(*kind)
            .bind(sd_jwt.as_str())
            .execute(&mut *tx)
            .await?;
            issued.push(IssuedMandate {
                mandate_id: id.clone(),
                kind: (*kind).to_owned(),
                sd_jwt,
                status_index: index,
            });
        }
        tx.commit().await?;
        Ok(Ok(issued))
    }

    /// A user's mandates that are neither revoked nor expired, newest first.
    pub async fn active_mandates_of_user(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<MandateRecord>, StoreError> {
        let sql = format!(
            "{MANDATE_SELECT} WHERE user_id = $1 AND revoked_at IS NULL AND exp > $2 \
             ORDER BY status_list_id, status_index DESC LIMIT 200"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(mandate_from).collect()
    }

    /// The mandates issued for a consent request, checkout first.
    pub async fn issued_mandates(
        &self,
        consent_id: &str,
    ) -> Result<Vec<IssuedMandate>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.mandate_id, i.kind, i.sd_jwt, m.status_index FROM issued_mandates i \
             JOIN mandates m ON m.id = i.mandate_id WHERE i.consent_id = $1 ORDER BY i.kind",
        )
        .bind(consent_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IssuedMandate {
                    mandate_id: r.try_get("mandate_id")?,
                    kind: r.try_get("kind")?,
                    sd_jwt: r.try_get("sd_jwt")?,
                    status_index: r.try_get("status_index")?,
                })
            })
            .collect()
    }

    /// One mandate by a unique column (`id` or `hash`, never input).
    async fn mandate_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<MandateRecord, StoreError> {
        let sql = format!("{MANDATE_SELECT} WHERE {column} = $1");
        let row = sqlx::query(&sql).bind(value).fetch_one(&self.pool).await?;
        mandate_from(&row)
    }

    /// Names why a consent decision changed nothing (read after the refused update).
    async fn why_not_decided(&self, id: &str, user_id: &str) -> Result<ConsentRefusal, StoreError> {
        let row = sqlx::query("SELECT user_id, status FROM consent_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(ConsentRefusal::NotFound);
        };
        let owner: String = row.try_get("user_id")?;
        if owner != user_id {
            return Ok(ConsentRefusal::OtherUser);
        }
        let status: String = row.try_get("status")?;
        Ok(
            match ConsentStatus::from_stored(&status, "consent_requests.status")? {
                ConsentStatus::Approved | ConsentStatus::Denied => ConsentRefusal::AlreadyDecided,
                // Still pending, so the update failed on `expires_at`.
                ConsentStatus::Pending | ConsentStatus::Expired => ConsentRefusal::Expired,
            },
        )
    }
}

async fn insert_mandate(
    tx: &mut Transaction<'_, Any>,
    m: &NewMandate,
    index: i64,
) -> Result<(), RecordError> {
    sqlx::query(
        "INSERT INTO mandates (id, hash, status_list_id, status_index, user_id, agent_id, \
         grant_id, consent_id, exp, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
    )
    .bind(m.id.as_str())
    .bind(m.hash.as_str())
    .bind(m.status_list_id.as_str())
    .bind(index)
    .bind(m.user_id.as_str())
    .bind(m.agent_id.as_str())
    .bind(m.grant_id.as_deref())
    .bind(m.consent_id.as_deref())
    .bind(m.exp)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the next free index of a status list in one statement.
async fn take_status_index(tx: &mut Transaction<'_, Any>, list: &str) -> Result<i64, RecordError> {
    let row = sqlx::query(
        "UPDATE status_lists SET next_index = next_index + 1 \
         WHERE id = $1 AND next_index < size RETURNING next_index - 1 AS status_index",
    )
    .bind(list)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => Ok(row.try_get("status_index")?),
        None if exists(tx, "status_lists", "id", list).await? => Err(RecordError::StatusListFull),
        None => Err(StoreError::NotFound.into()),
    }
}

/// A decided consent never changes again, so reading it is enough.
async fn require_approved_consent(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    m: &NewMandate,
) -> Result<(), RecordError> {
    let approved = sqlx::query(
        "SELECT id FROM consent_requests \
         WHERE id = $1 AND user_id = $2 AND agent_id = $3 AND status = 'approved'",
    )
    .bind(id)
    .bind(m.user_id.as_str())
    .bind(m.agent_id.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    approved.map(|_| ()).ok_or(RecordError::ConsentNotApproved)
}

/// Revokes the unrevoked mandates whose `column` (a fixed name, never input) equals `value`.
pub(super) async fn revoke_mandates_where(
    tx: &mut Transaction<'_, Any>,
    column: &'static str,
    value: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let sql =
        format!("UPDATE mandates SET revoked_at = $2 WHERE {column} = $1 AND revoked_at IS NULL");
    let done = sqlx::query(&sql)
        .bind(value)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

fn consent_from(row: &AnyRow) -> Result<ConsentRequest, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(ConsentRequest {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        agent_id: row.try_get("agent_id")?,
        grant_id: row.try_get("grant_id")?,
        token_jti: row.try_get("token_jti")?,
        body: row.try_get("body")?,
        status: ConsentStatus::from_stored(&status, "consent_requests.status")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

fn mandate_from(row: &AnyRow) -> Result<MandateRecord, StoreError> {
    Ok(MandateRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        status_list_id: row.try_get("status_list_id")?,
        status_index: row.try_get("status_index")?,
        user_id: row.try_get("user_id")?,
        agent_id: row.try_get("agent_id")?,
        grant_id: row.try_get("grant_id")?,
        consent_id: row.try_get("consent_id")?,
        exp: row.try_get("exp")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl ConsentRequest {
    fn check(&self) -> Result<(), RecordError> {
        text("consent.id", &self.id)?;
        text("consent.user_id", &self.user_id)?;
        text("consent.agent_id", &self.agent_id)?;
        optional_text("consent.grant_id", self.grant_id.as_deref())?;
        optional_text("consent.token_jti", self.token_jti.as_deref())?;
        crate::json::parse_object(self.body.as_bytes(), MAX_CONSENT_BODY_LEN)
            .map_err(|_| RecordError::Invalid("consent.body"))?;
        if self.status != ConsentStatus::Pending || self.decided_at.is_some() {
            return Err(RecordError::Invalid("consent.status"));
        }
        if self.expires_at <= self.created_at {
            return Err(RecordError::Invalid("consent.expires_at"));
        }
        Ok(())
    }
}

impl NewMandate {
    fn check(&self) -> Result<(), RecordError> {
        text("mandate.id", &self.id)?;
        text("mandate.hash", &self.hash)?;
        text("mandate.status_list_id", &self.status_list_id)?;
        text("mandate.user_id", &self.user_id)?;
        text("mandate.agent_id", &self.agent_id)?;
        optional_text("mandate.grant_id", self.grant_id.as_deref())?;
        optional_text("mandate.consent_id", self.consent_id.as_deref())?;
        if self.exp <= 0 {
            return Err(RecordError::Invalid("mandate.exp"));
        }
        Ok(())
    }
}
