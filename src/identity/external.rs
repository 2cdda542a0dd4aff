//! Trusted external issuers: an OpenID provider or Microsoft Entra whose tokens may stand as a
//! token exchange's `subject_token` or as an agent's federated assertion.
//!
//! A profile maps the issuer's claims onto our model: the human (`sub`), the acting client and
//! its parent (`act`), and the scope. Entra agent tokens carry no `act`: the acting agent
//! identity is `azp` (or `appid` in v1 tokens), marked as an agent by `xms_act_fct`, and its
//! parent application is `xms_par_app_azp`. The issuer's keys come from a JWKS file, re-read
//! when the file changes so keys can rotate without a restart. Fetching JWKS over the network
//! is not done here.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jose::{HeaderPolicy, KeySet, TypRule, UnverifiedJws};

/// How an issuer's claims map onto ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `sub` is the human; `azp` or `client_id` the acting client; `scope` or `scp` the scope.
    Oidc,
    /// Microsoft Entra: `oid` (in tenant `tid`) is the human; `azp`/`appid` the agent identity,
    /// required to carry `xms_act_fct`; `xms_par_app_azp` its parent; `scp` the scope.
    Entra,
}

/// One trusted issuer, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// The claim mapping.
    pub profile: Profile,
    /// The `aud` its tokens must carry to be accepted here as subject tokens.
    pub audience: String,
    /// A JWKS file with its current keys.
    pub jwks_file: PathBuf,
}

/// A trusted issuer with its keys.
#[derive(Debug)]
pub struct ExternalIssuer {
    config: ExternalIssuerConfig,
    keys: RwLock<(KeySet, Option<SystemTime>)>,
}

/// An external subject token, mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSubject {
    /// Our `sub` for the human: qualified by issuer so it cannot collide with a local user.
    pub user: String,
    /// The acting client's id at the issuer, then its parent's (Entra), current first.
    pub actor_subjects: Vec<String>,
    /// The scope tokens it carries.
    pub scope: Vec<String>,
    /// Its `exp`.
    pub exp: i64,
}

impl ExternalIssuer {
    /// Loads the issuer's keys from its JWKS file.
    pub fn load(config: ExternalIssuerConfig) -> Result<Self, String> {
        let issuer = ExternalIssuer {
            config,
            keys: RwLock::new((KeySet::new(), None)),
        };
        issuer.refresh_keys()?;
        Ok(issuer)
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.config.profile
    }

    /// The current keys (re-read first if the file changed).
    pub fn keys(&self) -> KeySet {
        if self.file_changed() {
            if let Err(e) = self.refresh_keys() {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "external JWKS reload failed; keeping the previous keys");
            }
        }
        self.keys.read().map(|k| k.0.clone()).unwrap_or_default()
    }

    /// Verifies a subject token from this issuer and maps its claims.
    pub fn verify_subject(
        &self,
        token: &str,
        now: i64,
        skew: i64,
    ) -> Result<ExternalSubject, &'static str> {
        const TYPS: &[&str] = &["JWT"];
        let policy = HeaderPolicy::trusted_key(TypRule::OneOfOrAbsent(TYPS));
        let jws = UnverifiedJws::parse(token, &policy).map_err(|_| "subject token refused")?;
        let keys = self.keys();
        let verified = keys
            .verify(jws)
            .map_err(|_| "subject token signature invalid or key unknown")?;
        let claims = verified.claims();

        if str_claim(claims, "iss") != Some(self.config.issuer.as_str()) {
            return Err("subject token issuer mismatch");
        }
        if !audience_is(claims, &self.config.audience) {
            return Err("subject token audience is not this service");
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("subject token exp missing")?;
        if exp <= now - skew {
            return Err("subject token expired");
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf > now + skew)
        {
            return Err("subject token not yet valid");
        }
        match self.config.profile {
            Profile::Oidc => map_oidc(&self.config.issuer, claims, exp),
            Profile::Entra => map_entra(claims, exp),
        }
    }

    fn file_changed(&self) -> bool {
        let modified = std::fs::metadata(&self.config.jwks_file)
            .and_then(|m| m.modified())
            .ok();
        let seen = self.keys.read().ok().and_then(|k| k.1);
        modified != seen
    }

    fn refresh_keys(&self) -> Result<(), String> {
        let path = &self.config.jwks_file;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let keys = KeySet::from_jwks(&value)
            .map_err(|e| format!("{} is not a usable ES256 JWKS: {e}", path.display()))?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = (keys, modified);
        }
        Ok(())
    }
}

fn map_oidc(
    issuer: &str,
    claims: &Map<String, Value>,
    exp: i64,
) -> Result<ExternalSubject, &'static str> {
    let sub = str_claim(claims, "sub").ok_or("subject token sub missing")?;
    let actor = str_claim(claims, "azp")
        .or_else(|| str_claim(claims, "client_id"))
        .ok_or("subject token names no client (azp or client_id)")?;
    Ok(ExternalSubject {
        user: format!("{issuer}#{sub}"),
        actor_subjects: vec![actor.to_owned()],
        scope: scope_of(claims),
        exp,
    })
}

fn map_entra(claims: &Map<String, Value>, exp: i64) -> Result<ExternalSubject, &'static str> {
    let tid = str_claim(claims, "tid").ok_or("Entra token tid missing")?;
    let oid = str_claim(claims, "oid").ok_or("Entra token oid missing (not user-delegated)")?;
    if claims.get("xms_act_fct").is_none() {
        return Err("Entra token is not an agent token (no xms_act_fct)");
    }
    let actor = str_claim(claims, "azp")
        .or_else(|| str_claim(claims, "appid"))
        .ok_or("Entra token names no agent identity (azp or appid)")?;
    let mut actor_subjects = vec![actor.to_owned()];
    if let Some(parent) = str_claim(claims, "xms_par_app_azp") {
        if parent != actor {
            actor_subjects.push(parent.to_owned());
        }
    }
    Ok(ExternalSubject {
        user: format!("entra:{tid}:{oid}"),
        actor_subjects,
        scope: scope_of(claims),
        exp,
    })
}

fn scope_of(claims: &Map<String, Value>) -> Vec<String> {
    let text = str_claim(claims, "scope").or_else(|| str_claim(claims, "scp"));
    text.map(super::split_scope).unwrap_or_default()
}

fn audience_is(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
