//! The token service's rules over the store: client authentication, DPoP, issuing and checking
//! access tokens, introspection and revocation.
//!
//! Grants (authorization code, token exchange) live in [`super::grants`], the registry and
//! sign-in in [`super::admin`]. Every method takes `now`; nothing reads the clock. Every refusal
//! is a [`TokenError`] naming its rule; every issuance, exchange, refusal and revocation
//! appends an audit record.

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::assertion::JWT_BEARER;
use super::assertion::{check_agent_assertion, check_federated_assertion, AssertionCheck};
use super::dpop::{check_proof, CheckedProof, NonceMint, ProofCheck};
use super::external::{ExternalIssuer, ExternalIssuerConfig};
use super::token::{self, AccessTokenClaims, AccessTokenPolicy};
use super::{random_token, OAuthCode, TokenError};
use crate::danger::insecure_string_claim;
use crate::jose::{KeySet, SigningKey};
use crate::store::records::{Agent, AgentStatus, IdentityRecords, OAuthRecords, Standing};
use crate::store::records::{RecordError, TokenRecord, TokenStatus};
use crate::store::{AuditLog, AuditRecord, DecisionLedger, KeyVault, MasterKey, Store, StoreError};

/// The most any token may live, whatever the configuration says (seconds).
pub const HARD_MAX_TOKEN_LIFETIME: i64 = 3600;

/// Key purpose of access-token signing keys.
pub const TOKEN_KEY_PURPOSE: &str = "tokens";

/// How the token service behaves; [`TokenServiceConfig::new`] gives safe defaults.
#[derive(Debug, Clone)]
pub struct TokenServiceConfig {
    /// Our issuer identifier: the public base URL (`https://…`, or `http://` on loopback).
    pub issuer: String,
    /// Access token lifetime, seconds (at most `max_token_lifetime`).
    pub token_lifetime: i64,
    /// Upper bound for `token_lifetime` (at most [`HARD_MAX_TOKEN_LIFETIME`]).
    pub max_token_lifetime: i64,
    /// Authorization code lifetime, seconds.
    pub code_lifetime: i64,
    /// How long a human's approval of an agent lasts, seconds.
    pub grant_lifetime: i64,
    /// Allowed clock difference, seconds.
    pub skew: i64,
    /// Oldest accepted DPoP proof `iat`, seconds.
    pub proof_max_age: i64,
    /// Whether the token endpoint requires a server nonce in DPoP proofs.
    pub require_dpop_nonce: bool,
    /// Longest `act` chain, counting the current actor.
    pub max_chain: usize,
}

impl TokenServiceConfig {
    /// Defaults: 5-minute tokens, 60-second codes, 30-day grants, nonces required.
    pub fn new(issuer: impl Into<String>) -> Self {
        TokenServiceConfig {
            issuer: issuer.into(),
            token_lifetime: 300,
            max_token_lifetime: 900,
            code_lifetime: 60,
            grant_lifetime: 30 * 24 * 3600,
            skew: 60,
            proof_max_age: 120,
            require_dpop_nonce: true,
            max_chain: 8,
        }
    }

    /// Refuses a configuration that could not be safe.
    pub fn check(&self) -> Result<(), String> {
        let issuer = &self.issuer;
        if !super::https_or_loopback(issuer) || issuer.ends_with('/') {
            return Err(
                "issuer must be an https URL (http only on loopback), without a trailing /".into(),
            );
        }
        if self.max_token_lifetime > HARD_MAX_TOKEN_LIFETIME
            || self.token_lifetime <= 0
            || self.token_lifetime > self.max_token_lifetime
        {
            return Err(format!(
                "token lifetime must be 1..=max ({}), and max at most {HARD_MAX_TOKEN_LIFETIME}",
                self.max_token_lifetime
            ));
        }
        if self.code_lifetime <= 0 || self.code_lifetime > 600 || self.skew < 0 || self.skew > 300 {
            return Err("code lifetime must be 1..=600 s and skew 0..=300 s".into());
        }
        if self.max_chain == 0 || self.max_chain > 16 || self.proof_max_age <= 0 {
            return Err("max chain must be 1..=16 and proof age positive".into());
        }
        Ok(())
    }
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The compact `at+jwt`.
    pub access_token: String,
    /// Its claims.
    pub claims: AccessTokenClaims,
}

impl Issued {
    /// The RFC 6749 §5.1 / RFC 8693 §2.2.1 response body.
    pub fn response(&self, exchange: bool, now: i64) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "token_type": "DPoP",
            "expires_in": self.claims.exp - now,
            "scope": self.claims.scope.join(" "),
        });
        if exchange {
            body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token".into();
        }
        if let Some(details) = &self.claims.authorization_details {
            body["authorization_details"] = details.clone();
        }
        body
    }
}

/// Client authentication parameters of a token, revocation or introspection request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAuth<'a> {
    /// `client_id`, if sent.
    pub client_id: Option<&'a str>,
    /// `client_assertion_type`.
    pub assertion_type: Option<&'a str>,
    /// `client_assertion`.
    pub assertion: Option<&'a str>,
}

/// Who asks to introspect or revoke.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The administrator (admin token).
    Admin,
    /// An authenticated agent.
    Agent(String),
}

struct KeyCache {
    signer: Option<Arc<SigningKey>>,
    verify: KeySet,
    loaded_at: i64,
}

/// The token service.
pub struct TokenService {
    pub(super) store: Store,
    pub(super) master: Arc<MasterKey>,
    pub(super) config: TokenServiceConfig,
    nonces: NonceMint,
    keys: RwLock<KeyCache>,
    pub(super) external: Vec<ExternalIssuer>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// How often cached keys are re-read from the store, seconds.
const KEY_REFRESH: i64 = 60;

/// The scope of used DPoP proof ids among the single-use ids the store keeps.
const PROOF_SCOPE: &str = "dpop";

/// Access token signatures remembered per key load (exact token bytes only; claims, times and
/// standing are still checked on every use).
const REMEMBERED_TOKENS: usize = 16_384;

/// A DPoP proof presented a second time.
fn proof_replayed() -> TokenError {
    TokenError::Replayed {
        code: OAuthCode::InvalidDpopProof,
        rule: "DPoP proof replayed",
    }
}

impl TokenService {
    /// A service over `store`, with keys sealed by `master` and these external issuers.
    pub fn new(
        store: Store,
        master: Arc<MasterKey>,
        config: TokenServiceConfig,
        external: Vec<ExternalIssuerConfig>,
    ) -> Result<Self, String> {
        config.check()?;
        let external = external
            .into_iter()
            .map(ExternalIssuer::load)
            .collect::<Result<Vec<_>, _>>()?;
        let nonces = NonceMint::new(master.derive("dpop-nonce").as_ref(), 60);
        Ok(TokenService {
            store,
            master,
            config,
            nonces,
            keys: RwLock::new(KeyCache {
                signer: None,
                verify: KeySet::new(),
                loaded_at: i64::MIN,
            }),
            external,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TokenServiceConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A fresh DPoP nonce, for the `DPoP-Nonce` header.
    pub fn dpop_nonce(&self, now: i64) -> String {
        self.nonces.issue(now)
    }

    /// The RFC 8414 metadata document.
    pub fn metadata(&self) -> Value {
        let iss = &self.config.issuer;
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/oauth2/authorize"),
            "token_endpoint": format!("{iss}/oauth2/token"),
            "revocation_endpoint": format!("{iss}/oauth2/revoke"),
            "introspection_endpoint": format!("{iss}/oauth2/introspect"),
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "response_types_supported": ["code"],
            "grant_types_supported": [
                "authorization_code",
                super::grants::TOKEN_EXCHANGE_GRANT
            ],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
            "revocation_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
            "introspection_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "dpop_signing_alg_values_supported": ["ES256"],
            "authorization_details_types_supported": ["payment"],
            "authorization_response_iss_parameter_supported": true,
            "scopes_supported": ["mandates:request", "payments:present"],
        })
    }

    // ---- keys -------------------------------------------------------------------------------

    /// The current token signing key.
    pub async fn signing_key(&self, now: i64) -> Result<Arc<SigningKey>, TokenError> {
        self.refresh_keys(now, false).await?;
        let cache = self.keys.read().map_err(|_| StoreError::Unavailable)?;
        cache
            .signer
            .clone()
            .ok_or(TokenError::Unavailable(StoreError::Unavailable))
    }

    /// The newest signing key of another purpose of this instance (`mandates`, …), made on
    /// first use and sealed by the same master key. Never a token key.
    pub async fn purpose_key(&self, purpose: &str, now: i64) -> Result<SigningKey, TokenError> {
        if purpose == TOKEN_KEY_PURPOSE {
            return Err(TokenError::Unavailable(StoreError::Unavailable));
        }
        Ok(self.store.signing_key(&self.master, purpose, now).await?)
    }

    /// The keys access tokens verify with (refreshed when stale or when `kid` is unknown).
    pub async fn verification_keys(
        &self,
        now: i64,
        kid: Option<&str>,
    ) -> Result<KeySet, TokenError> {
        let unknown = {
            let cache = self.keys.read().map_err(|_| StoreError::Unavailable)?;
            kid.is_some_and(|kid| cache.verify.get(kid).is_err())
        };
        self.refresh_keys(now, unknown).await?;
        let cache = self.keys.read().map_err(|_| StoreError::Unavailable)?;
        Ok(cache.verify.clone())
    }

    /// Rotates the token signing key; the old one verifies for `overlap` more seconds.
    pub async fn rotate_keys(&self, now: i64, overlap: i64) -> Result<(), TokenError> {
        self.store
            .rotate(&self.master, TOKEN_KEY_PURPOSE, now, overlap)
            .await?;
        self.reload_keys(now).await
    }

    async fn refresh_keys(&self, now: i64, force: bool) -> Result<(), TokenError> {
        {
            let cache = self.keys.read().map_err(|_| StoreError::Unavailable)?;
            let fresh = cache.signer.is_some() && now - cache.loaded_at < KEY_REFRESH;
            // A forced refresh (unknown kid) happens at most once a second.
            if fresh && (!force || now == cache.loaded_at) {
                return Ok(());
            }
        }
        self.reload_keys(now).await
    }

    async fn reload_keys(&self, now: i64) -> Result<(), TokenError> {
        let signer = self
            .store
            .signing_key(&self.master, TOKEN_KEY_PURPOSE, now)
            .await?;
        // An agent presents one token for minutes: its signature is verified once per key load.
        let mut verify = KeySet::new().remember_verified(REMEMBERED_TOKENS);
        let prefix = format!("{TOKEN_KEY_PURPOSE}-");
        for key in self.store.verification_keys(now).await? {
            // Only token keys: a mandate or receipt key must never make an access token valid.
            if key.kid().is_some_and(|kid| kid.starts_with(&prefix)) {
                verify
                    .insert(key)
                    .map_err(|_| StoreError::Corrupt("keys.kid"))?;
            }
        }
        let mut cache = self.keys.write().map_err(|_| StoreError::Unavailable)?;
        *cache = KeyCache {
            signer: Some(Arc::new(signer)),
            verify,
            loaded_at: now,
        };
        Ok(())
    }

    // ---- client authentication --------------------------------------------------------------

    /// Authenticates the calling agent (RFC 7523 `private_key_jwt`, or a federated assertion).
    pub async fn authenticate_client(
        &self,
        auth: &ClientAuth<'_>,
        now: i64,
    ) -> Result<Agent, TokenError> {
        const RULE: &str = "client authentication must be a JWT assertion (private_key_jwt)";
        let (Some(JWT_BEARER), Some(assertion)) = (auth.assertion_type, auth.assertion) else {
            return Err(TokenError::refused(OAuthCode::InvalidClient, RULE));
        };
        let asserted_iss = insecure_string_claim(assertion, "iss");
        let client_id = auth
            .client_id
            .map(str::to_owned)
            .or_else(|| asserted_iss.clone())
            .ok_or(TokenError::refused(
                OAuthCode::InvalidClient,
                "client not identified",
            ))?;
        let agent = self
            .active_agent(&client_id, OAuthCode::InvalidClient)
            .await?;

        let external = asserted_iss
            .as_deref()
            .and_then(|iss| self.external.iter().find(|e| e.issuer() == iss));
        let checked = match external {
            Some(issuer) => {
                let check = AssertionCheck {
                    audience: "",
                    now,
                    max_lifetime: HARD_MAX_TOKEN_LIFETIME,
                    skew: self.config.skew,
                };
                let keys = issuer.keys();
                check_federated_assertion(assertion, issuer.issuer(), &keys, &agent, &check)
            }
            None => check_agent_assertion(assertion, &agent, &self.assertion_check(now)),
        }
        .map_err(|rule| TokenError::refused(OAuthCode::InvalidClient, rule))?;

        if let Some(jti) = &checked.jti {
            let key = format!("{}:{jti}", agent.id);
            let fresh = self
                .store
                .remember_jti("client_assertion", &key, checked.exp + self.config.skew)
                .await?;
            if !fresh {
                return Err(TokenError::Replayed {
                    code: OAuthCode::InvalidClient,
                    rule: "client assertion replayed",
                });
            }
        }
        Ok(agent)
    }

    pub(super) fn assertion_check(&self, now: i64) -> AssertionCheck<'_> {
        AssertionCheck {
            audience: &self.config.issuer,
            now,
            max_lifetime: 300,
            skew: self.config.skew,
        }
    }

    /// The active agent `id`, or a refusal with `code`.
    pub(super) async fn active_agent(
        &self,
        id: &str,
        code: OAuthCode,
    ) -> Result<Agent, TokenError> {
        match self.store.agent(id).await {
            Ok(agent) if agent.status == AgentStatus::Active => Ok(agent),
            Ok(_) => Err(TokenError::refused(code, "agent disabled")),
            Err(StoreError::NotFound) => Err(TokenError::refused(code, "agent unknown")),
            Err(e) => Err(e.into()),
        }
    }

    // ---- DPoP -------------------------------------------------------------------------------

    /// Checks a DPoP proof for a request to `path`, all but its single use, which the caller
    /// records.
    fn check_dpop_unrecorded(
        &self,
        proof: Option<&str>,
        htm: &str,
        path: &str,
        access_token: Option<&str>,
        require_nonce: bool,
        now: i64,
    ) -> Result<CheckedProof, TokenError> {
        let proof = proof.ok_or(TokenError::refused(
            OAuthCode::InvalidDpopProof,
            "a DPoP proof is required",
        ))?;
        let htu = format!("{}{path}", self.config.issuer);
        let check = ProofCheck {
            htm,
            htu: &htu,
            access_token,
            now,
            max_age: self.config.proof_max_age,
            skew: self.config.skew,
        };
        let checked = check_proof(proof, &check)
            .map_err(|rule| TokenError::refused(OAuthCode::InvalidDpopProof, rule))?;
        if require_nonce
            && !checked
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonces.accepts(n, now))
        {
            return Err(TokenError::refused(
                OAuthCode::UseDpopNonce,
                "a fresh DPoP nonce is required",
            ));
        }
        Ok(checked)
    }

    /// Checks a DPoP proof for a request to `path` and records its `jti` as used: a proof is
    /// accepted once.
    pub async fn check_dpop(
        &self,
        proof: Option<&str>,
        htm: &str,
        path: &str,
        access_token: Option<&str>,
        require_nonce: bool,
        now: i64,
    ) -> Result<CheckedProof, TokenError> {
        let checked =
            self.check_dpop_unrecorded(proof, htm, path, access_token, require_nonce, now)?;
        let (key, keep) = self.proof_use(&checked);
        if !self.store.remember_jti(PROOF_SCOPE, &key, keep).await? {
            return Err(proof_replayed());
        }
        Ok(checked)
    }

    /// How a checked proof's single use is recorded: its key in the `dpop` scope, and until
    /// when (after which its `iat` is too old for it to be accepted anyway).
    fn proof_use(&self, checked: &CheckedProof) -> (String, i64) {
        (
            format!("{}:{}", checked.jkt, checked.jti),
            checked.iat + self.config.proof_max_age + self.config.skew,
        )
    }

    // ---- issuing ----------------------------------------------------------------------------

    /// Signs, records and audits a token.
    pub(super) async fn issue(
        &self,
        claims: AccessTokenClaims,
        delegated_by: Vec<String>,
        external_subject: bool,
        action: &str,
        now: i64,
    ) -> Result<Issued, TokenError> {
        let key = self.signing_key(now).await?;
        let access_token = claims.sign(&key).map_err(|_| StoreError::Unavailable)?;
        let record = TokenRecord {
            jti: claims.jti.clone(),
            grant_id: claims.grant_id.clone(),
            agent_id: claims.client_id.clone(),
            user_id: claims.sub.clone(),
            delegated_by,
            external_subject,
            status: TokenStatus::Active,
            exp: claims.exp,
        };
        self.store
            .record_token(&record)
            .await
            .map_err(record_refusal)?;
        self.audit(AuditRecord {
            action: action.into(),
            outcome: "success".into(),
            ..token_audit(&claims, now)
        })
        .await?;
        tracing::info!(action, agent = %claims.client_id, jti = %claims.jti, "access token issued");
        Ok(Issued {
            access_token,
            claims,
        })
    }

    /// A new token's claims with a fresh `jti`.
    pub(super) fn new_claims(&self, now: i64) -> Result<AccessTokenClaims, TokenError> {
        Ok(AccessTokenClaims {
            iss: self.config.issuer.clone(),
            sub: String::new(),
            aud: self.config.issuer.clone(),
            client_id: String::new(),
            actors: Vec::new(),
            scope: Vec::new(),
            authorization_details: None,
            jkt: String::new(),
            jti: random_token(18).map_err(|_| StoreError::Unavailable)?,
            iat: now,
            exp: now + self.config.token_lifetime,
            grant_id: None,
            may_act: None,
        })
    }

    // ---- checking ---------------------------------------------------------------------------

    /// Verifies one of our access tokens (signature, issuer, times) without the store.
    pub async fn verify_token(
        &self,
        token: &str,
        now: i64,
        allow_expired: bool,
    ) -> Result<AccessTokenClaims, TokenError> {
        let kid = crate::jose::UnverifiedJws::parse(
            token,
            &crate::jose::HeaderPolicy::trusted_key(crate::jose::TypRule::OneOf(&[
                token::ACCESS_TOKEN_TYP,
                "application/at+jwt",
            ])),
        )
        .ok()
        .and_then(|j| j.header().kid().map(str::to_owned));
        let keys = self.verification_keys(now, kid.as_deref()).await?;
        let policy = AccessTokenPolicy {
            issuer: &self.config.issuer,
            skew: self.config.skew,
        };
        token::verify(token, &keys, &policy, now, allow_expired)
            .map_err(|_| TokenError::refused(OAuthCode::InvalidToken, "access token invalid"))
    }

    /// Whether the token with this `jti` still stands (not revoked, grant and actors active).
    pub async fn standing(&self, jti: &str) -> Result<Standing, TokenError> {
        Ok(self.store.token_standing(jti).await?)
    }

    /// Authenticates a request to a protected resource: `Authorization: DPoP <token>` and a
    /// `DPoP` proof for this method and path, a token for `audience`, still standing, holding
    /// `scope` when one is required.
    #[allow(clippy::too_many_arguments)] // each argument is one part of the request
    pub async fn authenticate_resource(
        &self,
        authorization: Option<&str>,
        proof: Option<&str>,
        htm: &str,
        path: &str,
        audience: &str,
        scope: Option<&str>,
        now: i64,
    ) -> Result<AccessTokenClaims, TokenError> {
        let token = match authorization.and_then(|h| h.split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("DPoP") => token.trim(),
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("Bearer") => {
                return Err(TokenError::refused(
                    OAuthCode::InvalidToken,
                    "a DPoP-bound token is not accepted as a bearer token",
                ))
            }
            _ => {
                return Err(TokenError::refused(
                    OAuthCode::InvalidToken,
                    "an access token is required (Authorization: DPoP)",
                ))
            }
        };
        let claims = self.verify_token(token, now, false).await?;
        if claims.aud != audience {
            return Err(TokenError::refused(
                OAuthCode::InvalidToken,
                "access token audience is not this resource",
            ));
        }
        let checked = self.check_dpop_unrecorded(proof, htm, path, Some(token), false, now)?;
        if checked.jkt != claims.jkt {
            return Err(TokenError::refused(
                OAuthCode::InvalidDpopProof,
                "DPoP proof key is not the key the token is bound to",
            ));
        }
        // The proof's single use and the token's standing, in one round trip.
        let (key, keep) = self.proof_use(&checked);
        let (fresh, standing) = self
            .store
            .remember_proof_with_standing(PROOF_SCOPE, &key, keep, &claims.jti)
            .await?;
        if !fresh {
            return Err(proof_replayed());
        }
        if standing != Standing::Active {
            return Err(TokenError::refused(
                OAuthCode::InvalidToken,
                "access token revoked, or its grant or agent is no longer active",
            ));
        }
        if scope.is_some_and(|s| !claims.scope.iter().any(|c| c == s)) {
            return Err(TokenError::refused(
                OAuthCode::InsufficientScope,
                "access token lacks the required scope",
            ));
        }
        Ok(claims)
    }

    /// RFC 7662: the token's claims if it is active and the caller may see it, else inactive.
    pub async fn introspect(
        &self,
        token: &str,
        caller: &Caller,
        now: i64,
    ) -> Result<Value, TokenError> {
        let inactive = json!({"active": false});
        let claims = match self.verify_token(token, now, false).await {
            Ok(claims) => claims,
            Err(TokenError::Refused { .. }) => return Ok(inactive),
            Err(e) => return Err(e),
        };
        if let Caller::Agent(id) = caller {
            if *id != claims.client_id {
                return Ok(inactive);
            }
        }
        if self.standing(&claims.jti).await? != Standing::Active {
            return Ok(inactive);
        }
        let mut body = claims.to_value();
        body["active"] = true.into();
        body["token_type"] = "DPoP".into();
        Ok(body)
    }

    /// RFC 7009: revokes one of our tokens; unknown or invalid tokens are not an error.
    pub async fn revoke(&self, token: &str, caller: &Caller, now: i64) -> Result<(), TokenError> {
        let claims = match self.verify_token(token, now, true).await {
            Ok(claims) => claims,
            Err(TokenError::Refused { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Caller::Agent(id) = caller {
            if *id != claims.client_id {
                return Err(TokenError::refused(
                    OAuthCode::UnauthorizedClient,
                    "a client may revoke only its own tokens",
                ));
            }
        }
        match self.store.revoke_token(&claims.jti).await {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.audit(AuditRecord {
            action: "token.revoke".into(),
            outcome: "success".into(),
            ..token_audit(&claims, now)
        })
        .await?;
        Ok(())
    }

    // ---- audit ------------------------------------------------------------------------------

    /// Appends an audit record.
    pub async fn audit(&self, record: AuditRecord) -> Result<(), TokenError> {
        self.store.append(&record).await?;
        Ok(())
    }

    /// Records a refusal in the audit log (best effort: a failing store is logged, and the
    /// refusal stands either way).
    pub async fn audit_refusal(
        &self,
        action: &str,
        error: &TokenError,
        agent: Option<&str>,
        now: i64,
    ) {
        let record = AuditRecord {
            at: now,
            action: action.into(),
            outcome: "refused".into(),
            reason: Some(error.reason().into()),
            agent_id: agent.map(str::to_owned),
            correlation_id: random_token(9).unwrap_or_default(),
            ..AuditRecord::default()
        };
        if let Err(e) = self.store.append(&record).await {
            tracing::error!(error = %e, "audit record of a refusal could not be written");
        }
    }
}

/// The audit fields of a token: who (actors), for whom (sub), under what (grant, jti, scope).
pub(crate) fn token_audit(claims: &AccessTokenClaims, now: i64) -> AuditRecord {
    AuditRecord {
        at: now,
        agent_id: Some(claims.client_id.clone()),
        actor_chain: claims.actors.iter().skip(1).cloned().collect(),
        user_id: Some(claims.sub.clone()),
        grant_id: claims.grant_id.clone(),
        token_jti: Some(claims.jti.clone()),
        scope: Some(claims.scope.join(" ")),
        correlation_id: claims.jti.clone(),
        ..AuditRecord::default()
    }
}

/// A write the store refused while issuing: the grant, agent or user stopped being active.
pub(super) fn record_refusal(e: RecordError) -> TokenError {
    match e {
        RecordError::Store(e) => TokenError::Unavailable(e),
        RecordError::AgentNotActive => {
            TokenError::refused(OAuthCode::InvalidGrant, "agent disabled")
        }
        RecordError::GrantNotActive => {
            TokenError::refused(OAuthCode::InvalidGrant, "grant revoked or expired")
        }
        RecordError::UserNotActive => TokenError::refused(OAuthCode::InvalidGrant, "user disabled"),
        _ => TokenError::refused(OAuthCode::InvalidRequest, "token could not be recorded"),
    }
}
