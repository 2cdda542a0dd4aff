//! The wallet (DESIGN §4, consent and issuance): an authenticated agent proposes mandate
//! contents, the human approves or denies them on a page out of the agent's reach, and only
//! then does the wallet sign root mandates that tie the payment authority to three things a
//! verifier can check: the human (`sub`), the agent (its registered id, and its key as `cnf`),
//! and the grant and consent it asked under (`delegation`).
//!
//! Contents are validated when they are proposed (known constraint types in their places,
//! well-formed amounts and currencies, a bounded window, within what the token's
//! `authorization_details` allow) and kept byte for byte; the consent page and the signed
//! mandates are both made from that stored text, so what is signed is what was shown.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::identity::service::token_audit;
use crate::identity::token::AccessTokenClaims;
use crate::identity::{random_token, TokenService};
use crate::jose::{sha256_b64, PublicJwk};
use crate::mandate::build::issue;

use crate::mandate::{
    amount_value, describe, CheckoutJwt, ClosedPaymentMandate, Constraint, OpenCheckoutMandate,
    OpenPaymentMandate,
};
use crate::money::Currency;
use crate::store::records::{
    ConsentRefusal, ConsentRequest, ConsentStatus, IssueBatch, IssuedMandate, RecordError,
    WalletRecords as _,
};
use crate::store::{AuditLog as _, AuditRecord, StoreError};

/// The scope an agent's token needs to ask for mandates.
pub const REQUEST_SCOPE: &str = "mandates:request";

/// The key purpose mandates are signed under.
pub const MANDATE_KEY_PURPOSE: &str = "mandates";

/// The key purpose status list tokens are signed under.
pub const STATUS_KEY_PURPOSE: &str = "status";

/// The `typ` of a status list token (OAuth Token Status List).
pub const STATUS_LIST_TYP: &str = "statuslist+jwt";

/// How long a relying party may cache a status list token, seconds.
const STATUS_LIST_TTL: i64 = 60;

/// The root `typ` of the mandates we sign (the one AP2's reference SDK uses is accepted too).
pub const ROOT_TYP: &str = "dc+sd-jwt";

/// How the wallet behaves.
#[derive(Debug, Clone)]
pub struct WalletConfig {
    /// The audience agents' tokens must be issued for.
    pub audience: String,
    /// `iss` of the mandates (the instance's public URL).
    pub issuer: String,
    /// The status list the mandates point into.
    pub status_list_id: String,
    /// Its size (entries).
    pub status_list_size: i64,
    /// How long a request waits for the human, seconds.
    pub consent_lifetime: i64,
    /// A mandate's lifetime when the request names none, seconds.
    pub default_window: i64,
    /// The longest lifetime a request may ask for, seconds.
    pub max_window: i64,
    /// Merchant keys whose checkouts may be signed into closed (human-present) mandates;
    /// without them closed requests are refused.
    pub merchants: Option<crate::jwks::TrustedKeys>,
}

impl WalletConfig {
    /// Defaults for an instance at `issuer`: 10-minute requests, 7-day mandates, at most 90 days.
    pub fn new(issuer: &str) -> Self {
        WalletConfig {
            audience: format!("{issuer}/wallet"),
            issuer: issuer.to_owned(),
            status_list_id: "mandates-1".into(),
            status_list_size: 1 << 20,
            consent_lifetime: 600,
            default_window: 7 * 86_400,
            max_window: 90 * 86_400,
            merchants: None,
        }
    }
}

/// Why the wallet refused; each has one wire mapping (see the HTTP layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The proposed contents are not acceptable; the rule is a fixed description.
    #[error("{0}")]
    Invalid(&'static str),
    /// The caller may not see or decide this request.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such request or mandate.
    #[error("not found")]
    NotFound,
    /// Decided already, or expired.
    #[error("{0}")]
    Conflict(&'static str),
    /// The store or a key failed: nothing was decided.
    #[error("wallet unavailable")]
    Unavailable,
}

impl From<StoreError> for WalletError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => WalletError::NotFound,
            _ => WalletError::Unavailable,
        }
    }
}

impl From<RecordError> for WalletError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => e.into(),
            RecordError::AgentNotActive => WalletError::Conflict("the agent is no longer active"),
            RecordError::GrantNotActive => WalletError::Conflict("the grant is no longer active"),
            RecordError::ConsentNotApproved => WalletError::Conflict("the request is not approved"),
            RecordError::StatusListFull => WalletError::Unavailable,
            _ => WalletError::Invalid("the request could not be recorded"),
        }
    }
}

/// What an agent proposes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proposal {
    mode: String,
    checkout: Content,
    payment: Content,
    expires_at: Option<i64>,
    cnf: Option<Value>,
}

/// What an agent proposes for a human-present purchase.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClosedProposal {
    #[allow(dead_code)] // read to choose this form; always "closed"
    mode: String,
    checkout_jwt: String,
    payment: ClosedContent,
    expires_at: Option<i64>,
    cnf: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClosedContent {
    payment_instrument: Value,
    pisp: Option<Value>,
}

/// The longest (and default) lifetime of closed mandates, seconds.
const CLOSED_WINDOW: i64 = 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    vct: Option<String>,
    constraints: Vec<Value>,
}

/// A validated proposal, ready to show and to sign.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// The open checkout mandate's constraints.
    pub checkout: Vec<Constraint>,
    /// The open payment mandate's constraints (without `payment.reference`, which the wallet
    /// adds).
    pub payment: Vec<Constraint>,
    /// The mandates' `exp`.
    pub expires_at: i64,
    /// The agent's key the mandates delegate to.
    pub cnf: PublicJwk,
    raw_checkout: Vec<Value>,
    raw_payment: Vec<Value>,
    closed: Option<Closed>,
}

/// A human-present request: the merchant's verified checkout and the payment for it.
#[derive(Debug, Clone)]
struct Closed {
    checkout: CheckoutJwt,
    payment: ClosedPaymentMandate,
    payment_object: Map<String, Value>,
}

impl Reviewed {
    /// What the person approves, in plain words: what may be bought, then how it is paid.
    pub fn lines(&self) -> (Vec<String>, Vec<String>) {
        if let Some(c) = &self.closed {
            let cart: Vec<String> = c
                .checkout
                .cart()
                .iter()
                .map(|l| format!("{} x {}", l.quantity, l.item_id))
                .collect();
            let merchant = c
                .checkout
                .merchant()
                .map_or_else(String::new, describe::merchant);
            return (
                vec![format!(
                    "exactly this order from {merchant}: {}",
                    cart.join("; ")
                )],
                vec![describe::closed_payment(&c.payment)],
            );
        }
        (
            self.checkout.iter().map(describe::constraint).collect(),
            self.payment.iter().map(describe::constraint).collect(),
        )
    }

    /// Whether the mandates are closed (one purchase, signed by the wallet alone).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }
}

/// The wallet role.
pub struct WalletService {
    config: WalletConfig,
    tokens: Arc<TokenService>,
}

impl std::fmt::Debug for WalletService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletService")
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

impl WalletService {
    /// A wallet over the token service's store; creates its status list on first start.
    pub async fn new(config: WalletConfig, tokens: Arc<TokenService>) -> Result<Self, String> {
        if config.consent_lifetime <= 0
            || config.default_window <= 0
            || config.default_window > config.max_window
            || config.max_window > 366 * 86_400
        {
            return Err(
                "wallet windows must be positive, default within max, max within a year".into(),
            );
        }
        match tokens
            .store()
            .create_status_list(&config.status_list_id, config.status_list_size)
            .await
        {
            Ok(()) | Err(RecordError::Store(StoreError::AlreadyExists)) => {}
            Err(e) => return Err(format!("wallet status list: {e}")),
        }
        Ok(WalletService { config, tokens })
    }

    /// The configuration.
    pub fn config(&self) -> &WalletConfig {
        &self.config
    }

    /// The token service (sign-in, sessions, resource authentication).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Validates a proposal by an authenticated agent and stores it as a pending request.
    pub async fn propose(
        &self,
        caller: &AccessTokenClaims,
        body: &[u8],
        now: i64,
    ) -> Result<ConsentRequest, WalletError> {
        let reviewed = std::str::from_utf8(body)
            .map_err(|_| WalletError::Invalid("body is not UTF-8"))
            .and_then(|text| self.review(text, Some(caller), now).map(|_| text));
        let text = match reviewed {
            Ok(text) => text,
            Err(e) => {
                // Who asked, for whom, under what, and why not; the body itself stays out.
                let record = AuditRecord {
                    action: "mandate.request".into(),
                    outcome: "refused".into(),
                    reason: Some(e.to_string()),
                    scope: Some(REQUEST_SCOPE.into()),
                    ..token_audit(caller, now)
                };
                self.tokens.store().append(&record).await?;
                return Err(e);
            }
        };
        let consent = ConsentRequest {
            id: format!(
                "mr_{}",
                random_token(15).map_err(|_| WalletError::Unavailable)?
            ),
            user_id: caller.sub.clone(),
            agent_id: caller.client_id.clone(),
            grant_id: caller.grant_id.clone(),
            token_jti: Some(caller.jti.clone()),
            body: text.to_owned(),
            status: ConsentStatus::Pending,
            created_at: now,
            expires_at: now + self.config.consent_lifetime,
            decided_at: None,
        };
        self.tokens.store().create_consent(&consent).await?;
        self.audit(&consent, "mandate.request", "success", None, now)
            .await?;
        Ok(consent)
    }

    /// Reads a proposed or stored body by the same rules every time, so the page shows exactly
    /// what will be signed. With the proposing `token`, also checks that `cnf` is its key and
    /// that the contents fit its `authorization_details`; a stored body passed both when it was
    /// accepted and has not changed since.
    pub fn review(
        &self,
        text: &str,
        token: Option<&AccessTokenClaims>,
        now: i64,
    ) -> Result<Reviewed, WalletError> {
        let value = crate::json::parse(text.as_bytes(), 64 * 1024)
            .map_err(|_| WalletError::Invalid("body is not strict JSON"))?;
        if value.get("mode").and_then(Value::as_str) == Some("closed") {
            return self.review_closed(value, token, now);
        }
        let p: Proposal = serde_json::from_value(value)
            .map_err(|_| WalletError::Invalid("body does not match a mandate request"))?;
        if p.mode != "open" {
            return Err(WalletError::Invalid("mode must be open or closed"));
        }
        for (content, vct) in [
            (&p.checkout, "mandate.checkout.open.1"),
            (&p.payment, "mandate.payment.open.1"),
        ] {
            if content.vct.as_deref().is_some_and(|v| v != vct) {
                return Err(WalletError::Invalid("a vct is not the open mandate's"));
            }
        }
        let expires_at = p.expires_at.unwrap_or(now + self.config.default_window);
        if expires_at <= now || expires_at > now + self.config.max_window {
            return Err(WalletError::Invalid(
                "expires_at must be in the future and within the maximum window",
            ));
        }
        // The key the mandates delegate to is named in the request, so the stored text holds it.
        let jwk = p
            .cnf
            .as_ref()
            .and_then(|c| c.get("jwk"))
            .ok_or(WalletError::Invalid(
                "cnf.jwk (the agent's DPoP key) is required",
            ))?;
        let cnf = agent_key(jwk, token)?;
        let checkout = parse_constraints(&p.checkout.constraints, "checkout.")?;
        let payment = parse_constraints(&p.payment.constraints, "payment.")?;
        if payment
            .iter()
            .any(|c| matches!(c, Constraint::Reference { .. }))
        {
            return Err(WalletError::Invalid(
                "payment.reference is set by the wallet",
            ));
        }
        if !checkout
            .iter()
            .any(|c| matches!(c, Constraint::LineItems(_)))
        {
            return Err(WalletError::Invalid(
                "an open checkout mandate needs checkout.line_items",
            ));
        }
        let reviewed = Reviewed {
            checkout,
            payment,
            expires_at,
            cnf,
            raw_checkout: p.checkout.constraints,
            raw_payment: p.payment.constraints,
            closed: None,
        };
        // The mandate objects must read back as the core reads them.
        let probe = reviewed.mandates(now);
        OpenCheckoutMandate::from_delegate(&probe.0)
            .and_then(|_| OpenPaymentMandate::from_delegate(&probe.1))
            .map_err(|_| WalletError::Invalid("the contents do not form AP2 open mandates"))?;
        within_details(&reviewed, token)?;
        Ok(reviewed)
    }

    /// A human-present request: the merchant's checkout (verified against the merchant keys the
    /// wallet trusts) and the instrument; the payee and amount are the checkout's, so the
    /// payment cannot differ from the order shown.
    fn review_closed(
        &self,
        value: Value,
        token: Option<&AccessTokenClaims>,
        now: i64,
    ) -> Result<Reviewed, WalletError> {
        let p: ClosedProposal = serde_json::from_value(value)
            .map_err(|_| WalletError::Invalid("body does not match a closed mandate request"))?;
        let merchants = self.config.merchants.as_ref().ok_or(WalletError::Invalid(
            "this wallet trusts no merchant keys, so it cannot sign closed mandates",
        ))?;
        let (merchants, _) = merchants.current(now);
        let checkout = CheckoutJwt::verify(&p.checkout_jwt, &merchants, now).map_err(|_| {
            WalletError::Invalid("the checkout is not one a trusted merchant signed")
        })?;
        let merchant = checkout
            .merchant()
            .ok_or(WalletError::Invalid("the checkout names no merchant"))?;
        let jwk = p.cnf.get("jwk").ok_or(WalletError::Invalid(
            "cnf.jwk (the agent's DPoP key) is required",
        ))?;
        let cnf = agent_key(jwk, token)?;
        let expires_at = p.expires_at.unwrap_or(now + CLOSED_WINDOW);
        if expires_at <= now || expires_at > now + CLOSED_WINDOW {
            return Err(WalletError::Invalid(
                "expires_at of a closed mandate must be within the hour",
            ));
        }
        let mut payment_object = Map::new();
        payment_object.insert("vct".into(), "mandate.payment.1".into());
        payment_object.insert("transaction_id".into(), checkout.hash().into());
        payment_object.insert(
            "payee".into(),
            serde_json::to_value(merchant).map_err(|_| WalletError::Unavailable)?,
        );
        payment_object.insert("payment_amount".into(), amount_value(&checkout.total()));
        payment_object.insert("payment_instrument".into(), p.payment.payment_instrument);
        if let Some(pisp) = p.payment.pisp {
            payment_object.insert("pisp".into(), pisp);
        }
        let payment = ClosedPaymentMandate::from_delegate(&payment_object)
            .map_err(|_| WalletError::Invalid("the payment does not form an AP2 closed mandate"))?;
        let reviewed = Reviewed {
            checkout: Vec::new(),
            payment: Vec::new(),
            expires_at,
            cnf,
            raw_checkout: Vec::new(),
            raw_payment: Vec::new(),
            closed: Some(Closed {
                checkout,
                payment,
                payment_object,
            }),
        };
        within_details(&reviewed, token)?;
        Ok(reviewed)
    }

    /// The agent's view of its request: status and, once approved, the signed mandates.
    pub async fn fetch(
        &self,
        caller: &AccessTokenClaims,
        id: &str,
        now: i64,
    ) -> Result<Value, WalletError> {
        let consent = self.tokens.store().consent(id).await?;
        if consent.agent_id != caller.client_id || consent.user_id != caller.sub {
            // Another agent's request is indistinguishable from none.
            return Err(WalletError::NotFound);
        }
        let status = consent.status_at(now);
        let mut body =
            json!({"id": consent.id, "status": status.as_str(), "expires_at": consent.expires_at});
        if status == ConsentStatus::Approved {
            for m in self.tokens.store().issued_mandates(id).await? {
                body[format!("{}_mandate", m.kind)] = m.sd_jwt.into();
                body[format!("{}_mandate_id", m.kind)] = m.mandate_id.into();
            }
        }
        Ok(body)
    }

    /// The human's decision. Approval signs the mandates in the same step; racing decisions
    /// leave exactly one winner.
    pub async fn decide(
        &self,
        user_id: &str,
        id: &str,
        approve: bool,
        now: i64,
    ) -> Result<Vec<IssuedMandate>, WalletError> {
        let store = self.tokens.store();
        let consent = store.consent(id).await?;
        if consent.user_id != user_id {
            return Err(WalletError::Forbidden("this request is another user's"));
        }
        let reviewed = self.review(&consent.body, None, consent.created_at)?;
        let refusal = if approve {
            match self.issue(&consent, &reviewed, now).await? {
                Ok(issued) => {
                    self.audit(&consent, "mandate.consent", "success", None, now)
                        .await?;
                    for m in &issued {
                        let mut record =
                            self.record(&consent, "mandate.issue", "success", None, now);
                        record.mandate_hash = Some(root_hash(&m.sd_jwt));
                        self.tokens.store().append(&record).await?;
                    }
                    return Ok(issued);
                }
                Err(refusal) => refusal,
            }
        } else {
            match store.decide_consent(id, user_id, false, now).await? {
                Ok(()) => {
                    self.audit(
                        &consent,
                        "mandate.consent",
                        "refused",
                        Some("denied by the user"),
                        now,
                    )
                    .await?;
                    return Ok(Vec::new());
                }
                Err(refusal) => refusal,
            }
        };
        Err(match refusal {
            ConsentRefusal::NotFound => WalletError::NotFound,
            ConsentRefusal::OtherUser => WalletError::Forbidden("this request is another user's"),
            ConsentRefusal::AlreadyDecided => {
                WalletError::Conflict("this request was decided already")
            }
            ConsentRefusal::Expired => WalletError::Conflict("this request has expired"),
        })
    }

    /// The status list token of list `id` (OAuth Token Status List): one bit per mandate, set
    /// when it is revoked, zlib-compressed, signed ES256 by this instance.
    pub async fn status_list_token(&self, id: &str, now: i64) -> Result<String, WalletError> {
        let store = self.tokens.store();
        let list = store.status_list(id).await?;
        let entries =
            usize::try_from(list.next_index.max(1)).map_err(|_| WalletError::Unavailable)?;
        let mut bits = vec![0u8; entries.div_ceil(8)];
        for index in store.revoked_indexes(id).await? {
            let i = usize::try_from(index).map_err(|_| WalletError::Unavailable)?;
            if let Some(byte) = bits.get_mut(i / 8) {
                *byte |= 1 << (i % 8);
            }
        }
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&bits, 9);
        let claims = json!({
            "sub": format!("{}/v1/status-lists/{id}", self.config.issuer),
            "iss": self.config.issuer,
            "iat": now,
            "exp": now + 2 * STATUS_LIST_TTL,
            "ttl": STATUS_LIST_TTL,
            "status_list": {"bits": 1, "lst": crate::jose::b64::encode(compressed)},
        });
        let key = self
            .tokens
            .purpose_key(STATUS_KEY_PURPOSE, now)
            .await
            .map_err(|_| WalletError::Unavailable)?;
        crate::jose::sign_compact(
            &key,
            Some(STATUS_LIST_TYP),
            false,
            claims.to_string().as_bytes(),
        )
        .map_err(|_| WalletError::Unavailable)
    }

    async fn issue(
        &self,
        consent: &ConsentRequest,
        reviewed: &Reviewed,
        now: i64,
    ) -> Result<Result<Vec<IssuedMandate>, ConsentRefusal>, WalletError> {
        let key = self
            .tokens
            .purpose_key(MANDATE_KEY_PURPOSE, now)
            .await
            .map_err(|_| WalletError::Unavailable)?;
        let (checkout, payment_template) = reviewed.mandates(now);
        let status_uri = format!(
            "{}/v1/status-lists/{}",
            self.config.issuer, self.config.status_list_id
        );
        let mut open_checkout_hash = String::new();
        let mut sign =
            |kind: &str, index: i64, _id: &str| -> Result<(String, String), RecordError> {
                let mut claims = Map::new();
                claims.insert("iss".into(), self.config.issuer.clone().into());
                claims.insert("sub".into(), consent.user_id.clone().into());
                claims.insert("iat".into(), now.into());
                claims.insert("exp".into(), reviewed.expires_at.into());
                claims.insert(
                    "status".into(),
                    json!({"status_list": {"idx": index, "uri": status_uri}}),
                );
                claims.insert(
                    crate::verifier::DELEGATION_CLAIM.into(),
                    json!({"agent_id": consent.agent_id, "agent_jkt": reviewed.cnf.thumbprint(),
                       "grant_id": consent.grant_id, "consent_id": consent.id,
                       "token_jti": consent.token_jti}),
                );
                let mut mandate = match kind {
                    "checkout" => checkout.clone(),
                    _ => {
                        let mut p = payment_template.clone();
                        // Open: the payment names the open checkout it belongs to. Closed: the
                        // transaction id already names the order.
                        if let (false, Some(Value::Array(list))) =
                            (reviewed.is_closed(), p.get_mut("constraints"))
                        {
                            list.push(json!({"type": "payment.reference",
                            "conditional_transaction_id": open_checkout_hash}));
                        }
                        p
                    }
                };
                mandate.insert("iat".into(), now.into());
                let sd_jwt = issue(&key, ROOT_TYP, claims, Value::Object(mandate))
                    .map_err(|_| RecordError::Invalid("mandate signature"))?;
                if kind == "checkout" {
                    open_checkout_hash = sha256_b64(sd_jwt.as_bytes());
                }
                Ok((root_hash(&sd_jwt), sd_jwt))
            };
        let id = |kind: &str| -> Result<(String, String), WalletError> {
            Ok((
                kind.to_owned(),
                format!(
                    "man_{}",
                    random_token(15).map_err(|_| WalletError::Unavailable)?
                ),
            ))
        };
        let kinds = [id("checkout")?, id("payment")?];
        let kinds: Vec<(&str, String)> =
            kinds.iter().map(|(k, i)| (k.as_str(), i.clone())).collect();
        let batch = IssueBatch {
            consent_id: &consent.id,
            user_id: &consent.user_id,
            agent_id: &consent.agent_id,
            grant_id: consent.grant_id.as_deref(),
            status_list_id: &self.config.status_list_id,
            exp: reviewed.expires_at,
        };
        Ok(self
            .tokens
            .store()
            .approve_and_issue(&batch, now, &kinds, &mut sign)
            .await?)
    }

    async fn audit(
        &self,
        consent: &ConsentRequest,
        action: &str,
        outcome: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), WalletError> {
        let record = self.record(consent, action, outcome, reason, now);
        self.tokens.store().append(&record).await?;
        Ok(())
    }

    fn record(
        &self,
        consent: &ConsentRequest,
        action: &str,
        outcome: &str,
        reason: Option<&str>,
        now: i64,
    ) -> AuditRecord {
        AuditRecord {
            at: now,
            action: action.into(),
            outcome: outcome.into(),
            reason: reason.map(str::to_owned),
            agent_id: Some(consent.agent_id.clone()),
            user_id: Some(consent.user_id.clone()),
            grant_id: consent.grant_id.clone(),
            consent_id: Some(consent.id.clone()),
            token_jti: consent.token_jti.clone(),
            scope: Some(REQUEST_SCOPE.into()),
            correlation_id: consent.id.clone(),
            ..AuditRecord::default()
        }
    }
}

impl Reviewed {
    /// The open checkout and open payment mandate objects (payment without its reference).
    fn mandates(&self, now: i64) -> (Map<String, Value>, Map<String, Value>) {
        if let Some(c) = &self.closed {
            let mut checkout = Map::new();
            checkout.insert("vct".into(), "mandate.checkout.1".into());
            checkout.insert("checkout_jwt".into(), c.checkout.raw().into());
            checkout.insert("checkout_hash".into(), c.checkout.hash().into());
            let mut payment = c.payment_object.clone();
            for m in [&mut checkout, &mut payment] {
                m.insert("iat".into(), now.into());
                m.insert("exp".into(), self.expires_at.into());
            }
            return (checkout, payment);
        }
        let cnf = json!({"jwk": self.cnf.to_value()});
        let object = |vct: &str, constraints: &[Value]| {
            let mut m = Map::new();
            m.insert("vct".into(), vct.into());
            m.insert("constraints".into(), Value::Array(constraints.to_vec()));
            m.insert("cnf".into(), cnf.clone());
            m.insert("iat".into(), now.into());
            m.insert("exp".into(), self.expires_at.into());
            m
        };
        (
            object("mandate.checkout.open.1", &self.raw_checkout),
            object("mandate.payment.open.1", &self.raw_payment),
        )
    }
}

/// SHA-256 of a root SD-JWT's signed bytes: the mandate's identity in the store and ledger.
pub fn root_hash(sd_jwt: &str) -> String {
    let jwt = sd_jwt.split('~').next().unwrap_or_default();
    let signing_input = jwt.rsplit_once('.').map_or("", |(input, _)| input);
    sha256_b64(signing_input.as_bytes())
}

/// The key the mandates delegate to: named in the request (so the stored text holds it), and
/// the key the proposing token is bound to.
fn agent_key(jwk: &Value, token: Option<&AccessTokenClaims>) -> Result<PublicJwk, WalletError> {
    let cnf = PublicJwk::from_value(jwk)
        .map_err(|_| WalletError::Invalid("cnf.jwk is not a P-256 public key"))?;
    if token.is_some_and(|t| cnf.thumbprint() != t.jkt) {
        return Err(WalletError::Invalid(
            "cnf is not the key the token is bound to",
        ));
    }
    Ok(cnf)
}

fn parse_constraints(list: &[Value], prefix: &str) -> Result<Vec<Constraint>, WalletError> {
    if list.is_empty() || list.len() > 64 {
        return Err(WalletError::Invalid(
            "each mandate needs 1 to 64 constraints",
        ));
    }
    list.iter()
        .map(|v| {
            let c = Constraint::parse(v)
                .map_err(|_| WalletError::Invalid("a constraint is malformed"))?;
            let name = v.get("type").and_then(Value::as_str).unwrap_or("");
            match c {
                Constraint::Unknown(_) => Err(WalletError::Invalid(
                    "a constraint type or member is unknown",
                )),
                _ if !name.starts_with(prefix) => {
                    Err(WalletError::Invalid("a constraint is in the wrong mandate"))
                }
                c => Ok(c),
            }
        })
        .collect()
}

/// A closed request fits a `payment` detail when its total is under `max_amount` (same
/// currency), its merchant among `merchants`, and its end before `valid_until`.
fn within_closed(c: &Closed, expires_at: i64, d: &Value) -> Result<(), WalletError> {
    let total = c.checkout.total();
    if let Some(cap) = d.get("max_amount") {
        let fits = cap["currency"].as_str() == Some(total.currency().code())
            && cap["value"].as_u64().is_some_and(|v| total.minor() <= v);
        if !fits {
            return Err(WalletError::Invalid(
                "the amounts exceed what the token allows",
            ));
        }
    }
    if let Some(allowed) = d.get("merchants").and_then(Value::as_array) {
        let id = c.checkout.merchant().map(|m| m.id.as_str());
        if !allowed.iter().any(|m| m.as_str() == id) {
            return Err(WalletError::Invalid(
                "a merchant is not one the token allows",
            ));
        }
    }
    if d.get("valid_until")
        .and_then(Value::as_i64)
        .is_some_and(|until| expires_at > until)
    {
        return Err(WalletError::Invalid(
            "the window ends after the token's valid_until",
        ));
    }
    Ok(())
}

/// The proposal must fit inside the token's `authorization_details` of type `payment`: a
/// capped amount range in the same currency, payees and merchants among those named, and an
/// end no later than `valid_until`.
fn within_details(r: &Reviewed, token: Option<&AccessTokenClaims>) -> Result<(), WalletError> {
    let details = token.and_then(|t| t.authorization_details.as_ref());
    let Some(list) = details.and_then(Value::as_array) else {
        return Ok(());
    };
    for d in list.iter().filter(|d| d["type"] == "payment") {
        if let Some(c) = &r.closed {
            within_closed(c, r.expires_at, d)?;
            continue;
        }
        if let Some(cap) = d.get("max_amount") {
            let currency = cap["currency"]
                .as_str()
                .and_then(|c| Currency::from_code(c).ok())
                .ok_or(WalletError::Invalid("the token's max_amount is malformed"))?;
            let value = cap["value"]
                .as_u64()
                .ok_or(WalletError::Invalid("the token's max_amount is malformed"))?;
            let capped = r.payment.iter().any(|c| {
                matches!(c, Constraint::AmountRange { currency: cur, max, .. } if *cur == currency && *max <= value)
            });
            let budget_ok = r.payment.iter().all(|c| match c {
                Constraint::Budget(a) => a.currency() == currency && a.minor() <= value,
                _ => true,
            });
            if !capped || !budget_ok {
                return Err(WalletError::Invalid(
                    "the amounts exceed what the token allows",
                ));
            }
        }
        if let Some(allowed) = d.get("merchants").and_then(Value::as_array) {
            let allowed: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            let named_ok = |list: &[crate::mandate::Merchant]| {
                list.iter().all(|m| allowed.contains(&m.id.as_str()))
            };
            let mut limited = false;
            for c in r.checkout.iter().chain(&r.payment) {
                match c {
                    Constraint::AllowedMerchants(list) | Constraint::AllowedPayees(list) => {
                        if !named_ok(list) {
                            return Err(WalletError::Invalid(
                                "a merchant is not one the token allows",
                            ));
                        }
                        limited = true;
                    }
                    _ => {}
                }
            }
            if !limited {
                return Err(WalletError::Invalid(
                    "the token allows only some merchants; name them",
                ));
            }
        }
        if let Some(until) = d.get("valid_until").and_then(Value::as_i64) {
            if r.expires_at > until {
                return Err(WalletError::Invalid(
                    "the window ends after the token's valid_until",
                ));
            }
        }
    }
    Ok(())
}
