//! Users, agents, grants, tokens, consent requests, mandates and status lists.
//!
//! Plain records for the token service ([`IdentityRecords`]) and the wallet ([`WalletRecords`]);
//! the decisions that must be atomic live in [`super::decision`]. This module holds the record
//! types, their errors, and the checks and row locks both halves share. Every record is checked
//! before anything is written, and a write that depends on another row holds that row while it
//! writes, so disabling or revoking cannot miss one issued at the same moment. Nothing here
//! signs, renders or verifies; the services own those rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Any, Transaction};

use super::StoreError;
use crate::jose::ct_eq;

mod identity;
mod oauth;
mod wallet;

pub use identity::IdentityRecords;
pub use oauth::{AuthCode, CodeRefusal, OAuthRecords, Session, Standing};
pub use wallet::{
    ConsentState, DelegationState, GrantState, IssueBatch, IssuedMandate, MandateState,
    SignMandate, WalletRecords,
};

/// Longest identifier, name or other text field, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// Largest consent request body (JSON text), in bytes.
pub const MAX_CONSENT_BODY_LEN: usize = 64 * 1024;

/// Most entries in one status list (one bit each: 2 MiB before compression).
pub const MAX_STATUS_LIST_SIZE: i64 = 1 << 24;

/// Declares a status enum that is stored, and serialized, as lowercase text.
macro_rules! stored_status {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The stored and serialized spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn from_stored(text: &str, column: &'static str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Corrupt(column)),
                }
            }
        }
    };
}

stored_status! {
    /// Whether a user may sign in and consent.
    UserStatus {
        /// May sign in.
        Active = "active",
        /// May not sign in.
        Disabled = "disabled",
    }
}

stored_status! {
    /// Whether an agent may act.
    AgentStatus {
        /// Registered and allowed to act.
        Active = "active",
        /// Disabled for good: its grants and tokens were revoked with it.
        Disabled = "disabled",
    }
}

stored_status! {
    /// Whether a delegation still holds.
    GrantStatus {
        /// In force until it expires.
        Active = "active",
        /// Revoked by the user, an admin, or the agent's disablement.
        Revoked = "revoked",
    }
}

stored_status! {
    /// Whether an issued access token still holds (RFC 7009, RFC 7662 `active`).
    TokenStatus {
        /// Valid until its `exp`.
        Active = "active",
        /// Revoked before its `exp`.
        Revoked = "revoked",
    }
}

stored_status! {
    /// Where a consent request stands.
    ConsentStatus {
        /// Waiting for the human.
        Pending = "pending",
        /// Approved: the wallet may sign.
        Approved = "approved",
        /// Refused by the human.
        Denied = "denied",
        /// Not decided in time.
        Expired = "expired",
    }
}

/// A person who delegates to agents and approves mandates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier: the `sub` of tokens and mandates.
    pub id: String,
    /// Sign-in name, unique.
    pub username: String,
    /// Hash of the password (PHC string), never the password.
    pub password_hash: PasswordHash,
    /// Whether the user may sign in.
    pub status: UserStatus,
    /// When the user was created.
    pub created_at: i64,
}

/// A password hash: compared in constant time and kept out of `Debug` output.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a hash string (PHC format).
    pub fn new(hash: impl Into<String>) -> Self {
        PasswordHash(hash.into())
    }

    /// The hash string, for the password verifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PartialEq for PasswordHash {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for PasswordHash {}

/// A registered agent principal: who owns it, how it authenticates, what it may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable identifier: `client_id` and `act.sub`.
    pub id: String,
    /// Name shown on the consent page.
    pub name: String,
    /// Who answers for the agent.
    pub owner: String,
    /// Its public keys (RFC 7523 client authentication, DPoP), returned ordered by `kid`.
    pub keys: Vec<AgentKey>,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Audiences (RFC 8707 resources) it may ask tokens for.
    pub audiences: Vec<String>,
    /// Most `act` hops below it in a delegation chain.
    pub max_delegation_depth: i64,
    /// Trusted external identities it may authenticate with instead of a key.
    pub federated_credentials: Vec<FederatedCredential>,
    /// Where the authorization endpoint may send it back (exact match); with none, only
    /// loopback addresses on any port (RFC 8252 §7.3).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Whether it may act.
    pub status: AgentStatus,
    /// When it was registered.
    pub created_at: i64,
    /// When it was disabled.
    pub disabled_at: Option<i64>,
}

/// One public key of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKey {
    /// Key id, unique within the agent.
    pub kid: String,
    /// RFC 7638 SHA-256 thumbprint of `jwk`, unique across all agents.
    pub jkt: String,
    /// The public JWK (ES256 on P-256), as JSON text.
    pub jwk: String,
}

/// An external identity an agent may present (a workload token from a trusted issuer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedCredential {
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The `aud` the token must carry.
    pub audience: String,
}

/// A user's delegation to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Grant id, carried in the tokens issued under it.
    pub id: String,
    /// The delegating user.
    pub user_id: String,
    /// The agent delegated to.
    pub agent_id: String,
    /// Granted scope tokens (RFC 6749 §3.3); stored space-delimited.
    pub scope: Vec<String>,
    /// RFC 9396 `authorization_details`: an array of objects, each with a `type`.
    pub authorization_details: Option<Value>,
    /// Whether it holds.
    pub status: GrantStatus,
    /// When it was made.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// An issued access token, kept for revocation and introspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's `jti`.
    pub jti: String,
    /// The grant it was issued under, if any.
    pub grant_id: Option<String>,
    /// The agent it was issued to (`act.sub`).
    pub agent_id: String,
    /// The user it acts for (`sub`).
    pub user_id: String,
    /// Earlier registered actors of its `act` chain, nearest first; disabling any of them
    /// revokes the token. The last one (or `agent_id` when empty) holds the grant.
    #[serde(default)]
    pub delegated_by: Vec<String>,
    /// Whether `user_id` names a person of a trusted external issuer rather than a local user
    /// (then there is no grant and no local user to check).
    #[serde(default)]
    pub external_subject: bool,
    /// Whether it holds.
    pub status: TokenStatus,
    /// Its `exp`.
    pub exp: i64,
}

/// An agent's request for mandates, waiting for the human's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRequest {
    /// Request id (in the consent URL).
    pub id: String,
    /// The user who must decide.
    pub user_id: String,
    /// The requesting agent.
    pub agent_id: String,
    /// The grant the agent's token was issued under.
    pub grant_id: Option<String>,
    /// The `jti` of the token that made the request.
    pub token_jti: Option<String>,
    /// The requested mandate contents: a JSON object, kept byte for byte as received.
    pub body: String,
    /// Where it stands (see [`ConsentRequest::status_at`]).
    pub status: ConsentStatus,
    /// When it was made.
    pub created_at: i64,
    /// When it can no longer be decided.
    pub expires_at: i64,
    /// When the human decided.
    pub decided_at: Option<i64>,
}

impl ConsentRequest {
    /// The status at `now`: a pending request past its `expires_at` is expired.
    pub fn status_at(&self, now: i64) -> ConsentStatus {
        if self.status == ConsentStatus::Pending && self.expires_at <= now {
            return ConsentStatus::Expired;
        }
        self.status
    }
}

/// A status list: how many entries it has and how many are taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListRecord {
    /// List id (part of the list's URI).
    pub id: String,
    /// Number of entries.
    pub size: i64,
    /// The next index to hand out; every index below it is taken.
    pub next_index: i64,
}

/// A mandate about to be signed, before it has a status index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMandate {
    /// Mandate id.
    pub id: String,
    /// Hash of the signed mandate, unique.
    pub hash: String,
    /// The status list its `status` claim points into.
    pub status_list_id: String,
    /// The consenting user (`sub`).
    pub user_id: String,
    /// The agent it binds (`cnf`).
    pub agent_id: String,
    /// The grant it was requested under; must be active and the same user's and agent's.
    pub grant_id: Option<String>,
    /// The consent that approved it; must be approved, by the same user, for the same agent.
    pub consent_id: Option<String>,
    /// Its `exp`.
    pub exp: i64,
}

/// An issued mandate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MandateRecord {
    /// Mandate id.
    pub id: String,
    /// Hash of the signed mandate.
    pub hash: String,
    /// The status list its `status` claim points into.
    pub status_list_id: String,
    /// Its index in that list.
    pub status_index: i64,
    /// The consenting user.
    pub user_id: String,
    /// The agent it binds.
    pub agent_id: String,
    /// The grant it was requested under.
    pub grant_id: Option<String>,
    /// The consent that approved it.
    pub consent_id: Option<String>,
    /// Its `exp`.
    pub exp: i64,
    /// When it was revoked (its status bit is set).
    pub revoked_at: Option<i64>,
}

/// What a disablement or revocation revoked along with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Grants revoked by this call.
    pub grants: u64,
    /// Tokens revoked by this call.
    pub tokens: u64,
    /// Mandates revoked by this call (their status bits set).
    pub mandates: u64,
}

/// Why a write was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A field is empty, too long, malformed or inconsistent; names the field.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// An agent key's `jkt` is not the RFC 7638 thumbprint of its `jwk`.
    #[error("key thumbprint does not match the key")]
    ThumbprintMismatch,
    /// The user is unknown or disabled.
    #[error("user not active")]
    UserNotActive,
    /// The agent is unknown or disabled.
    #[error("agent not active")]
    AgentNotActive,
    /// The grant is unknown, revoked, or another user's or agent's.
    #[error("grant not active")]
    GrantNotActive,
    /// The consent is unknown, not approved, or another user's or agent's.
    #[error("consent not approved")]
    ConsentNotApproved,
    /// The authorization code is unknown, used, expired or another client's.
    #[error("authorization code not redeemable")]
    CodeNotRedeemable,
    /// Every index of the status list is taken.
    #[error("status list full")]
    StatusListFull,
    /// The store refused (`AlreadyExists`, `NotFound`) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Store(e.into())
    }
}

/// Why a consent decision was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    /// No consent request has this id.
    #[error("consent request not found")]
    NotFound,
    /// The request belongs to another user.
    #[error("consent request belongs to another user")]
    OtherUser,
    /// The request was approved or denied already.
    #[error("consent request already decided")]
    AlreadyDecided,
    /// The request was not decided in time.
    #[error("consent request expired")]
    Expired,
}

/// Locks an active agent's row until the transaction ends, so it cannot be disabled meanwhile
/// (the no-op update takes the row lock on PostgreSQL and the write lock on SQLite).
async fn hold_active_agent(tx: &mut Transaction<'_, Any>, id: &str) -> Result<(), RecordError> {
    let held = sqlx::query("UPDATE agents SET status = status WHERE id = $1 AND status = 'active'")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    match held.rows_affected() {
        1 => Ok(()),
        _ => Err(RecordError::AgentNotActive),
    }
}

/// Locks an active grant of this agent and user until the transaction ends.
async fn hold_active_grant(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    agent_id: &str,
    user_id: &str,
) -> Result<(), RecordError> {
    let held = sqlx::query(
        "UPDATE grants SET status = status \
         WHERE id = $1 AND agent_id = $2 AND user_id = $3 AND status = 'active'",
    )
    .bind(id)
    .bind(agent_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    match held.rows_affected() {
        1 => Ok(()),
        _ => Err(RecordError::GrantNotActive),
    }
}

/// Whether `table` has a row whose `column` equals `value` (names are fixed, never input).
async fn exists(
    tx: &mut Transaction<'_, Any>,
    table: &'static str,
    column: &'static str,
    value: &str,
) -> Result<bool, StoreError> {
    let sql = format!("SELECT {column} FROM {table} WHERE {column} = $1");
    let row = sqlx::query(&sql)
        .bind(value)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// Non-empty, at most [`MAX_TEXT_LEN`] bytes, no control characters.
fn text(field: &'static str, value: &str) -> Result<(), RecordError> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
        return Err(RecordError::Invalid(field));
    }
    Ok(())
}

fn optional_text(field: &'static str, value: Option<&str>) -> Result<(), RecordError> {
    value.map_or(Ok(()), |v| text(field, v))
}
