//! The agent registry (DESIGN §5), for the administrator: register, list, show, disable.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{refused, ApiError, AppState};
use crate::identity::admin::AgentRegistration;
use crate::identity::{OAuthCode, TokenError};
use crate::store::records::{Agent, IdentityRecords};
use crate::store::StoreError;

/// `POST /v1/agents`.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&state, &headers)?;
    let value = crate::json::parse(&body, super::MAX_BODY)
        .map_err(|_| refused(OAuthCode::InvalidRequest, "body is not a JSON object"))?;
    let registration: AgentRegistration = serde_json::from_value(value).map_err(|_| {
        refused(
            OAuthCode::InvalidRequest,
            "body does not match the agent registration",
        )
    })?;
    let agent = state
        .tokens
        .register_agent(&registration, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(agent_json(&agent))))
}

/// `GET /v1/agents`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let agents = state
        .tokens
        .store()
        .agents()
        .await
        .map_err(TokenError::from)?;
    Ok(Json(
        json!({ "agents": agents.iter().map(agent_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /v1/agents/{id}`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    match state.tokens.store().agent(&id).await {
        Ok(agent) => Ok(Json(agent_json(&agent))),
        Err(StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(TokenError::from(e).into()),
    }
}

/// `POST /v1/agents/{id}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let revoked = state.tokens.disable_agent(&id, state.now()).await?;
    Ok(Json(json!({
        "id": id,
        "status": "disabled",
        "revoked_grants": revoked.grants,
        "revoked_tokens": revoked.tokens,
        "revoked_mandates": revoked.mandates,
    })))
}

/// An agent as the API shows it: keys as a JWKS.
pub fn agent_json(agent: &Agent) -> Value {
    let keys: Vec<Value> = agent
        .keys
        .iter()
        .filter_map(|k| serde_json::from_str(&k.jwk).ok())
        .collect();
    json!({
        "id": agent.id,
        "name": agent.name,
        "owner": agent.owner,
        "jwks": {"keys": keys},
        "scopes": agent.scopes,
        "audiences": agent.audiences,
        "max_delegation_depth": agent.max_delegation_depth,
        "federated_credentials": agent.federated_credentials,
        "redirect_uris": agent.redirect_uris,
        "status": agent.status,
        "created_at": agent.created_at,
        "disabled_at": agent.disabled_at,
    })
}

fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.is_admin(headers) {
        true => Ok(()),
        false => Err(refused(
            OAuthCode::InvalidToken,
            "the admin token is required",
        )),
    }
}

fn not_found() -> ApiError {
    refused(OAuthCode::InvalidRequest, "agent unknown")
}
