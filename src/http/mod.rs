//! The HTTP surface (DESIGN §5): one router, one error-to-wire mapping, body limits.
//!
//! Every refusal leaves through [`ApiError`], which turns a [`TokenError`] into the RFC 6749
//! §5.2 body `{error, error_description}` with the status of its code, logs it at the level of
//! its code, and never echoes a token. The clock is injected ([`Clock`]) so tests can move time.

pub mod a2a;
mod agents;
mod authorize;
mod forms;
pub mod guard;
pub mod metrics;
mod oauth;
pub mod verify;
pub mod wallet;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use agents::agent_json;

use crate::identity::{OAuthCode, TokenError, TokenService};
use crate::jose::{ct_eq, sha256};
use crate::verifier::VerifierService;
use crate::wallet::WalletService;

/// Largest request body we read, bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Where the current time comes from (Unix seconds).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The token service.
    pub tokens: Arc<TokenService>,
    /// SHA-256 of the admin token.
    admin_hash: [u8; 32],
    /// The clock.
    pub clock: Clock,
    /// The verifier role, when this instance runs it.
    pub verifier: Option<Arc<VerifierService>>,
    /// The wallet role, when this instance runs it.
    pub wallet: Option<Arc<WalletService>>,
    /// Request limits shared by every route.
    pub limits: Arc<guard::Limits>,
    /// This process's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Whether the token service's routes are served (its tokens are checked either way).
    pub token_role: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a service with this admin token and clock.
    pub fn new(tokens: Arc<TokenService>, admin_token: &str, clock: Clock) -> Self {
        AppState {
            tokens,
            admin_hash: sha256(admin_token.as_bytes()),
            clock,
            verifier: None,
            wallet: None,
            limits: Arc::new(guard::Limits::default()),
            metrics: Arc::new(metrics::Metrics::default()),
            token_role: true,
        }
    }

    /// Serves the token service's routes, or not (another instance on the same store does).
    pub fn with_token_role(mut self, on: bool) -> Self {
        self.token_role = on;
        self
    }

    /// Runs the wallet role too.
    pub fn with_wallet(mut self, wallet: Arc<WalletService>) -> Self {
        self.wallet = Some(wallet);
        self
    }

    /// Bounds requests with these limits instead of the defaults.
    pub fn with_limits(mut self, limits: guard::LimitsConfig) -> Self {
        self.limits = Arc::new(guard::Limits::new(limits));
        self
    }

    /// Runs the verifier role too.
    pub fn with_verifier(mut self, verifier: Arc<VerifierService>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Now.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Whether the request carries `Authorization: Bearer <admin token>`.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        presented.is_some_and(|t| ct_eq(&sha256(t.as_bytes()), &self.admin_hash))
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let token_routes = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route(
            "/oauth2/authorize",
            get(authorize::show).post(authorize::submit),
        )
        .route("/v1/agents", post(agents::register).get(agents::list))
        .route("/v1/agents/{id}", get(agents::show))
        .route("/v1/agents/{id}/disable", post(agents::disable))
        .route("/v1/whoami", get(oauth::whoami));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/v1/mandate-requests", post(wallet::propose))
        .route("/v1/mandate-requests/{id}", get(wallet::fetch))
        .route("/v1/mandates/{id}/revoke", post(wallet::revoke))
        .route("/v1/status-lists/{id}", get(wallet::status_list))
        .route("/consent/{id}", get(wallet::show).post(wallet::submit))
        .route(
            "/mandates",
            get(wallet::my_mandates).post(wallet::my_mandates_submit),
        )
        .route("/v1/challenges", post(verify::challenge))
        .route(
            "/v1/checkouts/verify",
            post(verify::checkout).layer(DefaultBodyLimit::max(verify::VERIFY_MAX_BODY)),
        )
        .route(
            "/v1/payments/verify",
            post(verify::payment).layer(DefaultBodyLimit::max(verify::VERIFY_MAX_BODY)),
        )
        .route(
            a2a::A2A_PATH,
            post(a2a::send_message).layer(DefaultBodyLimit::max(verify::VERIFY_MAX_BODY)),
        )
        .route("/.well-known/agent-card.json", get(a2a::agent_card));
    let routes = match state.token_role {
        true => routes.merge(token_routes),
        false => routes,
    };
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// The OpenAPI 3.1 document of every route of every role.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn metrics_text(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// A refusal on its way to the wire.
#[derive(Debug)]
pub struct ApiError {
    error: TokenError,
    nonce: Option<String>,
    at_resource: bool,
}

impl ApiError {
    /// Attaches a fresh DPoP nonce (token endpoint answers carry one).
    pub fn with_nonce(mut self, nonce: String) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Marks a refusal by a protected resource (a bad proof is then a 401 with a challenge).
    pub fn at_resource(mut self) -> Self {
        self.at_resource = true;
        self
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        ApiError {
            error,
            nonce: None,
            at_resource: false,
        }
    }
}

/// A refusal with a fixed rule, for handlers.
pub fn refused(code: OAuthCode, rule: &'static str) -> ApiError {
    TokenError::refused(code, rule).into()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let wire = match self.at_resource {
            true => self.error.wire_at_resource(),
            false => self.error.wire(),
        };
        log_refusal(&self.error, wire.level);
        let status = StatusCode::from_u16(wire.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({"error": wire.code.as_str(), "error_description": wire.description});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(
            wire.code,
            OAuthCode::InvalidToken | OAuthCode::InsufficientScope
        ) || (wire.status == 401 && wire.code == OAuthCode::InvalidDpopProof)
        {
            let challenge = format!("DPoP error=\"{}\", algs=\"ES256\"", wire.code.as_str());
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        response
    }
}

fn log_refusal(error: &TokenError, level: tracing::Level) {
    let wire = error.wire();
    let code = wire.code.as_str();
    match level {
        tracing::Level::ERROR => tracing::error!(code, error = %error, "request failed"),
        tracing::Level::WARN => tracing::warn!(code, reason = wire.description, "request refused"),
        tracing::Level::INFO => tracing::info!(code, reason = wire.description, "replay refused"),
        _ => tracing::debug!(code, reason = wire.description, "request refused"),
    }
}

/// Creates (mode 0600) or reads the admin token file.
pub fn load_or_create_admin_token(path: &std::path::Path) -> std::io::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let token = crate::identity::random_token(32).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options.open(path)?.write_all(token.as_bytes())?;
    Ok(token)
}
