//! The wallet's routes (DESIGN §5): `POST /v1/mandate-requests`, `GET
//! /v1/mandate-requests/{id}`, the consent page `GET/POST /consent/{id}`, and `POST
//! /v1/mandates/{id}/revoke`.
//!
//! The consent page is plain server-rendered HTML with every value escaped, no scripts, a
//! strict content security policy, `X-Frame-Options: DENY`, and anti-forgery tokens on every
//! form (a double-submit cookie before sign-in, the session's token after). It shows, in plain
//! words made from the stored request only, which agent asks, for whom, and every limit.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::authorize::{
    bad_request, current_session, forbidden, page, sign_in_form, start_signed_in, unavailable,
    with_session_cookie,
};
use super::forms::{escape, media_type, Form};
use super::verify::{authenticate_agent, RequestError, VerifyError};
use super::AppState;
use crate::identity::token::AccessTokenClaims;
use crate::jose::ct_eq;
use crate::store::records::{ConsentStatus, IdentityRecords as _, Session, WalletRecords as _};
use crate::store::StoreError;
use crate::wallet::{WalletError, WalletService, REQUEST_SCOPE};

const CONSENT_CSRF_COOKIE: &str = "ap2_consent_csrf";

impl IntoResponse for WalletError {
    fn into_response(self) -> Response {
        let (status, code, description) = match self {
            WalletError::Invalid(rule) => (StatusCode::BAD_REQUEST, "invalid_request", rule),
            WalletError::Forbidden(rule) => (StatusCode::FORBIDDEN, "access_denied", rule),
            WalletError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such request"),
            WalletError::Conflict(rule) => (StatusCode::CONFLICT, "conflict", rule),
            WalletError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is temporarily unavailable",
            ),
        };
        match self {
            WalletError::Unavailable => tracing::error!(code, "wallet request failed"),
            _ => tracing::debug!(code, reason = description, "wallet request refused"),
        }
        let mut response = (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A refusal of a wallet API call: before (authentication) or at the wallet.
pub enum WalletApiError {
    /// The token, proof or request.
    Request(VerifyError),
    /// The wallet's own rules.
    Wallet(WalletError),
}

impl From<WalletError> for WalletApiError {
    fn from(e: WalletError) -> Self {
        WalletApiError::Wallet(e)
    }
}

impl From<VerifyError> for WalletApiError {
    fn from(e: VerifyError) -> Self {
        WalletApiError::Request(e)
    }
}

impl From<RequestError> for WalletApiError {
    fn from(e: RequestError) -> Self {
        WalletApiError::Request(e.into())
    }
}

impl IntoResponse for WalletApiError {
    fn into_response(self) -> Response {
        match self {
            WalletApiError::Request(e) => e.into_response(),
            WalletApiError::Wallet(e) => e.into_response(),
        }
    }
}

fn served(state: &AppState) -> Result<&WalletService, WalletError> {
    state.wallet.as_deref().ok_or(WalletError::NotFound)
}

async fn authenticate(
    state: &AppState,
    wallet: &WalletService,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<AccessTokenClaims, WalletApiError> {
    let audience = &wallet.config().audience;
    Ok(authenticate_agent(
        state,
        headers,
        method,
        path,
        audience,
        REQUEST_SCOPE,
        state.now(),
    )
    .await?)
}

/// `POST /v1/mandate-requests`.
pub async fn propose(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WalletApiError> {
    let wallet = served(&state)?;
    if media_type(&headers).as_deref() != Some("application/json") {
        return Err(RequestError::MediaType.into());
    }
    let claims = authenticate(&state, wallet, &headers, "POST", "/v1/mandate-requests").await?;
    let consent = wallet.propose(&claims, &body, state.now()).await?;
    let answer = json!({
        "id": consent.id,
        "status": "pending",
        "consent_url": format!("{}/consent/{}", wallet.config().issuer, consent.id),
        "expires_at": consent.expires_at,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /v1/mandate-requests/{id}`.
pub async fn fetch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, WalletApiError> {
    let wallet = served(&state)?;
    let path = format!("/v1/mandate-requests/{id}");
    let claims = authenticate(&state, wallet, &headers, "GET", &path).await?;
    Ok(Json(wallet.fetch(&claims, &id, state.now()).await?))
}

/// `POST /v1/mandates/{id}/revoke` (admin).
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, WalletApiError> {
    let wallet = served(&state)?;
    if !state.is_admin(&headers) {
        return Err(WalletError::Forbidden("the admin token is required").into());
    }
    let revoked = wallet.revoke(&id, None, state.now()).await?;
    Ok(Json(
        json!({"id": id, "status": "revoked", "changed": revoked}),
    ))
}

/// `GET /v1/status-lists/{id}`: the signed status list token.
pub async fn status_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WalletApiError> {
    let wallet = served(&state)?;
    let token = wallet.status_list_token(&id, state.now()).await?;
    let mut response = token.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/statuslist+jwt"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    Ok(response)
}

/// `GET /consent/{id}`: sign in, or review the request.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(wallet) = served(&state) else {
        return not_found();
    };
    if !plain_id(&id) {
        return not_found();
    }
    let now = state.now();
    match current_session(&state, &headers, now).await {
        Some(session) => review_page(&state, wallet, &session, &id, now).await,
        None => sign_in_page(&id, None, StatusCode::OK),
    }
}

/// `POST /consent/{id}`: sign in, approve or deny.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(wallet) = served(&state) else {
        return not_found();
    };
    if !plain_id(&id) {
        return not_found();
    }
    let Ok(form) = Form::parse(&headers, &body) else {
        return bad_request("<p>The form is malformed.</p>");
    };
    let now = state.now();
    match form.get("action") {
        Some("signin") => sign_in(&state, wallet, &headers, &form, &id, now).await,
        Some(action @ ("approve" | "deny")) => {
            let Some(session) = current_session(&state, &headers, now).await else {
                return sign_in_page(
                    &id,
                    Some("Your session ended. Please sign in again."),
                    StatusCode::UNAUTHORIZED,
                );
            };
            if !ct_eq(
                form.get("csrf").unwrap_or("").as_bytes(),
                session.csrf.as_bytes(),
            ) {
                return forbidden();
            }
            match wallet.decide(&session.user_id, &id, action == "approve", now).await {
                Ok(issued) if action == "approve" => page(
                    StatusCode::OK,
                    "Approved",
                    &format!(
                        "<p id=\"outcome\">Approved. {} mandates were signed; the agent can fetch them now.</p>",
                        issued.len()
                    ),
                ),
                Ok(_) => page(StatusCode::OK, "Denied", "<p id=\"outcome\">Denied. Nothing was signed.</p>"),
                Err(e) => wallet_error_page(e),
            }
        }
        _ => bad_request("<p>Unknown action.</p>"),
    }
}

async fn sign_in(
    state: &AppState,
    wallet: &WalletService,
    headers: &HeaderMap,
    form: &Form,
    id: &str,
    now: i64,
) -> Response {
    let retry = |message: Option<&str>, status| sign_in_page(id, message, status);
    match start_signed_in(state, headers, form, CONSENT_CSRF_COOKIE, &retry, now).await {
        Ok((value, session)) => {
            let response = review_page(state, wallet, &session, id, now).await;
            with_session_cookie(state, response, &value, &session, now)
        }
        Err(response) => response,
    }
}

/// The request in plain words, with approve and deny, or why it cannot be decided.
async fn review_page(
    state: &AppState,
    wallet: &WalletService,
    session: &Session,
    id: &str,
    now: i64,
) -> Response {
    let store = state.tokens.store();
    let consent = match store.consent(id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return not_found(),
        Err(_) => return unavailable(),
    };
    if consent.user_id != session.user_id {
        return page(
            StatusCode::FORBIDDEN,
            "Not your request",
            "<p id=\"outcome\">This request was made for another person. Nothing was changed.</p>",
        );
    }
    match consent.status_at(now) {
        ConsentStatus::Pending => {}
        ConsentStatus::Expired => {
            return page(
                StatusCode::CONFLICT,
                "Request expired",
                "<p id=\"outcome\">This request has expired. Nothing was signed.</p>",
            )
        }
        decided => {
            return page(
                StatusCode::CONFLICT,
                "Already decided",
                &format!(
                    "<p id=\"outcome\">This request was {} already. Nothing was changed.</p>",
                    decided.as_str()
                ),
            )
        }
    }
    let Ok(agent) = store.agent(&consent.agent_id).await else {
        return unavailable();
    };
    let reviewed = match wallet.review(&consent.body, None, consent.created_at) {
        Ok(r) => r,
        Err(e) => return wallet_error_page(e),
    };
    let (checkout, payment) = reviewed.lines();
    let list = |lines: &[String], id: &str| -> String {
        let items: String = lines
            .iter()
            .map(|l| format!("<li>{}</li>", escape(l)))
            .collect();
        format!("<ul id=\"{id}\">{items}</ul>")
    };
    let until = crate::calendar::format_utc(reviewed.expires_at);
    let body = format!(
        "<p><strong id=\"agent-name\">{name}</strong> (agent <code>{agent_id}</code>, owned by \
         <span id=\"agent-owner\">{owner}</span>) asks you to sign payment mandates it can use \
         on its own, within these limits, until <span id=\"until\">{until}</span>.</p>\
         <h2>What it may buy</h2>{checkout}\
         <h2>How it may pay</h2>{payment}\
         <p>Only the agent's key <code>{jkt}</code> can use them. You can revoke them at any time.</p>\
         <form method=\"post\" action=\"/consent/{id}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"action\" value=\"approve\" id=\"approve\">Approve and sign</button> \
         <button type=\"submit\" name=\"action\" value=\"deny\" id=\"deny\">Deny</button></form>",
        name = escape(&agent.name),
        agent_id = escape(&agent.id),
        owner = escape(&agent.owner),
        until = escape(&until),
        checkout = list(&checkout, "checkout"),
        payment = list(&payment, "payment"),
        jkt = escape(&reviewed.cnf.thumbprint()),
        id = escape(id),
        csrf = escape(&session.csrf),
    );
    page(StatusCode::OK, "Approve payment mandates", &body)
}

fn sign_in_page(id: &str, message: Option<&str>, status: StatusCode) -> Response {
    sign_in_form(
        &format!("/consent/{id}"),
        "<p>Sign in to review a request from an agent.</p>",
        "",
        CONSENT_CSRF_COOKIE,
        message,
        status,
    )
}

fn mandates_sign_in(message: Option<&str>, status: StatusCode) -> Response {
    sign_in_form(
        "/mandates",
        "<p>Sign in to see the mandates you approved.</p>",
        "",
        CONSENT_CSRF_COOKIE,
        message,
        status,
    )
}

fn wallet_error_page(e: WalletError) -> Response {
    match e {
        WalletError::Forbidden(_) => page(
            StatusCode::FORBIDDEN,
            "Not your request",
            "<p id=\"outcome\">This request was made for another person. Nothing was changed.</p>",
        ),
        WalletError::NotFound => not_found(),
        WalletError::Conflict(rule) => page(
            StatusCode::CONFLICT,
            "Cannot be decided",
            &format!(
                "<p id=\"outcome\">{}. Nothing was changed.</p>",
                escape(&capitalize(rule))
            ),
        ),
        WalletError::Invalid(rule) => bad_request(&format!(
            "<p id=\"outcome\">{}. Nothing was signed.</p>",
            escape(&capitalize(rule))
        )),
        WalletError::Unavailable => unavailable(),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Our ids are base64url; anything else in a path is no request of ours (and never reaches a
/// cookie's `Path`).
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p id=\"outcome\">There is no such request.</p>",
    )
}

impl WalletService {
    /// Revokes a mandate (its status bit is set); `true` if this call revoked it.
    pub async fn revoke(
        &self,
        id: &str,
        user: Option<&str>,
        now: i64,
    ) -> Result<bool, WalletError> {
        let store = self.tokens().store();
        let mandate = store.mandate(id).await?;
        if user.is_some_and(|u| u != mandate.user_id) {
            return Err(WalletError::Forbidden("this mandate is another user's"));
        }
        let changed = store.revoke_mandate(id, now).await?;
        let record = crate::store::AuditRecord {
            at: now,
            action: "mandate.revoke".into(),
            outcome: "success".into(),
            agent_id: Some(mandate.agent_id.clone()),
            user_id: Some(mandate.user_id.clone()),
            grant_id: mandate.grant_id.clone(),
            consent_id: mandate.consent_id.clone(),
            mandate_hash: Some(mandate.hash.clone()),
            correlation_id: mandate.id.clone(),
            ..Default::default()
        };
        crate::store::AuditLog::append(store, &record).await?;
        Ok(changed)
    }
}

/// `GET /mandates`: the signed-in user's active mandates, each with a revoke button.
pub async fn my_mandates(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.wallet.is_none() {
        return not_found();
    }
    let now = state.now();
    match current_session(&state, &headers, now).await {
        Some(session) => mandates_page(&state, &session, None, now).await,
        None => mandates_sign_in(None, StatusCode::OK),
    }
}

/// `POST /mandates`: sign in, or revoke one mandate.
pub async fn my_mandates_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(wallet) = served(&state) else {
        return not_found();
    };
    let Ok(form) = Form::parse(&headers, &body) else {
        return bad_request("<p>The form is malformed.</p>");
    };
    let now = state.now();
    match form.get("action") {
        Some("signin") => {
            let retry = |message: Option<&str>, status| mandates_sign_in(message, status);
            match start_signed_in(&state, &headers, &form, CONSENT_CSRF_COOKIE, &retry, now).await {
                Ok((value, session)) => {
                    let response = mandates_page(&state, &session, None, now).await;
                    with_session_cookie(&state, response, &value, &session, now)
                }
                Err(response) => response,
            }
        }
        Some("revoke") => {
            let Some(session) = current_session(&state, &headers, now).await else {
                return mandates_sign_in(Some("Your session ended."), StatusCode::UNAUTHORIZED);
            };
            if !ct_eq(
                form.get("csrf").unwrap_or("").as_bytes(),
                session.csrf.as_bytes(),
            ) {
                return forbidden();
            }
            let id = form.get("mandate").unwrap_or("");
            match wallet.revoke(id, Some(&session.user_id), now).await {
                Ok(_) => {
                    mandates_page(
                        &state,
                        &session,
                        Some("The mandate is revoked. Verifiers refuse it from now on."),
                        now,
                    )
                    .await
                }
                Err(WalletError::Forbidden(_)) | Err(WalletError::NotFound) => page(
                    StatusCode::FORBIDDEN,
                    "Not your mandate",
                    "<p id=\"outcome\">This mandate is not one of yours. Nothing was changed.</p>",
                ),
                Err(e) => wallet_error_page(e),
            }
        }
        _ => bad_request("<p>Unknown action.</p>"),
    }
}

async fn mandates_page(
    state: &AppState,
    session: &Session,
    notice: Option<&str>,
    now: i64,
) -> Response {
    let store = state.tokens.store();
    let Ok(mandates) = store.active_mandates_of_user(&session.user_id, now).await else {
        return unavailable();
    };
    let mut rows = String::new();
    for m in &mandates {
        let agent = store
            .agent(&m.agent_id)
            .await
            .map_or_else(|_| m.agent_id.clone(), |a| format!("{} ({})", a.name, a.id));
        rows.push_str(&format!(
            "<li><code class=\"mandate\">{id}</code> for <span>{agent}</span>, until {until}\
             <form method=\"post\" action=\"/mandates\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"mandate\" value=\"{id}\">\
             <button type=\"submit\" name=\"action\" value=\"revoke\">Revoke</button></form></li>",
            id = escape(&m.id),
            agent = escape(&agent),
            until = escape(&crate::calendar::format_utc(m.exp)),
            csrf = escape(&session.csrf),
        ));
    }
    let notice = notice.map_or(String::new(), |n| {
        format!("<p id=\"outcome\" role=\"status\">{}</p>", escape(n))
    });
    let list = match rows.is_empty() {
        true => "<p>You have no active mandates.</p>".to_owned(),
        false => format!("<ul id=\"mandates\">{rows}</ul>"),
    };
    page(StatusCode::OK, "Your mandates", &format!("{notice}{list}"))
}
