//! Client authentication with JWT assertions (RFC 7523 §2.2 and §3), with the audience rule of
//! the 7523bis update: `aud` is exactly our issuer identifier, as a single string.
//!
//! An agent signs an assertion with one of its registered keys (`private_key_jwt`); an actor
//! token in a token exchange has the same form. A federated assertion is a token from a trusted
//! external issuer whose `iss`, `sub` and `aud` match one of the agent's federated credentials.
//! Lifetimes are short, and single use of `jti` is enforced by the caller through the store.

use serde_json::{json, Map, Value};

use crate::jose::{sign_compact, Error as JoseError, HeaderPolicy, KeySet, PublicJwk};
use crate::jose::{SigningKey, TypRule, UnverifiedJws};
use crate::store::records::{Agent, FederatedCredential};

/// `client_assertion_type` for JWT assertions.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The `typ` values an assertion may carry (or none).
const TYPS: &[&str] = &["JWT", "client-authentication+jwt"];

/// Makes a `private_key_jwt` assertion for `client_id` to `audience`, valid 60 seconds.
pub fn make_assertion(
    key: &SigningKey,
    client_id: &str,
    audience: &str,
    now: i64,
) -> Result<String, JoseError> {
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": super::random_token(16)?,
        "iat": now,
        "exp": now + 60,
    });
    sign_compact(key, Some("JWT"), false, claims.to_string().as_bytes())
}

/// The limits an assertion is held to.
#[derive(Debug, Clone, Copy)]
pub struct AssertionCheck<'a> {
    /// The audience it must name: our issuer, or a federated credential's audience.
    pub audience: &'a str,
    /// Now, Unix seconds.
    pub now: i64,
    /// Longest accepted lifetime (`exp` minus now, and `exp` minus `iat`), in seconds.
    pub max_lifetime: i64,
    /// Allowed clock difference, in seconds.
    pub skew: i64,
}

/// An assertion that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAssertion {
    /// The authenticated agent.
    pub agent_id: String,
    /// Its `jti` (single use is the caller's to enforce), if it has one.
    pub jti: Option<String>,
    /// Its `exp`.
    pub exp: i64,
    /// RFC 7638 thumbprint of the key that signed it (for agent keys).
    pub jkt: Option<String>,
}

/// Checks a `private_key_jwt` assertion (or actor token) signed by one of `agent`'s keys.
pub fn check_agent_assertion(
    token: &str,
    agent: &Agent,
    check: &AssertionCheck<'_>,
) -> Result<CheckedAssertion, &'static str> {
    let policy = HeaderPolicy::trusted_key(TypRule::OneOfOrAbsent(TYPS));
    let jws =
        UnverifiedJws::parse(token, &policy).map_err(|_| "client assertion header refused")?;
    let key = agent_key(agent, jws.header().kid())?;
    let verified = jws
        .verify(&key)
        .map_err(|_| "client assertion signature invalid")?;
    let claims = verified.claims();

    if string(claims, "iss") != Some(&agent.id) || string(claims, "sub") != Some(&agent.id) {
        return Err("client assertion iss and sub must both be the client id");
    }
    if string(claims, "aud") != Some(check.audience) {
        return Err("client assertion aud must be exactly the issuer identifier");
    }
    let exp = check_times(claims, check)?;
    let jti = string(claims, "jti").ok_or("client assertion jti missing")?;
    Ok(CheckedAssertion {
        agent_id: agent.id.clone(),
        jti: Some(jti.to_owned()),
        exp,
        jkt: Some(key.thumbprint()),
    })
}

/// Checks a federated assertion from `issuer` (verified with `keys`) against `agent`'s
/// federated credentials.
pub fn check_federated_assertion(
    token: &str,
    issuer: &str,
    keys: &KeySet,
    agent: &Agent,
    check: &AssertionCheck<'_>,
) -> Result<CheckedAssertion, &'static str> {
    let policy = HeaderPolicy::trusted_key(TypRule::OneOfOrAbsent(TYPS));
    let jws = UnverifiedJws::parse(token, &policy).map_err(|_| "federated assertion refused")?;
    let verified = keys
        .verify(jws)
        .map_err(|_| "federated assertion signature invalid or key unknown")?;
    let claims = verified.claims();

    let matches = |c: &&FederatedCredential| {
        c.issuer == issuer
            && string(claims, "iss") == Some(&c.issuer)
            && string(claims, "sub") == Some(&c.subject)
            && audience_is(claims, &c.audience)
    };
    if !agent.federated_credentials.iter().any(|c| matches(&c)) {
        return Err("federated assertion matches none of the agent's federated credentials");
    }
    let exp = check_times(claims, check)?;
    Ok(CheckedAssertion {
        agent_id: agent.id.clone(),
        jti: string(claims, "jti").map(str::to_owned),
        exp,
        jkt: None,
    })
}

/// The agent key named by `kid`, or its only key when there is no `kid`.
fn agent_key(agent: &Agent, kid: Option<&str>) -> Result<PublicJwk, &'static str> {
    let key = match kid {
        Some(kid) => agent.keys.iter().find(|k| k.kid == kid),
        None if agent.keys.len() == 1 => agent.keys.first(),
        None => None,
    };
    let key = key.ok_or("client assertion key id unknown")?;
    PublicJwk::from_json(&key.jwk).map_err(|_| "client assertion key id unknown")
}

/// `exp` required and short; `iat` and `nbf`, when present, not in the future.
fn check_times(
    claims: &Map<String, Value>,
    check: &AssertionCheck<'_>,
) -> Result<i64, &'static str> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("assertion exp missing")?;
    if exp <= check.now - check.skew {
        return Err("assertion expired");
    }
    if exp > check.now + check.max_lifetime {
        return Err("assertion lifetime too long");
    }
    for name in ["iat", "nbf"] {
        match claims.get(name) {
            None => {}
            Some(v) => {
                let t = v.as_i64().ok_or("assertion time claim malformed")?;
                if t > check.now + check.skew || exp - t > check.max_lifetime + check.skew {
                    return Err("assertion issued in the future or too long ago");
                }
            }
        }
    }
    Ok(exp)
}

fn audience_is(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}
