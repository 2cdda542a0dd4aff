//! The checkout verifier (DESIGN §4, verification): challenges, and decisions on presented
//! mandate chains that nothing is paid until the chain, the agent, the human and the state
//! all agree.
//!
//! [`VerifierService::decide`] walks the ten steps in order and stops at the first failure:
//! the core checks the chain (parsing, signatures and trust, times, the challenge's audience and
//! nonce, the bindings to the merchant's checkout, every constraint); this module adds the
//! verifier's own policy (currencies, a cap per payment), the agent binding (the DPoP key of
//! the caller's token is the mandate's `cnf` key, and the token's actor is the agent the mandate
//! names), the delegation (the token's human is the mandate's, and the grant, consent and
//! mandate still stand), and finally the state: the nonce, the closed mandate and its
//! `transaction_id` are consumed, the open mandate's ledger moves within its budget and
//! recurrence limits, the idempotency answer and the audit record are written, all in one
//! transaction ([`crate::store::DecisionLedger::commit`]).
//!
//! Every answer is a decision body (`status`, `error`, `error_description`, `reasons`,
//! `reference`, signed `receipt`, ids, `correlation_id`); refusals name one of our reason codes,
//! each with exactly one AP2 code ([`Check::code`]).

mod config;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{json, Map, Value};

pub use config::{EvidenceRule, IssuerProfile, VerifierConfig};

use crate::danger::{insecure_decode_jwt, insecure_string_claim};
use crate::identity::service::token_audit;
use crate::identity::token::AccessTokenClaims;
use crate::identity::{random_token, TokenService};
use crate::jose::{sha256_b64, KeySet};
use crate::mandate::{
    self, Ap2Code, CheckoutJwt, CheckoutReceipt, Constraint, PaymentBindings, PaymentReceipt,
    ReceiptStatus, Trust, Usage, VerifiedPaymentMandate, Verifier,
};
use crate::money::Amount;
use crate::sdjwt::{Challenge, UnverifiedChain, VerifiedChain};
use crate::store::records::{ConsentStatus, GrantStatus, WalletRecords as _};
use crate::store::{
    AuditRecord, Decision, DecisionLedger as _, IdempotencyDone, NonceUse, Redemption, Refusal,
    Spend, StoreError,
};

/// The scope an agent's token needs to present mandates here.
pub const PRESENT_SCOPE: &str = "payments:present";

/// The root claim that carries a wallet's delegation evidence.
pub const DELEGATION_CLAIM: &str = "delegation";

/// Issuer signatures (open mandate roots) remembered.
const REMEMBERED_ROOTS: usize = 16_384;

/// How long an idempotency answer is kept, seconds.
const IDEMPOTENCY_KEEP: i64 = 24 * 3600;

/// One of our checks that refused, beyond the core's (which keep their own reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The challenge was never issued here, or for another audience.
    NonceUnknown,
    /// The challenge has expired.
    NonceExpired,
    /// The challenge was answered before.
    NonceUsed,
    /// The challenge was issued to another agent.
    NonceOtherAgent,
    /// The closed mandate or its `transaction_id` was redeemed before.
    Replayed,
    /// The open mandate's budget would be passed.
    BudgetExceeded,
    /// The open mandate's uses are exhausted.
    RecurrenceLimitReached,
    /// The previous use is too recent.
    RecurrenceTooSoon,
    /// The open mandate's ledger is kept in another currency.
    LedgerCurrencyMismatch,
    /// The currency is not one this verifier accepts.
    CurrencyNotAllowed,
    /// The amount is above this verifier's cap for one payment.
    AmountAbovePolicy,
    /// The DPoP key of the caller is not the key the mandate delegates to.
    AgentKeyMismatch,
    /// The token's agent is not the agent the mandate names.
    AgentMismatch,
    /// The token's human is not the mandate's.
    SubjectMismatch,
    /// The mandate carries no delegation evidence, and its issuer's policy requires it.
    EvidenceMissing,
    /// The delegation evidence is malformed.
    EvidenceMalformed,
    /// The grant the mandate was issued under is revoked, expired or unknown.
    GrantNotActive,
    /// The consent behind the mandate is not an approval of this user and agent.
    ConsentNotApproved,
    /// The mandate was revoked.
    MandateRevoked,
    /// The mandate carries a status reference this verifier cannot resolve.
    StatusUnknown,
    /// The order's checkout mandate does not verify, or belongs to another human.
    OrderMandateInvalid,
}

impl Check {
    /// The AP2 error code: the one mapping of this check to the wire.
    pub fn code(self) -> Ap2Code {
        match self {
            Check::Replayed
            | Check::BudgetExceeded
            | Check::RecurrenceLimitReached
            | Check::RecurrenceTooSoon
            | Check::LedgerCurrencyMismatch
            | Check::CurrencyNotAllowed
            | Check::AmountAbovePolicy => Ap2Code::InvalidMandate,
            _ => Ap2Code::InvalidCredential,
        }
    }

    /// Our stable reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Check::NonceUnknown => "nonce_unknown",
            Check::NonceExpired => "nonce_expired",
            Check::NonceUsed => "nonce_used",
            Check::NonceOtherAgent => "nonce_other_agent",
            Check::Replayed => "replayed",
            Check::BudgetExceeded => "budget_exceeded",
            Check::RecurrenceLimitReached => "recurrence_limit_reached",
            Check::RecurrenceTooSoon => "recurrence_too_soon",
            Check::LedgerCurrencyMismatch => "ledger_currency_mismatch",
            Check::CurrencyNotAllowed => "currency_not_allowed",
            Check::AmountAbovePolicy => "amount_above_policy_max",
            Check::AgentKeyMismatch => "agent_key_mismatch",
            Check::AgentMismatch => "agent_mismatch",
            Check::SubjectMismatch => "subject_mismatch",
            Check::EvidenceMissing => "delegation_evidence_missing",
            Check::EvidenceMalformed => "delegation_evidence_malformed",
            Check::GrantNotActive => "grant_not_active",
            Check::ConsentNotApproved => "consent_not_approved",
            Check::MandateRevoked => "mandate_revoked",
            Check::StatusUnknown => "mandate_status_unknown",
            Check::OrderMandateInvalid => "order_mandate_invalid",
        }
    }

    fn from_state(refusal: Refusal) -> Check {
        match refusal {
            Refusal::NonceUnknown => Check::NonceUnknown,
            Refusal::NonceExpired => Check::NonceExpired,
            Refusal::NonceUsed => Check::NonceUsed,
            Refusal::NonceOtherAgent => Check::NonceOtherAgent,
            Refusal::Replayed | Refusal::IdempotencyLost => Check::Replayed,
            Refusal::BudgetExceeded => Check::BudgetExceeded,
            Refusal::RecurrenceLimitReached => Check::RecurrenceLimitReached,
            Refusal::RecurrenceTooSoon => Check::RecurrenceTooSoon,
            Refusal::CurrencyMismatch => Check::LedgerCurrencyMismatch,
        }
    }
}

/// Why a presentation was refused: a core check or one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The core refused the chain, checkout or constraints.
    Mandate(mandate::Error),
    /// One of the verifier's own checks refused.
    Check(Check),
}

impl Refused {
    /// The AP2 error code.
    pub fn code(self) -> Ap2Code {
        match self {
            Refused::Mandate(e) => e.code(),
            Refused::Check(c) => c.code(),
        }
    }

    /// Our reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Mandate(e) => e.reason(),
            Refused::Check(c) => c.reason(),
        }
    }

    /// How loudly to log it: replays and spent nonces are worth noting; the rest is routine.
    pub fn level(self) -> tracing::Level {
        match self {
            Refused::Check(Check::Replayed | Check::NonceUsed | Check::NonceOtherAgent) => {
                tracing::Level::INFO
            }
            _ => tracing::Level::DEBUG,
        }
    }
}

impl From<mandate::Error> for Refused {
    fn from(e: mandate::Error) -> Self {
        Refused::Mandate(e)
    }
}

impl From<Check> for Refused {
    fn from(c: Check) -> Self {
        Refused::Check(c)
    }
}

/// Which role is deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The merchant: `POST /v1/checkouts/verify`.
    Checkout,
    /// The credential provider or processor: `POST /v1/payments/verify`.
    Payment,
}

impl Role {
    /// The audit action and metrics label of a decision in this role.
    pub fn action(self) -> &'static str {
        match self {
            Role::Checkout => "checkout.verify",
            Role::Payment => "payment.verify",
        }
    }
}

/// What an agent presents.
#[derive(Debug, Clone, Copy)]
pub struct Presentation<'a> {
    /// Which role decides.
    pub role: Role,
    /// The checkout mandate chain (checkout role) or the payment mandate chain (payment role).
    pub chain: &'a str,
    /// The merchant's signed checkout.
    pub checkout_jwt: &'a str,
    /// For a payment: the order's checkout mandate chain, which `payment.reference` names.
    pub order_chain: Option<&'a str>,
}

/// An idempotency key held by this request.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The stored key (already scoped to the agent and route).
    pub key: &'a str,
    /// SHA-256 of the request body.
    pub request_hash: &'a str,
}

/// A decision, as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The JSON body, byte for byte what an exact retry receives.
    pub body: String,
    /// Whether the presentation was accepted.
    pub accepted: bool,
    /// Our reason code of a refusal (empty when accepted).
    pub reason: &'static str,
}

/// A fresh challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChallenge {
    /// The nonce (128 random bits or more, base64url).
    pub nonce: String,
    /// This verifier's audience.
    pub aud: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
}

/// The verifier role: policy, trust, and the shared token service and store.
pub struct VerifierService {
    config: VerifierConfig,
    /// The keys trusted now; rebuilt when an issuer's or the merchants' keys change.
    view: RwLock<Arc<TrustView>>,
    /// Some keys come from URLs (and may need fetching early for an unknown key id).
    remote_keys: bool,
    tokens: Arc<TokenService>,
    remote_status: status::RemoteStatus,
}

/// Every trusted key at one moment, as the core checks with it.
struct TrustView {
    /// The generation of each issuer's keys, then of the merchants' keys.
    generations: Vec<u64>,
    trust: Trust,
    /// Which issuer profile each root key id belongs to.
    profiles: HashMap<String, usize>,
    /// Each issuer's own keys (its status lists are signed with them).
    issuer_keys: Vec<Arc<KeySet>>,
}

impl TrustView {
    /// The view of these key sets. A key id held by two issuers stays with the first in the
    /// configuration (a later publisher cannot take over another issuer's key id, nor disable
    /// it), and is returned so that start-up can refuse it.
    fn build(
        generations: Vec<u64>,
        issuer_keys: Vec<Arc<KeySet>>,
        merchants: &KeySet,
        previous: Option<&KeySet>,
    ) -> (TrustView, Vec<String>) {
        let mut owners: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, set) in issuer_keys.iter().enumerate() {
            for key in set.keys() {
                if let Some(kid) = key.kid() {
                    owners.entry(kid).or_default().push(i);
                }
            }
        }
        // An open mandate's root comes back with every payment under it: its signature is
        // verified once (exact bytes only; every other check still runs).
        let mut issuers = match previous {
            Some(previous) => KeySet::new().sharing_remembered(previous),
            None => KeySet::new().remember_verified(REMEMBERED_ROOTS),
        };
        let mut profiles = HashMap::new();
        let mut shared = Vec::new();
        for (kid, owner) in &owners {
            if owner.len() > 1 {
                shared.push((*kid).to_owned());
            }
            let key = issuer_keys[owner[0]].get(kid).ok().cloned();
            if let Some(key) = key {
                if issuers.insert(key).is_ok() {
                    profiles.insert((*kid).to_owned(), owner[0]);
                }
            }
        }
        shared.sort();
        let view = TrustView {
            generations,
            trust: Trust {
                issuers,
                merchants: merchants.clone(),
            },
            profiles,
            issuer_keys,
        };
        (view, shared)
    }
}

impl std::fmt::Debug for VerifierService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierService")
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

/// What the checks found, to be committed.
struct Accepted {
    reference: String,
    nonce: Option<String>,
    closed_hash: String,
    transaction_id: String,
    keep_until: i64,
    spend: Option<SpendPlan>,
    audit: AuditRecord,
}

/// The `kid` of a compact JWS's header, read WITHOUT verifying anything: only to decide whether
/// to fetch keys early.
fn header_kid(jws: &str) -> Option<String> {
    let (header, _) = insecure_decode_jwt(jws).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// The ledger move of an accepted payment.
struct SpendPlan {
    open_hash: String,
    amount: Amount,
    budget: Option<u64>,
    max_uses: Option<u64>,
    next_allowed_at: Option<i64>,
    keep_until: i64,
}

impl VerifierService {
    /// A verifier with a checked configuration, sharing the token service's store and keys.
    pub fn new(config: VerifierConfig, tokens: Arc<TokenService>) -> Result<Self, String> {
        config.check()?;
        // Keys from URLs are not fetched yet: the view starts with the files' keys.
        let (generations, sets) = Self::current_sets(&config, 0);
        let merchants = config.merchants.current(0).0;
        let (view, shared_kids) = TrustView::build(generations, sets, &merchants, None);
        if let Some(kid) = shared_kids.first() {
            return Err(format!("issuer key id `{kid}` is listed twice"));
        }
        let remote_keys = config.merchants.urls().next().is_some()
            || config
                .issuers
                .iter()
                .any(|i| i.keys.urls().next().is_some());
        let remote_status =
            status::RemoteStatus::new(config.status_cache, config.tls_roots.as_deref())?;
        Ok(VerifierService {
            config,
            view: RwLock::new(Arc::new(view)),
            remote_keys,
            tokens,
            remote_status,
        })
    }

    /// Each issuer's keys at `now` and the generations of those and of the merchants' keys.
    fn current_sets(config: &VerifierConfig, now: i64) -> (Vec<u64>, Vec<Arc<KeySet>>) {
        let mut generations = Vec::with_capacity(config.issuers.len() + 1);
        let mut sets = Vec::with_capacity(config.issuers.len());
        for profile in &config.issuers {
            let (keys, generation) = profile.keys.current(now);
            generations.push(generation);
            sets.push(keys);
        }
        generations.push(config.merchants.current(now).1);
        (generations, sets)
    }

    /// The keys trusted at `now`: the last view, or a new one when some keys changed.
    fn trust(&self, now: i64) -> Arc<TrustView> {
        // A poisoned lock only means a panic elsewhere mid-swap of an Arc: the value is whole.
        let cached = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        if !self.remote_keys {
            return cached;
        }
        let (generations, sets) = Self::current_sets(&self.config, now);
        if generations == cached.generations {
            return cached;
        }
        let merchants = self.config.merchants.current(now).0;
        let (view, shared) =
            TrustView::build(generations, sets, &merchants, Some(&cached.trust.issuers));
        for kid in shared {
            tracing::error!(kid = %kid, "issuer key id published by two trusted issuers; kept for the first configured");
        }
        let view = Arc::new(view);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view.clone();
        view
    }

    /// Fetches keys early when the presentation names a root or checkout key id that is not
    /// trusted yet and some keys come from URLs (each URL at most once per
    /// [`crate::jwks::MIN_REFETCH`] seconds, however many presentations ask).
    async fn fetch_unknown_keys(&self, p: &Presentation<'_>, now: i64) {
        if !self.remote_keys {
            return;
        }
        let view = self.trust(now);
        let roots = std::iter::once(p.chain)
            .chain(p.order_chain)
            .filter_map(|chain| header_kid(chain.split('~').next().unwrap_or_default()));
        for kid in roots {
            if !view.profiles.contains_key(&kid) {
                for profile in &self.config.issuers {
                    profile.keys.refresh_for(&kid, now).await;
                }
            }
        }
        if let Some(kid) = header_kid(p.checkout_jwt) {
            self.config.merchants.refresh_for(&kid, now).await;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The token service that authenticates callers.
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Issues and stores a single-use challenge, bound to `agent` when given.
    pub async fn challenge(
        &self,
        agent: Option<&str>,
        now: i64,
    ) -> Result<IssuedChallenge, StoreError> {
        let nonce = random_token(24).map_err(|_| StoreError::Unavailable)?;
        let expires_at = now + self.config.challenge_lifetime;
        self.tokens
            .store()
            .issue_nonce(&nonce, &self.config.audience, agent, expires_at)
            .await?;
        Ok(IssuedChallenge {
            nonce,
            aud: self.config.audience.clone(),
            expires_at,
        })
    }

    /// Decides a presentation by an authenticated caller; the answer is final (and kept under
    /// `held` for exact retries). Only a store failure is an `Err`: nothing was decided then.
    pub async fn decide(
        &self,
        p: &Presentation<'_>,
        caller: &AccessTokenClaims,
        held: Option<Held<'_>>,
        now: i64,
    ) -> Result<Answer, StoreError> {
        let correlation_id = random_token(12).map_err(|_| StoreError::Unavailable)?;
        let mut audit = caller_audit(caller, p.role, now, &correlation_id);
        let accepted = match self.check(p, caller, &mut audit, now).await? {
            Ok(accepted) => accepted,
            Err(refused) => {
                // Only a refusal needs the reference of a chain that may not even parse.
                let reference = reference_of(p.chain);
                return self
                    .refuse(p.role, refused, &reference, audit, held, now)
                    .await;
            }
        };

        let id = random_token(12).map_err(|_| StoreError::Unavailable)?;
        let body = self
            .answer_body(p.role, None, &accepted.reference, &id, &correlation_id, now)
            .await?;
        let request_hash = held.map(|h| h.request_hash);
        let spend = accepted.spend.as_ref().map(|s| Spend {
            open_hash: &s.open_hash,
            currency: s.amount.currency().code(),
            amount_minor: i64::try_from(s.amount.minor()).unwrap_or(i64::MAX),
            budget_max_minor: s.budget.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_uses: s.max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            next_allowed_at: s.next_allowed_at,
            keep_until: s.keep_until,
        });
        let decision = Decision {
            now,
            nonce: accepted.nonce.as_deref().map(|value| NonceUse {
                value,
                aud: &self.config.audience,
                agent: Some(&caller.client_id),
            }),
            redemption: Some(Redemption {
                closed_hash: &accepted.closed_hash,
                transaction_id: &accepted.transaction_id,
                keep_until: accepted.keep_until,
            }),
            spend,
            idempotency: held.map(|h| IdempotencyDone {
                key: h.key,
                request_hash: request_hash.unwrap_or_default(),
                response: &body,
                keep_until: now + IDEMPOTENCY_KEEP,
            }),
            audit: &accepted.audit,
        };
        match self.tokens.store().commit(&decision).await? {
            Ok(committed) => {
                tracing::info!(
                    action = p.role.action(),
                    audit_seq = committed.audit_seq,
                    correlation_id = %correlation_id,
                    "presentation accepted"
                );
                Ok(Answer {
                    body,
                    accepted: true,
                    reason: "",
                })
            }
            Err(state) => {
                let refused = Refused::Check(Check::from_state(state));
                let reference = accepted.reference.clone();
                self.refuse(p.role, refused, &reference, accepted.audit, held, now)
                    .await
            }
        }
    }

    /// Steps 1–8: everything but the state. The audit record gathers what is learnt.
    async fn check(
        &self,
        p: &Presentation<'_>,
        caller: &AccessTokenClaims,
        audit: &mut AuditRecord,
        now: i64,
    ) -> Result<Result<Accepted, Refused>, StoreError> {
        self.fetch_unknown_keys(p, now).await;
        let view = self.trust(now);
        let verifier = Verifier {
            policy: &self.config.policy,
            trust: &view.trust,
        };
        let chain = match UnverifiedChain::parse(p.chain) {
            Ok(chain) => chain,
            Err(e) => return Ok(Err(mandate::Error::from(e).into())),
        };
        let checkout = match CheckoutJwt::verify(p.checkout_jwt, &view.trust.merchants, now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e.into())),
        };
        audit.merchant = checkout.merchant().map(|m| m.id.clone());
        audit.amount = Some(describe_amount(&checkout.total()));

        // The nonce is read unverified only to say which challenge to check; the verified
        // chain must then carry exactly it, and the store consumes exactly it.
        let nonce = chain
            .closing_jwt()
            .map(|jwt| insecure_string_claim(jwt, "nonce").unwrap_or_default());
        let challenge = nonce.as_deref().map(|nonce| Challenge {
            aud: &self.config.audience,
            nonce,
        });

        let (verified, agent_key, spend, closed_hash) = match p.role {
            Role::Checkout => match verifier.checkout(&chain, &checkout, challenge.as_ref(), now) {
                Ok(v) => {
                    let key = v.agent_key().cloned();
                    let hash = v.chain().last().signed_hash();
                    (v.chain().clone(), key, None, hash)
                }
                Err(e) => return Ok(Err(e.into())),
            },
            Role::Payment => {
                let order_hash = match p.order_chain {
                    None => None,
                    Some(order) => match self.order_hash(&view, order, &checkout, now) {
                        Ok(order) => Some(order),
                        Err(r) => return Ok(Err(r)),
                    },
                };
                let bindings = PaymentBindings {
                    checkout: &checkout,
                    open_checkout_hash: order_hash.as_ref().map(|(hash, _)| hash.as_str()),
                };
                // The state's ledger is the authority on running totals and uses: the core
                // checks this payment alone, and the commit adds it only within every limit.
                let v = match verifier.payment(
                    &chain,
                    &bindings,
                    &Usage::default(),
                    challenge.as_ref(),
                    now,
                ) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e.into())),
                };
                if let Some((_, order_sub)) = &order_hash {
                    if root_sub(v.chain()) != order_sub.as_deref() {
                        return Ok(Err(Check::OrderMandateInvalid.into()));
                    }
                }
                let amount = v.closed().payment_amount;
                audit.merchant = Some(v.closed().payee.id.clone());
                audit.amount = Some(describe_amount(&amount));
                if let Err(c) = self.check_amount(&amount) {
                    return Ok(Err(c.into()));
                }
                let key = v.agent_key().cloned();
                let hash = v.chain().last().signed_hash();
                let plan = spend_plan(&v, now, self.config.policy.chain().skew);
                (v.chain().clone(), key, plan, hash)
            }
        };
        audit.mandate_hash = Some(verified.root().signed_hash());

        // Step 7: the agent. The caller's DPoP key was checked against the token's `cnf.jkt`
        // when it authenticated; here that key must be the one the mandate delegates to.
        if agent_key
            .as_ref()
            .is_some_and(|key| key.thumbprint() != caller.jkt)
        {
            return Ok(Err(Check::AgentKeyMismatch.into()));
        }
        // Step 8: the delegation back to the human.
        let evidence = match self.delegation(&view, &verified, caller, now).await? {
            Ok(e) => e,
            Err(c) => return Ok(Err(c.into())),
        };
        // A closed mandate the wallet signed alone: the agent is the one its evidence names.
        if agent_key.is_none() && evidence.is_none() {
            return Ok(Err(Check::EvidenceMissing.into()));
        }
        if let Some(ev) = &evidence {
            audit.consent_id = ev.consent_id.clone();
            if ev.grant_id.is_some() {
                audit.grant_id = ev.grant_id.clone();
            }
            if ev.agent_jkt.as_deref().is_some_and(|jkt| jkt != caller.jkt) {
                return Ok(Err(Check::AgentKeyMismatch.into()));
            }
        }

        // The redemption must outlive every way the same closed mandate could verify again:
        // the latest `exp` of any hop or mandate object (an issuer-signed closed mandate has no
        // closing hop, only its own `exp`), and the closing hop's maximum age.
        let keep_until = verified
            .hops()
            .iter()
            .flat_map(|h| [h.claims().get("exp"), h.delegate().get("exp")])
            .filter_map(|exp| exp.and_then(Value::as_i64))
            .max()
            .unwrap_or(now)
            .max(now + self.config.policy.chain().max_closing_age)
            + self.config.policy.chain().skew;
        Ok(Ok(Accepted {
            reference: verified.last().segment_hash(),
            nonce,
            closed_hash,
            // One order is spent once per role: a merchant accepting the checkout and a
            // processor accepting its payment are two decisions, each made once.
            transaction_id: format!("{}:{}", p.role.action(), checkout.hash()),
            keep_until,
            spend,
            audit: audit.clone(),
        }))
    }

    /// Step 8: the delegation. `Ok(None)` when the issuer's policy binds by `cnf` alone.
    async fn delegation(
        &self,
        view: &TrustView,
        chain: &VerifiedChain,
        caller: &AccessTokenClaims,
        now: i64,
    ) -> Result<Result<Option<Evidence>, Check>, StoreError> {
        let root = chain.root();
        let profile = root
            .kid()
            .and_then(|kid| view.profiles.get(kid))
            .map(|&i| (&self.config.issuers[i], &view.issuer_keys[i]));
        let Some((profile, profile_keys)) = profile else {
            // Unreachable: the core verified the root with a key of some profile.
            return Ok(Err(Check::EvidenceMissing));
        };
        let claims = root.claims();
        let Some(raw) = claims.get(DELEGATION_CLAIM) else {
            if profile.evidence == EvidenceRule::Required {
                return Ok(Err(Check::EvidenceMissing));
            }
            // An issuer that binds by `cnf` alone and runs its own wallet: its status list,
            // fetched by the URL the mandate names and signed by the same issuer.
            if !claims.contains_key("status") {
                return Ok(Ok(None));
            }
            let Some(entry) = status::StatusRef::from_claims(claims) else {
                return Ok(Err(Check::StatusUnknown));
            };
            return Ok(
                match self.remote_status.standing(&entry, profile_keys, now).await {
                    status::Standing::Valid => Ok(None),
                    status::Standing::Revoked => Err(Check::MandateRevoked),
                    status::Standing::Unknown => Err(Check::StatusUnknown),
                },
            );
        };
        let Some(evidence) = Evidence::parse(raw, claims) else {
            return Ok(Err(Check::EvidenceMalformed));
        };
        if evidence.sub != caller.sub {
            return Ok(Err(Check::SubjectMismatch));
        }
        if evidence.agent_id != caller.client_id {
            return Ok(Err(Check::AgentMismatch));
        }
        let state = self
            .tokens
            .store()
            .delegation_state(
                evidence.grant_id.as_deref(),
                evidence.consent_id.as_deref(),
                &root.signed_hash(),
            )
            .await?;
        if evidence.grant_id.is_some() {
            match &state.grant {
                Some(g)
                    if g.status == GrantStatus::Active
                        && g.expires_at > now
                        && g.user_id == evidence.sub
                        && g.agent_id == evidence.agent_id => {}
                _ => return Ok(Err(Check::GrantNotActive)),
            }
        }
        if evidence.consent_id.is_some() {
            match &state.consent {
                Some(c)
                    if c.status_at(now) == ConsentStatus::Approved
                        && c.user_id == evidence.sub
                        && c.agent_id == evidence.agent_id => {}
                _ => return Ok(Err(Check::ConsentNotApproved)),
            }
        }
        // The mandate's own standing: our wallet keeps every mandate it signed; one that
        // carries a status reference we cannot resolve is refused rather than assumed good.
        match &state.mandate {
            Some(m) if m.revoked_at.is_some() => return Ok(Err(Check::MandateRevoked)),
            Some(m) if m.user_id != evidence.sub || m.agent_id != evidence.agent_id => {
                return Ok(Err(Check::SubjectMismatch))
            }
            Some(_) => {}
            None if claims.contains_key("status") => return Ok(Err(Check::StatusUnknown)),
            None => {}
        }
        Ok(Ok(Some(evidence)))
    }

    /// The order's checkout mandate: verified under its own (signed) audience and nonce, since
    /// it was presented to the merchant, not to us; returns its open checkout hash and `sub`.
    fn order_hash(
        &self,
        view: &TrustView,
        order: &str,
        checkout: &CheckoutJwt,
        now: i64,
    ) -> Result<(String, Option<String>), Refused> {
        let invalid = Refused::Check(Check::OrderMandateInvalid);
        let chain = UnverifiedChain::parse(order).map_err(|_| invalid)?;
        let closing = chain.closing_jwt().ok_or(invalid)?;
        let aud = insecure_string_claim(closing, "aud").ok_or(invalid)?;
        let nonce = insecure_string_claim(closing, "nonce").ok_or(invalid)?;
        let challenge = Challenge {
            aud: &aud,
            nonce: &nonce,
        };
        let verifier = Verifier {
            policy: &self.config.policy,
            trust: &view.trust,
        };
        let verified = verifier
            .checkout(&chain, checkout, Some(&challenge), now)
            .map_err(|_| invalid)?;
        Ok((
            sha256_b64(chain.first_segment().as_bytes()),
            root_sub(verified.chain()).map(str::to_owned),
        ))
    }

    fn check_amount(&self, amount: &Amount) -> Result<(), Check> {
        if let Some(allowed) = &self.config.allowed_currencies {
            if !allowed.contains(&amount.currency()) {
                return Err(Check::CurrencyNotAllowed);
            }
        }
        match self
            .config
            .max_payment
            .iter()
            .find(|cap| cap.currency() == amount.currency())
        {
            Some(cap) if amount.minor() > cap.minor() => Err(Check::AmountAbovePolicy),
            _ => Ok(()),
        }
    }

    async fn refuse(
        &self,
        role: Role,
        refused: Refused,
        reference: &str,
        mut audit: AuditRecord,
        held: Option<Held<'_>>,
        now: i64,
    ) -> Result<Answer, StoreError> {
        log_refusal(refused, role);
        let id = random_token(12).map_err(|_| StoreError::Unavailable)?;
        let body = self
            .answer_body(
                role,
                Some(refused),
                reference,
                &id,
                &audit.correlation_id,
                now,
            )
            .await?;
        audit.outcome = "refused".into();
        audit.reason = Some(refused.reason().into());
        let done = held.map(|h| IdempotencyDone {
            key: h.key,
            request_hash: h.request_hash,
            response: &body,
            keep_until: now + IDEMPOTENCY_KEEP,
        });
        self.tokens.store().record_refusal(&audit, done).await?;
        Ok(Answer {
            body,
            accepted: false,
            reason: refused.reason(),
        })
    }

    /// The decision body with its signed receipt.
    async fn answer_body(
        &self,
        role: Role,
        refused: Option<Refused>,
        reference: &str,
        id: &str,
        correlation_id: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let key = self
            .tokens
            .signing_key(now)
            .await
            .map_err(|_| StoreError::Unavailable)?;
        let status = match refused {
            None => ReceiptStatus::Success,
            Some(_) => ReceiptStatus::Error,
        };
        let error = refused.map(|r| r.code().as_str().to_owned());
        let description = refused.map(|r| r.code().description().to_owned());
        let iss = self.config.audience.clone();
        let (receipt, id_field, id_value) = match role {
            Role::Checkout => {
                let order_id = format!("ord_{id}");
                let receipt = CheckoutReceipt {
                    status,
                    iss,
                    iat: now,
                    reference: reference.to_owned(),
                    order_id: refused.is_none().then(|| order_id.clone()),
                    error: error.clone(),
                    error_description: description.clone(),
                }
                .sign(&key);
                (receipt, "order_id", order_id)
            }
            Role::Payment => {
                let payment_id = format!("pay_{id}");
                let receipt = PaymentReceipt {
                    status,
                    iss,
                    iat: now,
                    reference: reference.to_owned(),
                    payment_id: payment_id.clone(),
                    psp_confirmation_id: None,
                    network_confirmation_id: None,
                    error: error.clone(),
                    error_description: description.clone(),
                }
                .sign(&key);
                (receipt, "payment_id", payment_id)
            }
        };
        let receipt = receipt.map_err(|_| StoreError::Unavailable)?;
        let mut body = Map::new();
        body.insert(
            "status".into(),
            match refused {
                None => "Success",
                Some(_) => "Error",
            }
            .into(),
        );
        if let Some(r) = refused {
            body.insert("error".into(), r.code().as_str().into());
            body.insert("error_description".into(), r.code().description().into());
            body.insert("reasons".into(), json!([r.reason()]));
        } else {
            body.insert("reasons".into(), json!([]));
            body.insert(id_field.into(), id_value.into());
        }
        body.insert("reference".into(), reference.into());
        body.insert("receipt".into(), receipt.into());
        body.insert("correlation_id".into(), correlation_id.into());
        Ok(Value::Object(body).to_string())
    }
}

/// The delegation evidence a wallet signs into a root mandate.
#[derive(Debug, Clone)]
struct Evidence {
    sub: String,
    agent_id: String,
    agent_jkt: Option<String>,
    grant_id: Option<String>,
    consent_id: Option<String>,
}

impl Evidence {
    /// `{"agent_id", "agent_jkt"?, "grant_id"?, "consent_id"?, "token_jti"?}` beside `sub`.
    fn parse(raw: &Value, claims: &Map<String, Value>) -> Option<Evidence> {
        let obj = raw.as_object()?;
        let known = [
            "agent_id",
            "agent_jkt",
            "grant_id",
            "consent_id",
            "token_jti",
        ];
        if obj.keys().any(|k| !known.contains(&k.as_str())) {
            return None;
        }
        let text = |name: &str| -> Option<Option<String>> {
            match obj.get(name) {
                None => Some(None),
                Some(Value::String(s)) if !s.is_empty() => Some(Some(s.clone())),
                Some(_) => None,
            }
        };
        let sub = claims.get("sub")?.as_str().filter(|s| !s.is_empty())?;
        Some(Evidence {
            sub: sub.to_owned(),
            agent_id: text("agent_id")??,
            agent_jkt: text("agent_jkt")?,
            grant_id: text("grant_id")?,
            consent_id: text("consent_id")?,
        })
    }
}

/// The limits of an accepted payment's ledger move, from every open mandate of the chain (the
/// tightest of each wins; they all count against the root's one ledger).
fn spend_plan(v: &VerifiedPaymentMandate, now: i64, skew: i64) -> Option<SpendPlan> {
    let open_hash = v.ledger_id()?;
    let mut budget: Option<u64> = None;
    let mut max_uses: Option<u64> = None;
    let mut next_allowed_at: Option<i64> = None;
    for constraint in v.open().iter().flat_map(|o| &o.constraints) {
        match constraint {
            Constraint::Budget(max) => {
                budget = Some(budget.map_or(max.minor(), |b| b.min(max.minor())));
            }
            Constraint::AgentRecurrence {
                frequency,
                max_occurrences,
            } => {
                if let Some(m) = max_occurrences {
                    max_uses = Some(max_uses.map_or(*m, |u| u.min(*m)));
                }
                let next = frequency.next_allowed(now);
                next_allowed_at = Some(next_allowed_at.map_or(next, |n| n.max(next)));
            }
            _ => {}
        }
    }
    let keep_until = v
        .chain()
        .root()
        .delegate()
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or(now)
        .max(next_allowed_at.unwrap_or(now))
        + skew;
    Some(SpendPlan {
        open_hash,
        amount: v.closed().payment_amount,
        budget,
        max_uses,
        next_allowed_at,
        keep_until,
    })
}

fn root_sub(chain: &VerifiedChain) -> Option<&str> {
    chain.root().claims().get("sub").and_then(Value::as_str)
}

/// base64url SHA-256 of the presented chain's last hop, as presented (or of the whole text
/// when it does not split into hops).
fn reference_of(chain: &str) -> String {
    match UnverifiedChain::parse(chain) {
        Ok(c) => sha256_b64(c.last_segment().as_bytes()),
        Err(_) => sha256_b64(chain.as_bytes()),
    }
}

fn describe_amount(amount: &Amount) -> String {
    format!("{} {}", amount.to_major_string(), amount.currency().code())
}

fn caller_audit(
    caller: &AccessTokenClaims,
    role: Role,
    now: i64,
    correlation_id: &str,
) -> AuditRecord {
    AuditRecord {
        action: role.action().into(),
        outcome: "success".into(),
        scope: Some(PRESENT_SCOPE.into()),
        correlation_id: correlation_id.into(),
        ..token_audit(caller, now)
    }
}

fn log_refusal(refused: Refused, role: Role) {
    let code = refused.code().as_str();
    let reason = refused.reason();
    let action = role.action();
    match refused.level() {
        tracing::Level::INFO => tracing::info!(action, code, reason, "presentation refused"),
        _ => tracing::debug!(action, code, reason, "presentation refused"),
    }
}
