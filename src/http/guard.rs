//! What every request passes through: a request id (taken from a well-formed `X-Request-Id` or
//! made fresh) on a tracing span and on the answer; a limit on header bytes (`431`); a limit on
//! requests in flight (`503` with `Retry-After`, shedding load rather than queueing it); a
//! request timeout (`503`); and the latency histogram. Per-agent rate limits live in
//! [`RateLimiter`], applied by the routes once they know the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::AppState;

/// How requests are bounded.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Longest a request may take.
    pub timeout: Duration,
    /// Most header bytes (names and values).
    pub max_header_bytes: usize,
    /// Sustained presentations and challenges per agent per second.
    pub agent_rate: f64,
    /// Burst above the sustained rate.
    pub agent_burst: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_in_flight: 1024,
            timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            agent_rate: 50.0,
            agent_burst: 100.0,
        }
    }
}

/// The shared limits of one process.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    in_flight: Arc<Semaphore>,
    /// Per-agent rate limit.
    pub agents: RateLimiter,
}

impl Limits {
    /// Limits from a configuration.
    pub fn new(config: LimitsConfig) -> Self {
        Limits {
            config,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            agents: RateLimiter::new(config.agent_rate, config.agent_burst),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(LimitsConfig::default())
    }
}

/// A token bucket per key (an agent id), in this process's memory.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// `rate` tokens per second, up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says in how many whole seconds one will be there.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        // A poisoned lock fails closed: the caller is told to come back.
        let mut buckets = self.buckets.lock().map_err(|_| 1u64)?;
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < full_after);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(((1.0 - refilled) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// The middleware: request id, header limit, load shedding, timeout, latency.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_of(req.uri().path());
    let id = request_id(&req);
    let span = tracing::info_span!("request", id = %id, method, route);

    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let (mut response, own) = if header_bytes > state.limits.config.max_header_bytes {
        (
            refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                "the request headers are too large",
            ),
            true,
        )
    } else {
        match state.limits.in_flight.clone().try_acquire_owned() {
            Err(_) => {
                let mut r = refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service is busy",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                (r, true)
            }
            Ok(_permit) => {
                match tokio::time::timeout(state.limits.config.timeout, next.run(req))
                    .instrument(span.clone())
                    .await
                {
                    Ok(response) => (response, false),
                    Err(_) => (
                        refuse(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "temporarily_unavailable",
                            "the request took too long",
                        ),
                        true,
                    ),
                }
            }
        }
    };
    let status = response.status().as_u16();
    if status == 503 && !own {
        state.metrics.store_error();
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.request(method, route, status, seconds);
    span.in_scope(|| tracing::debug!(status, ms = seconds * 1000.0, "request done"));
    response
}

fn refuse(status: StatusCode, code: &'static str, description: &'static str) -> Response {
    let body = json!({"error": code, "error_description": description});
    (status, axum::Json(body)).into_response()
}

/// A caller's `X-Request-Id` when it is 1 to 64 of `[A-Za-z0-9._-]`, else a fresh one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| crate::identity::random_token(12).unwrap_or_default())
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// Our route templates, so that metrics labels never carry ids or other request data.
const ROUTES: &[&str] = &[
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/.well-known/oauth-authorization-server",
    "/.well-known/jwks.json",
    "/oauth2/authorize",
    "/oauth2/token",
    "/oauth2/revoke",
    "/oauth2/introspect",
    "/v1/agents",
    "/v1/whoami",
    "/v1/challenges",
    "/v1/checkouts/verify",
    "/v1/payments/verify",
    "/v1/mandate-requests",
    "/mandates",
];

fn route_of(path: &str) -> &'static str {
    if let Some(route) = ROUTES.iter().find(|r| **r == path) {
        return route;
    }
    if let Some(rest) = path.strip_prefix("/v1/agents/") {
        return match rest.ends_with("/disable") {
            true => "/v1/agents/{id}/disable",
            false => "/v1/agents/{id}",
        };
    }
    if path.starts_with("/v1/mandate-requests/") {
        return "/v1/mandate-requests/{id}";
    }
    if path.starts_with("/v1/mandates/") && path.ends_with("/revoke") {
        return "/v1/mandates/{id}/revoke";
    }
    if path.starts_with("/v1/status-lists/") {
        return "/v1/status-lists/{id}";
    }
    if path.starts_with("/consent/") {
        return "/consent/{id}";
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_asks_to_wait() {
        let limiter = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert_eq!(limiter.check("agent-a"), Ok(()));
        }
        assert_eq!(limiter.check("agent-a"), Err(1));
        // Another agent has its own bucket.
        assert_eq!(limiter.check("agent-b"), Ok(()));
    }

    #[test]
    fn route_labels_never_carry_ids() {
        assert_eq!(route_of("/v1/agents/agt_123"), "/v1/agents/{id}");
        assert_eq!(
            route_of("/v1/agents/agt_123/disable"),
            "/v1/agents/{id}/disable"
        );
        assert_eq!(route_of("/v1/payments/verify"), "/v1/payments/verify");
        assert_eq!(route_of("/nothing/here"), "other");
    }
}
