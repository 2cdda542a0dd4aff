//! Refusals the vector sets do not reach, each with the test that would catch its absence:
//! an expired or malformed checkout, a changed preset field, `issuer_jwt_hash` bindings, hop
//! types out of place, an intermediate hop that names no next key, and bad amounts.

use ap2_mandate::jose::{sha256_b64, sign_compact, SigningKey};
use ap2_mandate::mandate::build::{close, delegate, issue, join, present};
use ap2_mandate::mandate::{
    CheckoutJwt, Error, PaymentBindings, Policy, Trust, Usage, Verifier, Violation,
};
use ap2_mandate::sdjwt::{self, sign_segment, Challenge, Disclosure, UnverifiedChain};
use serde_json::{json, Map, Value};

const NOW: i64 = 1_780_000_000;
const AUD: &str = "https://cp.example";
const NONCE: &str = "n-1";

struct World {
    root: SigningKey,
    agent: SigningKey,
    merchant: SigningKey,
    trust: Trust,
    policy: Policy,
}

fn world() -> World {
    let root = SigningKey::generate(Some("wallet".into())).unwrap();
    let agent = SigningKey::generate(Some("agent".into())).unwrap();
    let merchant = SigningKey::generate(Some("shop".into())).unwrap();
    let mut trust = Trust::default();
    trust.issuers.insert(root.public().clone()).unwrap();
    trust.merchants.insert(merchant.public().clone()).unwrap();
    World {
        root,
        agent,
        merchant,
        trust,
        policy: Policy::default(),
    }
}

fn checkout_body(extra: Value) -> Value {
    let mut body = json!({"id": "chk", "merchant": {"id": "mer_1", "name": "Shop"},
        "line_items": [{"id": "li", "item": {"id": "sku", "title": "Thing", "price": 500}, "quantity": 1}],
        "currency": "USD", "totals": [{"type": "total", "amount": 500}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

fn sign_checkout(w: &World, body: &Value) -> String {
    sign_compact(&w.merchant, Some("JWT"), false, body.to_string().as_bytes()).unwrap()
}

fn open_payment(w: &World, extra: Value) -> String {
    let mut mandate = json!({"vct": "mandate.payment.open.1", "constraints": [
        {"type": "payment.reference", "conditional_transaction_id": "open-checkout-hash"}],
        "cnf": {"jwk": w.agent.public().to_value()}, "exp": NOW + 3600});
    if let (Value::Object(m), Value::Object(e)) = (&mut mandate, extra) {
        m.extend(e);
    }
    issue(&w.root, "dc+sd-jwt", Map::new(), mandate).unwrap()
}

fn closed_payment(jwt: &str) -> Value {
    json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
        "payee": {"id": "mer_1", "name": "Shop"}, "payment_amount": {"amount": 500, "currency": "USD"},
        "payment_instrument": {"id": "pi_1", "type": "card"}})
}

fn pay(w: &World, chain: &str, jwt: &str) -> Result<(), Error> {
    let checkout = CheckoutJwt::verify(jwt, &w.trust.merchants, NOW)?;
    let verifier = Verifier {
        policy: &w.policy,
        trust: &w.trust,
    };
    let bindings = PaymentBindings {
        checkout: &checkout,
        open_checkout_hash: Some("open-checkout-hash"),
    };
    let parsed = UnverifiedChain::parse(chain)?;
    let challenge = Challenge {
        aud: AUD,
        nonce: NONCE,
    };
    verifier
        .payment(&parsed, &bindings, &Usage::default(), Some(&challenge), NOW)
        .map(|_| ())
}

fn two_hops(w: &World, open: &str, jwt: &str) -> String {
    join(&[
        open,
        &close(&w.agent, open, closed_payment(jwt), AUD, NONCE, NOW).unwrap(),
    ])
}

#[test]
fn the_fixture_chain_verifies() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    assert_eq!(
        pay(&w, &two_hops(&w, &open_payment(&w, json!({})), &jwt), &jwt),
        Ok(())
    );
}

#[test]
fn an_expired_checkout_is_refused() {
    let w = world();
    let jwt = sign_checkout(
        &w,
        &checkout_body(json!({"expires_at": "2026-05-27T00:00:00Z"})),
    );
    let chain = two_hops(&w, &open_payment(&w, json!({})), &jwt);
    assert_eq!(pay(&w, &chain, &jwt), Err(Error::CheckoutExpired));
}

#[test]
fn a_checkout_with_two_totals_or_a_bad_currency_is_malformed() {
    let w = world();
    for extra in [
        json!({"totals": [{"type": "total", "amount": 500}, {"type": "total", "amount": 1}]}),
        json!({"currency": "usd"}),
        json!({"totals": [{"type": "total", "amount": -500}]}),
    ] {
        let jwt = sign_checkout(&w, &checkout_body(extra.clone()));
        let chain = two_hops(&w, &open_payment(&w, json!({})), &jwt);
        assert_eq!(
            pay(&w, &chain, &jwt),
            Err(Error::MalformedCheckout),
            "{extra}"
        );
    }
}

#[test]
fn a_field_fixed_by_the_open_mandate_cannot_change() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    let preset = json!({"payment_instrument": {"id": "pi_other", "type": "card"}});
    let chain = two_hops(&w, &open_payment(&w, preset), &jwt);
    assert_eq!(
        pay(&w, &chain, &jwt),
        Err(Error::Violated(Violation::PresetMismatch))
    );
}

#[test]
fn a_negative_amount_in_a_mandate_is_malformed() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    let open = open_payment(&w, json!({}));
    let mut closed = closed_payment(&jwt);
    closed["payment_amount"]["amount"] = json!(-500);
    let chain = join(&[
        &open,
        &close(&w.agent, &open, closed, AUD, NONCE, NOW).unwrap(),
    ]);
    assert_eq!(pay(&w, &chain, &jwt), Err(Error::Malformed("amount")));
}

/// A closing hop bound with `issuer_jwt_hash` (the previous hop's JWT alone) instead of `sd_hash`.
fn closing_by_issuer_jwt(w: &World, previous: &str, jwt: &str, bound_to: &str) -> String {
    let disclosure = Disclosure::element(&Disclosure::new_salt().unwrap(), closed_payment(jwt));
    let mut payload = Map::new();
    payload.insert(
        "delegate_payload".into(),
        json!([disclosure.array_placeholder()]),
    );
    payload.insert("iat".into(), json!(NOW));
    payload.insert("aud".into(), json!(AUD));
    payload.insert("nonce".into(), json!(NONCE));
    payload.insert(
        "issuer_jwt_hash".into(),
        json!(sha256_b64(bound_to.as_bytes())),
    );
    payload.insert("_sd_alg".into(), json!("sha-256"));
    let hop = sign_segment(&w.agent, "kb+sd-jwt", &payload, &[disclosure]).unwrap();
    join(&[previous, &hop])
}

#[test]
fn an_issuer_jwt_hash_binding_lets_the_holder_withhold_but_binds_the_jwt() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    let two_payees = json!({"constraints": [
        {"type": "payment.reference", "conditional_transaction_id": "open-checkout-hash"},
        {"type": "payment.allowed_payees", "allowed": [
            {"id": "mer_1", "name": "Shop"}, {"id": "mer_2", "name": "Other"}]}]});
    let open = open_payment(&w, two_payees);
    let withheld = present(&open, |d| d.value().get("id") != Some(&json!("mer_2"))).unwrap();
    assert_ne!(withheld, open);
    let root_jwt = open.split('~').next().unwrap();
    let chain = closing_by_issuer_jwt(&w, &withheld, &jwt, root_jwt);
    assert_eq!(
        pay(&w, &chain, &jwt),
        Ok(()),
        "withheld payee, JWT still bound"
    );

    let other_root = open_payment(&w, json!({}));
    let other_jwt = other_root.split('~').next().unwrap();
    let err = pay(&w, &closing_by_issuer_jwt(&w, &open, &jwt, other_jwt), &jwt).unwrap_err();
    assert_eq!(err, Error::Chain(sdjwt::Error::BindingMismatch));
}

#[test]
fn hop_types_must_fit_their_places() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    let open = open_payment(&w, json!({}));
    // A closing hop typed as one that delegates further.
    let sub = SigningKey::generate(Some("sub".into())).unwrap();
    let mut next = closed_payment(&jwt);
    next["cnf"] = json!({"jwk": sub.public().to_value()});
    let mid_as_last = delegate(&w.agent, &open, next, AUD, NONCE, NOW).unwrap();
    let err = pay(&w, &join(&[&open, &mid_as_last]), &jwt).unwrap_err();
    assert_eq!(err, Error::Chain(sdjwt::Error::HopTypeMismatch));
}

#[test]
fn an_intermediate_hop_must_name_the_next_key() {
    let w = world();
    let jwt = sign_checkout(&w, &checkout_body(json!({})));
    let open = open_payment(&w, json!({}));
    let no_cnf = json!({"vct": "mandate.payment.open.1", "exp": NOW + 600, "constraints": [
        {"type": "payment.reference", "conditional_transaction_id": "open-checkout-hash"}]});
    let mid = delegate(&w.agent, &open, no_cnf, "https://sub.example", "n-mid", NOW).unwrap();
    let last = close(&w.agent, &mid, closed_payment(&jwt), AUD, NONCE, NOW).unwrap();
    let err = pay(&w, &join(&[&open, &mid, &last]), &jwt).unwrap_err();
    assert_eq!(err, Error::Chain(sdjwt::Error::MissingConfirmationKey));
}
