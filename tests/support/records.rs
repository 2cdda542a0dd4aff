//! Fixtures for the record tests: a user, agents with real P-256 keys, a grant, a mandate, and a
//! seeded store holding user `u-1`, agent `a-1` and grant `g-1`, all at one fixed time.
//!
//! Shared by `store_identity` and `store_wallet`; each test file keeps the builders only it uses.

use ap2_mandate::jose::SigningKey;
use ap2_mandate::store::records::{
    Agent, AgentKey, AgentStatus, FederatedCredential, Grant, GrantStatus, IdentityRecords,
    NewMandate, PasswordHash, RecordError, User, UserStatus,
};
use ap2_mandate::store::{Store, StoreError};
use serde_json::json;

/// The fixed "now" of every fixture, in seconds since the epoch.
pub const NOW: i64 = 1_780_000_000;

/// An active user `id` whose username is `{id}@example.com`.
pub fn user(id: &str) -> User {
    User {
        id: id.into(),
        username: format!("{id}@example.com"),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        status: UserStatus::Active,
        created_at: NOW,
    }
}

/// A fresh P-256 key whose JWK carries `kid`, stored under `kid`.
pub fn key(kid: &str) -> AgentKey {
    key_named(kid, Some(kid))
}

/// A key whose JWK carries `jwk_kid` (or no `kid` at all), stored under `kid`.
pub fn key_named(kid: &str, jwk_kid: Option<&str>) -> AgentKey {
    let signing = SigningKey::generate(jwk_kid.map(String::from)).unwrap();
    AgentKey {
        kid: kid.into(),
        jkt: signing.public().thumbprint(),
        jwk: signing.public().to_value().to_string(),
    }
}

/// An active agent `id` with these keys and one federated credential.
pub fn agent(id: &str, keys: Vec<AgentKey>) -> Agent {
    Agent {
        id: id.into(),
        name: format!("Shopping agent {id}"),
        owner: "owner@example.com".into(),
        keys,
        scopes: vec!["mandates:request".into(), "payments:present".into()],
        audiences: vec!["https://wallet.example".into()],
        max_delegation_depth: 2,
        federated_credentials: vec![FederatedCredential {
            issuer: "https://login.example".into(),
            subject: format!("workload-{id}"),
            audience: "api://ap2".into(),
        }],
        redirect_uris: vec![],
        status: AgentStatus::Active,
        created_at: NOW,
        disabled_at: None,
    }
}

/// An active grant of `mandates:request` from `user_id` to `agent_id`, for an hour.
pub fn grant(id: &str, user_id: &str, agent_id: &str) -> Grant {
    Grant {
        id: id.into(),
        user_id: user_id.into(),
        agent_id: agent_id.into(),
        scope: vec!["mandates:request".into()],
        authorization_details: Some(json!([{"type": "payment_mandate", "max": "100.00"}])),
        status: GrantStatus::Active,
        created_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
    }
}

/// A mandate of `u-1` for `a-1` under grant `g-1`, in status list `list`.
pub fn mandate(id: &str, list: &str) -> NewMandate {
    NewMandate {
        id: id.into(),
        hash: format!("hash-{id}"),
        status_list_id: list.into(),
        user_id: "u-1".into(),
        agent_id: "a-1".into(),
        grant_id: Some("g-1".into()),
        consent_id: None,
        exp: NOW + 86_400,
    }
}

/// User `u-1`, agent `a-1` with one key, and grant `g-1` between them.
pub async fn seed(store: &Store) -> Agent {
    let a1 = agent("a-1", vec![key("k-1")]);
    store.create_user(&user("u-1")).await.unwrap();
    store.create_agent(&a1).await.unwrap();
    store
        .create_grant(&grant("g-1", "u-1", "a-1"))
        .await
        .unwrap();
    a1
}

/// Whether a write was refused by the store with `error`.
pub fn refused_as(result: Result<(), RecordError>, error: StoreError) -> bool {
    result == Err(RecordError::Store(error))
}
