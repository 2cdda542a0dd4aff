//! The token service: agents authenticate with their own keys and receive short-lived,
//! DPoP-bound, on-behalf-of access tokens whose authority can only narrow.
//!
//! Standards: RFC 9068 access tokens ([`token`]), RFC 9449 DPoP ([`dpop`]), RFC 7523 client
//! assertions with the 7523bis audience rule ([`assertion`]), RFC 7636 PKCE ([`pkce`]), RFC 8693
//! token exchange with RFC 9396 `authorization_details` ([`exchange`]), trusted external issuers
//! including Microsoft Entra's agent claims ([`external`]), argon2id passwords ([`password`]).
//! [`service`] ties them to the store. No client secrets, no refresh tokens, no ID tokens.

pub mod admin;
pub mod assertion;
pub mod dpop;
pub mod exchange;
pub mod external;
pub mod grants;
pub mod password;
pub mod pkce;
pub mod service;
pub mod token;

use crate::store::StoreError;

pub use service::{TokenService, TokenServiceConfig};

/// The OAuth error codes this service answers with (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8693
/// §2.2.2, RFC 8707 §2, RFC 9449 §7 and §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthCode {
    /// The request is malformed, or a subject or actor token is unacceptable (RFC 8693).
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The authorization code or grant is invalid, used, expired or another client's.
    InvalidGrant,
    /// The client may not use this grant or act here.
    UnauthorizedClient,
    /// The grant type is not one we support.
    UnsupportedGrantType,
    /// The requested scope or authorization details exceed what may be granted.
    InvalidScope,
    /// The requested resource or audience is not allowed.
    InvalidTarget,
    /// The requested `authorization_details` are malformed or exceed what may be granted
    /// (RFC 9396 §5).
    InvalidAuthorizationDetails,
    /// The DPoP proof is missing or invalid.
    InvalidDpopProof,
    /// A fresh server nonce must be used in the DPoP proof.
    UseDpopNonce,
    /// The access token is missing, invalid, expired or revoked.
    InvalidToken,
    /// The access token lacks the scope this request needs.
    InsufficientScope,
    /// The human or the policy refused.
    AccessDenied,
    /// Something on our side failed; nothing was decided.
    TemporarilyUnavailable,
}

impl OAuthCode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthCode::InvalidRequest => "invalid_request",
            OAuthCode::InvalidClient => "invalid_client",
            OAuthCode::InvalidGrant => "invalid_grant",
            OAuthCode::UnauthorizedClient => "unauthorized_client",
            OAuthCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthCode::InvalidScope => "invalid_scope",
            OAuthCode::InvalidTarget => "invalid_target",
            OAuthCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            OAuthCode::InvalidDpopProof => "invalid_dpop_proof",
            OAuthCode::UseDpopNonce => "use_dpop_nonce",
            OAuthCode::InvalidToken => "invalid_token",
            OAuthCode::InsufficientScope => "insufficient_scope",
            OAuthCode::AccessDenied => "access_denied",
            OAuthCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            OAuthCode::InvalidClient | OAuthCode::InvalidToken => 401,
            OAuthCode::InsufficientScope | OAuthCode::AccessDenied => 403,
            OAuthCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// Why a token request, token check or registry call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Refused by a rule; `rule` is the fixed description the caller sees.
    #[error("{}: {rule}", code.as_str())]
    Refused {
        /// The wire code.
        code: OAuthCode,
        /// Which rule refused, in fixed words (never input or token bytes).
        rule: &'static str,
    },
    /// A replayed proof, assertion or code: refused, and worth noting in the logs.
    #[error("{}: {rule}", code.as_str())]
    Replayed {
        /// The wire code.
        code: OAuthCode,
        /// Which rule refused.
        rule: &'static str,
    },
    /// The store or a key was unavailable; nothing was decided.
    #[error("store unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

/// How a [`TokenError`] goes on the wire and into the logs: the one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// The OAuth error code.
    pub code: OAuthCode,
    /// The HTTP status.
    pub status: u16,
    /// The fixed `error_description`.
    pub description: &'static str,
    /// The level to log it at.
    pub level: tracing::Level,
}

impl TokenError {
    /// A refusal by `rule` with `code`.
    pub const fn refused(code: OAuthCode, rule: &'static str) -> Self {
        TokenError::Refused { code, rule }
    }

    /// The wire code, status, description and log level at a protected resource (RFC 9449
    /// §7.1, RFC 6750 §3.1): a bad DPoP proof there is a 401 with a challenge, as a bad token is.
    pub fn wire_at_resource(&self) -> Wire {
        let mut wire = self.wire();
        if wire.code == OAuthCode::InvalidDpopProof {
            wire.status = 401;
        }
        wire
    }

    /// The wire code, status, description and log level at the token endpoint and elsewhere.
    pub fn wire(&self) -> Wire {
        let (code, description, level) = match self {
            TokenError::Refused { code, rule } => (*code, *rule, tracing::Level::DEBUG),
            TokenError::Replayed { code, rule } => (*code, *rule, tracing::Level::INFO),
            TokenError::Unavailable(_) => (
                OAuthCode::TemporarilyUnavailable,
                "the service is temporarily unavailable",
                tracing::Level::ERROR,
            ),
        };
        Wire {
            code,
            status: code.status(),
            description,
            level,
        }
    }

    /// The short reason recorded in the audit log.
    pub fn reason(&self) -> &'static str {
        self.wire().description
    }
}

/// The scope tokens of a space-delimited `scope` string (RFC 6749 §3.3), in order, deduplicated.
pub fn split_scope(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !out.iter().any(|t| t == token) {
            out.push(token.to_owned());
        }
    }
    out
}

/// Whether `url` is `https://…`, or `http://` on a loopback host (for local use and tests).
pub fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    // The loopback host must end where the host ends: `http://127.0.0.1.example.net` is not it.
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .filter_map(|host| url.strip_prefix(host))
        .any(|rest| rest.is_empty() || rest.starts_with([':', '/', '?', '#']))
}

/// Fresh random bytes, base64url: ids, codes, nonces.
pub fn random_token(bytes: usize) -> Result<String, crate::jose::Error> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| crate::jose::Error::Crypto)?;
    Ok(crate::jose::b64::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::https_or_loopback;

    #[test]
    fn plain_http_is_allowed_on_loopback_hosts_only() {
        for ok in [
            "https://pay.example.com",
            "http://127.0.0.1",
            "http://127.0.0.1:8080/verifier",
            "http://localhost/x",
            "http://[::1]:9000",
        ] {
            assert!(https_or_loopback(ok), "{ok}");
        }
        for refused in [
            "http://127.0.0.1.example.net/list",
            "http://localhost.example.net",
            "http://localhostile:80",
            "http://pay.example.com",
            "ftp://127.0.0.1",
        ] {
            assert!(!https_or_loopback(refused), "{refused}");
        }
    }
}
