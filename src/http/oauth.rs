//! The token endpoint (RFC 6749 §3.2, RFC 8693, RFC 9449), revocation (RFC 7009),
//! introspection (RFC 7662), metadata (RFC 8414), JWKS, and `GET /v1/whoami`, a protected
//! resource that answers with what the presented token says.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::forms::Form;
use super::{refused, ApiError, AppState};
use crate::identity::grants::{parse_details, CodeRedemption, ExchangeRequest};
use crate::identity::service::{Caller, ClientAuth};
use crate::identity::token::act_value;
use crate::identity::{split_scope, OAuthCode, TokenError};
use crate::store::KeyVault;

use crate::identity::grants::TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE;

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(state): State<AppState>) -> Json<Value> {
    Json(state.tokens.metadata())
}

/// `GET /.well-known/jwks.json`: every key this instance signs with that is not retired.
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = state.now();
    state.tokens.signing_key(now).await?;
    let keys = state
        .tokens
        .store()
        .verification_keys(now)
        .await
        .map_err(TokenError::from)?;
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut v = k.to_value();
            v["use"] = "sig".into();
            v["alg"] = "ES256".into();
            v
        })
        .collect();
    let mut response = Json(json!({ "keys": keys })).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    Ok(response)
}

/// `POST /oauth2/token`.
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.now();
    let nonce = state.tokens.dpop_nonce(now);
    match token_inner(&state, &headers, &body, now).await {
        Ok(body) => {
            let mut response = Json(body).into_response();
            let h = response.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(&nonce) {
                h.insert("dpop-nonce", v);
            }
            response
        }
        Err((error, client)) => {
            if !matches!(
                &error.error,
                TokenError::Refused {
                    code: OAuthCode::UseDpopNonce,
                    ..
                }
            ) {
                state
                    .tokens
                    .audit_refusal("token.request", &error.error, client.as_deref(), now)
                    .await;
            }
            error.with_nonce(nonce).into_response()
        }
    }
}

async fn token_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Value, (ApiError, Option<String>)> {
    let no_client = |e: ApiError| (e, None);
    let form = Form::parse(headers, body).map_err(no_client)?;
    let grant_type = form
        .require("grant_type", "grant_type missing")
        .map_err(no_client)?;
    if grant_type != "authorization_code" && grant_type != TOKEN_EXCHANGE {
        return Err((
            refused(OAuthCode::UnsupportedGrantType, "grant type not supported"),
            None,
        ));
    }

    // DPoP first: a client told to use a nonce has spent nothing yet.
    let proof = single_header(headers, "dpop").map_err(no_client)?;
    let tokens = &state.tokens;
    let require_nonce = tokens.config().require_dpop_nonce;
    let proof = tokens
        .check_dpop(proof, "POST", "/oauth2/token", None, require_nonce, now)
        .await
        .map_err(|e| (e.into(), None))?;

    let agent = tokens
        .authenticate_client(&client_auth(&form), now)
        .await
        // Not yet authenticated: the audit record names no agent rather than a claimed one.
        .map_err(|e| (e.into(), None))?;
    let with_client = |e: TokenError| (ApiError::from(e), Some(agent.id.clone()));
    let issued = if grant_type == "authorization_code" {
        let request = CodeRedemption {
            code: field(&form, "code", "code missing").map_err(|e| (e, Some(agent.id.clone())))?,
            redirect_uri: field(&form, "redirect_uri", "redirect_uri missing")
                .map_err(|e| (e, Some(agent.id.clone())))?,
            code_verifier: field(&form, "code_verifier", "code_verifier missing")
                .map_err(|e| (e, Some(agent.id.clone())))?,
            resource: form.get("resource").map(str::to_owned),
        };
        tokens
            .redeem_code(&request, &agent, &proof, now)
            .await
            .map_err(with_client)?
    } else {
        let request = exchange_request(&form).map_err(|e| (e, Some(agent.id.clone())))?;
        tokens
            .exchange(&request, &agent, &proof, now)
            .await
            .map_err(with_client)?
    };
    Ok(issued.response(grant_type == TOKEN_EXCHANGE, now))
}

fn exchange_request(form: &Form) -> Result<ExchangeRequest, ApiError> {
    let details = match form.get("authorization_details") {
        Some(text) => Some(
            parse_details(text)
                .map_err(|rule| refused(OAuthCode::InvalidAuthorizationDetails, rule))?,
        ),
        None => None,
    };
    Ok(ExchangeRequest {
        subject_token: field(form, "subject_token", "subject_token missing")?,
        subject_token_type: field(form, "subject_token_type", "subject_token_type missing")?,
        actor_token: form.get("actor_token").map(str::to_owned),
        actor_token_type: form.get("actor_token_type").map(str::to_owned),
        requested_token_type: form.get("requested_token_type").map(str::to_owned),
        resource: form.get("resource").map(str::to_owned),
        audience: form.get("audience").map(str::to_owned),
        scope: form.get("scope").map(split_scope),
        authorization_details: details,
    })
}

/// `POST /oauth2/revoke` (RFC 7009): the admin, or the token's own client.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = state.now();
    let form = Form::parse(&headers, &body)?;
    let caller = caller(&state, &headers, &form, now).await?;
    let token = form.require("token", "token missing")?;
    state.tokens.revoke(token, &caller, now).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], "").into_response())
}

/// `POST /oauth2/introspect` (RFC 7662): the admin, or the token's own client.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = state.now();
    let form = Form::parse(&headers, &body)?;
    let caller = caller(&state, &headers, &form, now).await?;
    let token = form.require("token", "token missing")?;
    let answer = state.tokens.introspect(token, &caller, now).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

/// `GET /v1/whoami`: a protected resource for this service's own audience.
pub async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let now = state.now();
    let tokens = &state.tokens;
    let authorization = single_header(&headers, "authorization").map_err(ApiError::at_resource)?;
    let proof = single_header(&headers, "dpop").map_err(ApiError::at_resource)?;
    let issuer = tokens.config().issuer.clone();
    let claims = tokens
        .authenticate_resource(
            authorization,
            proof,
            "GET",
            "/v1/whoami",
            &issuer,
            None,
            now,
        )
        .await
        .map_err(|e| ApiError::from(e).at_resource())?;
    Ok(Json(json!({
        "sub": claims.sub,
        "client_id": claims.client_id,
        "act": act_value(&claims.actors),
        "scope": claims.scope.join(" "),
        "aud": claims.aud,
        "exp": claims.exp,
        "grant_id": claims.grant_id,
    })))
}

async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
    now: i64,
) -> Result<Caller, ApiError> {
    if state.is_admin(headers) {
        return Ok(Caller::Admin);
    }
    let agent = state
        .tokens
        .authenticate_client(&client_auth(form), now)
        .await?;
    Ok(Caller::Agent(agent.id))
}

fn client_auth(form: &Form) -> ClientAuth<'_> {
    ClientAuth {
        client_id: form.get("client_id"),
        assertion_type: form.get("client_assertion_type"),
        assertion: form.get("client_assertion"),
    }
}

fn field(form: &Form, name: &str, rule: &'static str) -> Result<String, ApiError> {
    form.require(name, rule).map(str::to_owned)
}

/// A header that may appear at most once (RFC 9449 §4.3: exactly one DPoP header).
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(refused(OAuthCode::InvalidRequest, "a header is repeated"));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| refused(OAuthCode::InvalidRequest, "a header is not text"))
        })
        .transpose()
}
