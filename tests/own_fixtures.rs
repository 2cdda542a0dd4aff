//! Our own numbered positive and negative mandate fixtures, made with this crate's own signing
//! code and kept in `fixtures/own/` in the same layout as the AP2 v0.2 set, so that
//! `ap2-mandate conformance fixtures/own` runs them too.
//!
//! The committed files are checked as they are; the generator also runs on every test run into
//! a temporary directory (fresh signatures, same keys) so it cannot drift from the verifier.
//! Regenerate the committed set with `AP2_REGENERATE_FIXTURES=1 cargo test --test own_fixtures`.

mod support;

use std::path::{Path, PathBuf};

use ap2_mandate::jose::{b64, sha256_b64, sign_compact, SigningKey};
use ap2_mandate::mandate::build::{close, delegate, issue, join, present};
use serde_json::{json, Map, Value};

const T0: i64 = 1_780_000_000;
const NOW: i64 = T0 + 120;
const ROOT_KID: &str = "ap2-mandate-test-wallet-1";
const CP_AUD: &str = "https://cp.ap2-mandate.example";
const SHOP_AUD: &str = "https://shop.ap2-mandate.example/checkout";

struct Keys {
    root: SigningKey,
    agent: SigningKey,
    sub_agent: SigningKey,
    merchant: SigningKey,
    stranger: SigningKey,
}

fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/own")
}

#[test]
fn own_fixtures_give_their_expected_verdicts() {
    if std::env::var_os("AP2_REGENERATE_FIXTURES").is_some() {
        generate(&own_dir(), &keys(&own_dir()));
    }
    support::vectors::assert_all_pass(&own_dir(), 27);
}

#[test]
fn generator_makes_fixtures_the_verifier_agrees_with() {
    let dir = std::env::temp_dir().join(format!("ap2-own-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    std::fs::copy(own_dir().join("keys.json"), dir.join("keys.json")).unwrap();
    generate(&dir, &keys(&dir));
    support::vectors::assert_all_pass(&dir, 27);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Test-only keys, kept in `keys.json` beside the cases (made once if missing).
fn keys(dir: &Path) -> Keys {
    let path = dir.join("keys.json");
    if !path.exists() {
        let mut keys = Map::new();
        for (name, kid) in [
            ("root", ROOT_KID),
            ("agent", "agent-1"),
            ("sub_agent", "sub-agent-1"),
            ("merchant", "shop-checkout-1"),
        ] {
            let key = SigningKey::generate(Some(kid.into())).unwrap();
            let private: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
            keys.insert(
                name.into(),
                json!({"kid": kid, "public_jwk": key.public().to_value(),
                "private_jwk_TEST_ONLY": private}),
            );
        }
        let doc = json!({"WARNING": "TEST-ONLY KEYS made by tests/own_fixtures.rs. Never use them elsewhere.",
            "keys": keys});
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let load =
        |name: &str| SigningKey::from_jwk(&doc["keys"][name]["private_jwk_TEST_ONLY"]).unwrap();
    Keys {
        root: load("root"),
        agent: load("agent"),
        sub_agent: load("sub_agent"),
        merchant: load("merchant"),
        // Not in keys.json: nobody trusts it.
        stranger: SigningKey::generate(Some("shop-checkout-1".into())).unwrap(),
    }
}

fn merchant() -> Value {
    json!({"id": "mer_shop_1", "name": "Example Shop", "website": "https://shop.ap2-mandate.example"})
}

fn card() -> Value {
    json!({"id": "pi_card_1", "type": "card", "description": "Visa ****1111"})
}

fn pisp() -> Value {
    json!({"legal_name": "Example PISP Ltd", "brand_name": "ExPay", "domain_name": "expay.example"})
}

/// A UCP checkout signed by `key`: `(sku, title, unit price, quantity)` lines.
fn checkout(
    key: &SigningKey,
    id: &str,
    currency: &str,
    lines: &[(&str, &str, u64, u64)],
    merchant: Value,
) -> String {
    let items: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (sku, title, price, q))| {
            json!({"id": format!("li_{}", i + 1),
            "item": {"id": sku, "title": title, "price": price}, "quantity": q,
            "totals": [{"type": "total", "amount": price * q}]})
        })
        .collect();
    let total: u64 = lines.iter().map(|(_, _, p, q)| p * q).sum();
    let body = json!({"id": id, "merchant": merchant, "line_items": items, "status": "ready_for_complete",
        "currency": currency, "totals": [{"type": "total", "amount": total}], "links": []});
    sign_compact(key, Some("JWT"), false, body.to_string().as_bytes()).unwrap()
}

fn open_checkout(k: &Keys, reqs: Value) -> String {
    let mandate = json!({"vct": "mandate.checkout.open.1", "constraints": [
        {"type": "checkout.line_items", "items": reqs},
        {"type": "checkout.allowed_merchants", "allowed": [merchant()]}],
        "cnf": {"jwk": k.agent.public().to_value()}, "iat": T0 - 600, "exp": T0 + 3600});
    issue(&k.root, "dc+sd-jwt", Map::new(), mandate).unwrap()
}

fn closed_checkout(jwt: &str) -> Value {
    json!({"vct": "mandate.checkout.1", "checkout_jwt": jwt, "checkout_hash": sha256_b64(jwt.as_bytes())})
}

fn open_payment(k: &Keys, constraints: Value, exp: i64) -> String {
    let mandate = json!({"vct": "mandate.payment.open.1", "constraints": constraints,
        "cnf": {"jwk": k.agent.public().to_value()}, "iat": T0 - 600, "exp": exp});
    issue(&k.root, "dc+sd-jwt", Map::new(), mandate).unwrap()
}

fn closed_payment(jwt: &str, amount: u64, currency: &str, payee: Value) -> Value {
    json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()), "payee": payee,
        "payment_amount": {"amount": amount, "currency": currency}, "payment_instrument": card(), "pisp": pisp()})
}

/// One case file in the shared vector layout.
struct Case {
    name: &'static str,
    kind: &'static str,
    chain: String,
    checkout_jwt: String,
    challenge: Option<(&'static str, String)>,
    order: Option<(String, String)>,
    context: Option<Value>,
    error: Option<&'static str>,
    why: &'static str,
}

impl Case {
    fn write(&self, dir: &Path, number: usize) -> String {
        let file = format!("cases/{number:03}_{}.json", self.name);
        let (aud, nonce) = match &self.challenge {
            Some((aud, nonce)) => (json!(aud), json!(nonce)),
            None => (Value::Null, Value::Null),
        };
        let mut doc = json!({"name": format!("{number:03}_{}", self.name), "kind": self.kind,
            "construction": "ap2-mandate (tests/own_fixtures.rs)", "chain": self.chain,
            "checkout_jwt": self.checkout_jwt, "expected_aud": aud, "expected_nonce": nonce, "now": NOW,
            "expect": if self.error.is_some() { "reject" } else { "accept" }, "error": self.error, "why": self.why});
        let hash = sha256_b64(self.checkout_jwt.as_bytes());
        if self.kind == "checkout" {
            doc["expected_checkout_hash"] = json!(hash);
        } else {
            doc["expected_transaction_id"] = json!(hash);
            let (chain, open_hash) = match &self.order {
                Some((chain, open_hash)) => (
                    json!({"chain": chain, "expected_aud": SHOP_AUD,
                    "expected_nonce": "n-order"}),
                    json!(open_hash),
                ),
                None => (Value::Null, Value::Null),
            };
            doc["order_checkout_chain"] = chain;
            doc["expected_open_checkout_hash"] = open_hash;
        }
        if let Some(ctx) = &self.context {
            doc["mandate_context"] = ctx.clone();
        }
        std::fs::write(
            dir.join(&file),
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
        file
    }
}

fn generate(dir: &Path, k: &Keys) {
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    let cases = checkout_cases(k)
        .into_iter()
        .chain(payment_cases(k))
        .chain(chain_cases(k))
        .collect::<Vec<_>>();
    let mut listed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let file = case.write(dir, i + 1);
        listed.push(
            json!({"name": format!("{:03}_{}", i + 1, case.name), "file": file, "kind": case.kind,
            "expect": if case.error.is_some() { "reject" } else { "accept" }, "error": case.error}),
        );
    }
    let manifest = json!({"title": "ap2-mandate's own mandate fixtures",
        "generator": "tests/own_fixtures.rs", "keys": "keys.json",
        "verifier_profile": {"trusted_root_kids": [ROOT_KID], "alg": "ES256 only", "clock_skew_seconds": 60,
            "max_closing_age_seconds": 300, "T0": T0, "now": NOW},
        "cases": listed});
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}

fn boot_reqs() -> Value {
    json!([{"id": "req_boot", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1},
           {"id": "req_sock", "acceptable_items": [{"id": "sku_sock", "title": "Sock"}], "quantity": 2}])
}

fn checkout_case(
    k: &Keys,
    name: &'static str,
    open: String,
    jwt: String,
    error: Option<&'static str>,
    why: &'static str,
) -> Case {
    let closing = close(&k.agent, &open, closed_checkout(&jwt), SHOP_AUD, "n-co", T0).unwrap();
    Case {
        name,
        kind: "checkout",
        chain: join(&[&open, &closing]),
        checkout_jwt: jwt,
        challenge: Some((SHOP_AUD, "n-co".into())),
        order: None,
        context: None,
        error,
        why,
    }
}

fn checkout_cases(k: &Keys) -> Vec<Case> {
    let cart =
        |lines: &[(&str, &str, u64, u64)]| checkout(&k.merchant, "chk_1", "USD", lines, merchant());
    let good = cart(&[
        ("sku_boot", "Boot", 12900, 1),
        ("sku_sock", "Sock", 1450, 2),
    ]);
    let shared = json!([{"id": "a", "acceptable_items": [{"id": "sku_x", "title": "X"}], "quantity": 1},
                        {"id": "b", "acceptable_items": [{"id": "sku_x", "title": "X"}], "quantity": 1}]);
    let lookalike = json!({"id": "mer_shop_\u{0031}\u{0301}", "name": "Example Shop"});
    let issuer_closed = issue(
        &k.root,
        "dc+sd-jwt",
        Map::new(),
        json!({"vct": "mandate.checkout.1", "checkout_jwt": cart(&[("sku_boot", "Boot", 12900, 1)]),
               "checkout_hash": sha256_b64(good.as_bytes()), "iat": T0, "exp": T0 + 900}),
    )
    .unwrap();
    vec![
        checkout_case(k, "valid_open_checkout", open_checkout(k, boot_reqs()), good.clone(), None,
            "Every requirement met exactly by the cart; merchant revealed and allowed."),
        checkout_case(k, "one_unit_cannot_serve_two_requirements", open_checkout(k, shared),
            cart(&[("sku_x", "X", 500, 1)]), Some("invalid_mandate"),
            "Two requirements of one unit each need two units; the cart has one."),
        checkout_case(k, "lookalike_merchant_id", open_checkout(k, boot_reqs()),
            checkout(&k.merchant, "chk_2", "USD", &[("sku_boot", "Boot", 12900, 1), ("sku_sock", "Sock", 1450, 2)], lookalike),
            Some("invalid_mandate"), "The checkout's merchant id differs from the allowed one by a combining mark."),
        checkout_case(k, "checkout_signed_by_unknown_key", open_checkout(k, boot_reqs()),
            checkout(&k.stranger, "chk_1", "USD", &[("sku_boot", "Boot", 12900, 1), ("sku_sock", "Sock", 1450, 2)], merchant()),
            Some("invalid_mandate"), "The checkout JWT reuses the merchant's kid but another key signed it."),
        Case { name: "issuer_signed_closed_checkout_other_jwt", kind: "checkout", chain: issuer_closed,
            checkout_jwt: good, challenge: None, order: None, context: None, error: Some("invalid_mandate"),
            why: "checkout_hash names the presented checkout, but the embedded checkout_jwt is another." },
    ]
}

/// The order's checkout chain for `jwt` and its open checkout hash.
fn order_for(k: &Keys, jwt: &str) -> (String, String) {
    let reqs = json!([{"id": "req", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1}]);
    let open = open_checkout(k, reqs);
    let closing = close(
        &k.agent,
        &open,
        closed_checkout(jwt),
        SHOP_AUD,
        "n-order",
        T0,
    )
    .unwrap();
    (join(&[&open, &closing]), sha256_b64(open.as_bytes()))
}

struct Pay<'a> {
    name: &'static str,
    constraints: Value,
    currency: &'a str,
    price: u64,
    amount: u64,
    payee: Value,
    context: Option<Value>,
    error: Option<&'static str>,
    why: &'static str,
}

fn payment_case(k: &Keys, p: Pay<'_>) -> Case {
    let jwt = checkout(
        &k.merchant,
        "chk_p",
        p.currency,
        &[("sku_boot", "Boot", p.price, 1)],
        merchant(),
    );
    let (order, open_hash) = order_for(k, &jwt);
    let mut constraints = p.constraints;
    constraints
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "payment.reference", "conditional_transaction_id": open_hash}));
    let open = open_payment(k, constraints, T0 + 3600);
    let closing = close(
        &k.agent,
        &open,
        closed_payment(&jwt, p.amount, p.currency, p.payee),
        CP_AUD,
        "n-pay",
        T0,
    )
    .unwrap();
    Case {
        name: p.name,
        kind: "payment",
        chain: join(&[&open, &closing]),
        checkout_jwt: jwt,
        challenge: Some((CP_AUD, "n-pay".into())),
        order: Some((order, open_hash)),
        context: p.context,
        error: p.error,
        why: p.why,
    }
}

fn payment_cases(k: &Keys) -> Vec<Case> {
    let all = |currency: &str, max: u64| {
        json!([
        {"type": "payment.amount_range", "currency": currency, "min": 1, "max": max},
        {"type": "payment.allowed_payees", "allowed": [merchant()]},
        {"type": "payment.allowed_payment_instruments", "allowed": [card()]},
        {"type": "payment.allowed_pisps", "allowed": [pisp()]},
        {"type": "payment.execution_date", "not_before": "2026-05-01", "not_after": "2026-06-30T23:59:59Z"},
        {"type": "payment.agent_recurrence", "frequency": "MONTHLY", "max_occurrences": 12}])
    };
    let with = |mut base: Value, extra: Value| {
        base.as_array_mut().unwrap().push(extra);
        base
    };
    let other_payee = json!({"id": "mer_other", "name": "Other"});
    let pay = |name, constraints, currency, amount, context, error, why| Pay {
        name,
        constraints,
        currency,
        price: amount,
        amount,
        payee: merchant(),
        context,
        error,
        why,
    };
    vec![
        payment_case(k, pay("valid_payment_all_constraints", all("USD", 20000), "USD", 12900,
            Some(json!({"total_amount": 0, "total_uses": 3, "last_used_date": NOW - 40 * 86400})), None,
            "Every payment constraint holds; the last use was 40 days ago (monthly spacing met).")),
        payment_case(k, pay("jpy_budget_in_major_units", with(all("JPY", 20000), json!({"type": "payment.budget", "max": 15000, "currency": "JPY"})),
            "JPY", 5000, Some(json!({"total_amount": 10000, "total_uses": 1, "last_used_date": NOW - 40 * 86400})), None,
            "JPY has no minor unit: budget 15000 JPY; 10000 + 5000 = 15000 fits exactly.")),
        payment_case(k, pay("kwd_budget_fits_to_the_fils", with(all("KWD", 20000), json!({"type": "payment.budget", "max": 1.5, "currency": "KWD"})),
            "KWD", 500, Some(json!({"total_amount": 1000, "total_uses": 1, "last_used_date": NOW - 40 * 86400})), None,
            "KWD has three decimals: 1.5 KWD = 1500 fils; 1000 + 500 = 1500 fits exactly (x100 would give 150).")),
        payment_case(k, pay("kwd_budget_exceeded_by_one_fils", with(all("KWD", 20000), json!({"type": "payment.budget", "max": 1.5, "currency": "KWD"})),
            "KWD", 501, Some(json!({"total_amount": 1000, "total_uses": 1, "last_used_date": NOW - 40 * 86400})), Some("invalid_mandate"),
            "1000 + 501 = 1501 fils > 1.5 KWD.")),
        payment_case(k, Pay { name: "payee_is_checkout_merchant_but_not_allowed",
            constraints: json!([{"type": "payment.allowed_payees", "allowed": [other_payee]}]), currency: "USD",
            price: 12900, amount: 12900, payee: merchant(), context: None, error: Some("invalid_mandate"),
            why: "The payee is the checkout's merchant, but only another payee is allowed." }),
        payment_case(k, pay("instrument_not_allowed", json!([{"type": "payment.allowed_payment_instruments",
            "allowed": [{"id": "pi_other", "type": "card"}]}]), "USD", 12900, None, Some("invalid_mandate"),
            "The closed mandate pays with pi_card_1; only pi_other is allowed.")),
        payment_case(k, pay("pisp_not_allowed", json!([{"type": "payment.allowed_pisps", "allowed": [
            {"legal_name": "Example PISP Ltd", "brand_name": "ExPay", "domain_name": "other.example"}]}]),
            "USD", 12900, None, Some("invalid_mandate"), "The PISP's domain differs from the allowed one.")),
        payment_case(k, pay("execution_outside_window", json!([{"type": "payment.execution_date",
            "not_before": "2026-06-01"}]), "USD", 12900, None, Some("invalid_mandate"),
            "No execution_date means now (2026-05-28), before not_before 2026-06-01.")),
        payment_case(k, pay("recurrence_too_soon", all("USD", 20000), "USD", 12900,
            Some(json!({"total_amount": 0, "total_uses": 1, "last_used_date": NOW - 10 * 86400})), Some("invalid_mandate"),
            "Monthly recurrence, but the last use was 10 days ago.")),
        payment_case(k, Pay { name: "amount_differs_from_checkout_total", constraints: all("USD", 20000),
            currency: "USD", price: 12900, amount: 100, payee: merchant(), context: None, error: Some("invalid_mandate"),
            why: "The closed payment is for 1.00 USD while the checkout total is 129.00 USD." }),
        payment_case(k, pay("unknown_member_in_known_constraint", json!([{"type": "payment.amount_range",
            "currency": "USD", "max": 20000, "per_day": 5000}]), "USD", 12900, None, Some("unresolved_constraint"),
            "amount_range with a member we do not know cannot be evaluated safely.")),
    ]
}

fn chain_cases(k: &Keys) -> Vec<Case> {
    let jwt = checkout(
        &k.merchant,
        "chk_c",
        "USD",
        &[("sku_boot", "Boot", 12900, 1)],
        merchant(),
    );
    let (order, open_hash) = order_for(k, &jwt);
    let cap = |max: u64| {
        json!([{"type": "payment.amount_range", "currency": "USD", "max": max},
        {"type": "payment.reference", "conditional_transaction_id": open_hash}])
    };
    let open = open_payment(k, cap(20000), T0 + 3600);
    let closed = closed_payment(&jwt, 12900, "USD", merchant());
    let closing =
        |prev: &str, iat: i64| close(&k.agent, prev, closed.clone(), CP_AUD, "n-c", iat).unwrap();
    let case = |name, chain: String, error, why| Case {
        name,
        kind: "payment",
        chain,
        checkout_jwt: jwt.clone(),
        challenge: Some((CP_AUD, "n-c".into())),
        order: Some((order.clone(), open_hash.clone())),
        context: None,
        error,
        why,
    };

    let expired_at_skew = open_payment(k, cap(20000), NOW - 60);
    let alive_in_skew = open_payment(k, cap(20000), NOW - 59);
    let sub_open = |max: u64| {
        json!({"vct": "mandate.payment.open.1", "constraints": cap(max),
        "cnf": {"jwk": k.sub_agent.public().to_value()}, "exp": T0 + 1800})
    };
    let three_hops = |max: u64| {
        let mid = delegate(
            &k.agent,
            &open,
            sub_open(max),
            "https://sub-agent.example",
            "n-mid",
            T0 - 60,
        )
        .unwrap();
        let last = close(&k.sub_agent, &mid, closed.clone(), CP_AUD, "n-c", T0).unwrap();
        join(&[&open, &mid, &last])
    };
    let small_open = open_payment(
        k,
        json!([{"type": "payment.amount_range", "currency": "USD", "max": 10000},
        {"type": "payment.reference", "conditional_transaction_id": open_hash}]),
        T0 + 3600,
    );
    let narrowing_mid = delegate(
        &k.agent,
        &small_open,
        sub_open(50000),
        "https://sub-agent.example",
        "n-mid",
        T0 - 60,
    )
    .unwrap();
    let widened = join(&[
        &small_open,
        &narrowing_mid,
        &close(
            &k.sub_agent,
            &narrowing_mid,
            closed.clone(),
            CP_AUD,
            "n-c",
            T0,
        )
        .unwrap(),
    ]);
    let with_cnf = close(
        &k.agent,
        &open,
        {
            let mut c = closed.clone();
            c["cnf"] = json!({"jwk": k.agent.public().to_value()});
            c
        },
        CP_AUD,
        "n-c",
        T0,
    )
    .unwrap();
    let two_payees = open_payment(
        k,
        json!([{"type": "payment.allowed_payees", "allowed": [merchant(), {"id": "mer_other", "name": "Other"}]},
        {"type": "payment.reference", "conditional_transaction_id": open_hash}]),
        T0 + 3600,
    );
    let not_other =
        |d: &ap2_mandate::sdjwt::Disclosure| d.value().get("id").is_none_or(|id| id != "mer_other");
    let withheld = present(&two_payees, not_other).unwrap();
    assert_ne!(withheld, two_payees);
    let stale_binding = join(&[&withheld, &closing(&two_payees, T0)]);
    let valid = join(&[&open, &closing(&open, T0)]);
    let duplicated = {
        let extra = valid
            .trim_end_matches('~')
            .rsplit('~')
            .next()
            .unwrap()
            .to_owned();
        format!("{valid}{extra}~")
    };

    vec![
        case("valid_payment_at_default_policy", valid.clone(), None, "Two hops, every check holds."),
        case("open_mandate_expired_at_skew_edge", join(&[&expired_at_skew, &closing(&expired_at_skew, T0)]),
            Some("invalid_credential"), "exp + 60 s skew equals now: expired (now must be before exp)."),
        case("open_mandate_alive_inside_skew", join(&[&alive_in_skew, &closing(&alive_in_skew, T0)]), None,
            "exp + 60 s skew is one second after now: still valid."),
        case("closing_hop_too_old", join(&[&open, &closing(&open, NOW - 301)]), Some("invalid_credential"),
            "The closing hop was signed 301 s ago; the policy allows 300 s."),
        case("three_hops_sub_agent", three_hops(20000), None,
            "Root to agent, agent delegates to a sub-agent (kb+sd-jwt+kb with its own cnf), sub-agent closes."),
        case("sub_agent_cannot_widen", widened, Some("invalid_mandate"),
            "The sub-agent's mandate allows 500.00 USD but the root allows 100.00 USD; every open mandate applies."),
        case("closing_hop_carries_cnf", join(&[&open, &with_cnf]), Some("invalid_credential"),
            "A closing hop must not delegate further."),
        case("disclosures_withheld_after_binding", stale_binding, Some("invalid_credential"),
            "sd_hash covers the root with all disclosures; the chain presents fewer."),
        case("closing_disclosure_duplicated", duplicated, Some("invalid_credential"),
            "The closed mandate's disclosure appears twice."),
        case("high_s_signature_still_verifies", high_s(&valid), None,
            "The closing hop's signature rewritten to its high-S twin (n - s) is valid ES256; single use \
             must therefore key on the signed payload, never on signature bytes."),
        case("root_with_crit_header", crit_root(k, &jwt, &open_hash), Some("invalid_credential"),
            "The root's header carries crit; we understand no extensions."),
    ]
}

/// Rewrites the last hop's signature `(r, s)` to `(r, n - s)`.
fn high_s(chain: &str) -> String {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let start = chain.rfind("~~").unwrap() + 2;
    let jwt_end = start + chain[start..].find('~').unwrap();
    let jwt = &chain[start..jwt_end];
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let mut raw = b64::decode(sig).unwrap();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(raw[32 + i]) - borrow;
        raw[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    format!(
        "{}{input}.{}{}",
        &chain[..start],
        b64::encode(&raw),
        &chain[jwt_end..]
    )
}

/// A root whose header carries `crit`, signed properly, closed properly.
fn crit_root(k: &Keys, jwt: &str, open_hash: &str) -> String {
    let valid = open_payment(
        k,
        json!([{"type": "payment.reference", "conditional_transaction_id": open_hash}]),
        T0 + 3600,
    );
    let (root_jwt, rest) = valid.split_once('~').unwrap();
    let payload = root_jwt.split('.').nth(1).unwrap();
    let header = b64::encode(
        json!({"alg": "ES256", "typ": "dc+sd-jwt", "kid": ROOT_KID, "crit": ["ap2"], "ap2": 1})
            .to_string(),
    );
    let input = format!("{header}.{payload}");
    let sig = k.root.sign(input.as_bytes()).unwrap();
    let root = format!("{input}.{}~{rest}", b64::encode(sig));
    let closing = close(
        &k.agent,
        &root,
        closed_payment(jwt, 12900, "USD", merchant()),
        CP_AUD,
        "n-c",
        T0,
    )
    .unwrap();
    join(&[&root, &closing])
}
