//! Records of the token service: users, agents with their keys, grants and issued tokens.
//!
//! A grant or token is written only for an active user and while its agent (and grant) rows are
//! held active until commit, so disabling an agent or revoking a grant cannot miss one issued at
//! the same moment; each revokes, in the same transaction, what was issued under it. An agent key
//! must be a P-256 JWK whose RFC 7638 thumbprint is the `jkt` stored with it. Nothing here
//! authenticates a client, signs a token or answers introspection (RFC 7662).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::{
    exists, hold_active_agent, hold_active_grant, optional_text, text, Agent, AgentKey,
    AgentStatus, FederatedCredential, Grant, GrantStatus, PasswordHash, RecordError, Revoked,
    TokenRecord, TokenStatus, User, UserStatus, MAX_TEXT_LEN,
};
use crate::jose::PublicJwk;
use crate::store::{Store, StoreError};

/// Records of the token service: users, agents, grants and issued tokens.
pub trait IdentityRecords {
    /// Stores a new user; `AlreadyExists` if the id or username is taken.
    fn create_user(&self, user: &User) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The user with this sign-in name.
    fn user_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// The user with this id.
    fn user(&self, id: &str) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Enables or disables a user.
    fn set_user_status(
        &self,
        id: &str,
        status: UserStatus,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Registers an active agent with its keys, all or nothing; `AlreadyExists` if the id or any
    /// key thumbprint is taken (by any agent, this one included).
    fn create_agent(&self, agent: &Agent) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The agent with this id, with its keys.
    fn agent(&self, id: &str) -> impl Future<Output = Result<Agent, StoreError>> + Send;

    /// Every agent, oldest first.
    fn agents(&self) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// The agent holding the key with this RFC 7638 thumbprint (a DPoP proof's `jkt`).
    fn agent_by_key_thumbprint(
        &self,
        jkt: &str,
    ) -> impl Future<Output = Result<Agent, StoreError>> + Send;

    /// Disables an agent and, in the same transaction, revokes its active grants and tokens.
    fn disable_agent(
        &self,
        id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Revoked, StoreError>> + Send;

    /// Stores a grant to an active agent from an active user.
    fn create_grant(&self, grant: &Grant) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// The grant with this id.
    fn grant(&self, id: &str) -> impl Future<Output = Result<Grant, StoreError>> + Send;

    /// Revokes a grant and, in the same transaction, the tokens issued under it.
    fn revoke_grant(
        &self,
        id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Revoked, StoreError>> + Send;

    /// Records an issued token: its agent and user must be active, its grant (if any) too.
    fn record_token(
        &self,
        token: &TokenRecord,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// Whether the token with this `jti` was revoked.
    fn token_status(
        &self,
        jti: &str,
    ) -> impl Future<Output = Result<TokenStatus, StoreError>> + Send;

    /// Revokes a token: `true` if this call revoked it, `false` if it was revoked already.
    fn revoke_token(&self, jti: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

const USER_SELECT: &str = "SELECT id, username, password_hash, status, created_at FROM users";

const AGENT_SELECT: &str = "SELECT id, name, owner, scopes, audiences, max_delegation_depth, \
     federated_credentials, redirect_uris, status, created_at, disabled_at FROM agents";

impl IdentityRecords for Store {
    async fn create_user(&self, user: &User) -> Result<(), RecordError> {
        user.check()?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, status, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.status.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> Result<User, StoreError> {
        self.user_where("username", username).await
    }

    async fn user(&self, id: &str) -> Result<User, StoreError> {
        self.user_where("id", id).await
    }

    async fn set_user_status(&self, id: &str, status: UserStatus) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        match done.rows_affected() {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn create_agent(&self, agent: &Agent) -> Result<(), RecordError> {
        agent.check()?;
        let mut tx = self.pool.begin().await?;
        insert_agent(&mut tx, agent).await?;
        for key in &agent.keys {
            sqlx::query("INSERT INTO agent_keys (agent_id, kid, jkt, jwk) VALUES ($1, $2, $3, $4)")
                .bind(agent.id.as_str())
                .bind(key.kid.as_str())
                .bind(key.jkt.as_str())
                .bind(key.jwk.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent(&self, id: &str) -> Result<Agent, StoreError> {
        // Keys are written with their agent and never changed, so two reads see one state.
        let sql = format!("{AGENT_SELECT} WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_one(&self.pool).await?;
        let keys =
            sqlx::query("SELECT kid, jkt, jwk FROM agent_keys WHERE agent_id = $1 ORDER BY kid")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        agent_from(&row, keys.iter().map(key_from).collect::<Result<_, _>>()?)
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let sql = format!("{AGENT_SELECT} ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let key_rows =
            sqlx::query("SELECT agent_id, kid, jkt, jwk FROM agent_keys ORDER BY agent_id, kid")
                .fetch_all(&self.pool)
                .await?;
        let mut keys = keys_by_agent(&key_rows)?;
        let agent = |row: &AnyRow| {
            let id: String = row.try_get("id")?;
            agent_from(row, keys.remove(&id).unwrap_or_default())
        };
        rows.iter().map(agent).collect()
    }

    async fn agent_by_key_thumbprint(&self, jkt: &str) -> Result<Agent, StoreError> {
        let agent_id: String = sqlx::query_scalar("SELECT agent_id FROM agent_keys WHERE jkt = $1")
            .bind(jkt)
            .fetch_one(&self.pool)
            .await?;
        self.agent(&agent_id).await
    }

    async fn disable_agent(&self, id: &str, now: i64) -> Result<Revoked, StoreError> {
        let mut tx = self.pool.begin().await?;
        let disabled = sqlx::query(
            "UPDATE agents SET status = 'disabled', disabled_at = $2 \
             WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if disabled.rows_affected() == 0 && !exists(&mut tx, "agents", "id", id).await? {
            return Err(StoreError::NotFound);
        }

        // Even for an agent disabled before: nothing it holds may stay active.
        let grants = revoke_grants_where(&mut tx, "agent_id", id, now).await?;
        let mut tokens = revoke_tokens_where(&mut tx, "agent_id", id).await?;
        tokens += revoke_tokens_delegated_by(&mut tx, id).await?;
        let mandates = super::wallet::revoke_mandates_where(&mut tx, "agent_id", id, now).await?;
        tx.commit().await?;
        Ok(Revoked {
            grants,
            tokens,
            mandates,
        })
    }

    async fn create_grant(&self, grant: &Grant) -> Result<(), RecordError> {
        grant.check()?;
        let mut tx = self.pool.begin().await?;
        hold_active_agent(&mut tx, &grant.agent_id).await?;
        require_active_user(&mut tx, &grant.user_id).await?;
        insert_grant(&mut tx, grant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn grant(&self, id: &str) -> Result<Grant, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, agent_id, scope, authorization_details, status, created_at, \
             expires_at, revoked_at FROM grants WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        grant_from(&row)
    }

    async fn revoke_grant(&self, id: &str, now: i64) -> Result<Revoked, StoreError> {
        let mut tx = self.pool.begin().await?;
        let grants = revoke_grants_where(&mut tx, "id", id, now).await?;
        if grants == 0 && !exists(&mut tx, "grants", "id", id).await? {
            return Err(StoreError::NotFound);
        }
        let tokens = revoke_tokens_where(&mut tx, "grant_id", id).await?;
        let mandates = super::wallet::revoke_mandates_where(&mut tx, "grant_id", id, now).await?;
        tx.commit().await?;
        Ok(Revoked {
            grants,
            tokens,
            mandates,
        })
    }

    async fn record_token(&self, token: &TokenRecord) -> Result<(), RecordError> {
        token.check()?;
        let mut tx = self.pool.begin().await?;
        hold_active_agent(&mut tx, &token.agent_id).await?;
        for earlier in &token.delegated_by {
            hold_active_agent(&mut tx, earlier).await?;
        }
        if !token.external_subject {
            require_active_user(&mut tx, &token.user_id).await?;
        }
        if let Some(grant_id) = &token.grant_id {
            let holder = token.delegated_by.last().unwrap_or(&token.agent_id);
            hold_active_grant(&mut tx, grant_id, holder, &token.user_id).await?;
        }
        for actor in std::iter::once(&token.agent_id).chain(&token.delegated_by) {
            sqlx::query("INSERT INTO token_actors (jti, agent_id, exp) VALUES ($1, $2, $3)")
                .bind(token.jti.as_str())
                .bind(actor.as_str())
                .bind(token.exp)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO tokens (jti, grant_id, agent_id, user_id, status, exp) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.jti.as_str())
        .bind(token.grant_id.as_deref())
        .bind(token.agent_id.as_str())
        .bind(token.user_id.as_str())
        .bind(token.status.as_str())
        .bind(token.exp)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token_status(&self, jti: &str) -> Result<TokenStatus, StoreError> {
        let status: String = sqlx::query_scalar("SELECT status FROM tokens WHERE jti = $1")
            .bind(jti)
            .fetch_one(&self.pool)
            .await?;
        TokenStatus::from_stored(&status, "tokens.status")
    }

    async fn revoke_token(&self, jti: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tokens SET status = 'revoked' WHERE jti = $1 AND status = 'active'",
        )
        .bind(jti)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let known = sqlx::query("SELECT jti FROM tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        known.map(|_| false).ok_or(StoreError::NotFound)
    }
}

impl Store {
    /// Every user, oldest first.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("{USER_SELECT} ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(user_from).collect()
    }

    /// One user by a unique column (`id` or `username`, never input).
    async fn user_where(&self, column: &'static str, value: &str) -> Result<User, StoreError> {
        let sql = format!("{USER_SELECT} WHERE {column} = $1");
        let row = sqlx::query(&sql).bind(value).fetch_one(&self.pool).await?;
        user_from(&row)
    }
}

async fn insert_agent(tx: &mut Transaction<'_, Any>, agent: &Agent) -> Result<(), RecordError> {
    sqlx::query(
        "INSERT INTO agents (id, name, owner, scopes, audiences, max_delegation_depth, \
         federated_credentials, redirect_uris, status, created_at, disabled_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)",
    )
    .bind(agent.id.as_str())
    .bind(agent.name.as_str())
    .bind(agent.owner.as_str())
    .bind(json_text(&agent.scopes, "agent.scopes")?)
    .bind(json_text(&agent.audiences, "agent.audiences")?)
    .bind(agent.max_delegation_depth)
    .bind(json_text(
        &agent.federated_credentials,
        "agent.federated_credentials",
    )?)
    .bind(json_text(&agent.redirect_uris, "agent.redirect_uris")?)
    .bind(agent.status.as_str())
    .bind(agent.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_grant(tx: &mut Transaction<'_, Any>, grant: &Grant) -> Result<(), RecordError> {
    let details = match &grant.authorization_details {
        Some(value) => Some(json_text(value, "grant.authorization_details")?),
        None => None,
    };
    sqlx::query(
        "INSERT INTO grants (id, user_id, agent_id, scope, authorization_details, status, \
         created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
    )
    .bind(grant.id.as_str())
    .bind(grant.user_id.as_str())
    .bind(grant.agent_id.as_str())
    .bind(grant.scope.join(" "))
    .bind(details)
    .bind(grant.status.as_str())
    .bind(grant.created_at)
    .bind(grant.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn require_active_user(tx: &mut Transaction<'_, Any>, id: &str) -> Result<(), RecordError> {
    let active = sqlx::query("SELECT id FROM users WHERE id = $1 AND status = 'active'")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    active.map(|_| ()).ok_or(RecordError::UserNotActive)
}

/// Revokes the active grants whose `column` (a fixed name, never input) equals `value`.
async fn revoke_grants_where(
    tx: &mut Transaction<'_, Any>,
    column: &'static str,
    value: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let sql = format!(
        "UPDATE grants SET status = 'revoked', revoked_at = $2 \
         WHERE {column} = $1 AND status = 'active'"
    );
    let done = sqlx::query(&sql)
        .bind(value)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Revokes the active tokens whose `column` (a fixed name, never input) equals `value`.
async fn revoke_tokens_where(
    tx: &mut Transaction<'_, Any>,
    column: &'static str,
    value: &str,
) -> Result<u64, StoreError> {
    let sql =
        format!("UPDATE tokens SET status = 'revoked' WHERE {column} = $1 AND status = 'active'");
    let done = sqlx::query(&sql).bind(value).execute(&mut **tx).await?;
    Ok(done.rows_affected())
}

/// Revokes the active tokens that name this agent anywhere in their `act` chain, or that were
/// issued under one of its grants.
async fn revoke_tokens_delegated_by(
    tx: &mut Transaction<'_, Any>,
    agent_id: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE tokens SET status = 'revoked' WHERE status = 'active' AND \
         (jti IN (SELECT jti FROM token_actors WHERE agent_id = $1) \
          OR grant_id IN (SELECT id FROM grants WHERE agent_id = $1))",
    )
    .bind(agent_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

fn keys_by_agent(rows: &[AnyRow]) -> Result<BTreeMap<String, Vec<AgentKey>>, StoreError> {
    let mut keys: BTreeMap<String, Vec<AgentKey>> = BTreeMap::new();
    for row in rows {
        keys.entry(row.try_get("agent_id")?)
            .or_default()
            .push(key_from(row)?);
    }
    Ok(keys)
}

fn user_from(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: PasswordHash(row.try_get("password_hash")?),
        status: UserStatus::from_stored(&row.try_get::<String, _>("status")?, "users.status")?,
        created_at: row.try_get("created_at")?,
    })
}

fn agent_from(row: &AnyRow, keys: Vec<AgentKey>) -> Result<Agent, StoreError> {
    Ok(Agent {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        keys,
        scopes: from_json(&row.try_get::<String, _>("scopes")?, "agents.scopes")?,
        audiences: from_json(&row.try_get::<String, _>("audiences")?, "agents.audiences")?,
        max_delegation_depth: row.try_get("max_delegation_depth")?,
        federated_credentials: from_json(
            &row.try_get::<String, _>("federated_credentials")?,
            "agents.federated_credentials",
        )?,
        redirect_uris: from_json(
            &row.try_get::<String, _>("redirect_uris")?,
            "agents.redirect_uris",
        )?,
        status: AgentStatus::from_stored(&row.try_get::<String, _>("status")?, "agents.status")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

fn key_from(row: &AnyRow) -> Result<AgentKey, StoreError> {
    Ok(AgentKey {
        kid: row.try_get("kid")?,
        jkt: row.try_get("jkt")?,
        jwk: row.try_get("jwk")?,
    })
}

fn grant_from(row: &AnyRow) -> Result<Grant, StoreError> {
    let details: Option<String> = row.try_get("authorization_details")?;
    Ok(Grant {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        agent_id: row.try_get("agent_id")?,
        scope: row
            .try_get::<String, _>("scope")?
            .split(' ')
            .map(String::from)
            .collect(),
        authorization_details: details
            .map(|d| from_json(&d, "grants.authorization_details"))
            .transpose()?,
        status: GrantStatus::from_stored(&row.try_get::<String, _>("status")?, "grants.status")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn json_text<T: Serialize>(value: &T, field: &'static str) -> Result<String, RecordError> {
    serde_json::to_string(value).map_err(|_| RecordError::Invalid(field))
}

fn from_json<T: DeserializeOwned>(text: &str, column: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt(column))
}

impl User {
    fn check(&self) -> Result<(), RecordError> {
        text("user.id", &self.id)?;
        text("user.username", &self.username)?;
        text("user.password_hash", self.password_hash.as_str())
    }
}

impl Agent {
    fn check(&self) -> Result<(), RecordError> {
        text("agent.id", &self.id)?;
        text("agent.name", &self.name)?;
        text("agent.owner", &self.owner)?;
        if self.status != AgentStatus::Active || self.disabled_at.is_some() {
            return Err(RecordError::Invalid("agent.status"));
        }
        if self.max_delegation_depth < 0 {
            return Err(RecordError::Invalid("agent.max_delegation_depth"));
        }

        // An agent never authenticates with a shared secret: it needs a key or a federation.
        if self.keys.is_empty() && self.federated_credentials.is_empty() {
            return Err(RecordError::Invalid("agent.keys"));
        }
        self.scopes
            .iter()
            .try_for_each(|s| scope_token("agent.scopes", s))?;
        self.audiences
            .iter()
            .try_for_each(|a| text("agent.audiences", a))?;
        self.federated_credentials
            .iter()
            .try_for_each(FederatedCredential::check)?;
        self.redirect_uris
            .iter()
            .try_for_each(|uri| redirect_uri("agent.redirect_uris", uri))?;
        check_keys(&self.keys)
    }
}

fn check_keys(keys: &[AgentKey]) -> Result<(), RecordError> {
    let mut kids = BTreeSet::new();
    for key in keys {
        key.check()?;
        if !kids.insert(key.kid.as_str()) {
            return Err(RecordError::Invalid("agent.keys.kid"));
        }
    }
    Ok(())
}

impl AgentKey {
    /// The JWK must be a valid public P-256 key whose thumbprint is `jkt`, so that finding an
    /// agent by a DPoP key's thumbprint finds the holder of that key.
    fn check(&self) -> Result<(), RecordError> {
        text("agent.keys.kid", &self.kid)?;
        let jwk =
            PublicJwk::from_json(&self.jwk).map_err(|_| RecordError::Invalid("agent.keys.jwk"))?;
        if jwk.kid().is_some_and(|kid| kid != self.kid) {
            return Err(RecordError::Invalid("agent.keys.kid"));
        }
        if jwk.thumbprint() != self.jkt {
            return Err(RecordError::ThumbprintMismatch);
        }
        Ok(())
    }
}

impl FederatedCredential {
    fn check(&self) -> Result<(), RecordError> {
        text("agent.federated_credentials.issuer", &self.issuer)?;
        text("agent.federated_credentials.subject", &self.subject)?;
        text("agent.federated_credentials.audience", &self.audience)
    }
}

impl Grant {
    fn check(&self) -> Result<(), RecordError> {
        text("grant.id", &self.id)?;
        text("grant.user_id", &self.user_id)?;
        text("grant.agent_id", &self.agent_id)?;
        if self.scope.is_empty() {
            return Err(RecordError::Invalid("grant.scope"));
        }
        self.scope
            .iter()
            .try_for_each(|s| scope_token("grant.scope", s))?;
        if let Some(details) = &self.authorization_details {
            authorization_details(details)?;
        }
        if self.status != GrantStatus::Active || self.revoked_at.is_some() {
            return Err(RecordError::Invalid("grant.status"));
        }
        if self.expires_at <= self.created_at {
            return Err(RecordError::Invalid("grant.expires_at"));
        }
        Ok(())
    }
}

/// RFC 9396 §2: a non-empty array of objects, each with a string `type`.
fn authorization_details(details: &Value) -> Result<(), RecordError> {
    let items = details.as_array().filter(|items| !items.is_empty());
    let typed = |item: &Value| item.get("type").is_some_and(Value::is_string);
    match items {
        Some(items) if items.iter().all(typed) => Ok(()),
        _ => Err(RecordError::Invalid("grant.authorization_details")),
    }
}

impl TokenRecord {
    fn check(&self) -> Result<(), RecordError> {
        text("token.jti", &self.jti)?;
        optional_text("token.grant_id", self.grant_id.as_deref())?;
        text("token.agent_id", &self.agent_id)?;
        text("token.user_id", &self.user_id)?;
        self.delegated_by
            .iter()
            .try_for_each(|a| text("token.delegated_by", a))?;
        if self.delegated_by.contains(&self.agent_id)
            || (self.external_subject && self.grant_id.is_some())
        {
            return Err(RecordError::Invalid("token.delegated_by"));
        }
        if self.status != TokenStatus::Active {
            return Err(RecordError::Invalid("token.status"));
        }
        if self.exp <= 0 {
            return Err(RecordError::Invalid("token.exp"));
        }
        Ok(())
    }
}

/// An absolute `http`/`https` URI without a fragment (RFC 6749 §3.1.2).
fn redirect_uri(field: &'static str, uri: &str) -> Result<(), RecordError> {
    text(field, uri)?;
    let scheme_ok = uri.starts_with("https://") || uri.starts_with("http://");
    if !scheme_ok || uri.contains('#') || uri.contains(char::is_whitespace) {
        return Err(RecordError::Invalid(field));
    }
    Ok(())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn scope_token(field: &'static str, token: &str) -> Result<(), RecordError> {
    let allowed = |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
    if token.is_empty() || token.len() > MAX_TEXT_LEN || !token.bytes().all(allowed) {
        return Err(RecordError::Invalid(field));
    }
    Ok(())
}
