//! The agent registry, users, and sign-in with rate limiting and sessions.
//!
//! Registration validates every key (P-256, public only, a `kid` each, no key registered twice
//! anywhere) before anything is stored. Disabling an agent revokes, in one transaction, its
//! grants and every token that names it; token checks consult the store, so the effect is
//! immediate on every instance. Sign-in counts failures per username in the store (shared by
//! instances) and refuses further attempts for the rest of the window.

use serde::Deserialize;
use serde_json::Value;

use super::password::{self, Password};
use super::service::TokenService;
use super::{random_token, OAuthCode, TokenError};
use crate::jose::{sha256_b64, PublicJwk};
use crate::store::records::{Agent, AgentKey, AgentStatus, FederatedCredential, IdentityRecords};
use crate::store::records::{OAuthRecords, RecordError, Revoked, Session, User, UserStatus};
use crate::store::{AuditRecord, StoreError};

/// Failed sign-ins allowed per username per window.
pub const SIGNIN_FAILURES_ALLOWED: i64 = 5;

/// The failure-counting window, seconds.
pub const SIGNIN_WINDOW: i64 = 300;

/// How long a browser session lasts, seconds.
pub const SESSION_LIFETIME: i64 = 3600;

/// Most keys one agent may register.
const MAX_AGENT_KEYS: usize = 8;

/// The body of `POST /v1/agents` (DESIGN §5), plus optional redirect URIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    /// Shown on the consent page.
    pub name: String,
    /// Who answers for the agent.
    pub owner: String,
    /// Its public keys.
    pub jwks: Value,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Audiences it may ask for.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Most hops below it.
    #[serde(default)]
    pub max_delegation_depth: i64,
    /// External identities it may authenticate with.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// Where authorization may redirect it.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// Why a sign-in failed (one answer for the human whatever the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    /// Wrong username or password, or the user is disabled.
    BadCredentials,
    /// Too many failures for this username: wait.
    TooManyAttempts,
}

impl TokenService {
    /// Registers an agent.
    pub async fn register_agent(
        &self,
        body: &AgentRegistration,
        now: i64,
    ) -> Result<Agent, TokenError> {
        let invalid = |rule| TokenError::refused(OAuthCode::InvalidRequest, rule);
        let keys = agent_keys(&body.jwks).map_err(invalid)?;
        if body.max_delegation_depth < 0
            || body.max_delegation_depth >= self.config.max_chain as i64
        {
            return Err(invalid("max_delegation_depth out of range"));
        }
        let agent = Agent {
            id: format!(
                "agt_{}",
                random_token(12).map_err(|_| StoreError::Unavailable)?
            ),
            name: body.name.clone(),
            owner: body.owner.clone(),
            keys,
            scopes: body.scopes.clone(),
            audiences: body.audiences.clone(),
            max_delegation_depth: body.max_delegation_depth,
            federated_credentials: body.federated_credentials.clone(),
            redirect_uris: body.redirect_uris.clone(),
            status: AgentStatus::Active,
            created_at: now,
            disabled_at: None,
        };
        match self.store.create_agent(&agent).await {
            Ok(()) => {}
            Err(RecordError::Store(StoreError::AlreadyExists)) => {
                return Err(invalid("a key of this agent is already registered"))
            }
            Err(RecordError::Store(e)) => return Err(e.into()),
            Err(RecordError::ThumbprintMismatch) => return Err(invalid("invalid key")),
            Err(RecordError::Invalid(field)) => return Err(invalid(invalid_field(field))),
            Err(_) => return Err(invalid("agent registration refused")),
        }
        self.audit(AuditRecord {
            at: now,
            action: "agent.register".into(),
            outcome: "success".into(),
            agent_id: Some(agent.id.clone()),
            scope: Some(agent.scopes.join(" ")),
            correlation_id: agent.id.clone(),
            ..AuditRecord::default()
        })
        .await?;
        Ok(agent)
    }

    /// Disables an agent; its grants and every token naming it are revoked at once.
    pub async fn disable_agent(&self, id: &str, now: i64) -> Result<Revoked, TokenError> {
        let revoked = match self.store.disable_agent(id, now).await {
            Ok(revoked) => revoked,
            Err(StoreError::NotFound) => {
                return Err(TokenError::refused(
                    OAuthCode::InvalidRequest,
                    "agent unknown",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        self.audit(AuditRecord {
            at: now,
            action: "agent.disable".into(),
            outcome: "success".into(),
            agent_id: Some(id.into()),
            correlation_id: id.into(),
            ..AuditRecord::default()
        })
        .await?;
        tracing::info!(agent = %id, grants = revoked.grants, tokens = revoked.tokens, "agent disabled");
        Ok(revoked)
    }

    /// Creates an active user with an argon2id password hash.
    pub async fn create_user(
        &self,
        username: &str,
        password: &Password,
        now: i64,
    ) -> Result<User, TokenError> {
        let hash = password::hash(password)
            .map_err(|rule| TokenError::refused(OAuthCode::InvalidRequest, rule))?;
        let user = User {
            id: format!(
                "usr_{}",
                random_token(12).map_err(|_| StoreError::Unavailable)?
            ),
            username: username.into(),
            password_hash: hash,
            status: UserStatus::Active,
            created_at: now,
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok(user),
            Err(RecordError::Store(StoreError::AlreadyExists)) => Err(TokenError::refused(
                OAuthCode::InvalidRequest,
                "username taken",
            )),
            Err(RecordError::Store(e)) => Err(e.into()),
            Err(_) => Err(TokenError::refused(
                OAuthCode::InvalidRequest,
                "invalid username",
            )),
        }
    }

    /// Checks a sign-in; failures are counted, and past the limit nothing is checked.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &Password,
        now: i64,
    ) -> Result<Result<User, SignInRefusal>, TokenError> {
        if self.store.signin_failures(username, now).await? >= SIGNIN_FAILURES_ALLOWED {
            return Ok(Err(SignInRefusal::TooManyAttempts));
        }
        let user = match self.store.user_by_username(username).await {
            Ok(user) => Some(user),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let ok = password::verify(password, user.as_ref().map(|u| &u.password_hash));
        match user {
            Some(user) if ok && user.status == UserStatus::Active => Ok(Ok(user)),
            _ => {
                self.store
                    .count_signin_failure(username, now, SIGNIN_WINDOW)
                    .await?;
                self.audit(AuditRecord {
                    at: now,
                    action: "user.signin".into(),
                    outcome: "refused".into(),
                    reason: Some("bad credentials".into()),
                    correlation_id: random_token(9).unwrap_or_default(),
                    ..AuditRecord::default()
                })
                .await?;
                Ok(Err(SignInRefusal::BadCredentials))
            }
        }
    }

    /// Starts a session: returns the cookie value (stored only as its hash) and the session.
    pub async fn start_session(
        &self,
        user: &User,
        now: i64,
    ) -> Result<(String, Session), TokenError> {
        let fresh =
            |n| random_token(n).map_err(|_| TokenError::Unavailable(StoreError::Unavailable));
        let cookie = fresh(32)?;
        let session = Session {
            user_id: user.id.clone(),
            csrf: fresh(24)?,
            exp: now + SESSION_LIFETIME,
        };
        self.store
            .create_session(&sha256_b64(cookie.as_bytes()), &session)
            .await
            .map_err(super::service::record_refusal)?;
        Ok((cookie, session))
    }

    /// The session a cookie value opens, if any (and its user still active).
    pub async fn session(&self, cookie: &str, now: i64) -> Result<Option<Session>, TokenError> {
        let Some(session) = self
            .store
            .session(&sha256_b64(cookie.as_bytes()), now)
            .await?
        else {
            return Ok(None);
        };
        match self.store.user(&session.user_id).await {
            Ok(user) if user.status == UserStatus::Active => Ok(Some(session)),
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The keys of a registration JWKS: public P-256 keys with distinct `kid`s.
fn agent_keys(jwks: &Value) -> Result<Vec<AgentKey>, &'static str> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .filter(|k| !k.is_empty() && k.len() <= MAX_AGENT_KEYS)
        .ok_or("jwks must hold 1 to 8 keys")?;
    let mut out: Vec<AgentKey> = Vec::with_capacity(keys.len());
    for key in keys {
        let jwk = PublicJwk::from_value(key).map_err(|_| "jwks holds an invalid or private key")?;
        let kid = jwk.kid().ok_or("every key needs a kid")?.to_owned();
        let jkt = jwk.thumbprint();
        if out.iter().any(|k| k.kid == kid || k.jkt == jkt) {
            return Err("jwks holds the same key or kid twice");
        }
        out.push(AgentKey {
            kid,
            jkt,
            jwk: jwk.to_value().to_string(),
        });
    }
    Ok(out)
}

fn invalid_field(field: &'static str) -> &'static str {
    match field {
        "agent.name" => "name missing or invalid",
        "agent.owner" => "owner missing or invalid",
        "agent.scopes" => "scopes invalid",
        "agent.audiences" => "audiences invalid",
        "agent.redirect_uris" => "redirect_uris invalid",
        "agent.keys" | "agent.keys.kid" | "agent.keys.jwk" => "jwks invalid",
        _ => "agent registration invalid",
    }
}
