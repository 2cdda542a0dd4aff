//! The authorization endpoint (RFC 6749 §4.1, RFC 7636, RFC 9396, RFC 9207): the human signs
//! in and approves or denies an agent's request.
//!
//! Pages are plain server-rendered HTML with every value escaped, no scripts, and a strict
//! content security policy. The sign-in form is protected by a double-submit cookie; once
//! signed in, every form carries the session's anti-forgery token. The request parameters travel
//! in hidden fields and are checked again on submission, so what is approved is what was shown.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::forms::{escape, Form};
use super::AppState;
use crate::identity::admin::SignInRefusal;
use crate::identity::grants::{AuthorizationError, AuthorizationParams, AuthorizationRequest};
use crate::identity::password::Password;
use crate::identity::random_token;
use crate::jose::ct_eq;
use crate::store::records::{Agent, Session};

const SESSION_COOKIE: &str = "ap2_session";
const CSRF_COOKIE: &str = "ap2_csrf";

/// The request parameters carried through the pages.
const CARRIED: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "authorization_details",
    "resource",
    "dpop_jkt",
];

/// `GET /oauth2/authorize`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(form) = Form::parse_query(query.unwrap_or_default().as_bytes()) else {
        return bad_request("<p>The request is malformed.</p>");
    };
    let now = state.now();
    let (request, agent) = match checked(&state, &form).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    match current_session(&state, &headers, now).await {
        Some(session) => consent_page(&request, &agent, &form, &session),
        None => sign_in_page(&form, None, StatusCode::OK),
    }
}

/// `POST /oauth2/authorize`: sign in, approve or deny.
pub async fn submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(form) = Form::parse(&headers, &body) else {
        return bad_request("<p>The request is malformed.</p>");
    };
    let now = state.now();
    let (request, agent) = match checked(&state, &form).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    match form.get("action") {
        Some("signin") => sign_in(&state, &headers, &form, &request, &agent, now).await,
        Some(action @ ("approve" | "deny")) => {
            let Some(session) = current_session(&state, &headers, now).await else {
                return sign_in_page(
                    &form,
                    Some("Your session ended. Please sign in again."),
                    StatusCode::UNAUTHORIZED,
                );
            };
            let token = form.get("csrf").unwrap_or("");
            if !ct_eq(token.as_bytes(), session.csrf.as_bytes()) {
                return forbidden();
            }
            decide(&state, &session, &request, action == "approve", now).await
        }
        _ => bad_request("<p>Unknown action.</p>"),
    }
}

async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
    request: &AuthorizationRequest,
    agent: &Agent,
    now: i64,
) -> Response {
    let retry = |message: Option<&str>, status| sign_in_page(form, message, status);
    match start_signed_in(state, headers, form, CSRF_COOKIE, &retry, now).await {
        Ok((value, session)) => {
            let response = consent_page(request, agent, form, &session);
            with_session_cookie(state, response, &value, &session, now)
        }
        Err(response) => response,
    }
}

/// Signs a person in from a sign-in form: the double-submit token in `csrf_cookie` must match
/// the form's, then the password. The session's cookie value and the session, or the page to
/// answer with (`retry` renders the form again with a message).
pub(super) async fn start_signed_in(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
    csrf_cookie: &str,
    retry: &(dyn Fn(Option<&str>, StatusCode) -> Response + Sync),
    now: i64,
) -> Result<(String, Session), Response> {
    let expected = cookie(headers, csrf_cookie).unwrap_or_default();
    let sent = form.get("csrf").unwrap_or("");
    if expected.is_empty() || !ct_eq(expected.as_bytes(), sent.as_bytes()) {
        return Err(forbidden());
    }
    let username = form.get("username").unwrap_or("");
    let password = Password::new(form.get("password").unwrap_or(""));
    let user = match state.tokens.sign_in(username, &password, now).await {
        Ok(Ok(user)) => user,
        Ok(Err(SignInRefusal::BadCredentials)) => {
            return Err(retry(
                Some("Sign-in failed. Check your username and password."),
                StatusCode::UNAUTHORIZED,
            ))
        }
        Ok(Err(SignInRefusal::TooManyAttempts)) => {
            return Err(retry(
                Some("Too many failed attempts. Try again in a few minutes."),
                StatusCode::TOO_MANY_REQUESTS,
            ))
        }
        Err(_) => return Err(unavailable()),
    };
    state
        .tokens
        .start_session(&user, now)
        .await
        .map_err(|_| unavailable())
}

/// Sets the session cookie on `response` (`Secure` when the issuer is `https`).
pub(super) fn with_session_cookie(
    state: &AppState,
    mut response: Response,
    value: &str,
    session: &Session,
    now: i64,
) -> Response {
    let secure = if state.tokens.config().issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let set = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        session.exp - now
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn decide(
    state: &AppState,
    session: &Session,
    request: &AuthorizationRequest,
    approve: bool,
    now: i64,
) -> Response {
    let issuer = state.tokens.config().issuer.clone();
    let mut params: Vec<(&str, String)> = Vec::new();
    if approve {
        match state.tokens.approve(&session.user_id, request, now).await {
            Ok(code) => params.push(("code", code)),
            Err(e) => {
                let wire = e.wire();
                if wire.status >= 500 {
                    return unavailable();
                }
                params.push(("error", wire.code.as_str().into()));
                params.push(("error_description", wire.description.into()));
            }
        }
    } else {
        if state
            .tokens
            .deny(&session.user_id, request, now)
            .await
            .is_err()
        {
            return unavailable();
        }
        params.push(("error", "access_denied".into()));
        params.push(("error_description", "the user denied the request".into()));
    }
    if let Some(s) = &request.state {
        params.push(("state", s.clone()));
    }
    params.push(("iss", issuer));
    redirect(&request.redirect_uri, &params)
}

/// Checks the carried request; an untrusted client or redirect is refused on a page.
async fn checked(state: &AppState, form: &Form) -> Result<(AuthorizationRequest, Agent), Response> {
    let params = AuthorizationParams {
        response_type: form.get("response_type").map(str::to_owned),
        client_id: form.get("client_id").map(str::to_owned),
        redirect_uri: form.get("redirect_uri").map(str::to_owned),
        scope: form.get("scope").map(str::to_owned),
        state: form.get("state").map(str::to_owned),
        code_challenge: form.get("code_challenge").map(str::to_owned),
        code_challenge_method: form.get("code_challenge_method").map(str::to_owned),
        authorization_details: form.get("authorization_details").map(str::to_owned),
        resource: form.get("resource").map(str::to_owned),
        dpop_jkt: form.get("dpop_jkt").map(str::to_owned),
    };
    match state.tokens.authorization_request(&params).await {
        Ok(ok) => Ok(ok),
        Err(AuthorizationError::Untrusted(rule)) => Err(bad_request(&format!(
            "<p>This request cannot be trusted: {}.</p>",
            escape(rule)
        ))),
        Err(AuthorizationError::Redirect {
            redirect_uri,
            state: client_state,
            code,
            rule,
        }) => {
            let mut params = vec![
                ("error", code.as_str().to_owned()),
                ("error_description", rule.to_owned()),
            ];
            if let Some(s) = client_state {
                params.push(("state", s));
            }
            params.push(("iss", state.tokens.config().issuer.clone()));
            Err(redirect(&redirect_uri, &params))
        }
        Err(AuthorizationError::Unavailable) => Err(unavailable()),
    }
}

pub(super) async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Option<Session> {
    let value = cookie(headers, SESSION_COOKIE)?;
    state.tokens.session(&value, now).await.ok().flatten()
}

fn sign_in_page(form: &Form, message: Option<&str>, status: StatusCode) -> Response {
    let hidden = hidden_fields(form);
    sign_in_form(
        "/oauth2/authorize",
        "",
        &hidden,
        CSRF_COOKIE,
        message,
        status,
    )
}

/// A sign-in page whose form posts to `action` with a double-submit anti-forgery token in the
/// cookie `csrf_cookie` (scoped to `action`). `lead_html` and `hidden_html` are already escaped.
pub(super) fn sign_in_form(
    action: &str,
    lead_html: &str,
    hidden_html: &str,
    csrf_cookie: &str,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    let Ok(csrf) = random_token(24) else {
        return unavailable();
    };
    let notice = message.map_or(String::new(), |m| {
        format!("<p class=\"notice\" role=\"alert\">{}</p>", escape(m))
    });
    let body = format!(
        "{notice}{lead_html}<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"action\" value=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{hidden_html}\
         <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"signin\">Sign in</button></form>",
        action = escape(action),
    );
    let mut response = page(status, "Sign in", &body);
    let set =
        format!("{csrf_cookie}={csrf}; Path={action}; HttpOnly; SameSite=Strict; Max-Age=600");
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn consent_page(
    request: &AuthorizationRequest,
    agent: &Agent,
    form: &Form,
    session: &Session,
) -> Response {
    let scopes: String = request
        .scope
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let details = request
        .authorization_details
        .as_ref()
        .map_or(String::new(), |d| {
            let pretty = serde_json::to_string_pretty(d).unwrap_or_default();
            format!(
                "<h2>Limits</h2><pre id=\"details\">{}</pre>",
                escape(&pretty)
            )
        });
    let resource = request.resource.as_deref().map_or(String::new(), |r| {
        format!("<p>For use at <code>{}</code>.</p>", escape(r))
    });
    let body = format!(
        "<p><strong id=\"agent-name\">{name}</strong> (agent <code>{id}</code>, owned by \
         <span id=\"agent-owner\">{owner}</span>) asks to act for you with:</p>\
         <ul id=\"scopes\">{scopes}</ul>{details}{resource}\
         <p>You will be sent back to <code>{redirect}</code>.</p>\
         <form method=\"post\" action=\"/oauth2/authorize\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{hidden}\
         <button type=\"submit\" name=\"action\" value=\"approve\" id=\"approve\">Approve</button> \
         <button type=\"submit\" name=\"action\" value=\"deny\" id=\"deny\">Deny</button></form>",
        name = escape(&agent.name),
        id = escape(&agent.id),
        owner = escape(&agent.owner),
        redirect = escape(&request.redirect_uri),
        csrf = escape(&session.csrf),
        hidden = hidden_fields(form),
    );
    page(StatusCode::OK, "Approve an agent", &body)
}

fn hidden_fields(form: &Form) -> String {
    CARRIED
        .iter()
        .filter_map(|name| form.get(name).map(|v| (name, v)))
        .map(|(name, v)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect()
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
         label{{display:block;margin:.5em 0}}.notice{{color:#a00}}\
         button{{font-size:1em;padding:.5em 1em;margin:.25em .25em .25em 0}}\
         code{{overflow-wrap:anywhere}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title),
    );
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn redirect(uri: &str, params: &[(&str, String)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{sep}{query}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => bad_request("<p>The redirect is malformed.</p>"),
    }
}

/// A request refused as malformed or untrusted, on a page.
pub(super) fn bad_request(body: &str) -> Response {
    page(StatusCode::BAD_REQUEST, "Request refused", body)
}

pub(super) fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "<p>The form expired or was not sent from this page. Go back and try again.</p>",
    )
}

pub(super) fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "<p>The service is temporarily unavailable.</p>",
    )
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}
