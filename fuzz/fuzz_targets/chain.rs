//! Fuzzes Delegate SD-JWT chain parsing and full AP2 v0.2 mandate verification.
//!
//! Input that is UTF-8 and splits into hops (`UnverifiedChain::parse`) is verified as a checkout
//! mandate and as a payment mandate, with the test keys and orders of the `ap2-v0.2` vectors
//! and the vectors' clock. Any verdict is fine; a panic is a finding. The payment path is run
//! against two orders: the `valid_checkout` order (every chain meets the same checkout) and the
//! `valid_hnp_payment` order, so that payment seeds get past the `transaction_id` binding and
//! into constraint evaluation. A mutation of signed bytes stops at the signature check, so only
//! the seeds and the unsigned parts of a chain reach the mandate code.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use ap2_mandate::jose::{KeySet, PublicJwk};
use ap2_mandate::mandate::{CheckoutJwt, PaymentBindings, Policy, Trust, Usage, Verifier};
use ap2_mandate::sdjwt::{Challenge, UnverifiedChain};

/// The vectors' verification instant (`verifier_profile.now` in the manifest).
const NOW: i64 = 1_780_000_120;

const KEYS: &str = include_str!("../../fixtures/ap2-v0.2/keys.json");
const CHECKOUT_CASE: &str = include_str!("../../fixtures/ap2-v0.2/cases/valid_checkout.json");
const PAYMENT_CASE: &str = include_str!("../../fixtures/ap2-v0.2/cases/valid_hnp_payment.json");

const ISSUER_KID: &str = "agent-provider-a-2026";
const MERCHANT_KID: &str = "northwind-checkout-k1";

/// Everything built once: policy, trusted keys and the two orders.
struct Harness {
    policy: Policy,
    trust: Trust,
    checkout_order: Order,
    payment_order: Order,
}

/// A merchant checkout, verified, with the challenge the verifier issued for it.
struct Order {
    checkout: CheckoutJwt,
    aud: String,
    nonce: String,
    open_checkout_hash: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chain) = UnverifiedChain::parse(text) else {
        return;
    };
    let harness = harness();
    let verifier = Verifier {
        policy: &harness.policy,
        trust: &harness.trust,
    };
    let usage = Usage::default();

    let order = &harness.checkout_order;
    let _ = verifier.checkout(
        &chain,
        &order.checkout,
        order.challenge(&chain).as_ref(),
        NOW,
    );

    for order in [&harness.checkout_order, &harness.payment_order] {
        let bindings = PaymentBindings {
            checkout: &order.checkout,
            open_checkout_hash: order.open_checkout_hash.as_deref(),
        };
        let challenge = order.challenge(&chain);
        let _ = verifier.payment(&chain, &bindings, &usage, challenge.as_ref(), NOW);
    }
});

impl Order {
    /// Builds the order of a vector case; the fixtures are compiled in, so failure is a bug in
    /// the harness or the fixtures and may panic.
    fn from_case(case: &str, merchants: &KeySet) -> Order {
        let case: Value = serde_json::from_str(case).expect("case file is JSON");
        let field = |name: &str| case[name].as_str().map(str::to_owned);
        let raw = field("checkout_jwt").expect("case has a checkout_jwt");
        Order {
            checkout: CheckoutJwt::verify(&raw, merchants, NOW).expect("case checkout verifies"),
            aud: field("expected_aud").expect("case has an expected_aud"),
            nonce: field("expected_nonce").expect("case has an expected_nonce"),
            open_checkout_hash: field("expected_open_checkout_hash"),
        }
    }

    /// The challenge for a chain with key-binding hops; none for a root alone, which the
    /// verifier would refuse a challenge for before looking any further.
    fn challenge<'a>(&'a self, chain: &UnverifiedChain<'_>) -> Option<Challenge<'a>> {
        (chain.hop_count() > 1).then(|| Challenge {
            aud: &self.aud,
            nonce: &self.nonce,
        })
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let mut issuers = KeySet::new();
        issuers
            .insert(first_key(ISSUER_KID))
            .expect("issuer key is new to the set");
        let mut merchants = KeySet::new();
        merchants
            .insert(first_key(MERCHANT_KID))
            .expect("merchant key is new to the set");

        Harness {
            checkout_order: Order::from_case(CHECKOUT_CASE, &merchants),
            payment_order: Order::from_case(PAYMENT_CASE, &merchants),
            policy: Policy::default(),
            trust: Trust { issuers, merchants },
        }
    })
}

/// The first public key in `keys.json` with this `kid`; later ones reusing it are impostors
/// (`untrusted_root`, `rogue_agent`).
fn first_key(kid: &str) -> PublicJwk {
    let doc: Value = serde_json::from_str(KEYS).expect("keys.json is JSON");
    let keys = doc["keys"]
        .as_object()
        .expect("keys.json has a `keys` object");
    let jwk = keys
        .values()
        .map(|entry| &entry["public_jwk"])
        .find(|jwk| jwk["kid"] == kid)
        .expect("keys.json holds the kid");
    PublicJwk::from_value(jwk).expect("fixture key is a valid P-256 JWK")
}
