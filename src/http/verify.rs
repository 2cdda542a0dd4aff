//! The verifier's routes (DESIGN §5): `POST /v1/challenges`, `POST /v1/checkouts/verify`,
//! `POST /v1/payments/verify`.
//!
//! A verification request is read in this order: media type (`415`), strict JSON body (`400`),
//! the agent's DPoP-bound token and proof for this route (`401`/`403`), the idempotency key
//! (`409` while another request holds it, `422` when it was used with another body, the first
//! answer byte for byte on an exact retry), then the decision (`200`, `Success` or `Error`). A
//! store failure is `503` and decides nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::identity::token::AccessTokenClaims;
use crate::jose::sha256_b64;
use crate::store::{Begin, DecisionLedger as _};
use crate::verifier::{Held, Presentation, Role, VerifierService, PRESENT_SCOPE};

/// How long a request may hold an idempotency key before another may take it over, seconds.
const IDEMPOTENCY_HOLD: i64 = 30;

/// Largest verification request body, bytes: two chains at their limit and a checkout JWT.
pub const VERIFY_MAX_BODY: usize =
    2 * crate::sdjwt::MAX_CHAIN_LEN + crate::jose::MAX_JWS_LEN + 4096;

/// The rate-limit bucket of challenges asked for without a token.
const ANONYMOUS: &str = "\u{0}anonymous";

/// Longest idempotency key, bytes.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A verifier request that is refused before any decision: the one mapping to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not `application/json`.
    MediaType,
    /// The body is not the request this route takes.
    Malformed(&'static str),
    /// Another request with this idempotency key is being decided.
    IdempotencyInUse,
    /// This idempotency key was used with another body.
    IdempotencyReused,
    /// The store is unavailable: nothing was decided.
    Unavailable,
    /// This instance does not run the verifier role.
    NotServed,
    /// The agent is over its rate; retry after this many seconds.
    RateLimited(u64),
}

impl RequestError {
    fn wire(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            RequestError::MediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/json",
            ),
            RequestError::Malformed(rule) => (StatusCode::BAD_REQUEST, "invalid_request", rule),
            RequestError::IdempotencyInUse => (
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "another request with this idempotency key is being decided",
            ),
            RequestError::IdempotencyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this idempotency key was used with another request body",
            ),
            RequestError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is temporarily unavailable",
            ),
            RequestError::NotServed => (
                StatusCode::NOT_FOUND,
                "not_found",
                "this instance does not run the verifier",
            ),
            RequestError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this agent",
            ),
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let (status, code, description) = self.wire();
        match self {
            RequestError::Unavailable => tracing::error!(code, "verifier request failed"),
            _ => tracing::debug!(code, reason = description, "verifier request refused"),
        }
        let body = json!({"error": code, "error_description": description});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let RequestError::RateLimited(seconds) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Either refusal on the way out: before the decision (ours) or at authentication (OAuth).
#[derive(Debug)]
pub enum VerifyError {
    /// The request itself.
    Request(RequestError),
    /// The token or proof.
    Auth(ApiError),
}

impl From<RequestError> for VerifyError {
    fn from(e: RequestError) -> Self {
        VerifyError::Request(e)
    }
}

impl IntoResponse for VerifyError {
    fn into_response(self) -> Response {
        match self {
            VerifyError::Request(e) => e.into_response(),
            VerifyError::Auth(e) => e.into_response(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeBody {
    agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    checkout_mandate: String,
    checkout_jwt: String,
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    payment_mandate: String,
    checkout_jwt: String,
    checkout_mandate: Option<String>,
    idempotency_key: Option<String>,
}

/// `POST /v1/challenges`: a fresh single-use nonce for this verifier. With an access token the
/// challenge is bound to the calling agent; without one, to the `agent` named in the body, if any.
pub async fn challenge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VerifyError> {
    let verifier = served(&state)?;
    let now = state.now();
    let parsed: ChallengeBody = if body.is_empty() {
        ChallengeBody { agent: None }
    } else {
        json_body(&headers, &body)?
    };
    let agent = match headers.get(header::AUTHORIZATION) {
        Some(_) => {
            let audience = &verifier.config().audience;
            let claims = authenticate_agent(
                &state,
                &headers,
                "POST",
                "/v1/challenges",
                audience,
                PRESENT_SCOPE,
                now,
            )
            .await?;
            if parsed
                .agent
                .as_deref()
                .is_some_and(|a| a != claims.client_id)
            {
                return Err(RequestError::Malformed("agent is not the token's agent").into());
            }
            Some(claims.client_id)
        }
        None => {
            // Unauthenticated challenges share one bucket, so they cannot flood the store.
            state
                .limits
                .agents
                .check(ANONYMOUS)
                .map_err(RequestError::RateLimited)?;
            parsed.agent
        }
    };
    if agent
        .as_deref()
        .is_some_and(|a| a.is_empty() || a.len() > 1024)
    {
        return Err(RequestError::Malformed("agent must be an agent id").into());
    }
    let issued = verifier
        .challenge(agent.as_deref(), now)
        .await
        .map_err(|_| RequestError::Unavailable)?;
    let body = json!({"nonce": issued.nonce, "aud": issued.aud, "expires_at": issued.expires_at});
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /v1/checkouts/verify` (merchant role).
pub async fn checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VerifyError> {
    let parsed: CheckoutBody = json_body(&headers, &body)?;
    let presentation = Presentation {
        role: Role::Checkout,
        chain: required(&parsed.checkout_mandate, "checkout_mandate is required")?,
        checkout_jwt: required(&parsed.checkout_jwt, "checkout_jwt is required")?,
        order_chain: None,
    };
    let key = parsed.idempotency_key.as_deref();
    verify(
        &state,
        &headers,
        &body,
        "/v1/checkouts/verify",
        &presentation,
        key,
    )
    .await
}

/// `POST /v1/payments/verify` (credential provider / processor role).
pub async fn payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VerifyError> {
    let parsed: PaymentBody = json_body(&headers, &body)?;
    let order_chain = match parsed.checkout_mandate.as_deref() {
        Some(chain) => Some(required(chain, "checkout_mandate must not be empty")?),
        None => None,
    };
    let presentation = Presentation {
        role: Role::Payment,
        chain: required(&parsed.payment_mandate, "payment_mandate is required")?,
        checkout_jwt: required(&parsed.checkout_jwt, "checkout_jwt is required")?,
        order_chain,
    };
    let key = parsed.idempotency_key.as_deref();
    verify(
        &state,
        &headers,
        &body,
        "/v1/payments/verify",
        &presentation,
        key,
    )
    .await
}

async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
    presentation: &Presentation<'_>,
    body_key: Option<&str>,
) -> Result<Response, VerifyError> {
    let key = idempotency_key(headers, body_key);
    let answer = decide(state, headers, body, path, presentation, key).await?;
    Ok(decision_response(answer))
}

/// Authenticates the agent at `path`, holds the idempotency key (scoped to the agent and the
/// path; `request` is what an exact retry must repeat) and decides: the answer's JSON text. A
/// malformed key is refused once the agent is known.
pub(super) async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    request: &[u8],
    path: &str,
    presentation: &Presentation<'_>,
    key: Result<Option<&str>, RequestError>,
) -> Result<String, VerifyError> {
    let verifier = served(state)?;
    let now = state.now();
    let audience = &verifier.config().audience;
    let claims =
        authenticate_agent(state, headers, "POST", path, audience, PRESENT_SCOPE, now).await?;
    let key = key?;
    let store = verifier.tokens().store();

    // The key is scoped to the agent and the route, so no one else can read or block it.
    let scoped = key.map(|k| sha256_b64(format!("{}\n{path}\n{k}", claims.client_id).as_bytes()));
    let request_hash = sha256_b64(request);
    if let Some(scoped) = &scoped {
        match store
            .begin_idempotent(scoped, &request_hash, now, IDEMPOTENCY_HOLD)
            .await
            .map_err(|_| RequestError::Unavailable)?
        {
            Begin::Started => {}
            Begin::Replay(first) => return Ok(first),
            Begin::Conflict => return Err(RequestError::IdempotencyReused.into()),
            Begin::InProgress => return Err(RequestError::IdempotencyInUse.into()),
        }
    }
    let held = scoped.as_deref().map(|key| Held {
        key,
        request_hash: &request_hash,
    });
    match verifier.decide(presentation, &claims, held, now).await {
        Ok(answer) => {
            state
                .metrics
                .decision(presentation.role.action(), answer.accepted, answer.reason);
            Ok(answer.body)
        }
        Err(_) => {
            if let Some(scoped) = &scoped {
                // Best effort: a lapsed hold is taken over by the next retry anyway.
                let _ = store.release_idempotent(scoped, &request_hash).await;
            }
            Err(RequestError::Unavailable.into())
        }
    }
}

fn decision_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn served(state: &AppState) -> Result<&VerifierService, RequestError> {
    state.verifier.as_deref().ok_or(RequestError::NotServed)
}

/// Authenticates the calling agent at a protected route — a token for `audience` holding
/// `scope`, with a DPoP proof for this method and path — then takes one request from its rate
/// bucket. Shared by the verifier's and the wallet's routes.
pub(super) async fn authenticate_agent(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    audience: &str,
    scope: &str,
    now: i64,
) -> Result<AccessTokenClaims, VerifyError> {
    let single = |name: &str| -> Result<Option<&str>, VerifyError> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(RequestError::Malformed("a header is repeated").into());
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| RequestError::Malformed("a header is not text").into())
            })
            .transpose()
    };
    let authorization = single("authorization")?;
    let proof = single("dpop")?;
    let claims = state
        .tokens
        .authenticate_resource(
            authorization,
            proof,
            method,
            path,
            audience,
            Some(scope),
            now,
        )
        .await
        .map_err(|e| VerifyError::Auth(ApiError::from(e).at_resource()))?;
    state
        .limits
        .agents
        .check(&claims.client_id)
        .map_err(RequestError::RateLimited)?;
    Ok(claims)
}

fn idempotency_key<'a>(
    headers: &'a HeaderMap,
    body_key: Option<&'a str>,
) -> Result<Option<&'a str>, RequestError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let header_key = values
        .next()
        .map(|v| {
            v.to_str()
                .map_err(|_| RequestError::Malformed("Idempotency-Key is not text"))
        })
        .transpose()?;
    if values.next().is_some() {
        return Err(RequestError::Malformed("Idempotency-Key is repeated"));
    }
    let key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(RequestError::Malformed(
                "Idempotency-Key and idempotency_key differ",
            ))
        }
        (Some(k), _) | (None, Some(k)) => Some(k),
        (None, None) => None,
    };
    key.map(checked_key).transpose()
}

/// An idempotency key as given, if it is 1 to 255 visible ASCII characters.
pub(super) fn checked_key(key: &str) -> Result<&str, RequestError> {
    match !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        true => Ok(key),
        false => Err(RequestError::Malformed(
            "idempotency key must be 1 to 255 visible ASCII characters",
        )),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, RequestError> {
    if super::forms::media_type(headers).as_deref() != Some("application/json") {
        return Err(RequestError::MediaType);
    }
    let value = crate::json::parse(body, VERIFY_MAX_BODY)
        .map_err(|_| RequestError::Malformed("body is not strict JSON"))?;
    serde_json::from_value(value)
        .map_err(|_| RequestError::Malformed("body does not match this route's request"))
}

fn required<'a>(value: &'a str, rule: &'static str) -> Result<&'a str, RequestError> {
    match value.is_empty() {
        true => Err(RequestError::Malformed(rule)),
        false => Ok(value),
    }
}
