//! RFC 9068 access tokens (`typ` `at+jwt`, ES256) with RFC 8693 `act` chains and RFC 9449
//! `cnf.jkt`.
//!
//! The `act` claim nests: the outermost `act.sub` is the agent acting now, each inner `act` an
//! earlier actor (RFC 8693 §4.1). Here the chain is a list, current actor first. Verification
//! checks the header before any cryptography, then the signature with our own keys only, then
//! `iss` and times; the caller checks `aud` and asks the store whether the token still stands.

use serde_json::{json, Map, Value};

use crate::jose::{sign_compact, Error as JoseError, HeaderPolicy, KeySet, SigningKey};
use crate::jose::{TypRule, UnverifiedJws};

/// The media type of our access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Longest `act` chain we read (our own limit is lower; this bounds parsing).
const MAX_ACT_NESTING: usize = 16;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenClaims {
    /// Our issuer identifier.
    pub iss: String,
    /// The human the token acts for.
    pub sub: String,
    /// The resource server it is for.
    pub aud: String,
    /// The agent the token was issued to (the current actor).
    pub client_id: String,
    /// The `act` chain, current actor first.
    pub actors: Vec<String>,
    /// Granted scope tokens.
    pub scope: Vec<String>,
    /// RFC 9396 `authorization_details`, when granted.
    pub authorization_details: Option<Value>,
    /// RFC 7638 thumbprint of the DPoP key the token is bound to.
    pub jkt: String,
    /// Unique id.
    pub jti: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// The grant it was issued under (absent for external subjects).
    pub grant_id: Option<String>,
    /// RFC 8693 §4.4 `may_act.sub`: the only party that may exchange it for itself.
    pub may_act: Option<String>,
}

/// Why a token did not verify (the caller picks the wire code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    /// Header, type, key or signature refused.
    #[error("access token signature or header refused: {0}")]
    Jws(JoseError),
    /// A claim is missing or of the wrong form.
    #[error("access token claim missing or malformed: {0}")]
    Claim(&'static str),
    /// Issued by someone else.
    #[error("access token issuer is not this service")]
    Issuer,
    /// Expired, or issued in the future.
    #[error("access token expired or not yet valid")]
    Time,
}

impl AccessTokenClaims {
    /// The JSON payload.
    pub fn to_value(&self) -> Value {
        let mut claims = json!({
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "client_id": self.client_id,
            "act": act_value(&self.actors),
            "scope": self.scope.join(" "),
            "cnf": {"jkt": self.jkt},
            "jti": self.jti,
            "iat": self.iat,
            "exp": self.exp,
        });
        let obj = claims
            .as_object_mut()
            .expect("json! object literal is an object");
        if let Some(details) = &self.authorization_details {
            obj.insert("authorization_details".into(), details.clone());
        }
        if let Some(grant) = &self.grant_id {
            obj.insert("grant_id".into(), grant.clone().into());
        }
        if let Some(may_act) = &self.may_act {
            obj.insert("may_act".into(), json!({ "sub": may_act }));
        }
        claims
    }

    /// Signs the claims as an `at+jwt`.
    pub fn sign(&self, key: &SigningKey) -> Result<String, JoseError> {
        let payload = self.to_value().to_string();
        sign_compact(key, Some(ACCESS_TOKEN_TYP), false, payload.as_bytes())
    }

    /// Reads claims from a verified payload.
    pub fn from_claims(claims: &Map<String, Value>) -> Result<Self, AccessTokenError> {
        let actors = parse_act(claims.get("act")).ok_or(AccessTokenError::Claim("act"))?;
        let client_id = string(claims, "client_id")?;
        if actors.first() != Some(&client_id) {
            return Err(AccessTokenError::Claim("act"));
        }
        let jkt = claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str)
            .ok_or(AccessTokenError::Claim("cnf"))?;
        let may_act = match claims.get("may_act") {
            None => None,
            Some(v) => Some(
                v.get("sub")
                    .and_then(Value::as_str)
                    .ok_or(AccessTokenError::Claim("may_act"))?
                    .to_owned(),
            ),
        };
        Ok(AccessTokenClaims {
            iss: string(claims, "iss")?,
            sub: string(claims, "sub")?,
            aud: string(claims, "aud")?,
            client_id,
            actors,
            scope: super::split_scope(&string(claims, "scope")?),
            authorization_details: claims.get("authorization_details").cloned(),
            jkt: jkt.to_owned(),
            jti: string(claims, "jti")?,
            iat: integer(claims, "iat")?,
            exp: integer(claims, "exp")?,
            grant_id: optional_string(claims, "grant_id")?,
            may_act,
        })
    }
}

/// How access tokens are checked.
#[derive(Debug, Clone, Copy)]
pub struct AccessTokenPolicy<'a> {
    /// Our issuer identifier: `iss` must equal it.
    pub issuer: &'a str,
    /// Allowed clock difference, in seconds.
    pub skew: i64,
}

/// Verifies an access token's header, signature (our keys only), `iss` and times.
///
/// With `allow_expired` (revocation and introspection), an expired token still yields its
/// claims so that the caller can answer about it; nothing else is relaxed.
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &AccessTokenPolicy<'_>,
    now: i64,
    allow_expired: bool,
) -> Result<AccessTokenClaims, AccessTokenError> {
    // RFC 9068 §4: typ must be at+jwt (or its full media type); refresh and ID tokens fail here.
    const TYPS: &[&str] = &[ACCESS_TOKEN_TYP, "application/at+jwt"];
    let header = HeaderPolicy::trusted_key(TypRule::OneOf(TYPS));
    let jws = UnverifiedJws::parse(token, &header).map_err(AccessTokenError::Jws)?;
    let verified = keys.verify(jws).map_err(AccessTokenError::Jws)?;
    let claims = AccessTokenClaims::from_claims(verified.claims())?;

    if claims.iss != policy.issuer {
        return Err(AccessTokenError::Issuer);
    }
    let expired = claims.exp <= now - policy.skew;
    if claims.iat > now + policy.skew || claims.exp <= claims.iat || (expired && !allow_expired) {
        return Err(AccessTokenError::Time);
    }
    Ok(claims)
}

/// `act` as nested objects, current actor outermost.
pub fn act_value(actors: &[String]) -> Value {
    let mut act: Option<Value> = None;
    for actor in actors.iter().rev() {
        let mut obj = Map::new();
        obj.insert("sub".into(), actor.clone().into());
        if let Some(inner) = act.take() {
            obj.insert("act".into(), inner);
        }
        act = Some(Value::Object(obj));
    }
    act.unwrap_or(Value::Null)
}

/// The actors of a nested `act` claim, current first; `None` if malformed or too deep.
pub fn parse_act(act: Option<&Value>) -> Option<Vec<String>> {
    let mut actors = Vec::new();
    let mut next = act;
    while let Some(value) = next {
        let obj = value.as_object()?;
        actors.push(obj.get("sub")?.as_str()?.to_owned());
        if actors.len() > MAX_ACT_NESTING || obj.keys().any(|k| k != "sub" && k != "act") {
            return None;
        }
        next = obj.get("act");
    }
    (!actors.is_empty()).then_some(actors)
}

fn string(claims: &Map<String, Value>, name: &'static str) -> Result<String, AccessTokenError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(AccessTokenError::Claim(name))
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AccessTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(_) => string(claims, name).map(Some),
    }
}

fn integer(claims: &Map<String, Value>, name: &'static str) -> Result<i64, AccessTokenError> {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .ok_or(AccessTokenError::Claim(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://ap2.example".into(),
            sub: "u-1".into(),
            aud: "https://wallet.example".into(),
            client_id: "agent-b".into(),
            actors: vec!["agent-b".into(), "agent-a".into()],
            scope: vec!["mandates:request".into()],
            authorization_details: None,
            jkt: "jkt".into(),
            jti: "t-1".into(),
            iat: 1000,
            exp: 1300,
            grant_id: Some("g-1".into()),
            may_act: None,
        }
    }

    #[test]
    fn act_nests_with_the_current_actor_outermost() {
        let value = act_value(&claims().actors);
        assert_eq!(value, json!({"sub": "agent-b", "act": {"sub": "agent-a"}}));
        assert_eq!(parse_act(Some(&value)), Some(claims().actors));
    }

    #[test]
    fn act_with_other_members_or_no_sub_is_malformed() {
        assert_eq!(parse_act(Some(&json!({"sub": "a", "iss": "x"}))), None);
        assert_eq!(parse_act(Some(&json!({"act": {"sub": "a"}}))), None);
        assert_eq!(parse_act(Some(&json!("a"))), None);
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips() {
        let key = SigningKey::generate(Some("k1".into())).unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.public().clone()).unwrap();
        let token = claims().sign(&key).unwrap();
        let policy = AccessTokenPolicy {
            issuer: "https://ap2.example",
            skew: 60,
        };
        assert_eq!(verify(&token, &keys, &policy, 1100, false), Ok(claims()));
        assert_eq!(
            verify(&token, &keys, &policy, 1400, false),
            Err(AccessTokenError::Time)
        );
        assert!(verify(&token, &keys, &policy, 1400, true).is_ok());
        let other = AccessTokenPolicy {
            issuer: "https://other.example",
            skew: 60,
        };
        assert_eq!(
            verify(&token, &keys, &other, 1100, false),
            Err(AccessTokenError::Issuer)
        );
    }

    #[test]
    fn a_token_whose_client_is_not_the_current_actor_is_refused() {
        let key = SigningKey::generate(Some("k1".into())).unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.public().clone()).unwrap();
        let mut forged = claims();
        forged.client_id = "agent-a".into();
        let token = forged.sign(&key).unwrap();
        let policy = AccessTokenPolicy {
            issuer: "https://ap2.example",
            skew: 60,
        };
        assert_eq!(
            verify(&token, &keys, &policy, 1100, false),
            Err(AccessTokenError::Claim("act"))
        );
    }
}
