//! Verifying AP2 checkout and payment mandate chains (DESIGN §4, verification steps 1–6).
//!
//! Order: the chain (signatures, trust, bindings between hops, disclosures, times, challenge),
//! then the mandate types in their places, then the bindings to the presented checkout
//! (`checkout_hash`, `transaction_id`, and for payments the amount and payee), then required
//! constraint types, unknown constraints, and finally every constraint of every open mandate.
//! Terminal refusals come before `unresolved_constraint`, which may invite a fallback.

use super::checkout::CheckoutJwt;
use super::constraint::{Constraint, PaymentFacts, Usage};
use super::types::{
    ClosedCheckoutMandate, ClosedPaymentMandate, OpenCheckoutMandate, OpenPaymentMandate,
    PaymentPreset,
};
use super::{Error, Violation};
use crate::jose::{KeySet, PublicJwk};
use crate::sdjwt::{ChainPolicy, Challenge, UnverifiedChain, VerifiedChain, VerifiedHop};

/// The most clock skew a policy may allow, in seconds.
pub const MAX_SKEW: i64 = 300;
/// The longest a closing hop may be accepted after its `iat`, in seconds.
pub const MAX_CLOSING_AGE: i64 = 3600;

/// The keys a verifier trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Keys that may sign root mandates (wallets, trusted agent providers).
    pub issuers: KeySet,
    /// Keys that may sign checkout JWTs.
    pub merchants: KeySet,
}

/// Why a policy was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The skew is negative or above [`MAX_SKEW`].
    #[error("clock skew must be between 0 and {MAX_SKEW} seconds")]
    Skew,
    /// The closing hop's maximum age is not positive or above [`MAX_CLOSING_AGE`].
    #[error("maximum closing-hop age must be between 1 and {MAX_CLOSING_AGE} seconds")]
    ClosingAge,
    /// No root `typ` is accepted.
    #[error("at least one root typ must be accepted")]
    RootTyp,
    /// A required constraint type is not one of the ten AP2 types.
    #[error("unknown required constraint type `{0}`")]
    RequiredConstraint(String),
}

/// What a verifier accepts; only [`Policy::new`] makes one, so it cannot hold an unsafe value.
#[derive(Debug, Clone)]
pub struct Policy {
    chain: ChainPolicy,
    allow_issuer_signed_closed: bool,
    bind_payment_to_checkout: bool,
    required_checkout: Vec<String>,
    required_payment: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            chain: ChainPolicy::default(),
            allow_issuer_signed_closed: true,
            bind_payment_to_checkout: true,
            // What the AP2 schemas require every open mandate to contain.
            required_checkout: vec!["checkout.line_items".into()],
            required_payment: vec!["payment.reference".into()],
        }
    }
}

impl Policy {
    /// Validates and builds a policy.
    ///
    /// `allow_issuer_signed_closed` accepts a closed mandate signed by a trusted issuer with no
    /// agent hop (AP2's human-present case). `bind_payment_to_checkout` requires the payment's
    /// amount to equal the checkout total and its payee to be the checkout's merchant.
    pub fn new(
        chain: ChainPolicy,
        allow_issuer_signed_closed: bool,
        bind_payment_to_checkout: bool,
        required_checkout: Vec<String>,
        required_payment: Vec<String>,
    ) -> Result<Self, PolicyError> {
        if !(0..=MAX_SKEW).contains(&chain.skew) {
            return Err(PolicyError::Skew);
        }
        if !(1..=MAX_CLOSING_AGE).contains(&chain.max_closing_age) {
            return Err(PolicyError::ClosingAge);
        }
        if chain.root_typs.is_empty() || chain.root_typs.iter().any(String::is_empty) {
            return Err(PolicyError::RootTyp);
        }
        for name in required_checkout.iter().chain(&required_payment) {
            let probe = serde_json::json!({ "type": name });
            if matches!(Constraint::parse(&probe), Ok(Constraint::Unknown(_))) {
                return Err(PolicyError::RequiredConstraint(name.clone()));
            }
        }
        Ok(Policy {
            chain,
            allow_issuer_signed_closed,
            bind_payment_to_checkout,
            required_checkout,
            required_payment,
        })
    }

    /// The chain rules.
    pub fn chain(&self) -> &ChainPolicy {
        &self.chain
    }
}

/// The mandatory bindings of a payment to its order.
#[derive(Debug, Clone, Copy)]
pub struct PaymentBindings<'a> {
    /// The merchant's verified checkout being paid.
    pub checkout: &'a CheckoutJwt,
    /// The open checkout hash of this order (first hop of its checkout chain as presented);
    /// `None` when no open checkout was presented, and then `payment.reference` fails.
    pub open_checkout_hash: Option<&'a str>,
}

/// A verifier: policy and trusted keys.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    /// What is accepted.
    pub policy: &'a Policy,
    /// Whom we trust.
    pub trust: &'a Trust,
}

/// A checkout mandate chain that approves the presented checkout.
#[derive(Debug, Clone)]
pub struct VerifiedCheckoutMandate {
    chain: VerifiedChain,
    open: Vec<OpenCheckoutMandate>,
    closed: ClosedCheckoutMandate,
}

/// A payment mandate chain that approves the presented payment.
#[derive(Debug, Clone)]
pub struct VerifiedPaymentMandate {
    chain: VerifiedChain,
    open: Vec<OpenPaymentMandate>,
    closed: ClosedPaymentMandate,
}

impl Verifier<'_> {
    /// Verifies a checkout mandate chain against the presented, verified checkout.
    pub fn checkout(
        &self,
        chain: &UnverifiedChain<'_>,
        checkout: &CheckoutJwt,
        challenge: Option<&Challenge<'_>>,
        now: i64,
    ) -> Result<VerifiedCheckoutMandate, Error> {
        let chain = self.verify_chain(chain, challenge, now)?;
        let (opens, last) = split(&chain);
        let open = opens
            .iter()
            .map(|h| OpenCheckoutMandate::with_key(h.delegate(), h.confirmation_key()?.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let closed = ClosedCheckoutMandate::from_delegate(last.delegate())?;

        if closed.checkout_hash.as_bytes() != checkout.hash().as_bytes() {
            return Err(Error::CheckoutHashMismatch);
        }
        if closed
            .checkout_jwt
            .as_deref()
            .is_some_and(|jwt| jwt.as_bytes() != checkout.raw().as_bytes())
        {
            return Err(Error::CheckoutJwtMismatch);
        }

        let constraints: Vec<&Constraint> = open.iter().flat_map(|o| &o.constraints).collect();
        check_required(
            &constraints,
            &self.policy.required_checkout,
            !open.is_empty(),
        )?;
        check_known(&constraints)?;
        for c in constraints {
            c.evaluate_checkout(checkout)?;
        }
        Ok(VerifiedCheckoutMandate {
            chain,
            open,
            closed,
        })
    }

    /// Verifies a payment mandate chain against the order it pays and the usage so far.
    pub fn payment(
        &self,
        chain: &UnverifiedChain<'_>,
        bindings: &PaymentBindings<'_>,
        usage: &Usage,
        challenge: Option<&Challenge<'_>>,
        now: i64,
    ) -> Result<VerifiedPaymentMandate, Error> {
        let chain = self.verify_chain(chain, challenge, now)?;
        let (opens, last) = split(&chain);
        let open = opens
            .iter()
            .map(|h| OpenPaymentMandate::with_key(h.delegate(), h.confirmation_key()?.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let closed = ClosedPaymentMandate::from_delegate(last.delegate())?;
        self.check_payment_bindings(&closed, bindings.checkout)?;

        let constraints: Vec<&Constraint> = open.iter().flat_map(|o| &o.constraints).collect();
        check_required(
            &constraints,
            &self.policy.required_payment,
            !open.is_empty(),
        )?;
        check_known(&constraints)?;
        for o in &open {
            check_preset(&o.preset, &closed)?;
        }
        let facts = PaymentFacts {
            closed: &closed,
            open_checkout_hash: bindings.open_checkout_hash,
            usage,
            now,
        };
        for c in constraints {
            c.evaluate_payment(&facts)?;
        }
        Ok(VerifiedPaymentMandate {
            chain,
            open,
            closed,
        })
    }

    fn verify_chain(
        &self,
        chain: &UnverifiedChain<'_>,
        challenge: Option<&Challenge<'_>>,
        now: i64,
    ) -> Result<VerifiedChain, Error> {
        if chain.hop_count() == 1 && !self.policy.allow_issuer_signed_closed {
            return Err(Error::IssuerSignedClosedNotAllowed);
        }
        Ok(chain.verify(&self.policy.chain, &self.trust.issuers, challenge, now)?)
    }

    fn check_payment_bindings(
        &self,
        closed: &ClosedPaymentMandate,
        checkout: &CheckoutJwt,
    ) -> Result<(), Error> {
        if closed.transaction_id.as_bytes() != checkout.hash().as_bytes() {
            return Err(Error::TransactionIdMismatch);
        }
        if !self.policy.bind_payment_to_checkout {
            return Ok(());
        }
        if closed.payment_amount != checkout.total() {
            return Err(Error::AmountMismatch);
        }
        match checkout.merchant() {
            Some(m) if m.id.as_bytes() != closed.payee.id.as_bytes() => Err(Error::PayeeMismatch),
            _ => Ok(()),
        }
    }
}

impl VerifiedCheckoutMandate {
    /// The verified chain (every hop's resolved claims).
    pub fn chain(&self) -> &VerifiedChain {
        &self.chain
    }

    /// The open checkout mandates, root first (empty for an issuer-signed closed mandate).
    pub fn open(&self) -> &[OpenCheckoutMandate] {
        &self.open
    }

    /// The closed checkout mandate.
    pub fn closed(&self) -> &ClosedCheckoutMandate {
        &self.closed
    }

    /// The key that closed the mandate (the last open mandate's `cnf`), if an agent closed it.
    pub fn agent_key(&self) -> Option<&PublicJwk> {
        self.open.last().map(|o| &o.cnf)
    }
}

impl VerifiedPaymentMandate {
    /// The verified chain (every hop's resolved claims).
    pub fn chain(&self) -> &VerifiedChain {
        &self.chain
    }

    /// The open payment mandates, root first (empty for an issuer-signed closed mandate).
    pub fn open(&self) -> &[OpenPaymentMandate] {
        &self.open
    }

    /// The closed payment mandate.
    pub fn closed(&self) -> &ClosedPaymentMandate {
        &self.closed
    }

    /// The key that closed the mandate (the last open mandate's `cnf`), if an agent closed it.
    pub fn agent_key(&self) -> Option<&PublicJwk> {
        self.open.last().map(|o| &o.cnf)
    }

    /// Identity of the open mandate for the spending ledger: SHA-256 of the root's signed bytes,
    /// unchanged by which disclosures the agent presents. `None` without an open mandate.
    pub fn ledger_id(&self) -> Option<String> {
        (!self.open.is_empty()).then(|| self.chain.root().signed_hash())
    }
}

/// Splits a verified chain into the hops carrying open mandates and the closing one.
fn split(chain: &VerifiedChain) -> (&[VerifiedHop], &VerifiedHop) {
    let hops = chain.hops();
    (&hops[..hops.len() - 1], chain.last())
}

fn check_required(
    constraints: &[&Constraint],
    required: &[String],
    has_open: bool,
) -> Result<(), Error> {
    if !has_open {
        return Ok(());
    }
    for name in required {
        if !constraints.iter().any(|c| c.type_name() == name) {
            return Err(Error::Violated(Violation::RequiredConstraintMissing));
        }
    }
    Ok(())
}

fn check_known(constraints: &[&Constraint]) -> Result<(), Error> {
    if constraints
        .iter()
        .any(|c| matches!(c, Constraint::Unknown(_)))
    {
        return Err(Error::UnresolvedConstraint);
    }
    Ok(())
}

fn check_preset(preset: &PaymentPreset, closed: &ClosedPaymentMandate) -> Result<(), Error> {
    let ok = preset
        .payee
        .as_ref()
        .is_none_or(|p| p.id.as_bytes() == closed.payee.id.as_bytes())
        && preset
            .payment_amount
            .is_none_or(|a| a == closed.payment_amount)
        && preset
            .payment_instrument
            .as_ref()
            .is_none_or(|i| *i == closed.payment_instrument)
        && preset
            .pisp
            .as_ref()
            .is_none_or(|p| Some(p) == closed.pisp.as_ref())
        && preset
            .execution_date
            .as_ref()
            .is_none_or(|d| Some(d) == closed.execution_date.as_ref());
    if ok {
        Ok(())
    } else {
        Err(Error::Violated(Violation::PresetMismatch))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use crate::jose::{sha256_b64, sign_compact, SigningKey};
    use crate::mandate::build::{close, issue, join};

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn an_open_mandate_without_exp_or_without_its_required_constraint_is_refused() {
        let root = SigningKey::generate(Some("w".into())).unwrap();
        let agent = SigningKey::generate(Some("a".into())).unwrap();
        let merchant = SigningKey::generate(Some("m".into())).unwrap();
        let mut trust = Trust::default();
        trust.issuers.insert(root.public().clone()).unwrap();
        trust.merchants.insert(merchant.public().clone()).unwrap();
        let body = json!({"id": "c", "line_items": [{"item": {"id": "x"}, "quantity": 1}],
            "currency": "USD", "totals": [{"type": "total", "amount": 100}]});
        let jwt = sign_compact(&merchant, Some("JWT"), false, body.to_string().as_bytes()).unwrap();
        let checkout = CheckoutJwt::verify(&jwt, &trust.merchants, NOW).unwrap();
        let closed =
            json!({"vct": "mandate.checkout.1", "checkout_hash": sha256_b64(jwt.as_bytes())});
        let policy = Policy::default();
        let verifier = Verifier {
            policy: &policy,
            trust: &trust,
        };
        let challenge = Challenge {
            aud: "v",
            nonce: "n",
        };

        let line_items = json!([{"type": "checkout.line_items", "items": [{"id": "r",
            "quantity": 1, "acceptable_items": [{"id": "x", "title": "X"}]}]}]);
        let cases = [
            (Some(NOW + 600), line_items.clone(), None),
            (None, line_items, Some(Error::Malformed("exp"))),
            (
                Some(NOW + 600),
                json!([]),
                Some(Error::Violated(Violation::RequiredConstraintMissing)),
            ),
        ];
        for (exp, constraints, want) in cases {
            let mut open = json!({"vct": "mandate.checkout.open.1", "constraints": constraints,
                "cnf": {"jwk": agent.public().to_value()}});
            if let Some(exp) = exp {
                open["exp"] = json!(exp);
            }
            let root_segment = issue(&root, "dc+sd-jwt", Map::new(), open).unwrap();
            let hop = close(&agent, &root_segment, closed.clone(), "v", "n", NOW).unwrap();
            let chain = join(&[&root_segment, &hop]);
            let parsed = UnverifiedChain::parse(&chain).unwrap();
            let got = verifier.checkout(&parsed, &checkout, Some(&challenge), NOW);
            assert_eq!(got.err(), want, "{exp:?}");
        }
    }
}
