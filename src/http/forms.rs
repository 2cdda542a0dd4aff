//! Form bodies (`application/x-www-form-urlencoded`) read strictly: RFC 6749 §3.1 and §3.2
//! forbid a parameter sent twice, so a repeated name is refused rather than picked from.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};

use super::{refused, ApiError};
use crate::identity::OAuthCode;

/// The request's media type without parameters, lowercased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// A form's parameters, each at most once; empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Default)]
pub struct Form(BTreeMap<String, String>);

impl Form {
    /// Parses a form body after checking its media type.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, ApiError> {
        if media_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(refused(
                OAuthCode::InvalidRequest,
                "the body must be a form",
            ));
        }
        Self::parse_query(body)
    }

    /// Parses urlencoded pairs (a query string or a form body).
    pub fn parse_query(text: &[u8]) -> Result<Form, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(text)
            .map_err(|_| refused(OAuthCode::InvalidRequest, "malformed form body"))?;
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            if map.insert(name, value).is_some() {
                return Err(refused(
                    OAuthCode::InvalidRequest,
                    "a parameter is repeated",
                ));
            }
        }
        Ok(Form(map))
    }

    /// A parameter, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter.
    pub fn require(&self, name: &str, rule: &'static str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| refused(OAuthCode::InvalidRequest, rule))
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
