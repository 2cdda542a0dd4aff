//! The two grants: authorization code with PKCE (RFC 6749 §4.1, RFC 7636, RFC 9449 §10) and
//! token exchange (RFC 8693), each ending in one issued token.
//!
//! An authorization request is checked in two tiers (RFC 6749 §4.1.2.1): a bad client or
//! redirect URI is shown to the human and never redirected to; anything else goes back to the
//! client as an error on its redirect URI.

use serde_json::Value;

use super::assertion::check_agent_assertion;
use super::dpop::CheckedProof;
use super::exchange::{append_actor, narrow_details, narrow_scope};
use super::pkce::{is_s256_challenge, verify_s256};
use super::service::{Issued, TokenService};
use super::{random_token, split_scope, OAuthCode, TokenError};
use crate::danger::insecure_string_claim;
use crate::jose::sha256_b64;
use crate::store::records::{Agent, AuthCode, CodeRefusal, Grant, GrantStatus, IdentityRecords};
use crate::store::records::{OAuthRecords, Standing};
use crate::store::{AuditRecord, DecisionLedger, StoreError};

/// The token exchange grant type (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Token type URIs (RFC 8693 §3).
pub mod token_types {
    /// An access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// A JWT (external subject tokens, actor tokens).
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
}

/// An authorization request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The requesting agent.
    pub client_id: String,
    /// Where to send the answer.
    pub redirect_uri: String,
    /// Requested scope tokens.
    pub scope: Vec<String>,
    /// RFC 9396 details, when asked for.
    pub authorization_details: Option<Value>,
    /// The client's `state`, returned as is.
    pub state: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// RFC 8707 resource.
    pub resource: Option<String>,
    /// RFC 9449 §10 key binding of the code.
    pub dpop_jkt: Option<String>,
}

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationError {
    /// The client or redirect URI cannot be trusted: tell the human, do not redirect.
    Untrusted(&'static str),
    /// Tell the client on its redirect URI.
    Redirect {
        /// Where.
        redirect_uri: String,
        /// The client's state.
        state: Option<String>,
        /// The code.
        code: OAuthCode,
        /// The fixed description.
        rule: &'static str,
    },
    /// The store failed.
    Unavailable,
}

/// The raw parameters of an authorization request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuthorizationParams {
    /// `response_type`.
    pub response_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `authorization_details` (JSON text).
    pub authorization_details: Option<String>,
    /// `resource`.
    pub resource: Option<String>,
    /// `dpop_jkt`.
    pub dpop_jkt: Option<String>,
}

/// The token request parameters of the authorization code grant.
#[derive(Debug, Clone, Default)]
pub struct CodeRedemption {
    /// `code`.
    pub code: String,
    /// `redirect_uri`.
    pub redirect_uri: String,
    /// `code_verifier`.
    pub code_verifier: String,
    /// `resource`.
    pub resource: Option<String>,
}

/// The token request parameters of a token exchange.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    /// `subject_token`.
    pub subject_token: String,
    /// `subject_token_type`.
    pub subject_token_type: String,
    /// `actor_token`.
    pub actor_token: Option<String>,
    /// `actor_token_type`.
    pub actor_token_type: Option<String>,
    /// `requested_token_type`.
    pub requested_token_type: Option<String>,
    /// `resource`.
    pub resource: Option<String>,
    /// `audience`.
    pub audience: Option<String>,
    /// `scope`, split.
    pub scope: Option<Vec<String>>,
    /// `authorization_details`, parsed.
    pub authorization_details: Option<Value>,
}

/// What an exchange starts from, whichever issuer made the subject token.
struct Subject {
    user: String,
    actors: Vec<String>,
    scope: Vec<String>,
    details: Option<Value>,
    aud: Option<String>,
    exp: i64,
    grant_id: Option<String>,
    may_act: Option<String>,
    external: bool,
}

fn refuse(code: OAuthCode, rule: &'static str) -> TokenError {
    TokenError::refused(code, rule)
}

impl TokenService {
    /// Checks an authorization request (before showing it to the human, and again on approval).
    pub async fn authorization_request(
        &self,
        params: &AuthorizationParams,
    ) -> Result<(AuthorizationRequest, Agent), AuthorizationError> {
        let client_id = params
            .client_id
            .as_deref()
            .ok_or(AuthorizationError::Untrusted("client_id missing"))?;
        let agent = match self.store.agent(client_id).await {
            Ok(agent) if agent.status == crate::store::records::AgentStatus::Active => agent,
            Ok(_) => return Err(AuthorizationError::Untrusted("agent disabled")),
            Err(StoreError::NotFound) => {
                return Err(AuthorizationError::Untrusted("agent unknown"))
            }
            Err(_) => return Err(AuthorizationError::Unavailable),
        };
        let redirect_uri = params
            .redirect_uri
            .clone()
            .ok_or(AuthorizationError::Untrusted("redirect_uri missing"))?;
        if !redirect_allowed(&agent, &redirect_uri) {
            return Err(AuthorizationError::Untrusted(
                "redirect_uri is not registered for this agent",
            ));
        }

        let fail = |code, rule| AuthorizationError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: params.state.clone(),
            code,
            rule,
        };
        if params.response_type.as_deref() != Some("code") {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "response_type must be code",
            ));
        }
        let challenge = params.code_challenge.clone().unwrap_or_default();
        if params.code_challenge_method.as_deref() != Some("S256") || !is_s256_challenge(&challenge)
        {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "PKCE with S256 is required",
            ));
        }
        let scope = split_scope(params.scope.as_deref().unwrap_or(""));
        if scope.is_empty() || scope.iter().any(|s| !agent.scopes.contains(s)) {
            return Err(fail(
                OAuthCode::InvalidScope,
                "scope missing or not allowed for this agent",
            ));
        }
        let details = match &params.authorization_details {
            None => None,
            Some(text) => {
                Some(parse_details(text).map_err(|rule| fail(OAuthCode::InvalidRequest, rule))?)
            }
        };
        if let Some(resource) = &params.resource {
            if !self.audience_allowed(&agent, resource) {
                return Err(fail(
                    OAuthCode::InvalidTarget,
                    "resource not allowed for this agent",
                ));
            }
        }
        let request = AuthorizationRequest {
            client_id: agent.id.clone(),
            redirect_uri: redirect_uri.clone(),
            scope,
            authorization_details: details,
            state: params.state.clone(),
            code_challenge: challenge,
            resource: params.resource.clone(),
            dpop_jkt: params.dpop_jkt.clone(),
        };
        Ok((request, agent))
    }

    /// The human approved: creates the grant and a code; returns the code.
    pub async fn approve(
        &self,
        user_id: &str,
        request: &AuthorizationRequest,
        now: i64,
    ) -> Result<String, TokenError> {
        let fresh =
            |n| random_token(n).map_err(|_| TokenError::Unavailable(StoreError::Unavailable));
        let grant = Grant {
            id: format!("grt_{}", fresh(15)?),
            user_id: user_id.into(),
            agent_id: request.client_id.clone(),
            scope: request.scope.clone(),
            authorization_details: request.authorization_details.clone(),
            status: GrantStatus::Active,
            created_at: now,
            expires_at: now + self.config.grant_lifetime,
            revoked_at: None,
        };
        self.store
            .create_grant(&grant)
            .await
            .map_err(super::service::record_refusal)?;
        let code = fresh(32)?;
        let record = AuthCode {
            code_hash: sha256_b64(code.as_bytes()),
            client_id: request.client_id.clone(),
            user_id: user_id.into(),
            grant_id: grant.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            resource: request.resource.clone(),
            dpop_jkt: request.dpop_jkt.clone(),
            exp: now + self.config.code_lifetime,
        };
        self.store
            .create_auth_code(&record)
            .await
            .map_err(super::service::record_refusal)?;
        self.audit(AuditRecord {
            at: now,
            action: "grant.approve".into(),
            outcome: "success".into(),
            agent_id: Some(grant.agent_id.clone()),
            user_id: Some(grant.user_id.clone()),
            grant_id: Some(grant.id.clone()),
            scope: Some(grant.scope.join(" ")),
            correlation_id: grant.id.clone(),
            ..AuditRecord::default()
        })
        .await?;
        Ok(code)
    }

    /// Records the human's refusal.
    pub async fn deny(
        &self,
        user_id: &str,
        request: &AuthorizationRequest,
        now: i64,
    ) -> Result<(), TokenError> {
        self.audit(AuditRecord {
            at: now,
            action: "grant.approve".into(),
            outcome: "refused".into(),
            reason: Some("the user denied the request".into()),
            agent_id: Some(request.client_id.clone()),
            user_id: Some(user_id.into()),
            scope: Some(request.scope.join(" ")),
            correlation_id: random_token(9).unwrap_or_default(),
            ..AuditRecord::default()
        })
        .await
    }

    /// The authorization code grant: `agent` authenticated, `proof` checked.
    pub async fn redeem_code(
        &self,
        request: &CodeRedemption,
        agent: &Agent,
        proof: &CheckedProof,
        now: i64,
    ) -> Result<Issued, TokenError> {
        let hash = sha256_b64(request.code.as_bytes());
        let code = match self.store.redeem_auth_code(&hash, &agent.id, now).await? {
            Ok(code) => code,
            Err(CodeRefusal::Replayed { grant_id }) => {
                // RFC 6749 §10.5: a code used twice revokes what it was issued under.
                match self.store.revoke_grant(&grant_id, now).await {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                return Err(TokenError::Replayed {
                    code: OAuthCode::InvalidGrant,
                    rule: "authorization code already used; its grant is revoked",
                });
            }
            Err(_) => {
                return Err(refuse(
                    OAuthCode::InvalidGrant,
                    "authorization code invalid, expired or issued to another client",
                ))
            }
        };
        if code.redirect_uri != request.redirect_uri {
            return Err(refuse(
                OAuthCode::InvalidGrant,
                "redirect_uri does not match the authorization request",
            ));
        }
        if !verify_s256(&request.code_verifier, &code.code_challenge) {
            return Err(refuse(
                OAuthCode::InvalidGrant,
                "PKCE code_verifier does not match",
            ));
        }
        if code.dpop_jkt.as_ref().is_some_and(|jkt| *jkt != proof.jkt) {
            return Err(refuse(
                OAuthCode::InvalidGrant,
                "the code is bound to another DPoP key",
            ));
        }
        let resource = request
            .resource
            .clone()
            .or(code.resource.clone())
            .unwrap_or_else(|| self.config.issuer.clone());
        if !self.audience_allowed(agent, &resource) {
            return Err(refuse(
                OAuthCode::InvalidTarget,
                "resource not allowed for this agent",
            ));
        }

        let grant = self.store.grant(&code.grant_id).await?;
        if grant.status != GrantStatus::Active || grant.expires_at <= now {
            return Err(refuse(OAuthCode::InvalidGrant, "grant revoked or expired"));
        }
        let mut claims = self.new_claims(now)?;
        claims.sub = grant.user_id.clone();
        claims.aud = resource;
        claims.client_id = agent.id.clone();
        claims.actors = vec![agent.id.clone()];
        claims.scope = grant.scope.clone();
        claims.authorization_details = grant.authorization_details.clone();
        claims.jkt = proof.jkt.clone();
        claims.exp = claims.exp.min(grant.expires_at);
        claims.grant_id = Some(grant.id.clone());
        self.issue(claims, Vec::new(), false, "token.issue", now)
            .await
    }

    /// The token exchange grant: `client` authenticated, `proof` checked.
    pub async fn exchange(
        &self,
        request: &ExchangeRequest,
        client: &Agent,
        proof: &CheckedProof,
        now: i64,
    ) -> Result<Issued, TokenError> {
        use token_types::{ACCESS_TOKEN, JWT};
        if request
            .requested_token_type
            .as_deref()
            .is_some_and(|t| t != ACCESS_TOKEN)
        {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "only access tokens can be requested",
            ));
        }

        // 1. The subject: ours (held by the client, bound to its DPoP key) or a trusted issuer's.
        let subject = match request.subject_token_type.as_str() {
            ACCESS_TOKEN => {
                self.own_subject(&request.subject_token, client, proof, now)
                    .await?
            }
            JWT => self.external_subject(&request.subject_token, client, now)?,
            _ => {
                return Err(refuse(
                    OAuthCode::InvalidRequest,
                    "subject_token_type not accepted",
                ))
            }
        };

        // 2. The new actor: the sub-agent of the actor token, or the client itself.
        let (actor, jkt) = match (&request.actor_token, request.actor_token_type.as_deref()) {
            (Some(token), Some(JWT)) => self.actor_from_token(token, now).await?,
            (Some(_), _) => {
                return Err(refuse(
                    OAuthCode::InvalidRequest,
                    "actor_token_type must be jwt",
                ))
            }
            (None, Some(_)) => {
                return Err(refuse(
                    OAuthCode::InvalidRequest,
                    "actor_token_type without actor_token",
                ))
            }
            (None, None) => (client.clone(), proof.jkt.clone()),
        };
        if subject.may_act.as_ref().is_some_and(|m| *m != actor.id) {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "the subject token's may_act does not name this actor",
            ));
        }

        // 3. The act chain: appended, never rewritten.
        let actors = match actor.id == client.id && request.actor_token.is_none() {
            true => subject.actors.clone(),
            false => self.appended_chain(&subject.actors, &actor).await?,
        };

        // 4. Narrowing: scope, audience, details, lifetime.
        let scope = narrow_scope(request.scope.as_deref(), &subject.scope, &actor.scopes)
            .map_err(|rule| refuse(OAuthCode::InvalidScope, rule))?;
        let audience = self.exchange_audience(request, &subject, &actor)?;
        let details = narrow_details(
            request.authorization_details.as_ref(),
            subject.details.as_ref(),
        )
        .map_err(|rule| refuse(OAuthCode::InvalidAuthorizationDetails, rule))?;
        let mut claims = self.new_claims(now)?;
        claims.exp = claims.exp.min(subject.exp);
        if claims.exp <= now {
            return Err(refuse(OAuthCode::InvalidRequest, "subject token expired"));
        }

        claims.sub = subject.user;
        claims.aud = audience;
        claims.client_id = actor.id.clone();
        claims.scope = scope;
        claims.authorization_details = details;
        claims.jkt = jkt;
        claims.grant_id = subject.grant_id;
        let mut delegated_by = Vec::new();
        for earlier in actors.iter().skip(1) {
            match self.store.agent(earlier).await {
                Ok(_) => delegated_by.push(earlier.clone()),
                Err(StoreError::NotFound) => {} // an external actor: nothing of ours to revoke
                Err(e) => return Err(e.into()),
            }
        }
        claims.actors = actors;
        self.issue(
            claims,
            delegated_by,
            subject.external,
            "token.exchange",
            now,
        )
        .await
    }

    async fn own_subject(
        &self,
        token: &str,
        client: &Agent,
        proof: &CheckedProof,
        now: i64,
    ) -> Result<Subject, TokenError> {
        let claims = self.verify_token(token, now, false).await.map_err(|_| {
            refuse(
                OAuthCode::InvalidRequest,
                "subject token invalid or expired",
            )
        })?;
        if self.standing(&claims.jti).await? != Standing::Active {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "subject token revoked, or its grant or an agent of its chain is not active",
            ));
        }
        if claims.client_id != client.id {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "only the subject token's holder may exchange it",
            ));
        }
        if claims.jkt != proof.jkt {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "the DPoP proof is not by the subject token's key",
            ));
        }
        Ok(Subject {
            user: claims.sub,
            actors: claims.actors,
            scope: claims.scope,
            details: claims.authorization_details,
            aud: Some(claims.aud),
            exp: claims.exp,
            grant_id: claims.grant_id,
            may_act: claims.may_act,
            external: false,
        })
    }

    fn external_subject(
        &self,
        token: &str,
        client: &Agent,
        now: i64,
    ) -> Result<Subject, TokenError> {
        let iss = insecure_string_claim(token, "iss").unwrap_or_default();
        let issuer = self
            .external
            .iter()
            .find(|e| e.issuer() == iss)
            .ok_or(refuse(
                OAuthCode::InvalidRequest,
                "subject token issuer is not trusted",
            ))?;
        let mapped = issuer
            .verify_subject(token, now, self.config.skew)
            .map_err(|rule| refuse(OAuthCode::InvalidRequest, rule))?;
        // The token must have been issued to this agent: its acting client is one of the
        // agent's federated identities at that issuer.
        let holder = mapped.actor_subjects.first().map(String::as_str);
        let mine = client
            .federated_credentials
            .iter()
            .any(|c| c.issuer == issuer.issuer() && Some(c.subject.as_str()) == holder);
        if !mine {
            return Err(refuse(
                OAuthCode::InvalidRequest,
                "the subject token was not issued to this agent",
            ));
        }
        let mut actors = vec![client.id.clone()];
        actors.extend(
            mapped
                .actor_subjects
                .iter()
                .skip(1)
                .map(|p| format!("{iss}#{p}")),
        );
        Ok(Subject {
            user: mapped.user,
            actors,
            scope: mapped.scope,
            details: None,
            aud: None,
            exp: mapped.exp,
            grant_id: None,
            may_act: None,
            external: true,
        })
    }

    /// The sub-agent named by an actor token (a `private_key_jwt`-style assertion by its own
    /// key); the new token binds to that key.
    async fn actor_from_token(&self, token: &str, now: i64) -> Result<(Agent, String), TokenError> {
        let id = insecure_string_claim(token, "iss")
            .ok_or(refuse(OAuthCode::InvalidRequest, "actor token invalid"))?;
        let actor = self.active_agent(&id, OAuthCode::InvalidRequest).await?;
        let checked = check_agent_assertion(token, &actor, &self.assertion_check(now))
            .map_err(|_| refuse(OAuthCode::InvalidRequest, "actor token invalid"))?;
        let jti = checked.jti.unwrap_or_default();
        let fresh = self
            .store
            .remember_jti(
                "actor_token",
                &format!("{}:{jti}", actor.id),
                checked.exp + self.config.skew,
            )
            .await?;
        if !fresh {
            return Err(TokenError::Replayed {
                code: OAuthCode::InvalidRequest,
                rule: "actor token replayed",
            });
        }
        let jkt = checked.jkt.unwrap_or_default();
        Ok((actor, jkt))
    }

    async fn appended_chain(
        &self,
        chain: &[String],
        actor: &Agent,
    ) -> Result<Vec<String>, TokenError> {
        let mut limits = std::collections::BTreeMap::new();
        limits.insert(actor.id.clone(), actor.max_delegation_depth);
        for id in chain {
            match self.store.agent(id).await {
                Ok(agent) => {
                    limits.insert(agent.id.clone(), agent.max_delegation_depth);
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        append_actor(
            chain,
            &actor.id,
            |a| limits.get(a).copied(),
            self.config.max_chain,
        )
        .map_err(|rule| refuse(OAuthCode::InvalidRequest, rule))
    }

    fn exchange_audience(
        &self,
        request: &ExchangeRequest,
        subject: &Subject,
        actor: &Agent,
    ) -> Result<String, TokenError> {
        let asked = match (&request.resource, &request.audience) {
            (Some(r), Some(a)) if r != a => {
                return Err(refuse(
                    OAuthCode::InvalidTarget,
                    "resource and audience disagree",
                ))
            }
            (Some(r), _) | (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        };
        let audience = asked
            .or(subject.aud.clone())
            .unwrap_or_else(|| self.config.issuer.clone());
        match self.audience_allowed(actor, &audience) {
            true => Ok(audience),
            false => Err(refuse(
                OAuthCode::InvalidTarget,
                "audience not allowed for the acting agent",
            )),
        }
    }

    /// This service itself, or one of the agent's registered audiences.
    pub(super) fn audience_allowed(&self, agent: &Agent, audience: &str) -> bool {
        audience == self.config.issuer || agent.audiences.iter().any(|a| a == audience)
    }
}

/// RFC 9396 §2: a JSON array of objects, each with a string `type`.
pub fn parse_details(text: &str) -> Result<Value, &'static str> {
    let value = crate::json::parse(text.as_bytes(), 16 * 1024)
        .map_err(|_| "authorization_details is not valid JSON")?;
    let entries = value
        .as_array()
        .ok_or("authorization_details must be an array")?;
    let typed = |e: &Value| e.get("type").and_then(Value::as_str).is_some();
    if entries.is_empty() || !entries.iter().all(typed) {
        return Err("authorization_details entries need a type");
    }
    Ok(value)
}

/// Registered redirect URIs match exactly; with none, loopback on any port (RFC 8252 §7.3).
fn redirect_allowed(agent: &Agent, uri: &str) -> bool {
    if !agent.redirect_uris.is_empty() {
        return agent.redirect_uris.iter().any(|r| r == uri);
    }
    let rest = ["http://127.0.0.1", "http://[::1]"]
        .iter()
        .find_map(|p| uri.strip_prefix(p));
    let Some(rest) = rest else {
        return false;
    };
    let (port, path) = match rest.strip_prefix(':') {
        Some(r) => r.split_at(r.find('/').unwrap_or(r.len())),
        None => ("0", rest),
    };
    port.parse::<u16>().is_ok() && (path.is_empty() || path.starts_with('/')) && !uri.contains('#')
}
