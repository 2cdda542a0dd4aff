//! Properties of the public API: what is serialized parses back to the same thing, and a mandate
//! chain or checkout JWT that verifies stops verifying when any single byte of it changes.
//!
//! The round trips cover amounts, P-256 JWKs and their RFC 7638 thumbprints, compact JWS and
//! RFC 9901 §4.2 disclosures. The tampering properties start from the three accepted AP2 v0.2
//! vectors in `fixtures/ap2-v0.2` and run the same checks as the conformance runner: trust from
//! `keys.json`, the checkout JWT against the merchant keys, the case's challenge and clock, and
//! for payments the open checkout hash of the order's checkout chain. Failing inputs are not
//! persisted to disk; proptest prints the minimal one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};

use ap2_mandate::jose::{
    sha256_b64, sign_compact, HeaderPolicy, KeySet, PublicJwk, SigningKey, TypRule, UnverifiedJws,
};
use ap2_mandate::mandate::{CheckoutJwt, PaymentBindings, Policy, Trust, Usage, Verifier};
use ap2_mandate::money::{Amount, Currency};
use ap2_mandate::sdjwt::{self, Challenge, Disclosure, UnverifiedChain, MAX_HOPS};

/// The unpadded base64url alphabet (RFC 4648 §5).
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters that mean something in a chain, a JWS or a neighbouring encoding.
const SEPARATORS: &str = "~.=+/ ";

/// The accepted vectors whose chains must not survive any single-byte change.
const ACCEPTED_CASES: [&str; 3] = [
    "valid_hnp_payment",
    "valid_checkout",
    "valid_hp_root_signed_payment",
];

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn currency() -> impl Strategy<Value = Currency> {
    select(vec!["USD", "EUR", "JPY", "KRW", "KWD", "BHD", "CLF", "UYW"])
        .prop_map(|code| Currency::from_code(code).expect("a listed ISO 4217 code"))
}

fn kid() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>().prop_filter("a kid is 1 to 256 bytes", |k| {
        !k.is_empty() && k.len() <= 256
    }))
}

fn claim_name() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("reserved SD-JWT names are not claims", |name| {
        !matches!(name.as_str(), "_sd" | "..." | "_sd_alg")
    })
}

/// JSON values of every kind, nested a few levels: what a disclosure or a claim may carry.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Eighths are exact in binary, so the decimal text reads back to the same float.
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 8.0)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A hop's shape without its meaning: a JWT-like token and a few disclosure-like tokens.
fn hop() -> impl Strategy<Value = (String, Vec<String>)> {
    let disclosures = proptest::collection::vec("[A-Za-z0-9_-]{1,30}", 0..5);
    ("[A-Za-z0-9_.-]{1,40}", disclosures)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn an_amount_reads_back_from_its_major_unit_text(
        currency in currency(),
        minor in 0..=i64::MAX as u64,
    ) {
        let amount = Amount::from_minor(minor, currency).unwrap();
        let text = amount.to_major_string();
        prop_assert_eq!(Amount::parse_major(&text, currency), Ok(amount), "{}", text);
    }

    #[test]
    fn a_disclosed_property_parses_back_to_the_same_name_value_and_digest(
        salt in any::<String>().prop_filter("a salt is not empty", |s| !s.is_empty()),
        name in claim_name(),
        value in json_value(),
    ) {
        let made = Disclosure::property(&salt, &name, value.clone()).unwrap();
        let parsed = Disclosure::parse(made.encoded()).unwrap();
        prop_assert_eq!(parsed.name(), Some(name.as_str()));
        prop_assert_eq!(parsed.value(), &value);
        prop_assert_eq!(parsed.digest(), sha256_b64(made.encoded().as_bytes()));
        prop_assert_eq!(parsed, made);
    }

    #[test]
    fn a_disclosed_array_element_parses_back_to_the_same_value_and_digest(
        salt in any::<String>().prop_filter("a salt is not empty", |s| !s.is_empty()),
        value in json_value(),
    ) {
        let made = Disclosure::element(&salt, value.clone());
        let parsed = Disclosure::parse(made.encoded()).unwrap();
        prop_assert_eq!(parsed.name(), None);
        prop_assert_eq!(parsed.value(), &value);
        prop_assert_eq!(parsed.digest(), sha256_b64(made.encoded().as_bytes()));
        prop_assert_eq!(parsed, made);
    }

    #[test]
    fn a_reserved_name_is_never_made_into_a_property_disclosure(
        salt in "[A-Za-z0-9_-]{1,22}",
        name in select(vec!["_sd", "...", "_sd_alg"]),
        value in json_value(),
    ) {
        prop_assert_eq!(
            Disclosure::property(&salt, name, value),
            Err(sdjwt::Error::ClaimCollision)
        );
    }

    #[test]
    fn a_chain_parses_into_as_many_hops_as_were_joined(
        hops in proptest::collection::vec(hop(), 1..=MAX_HOPS),
    ) {
        let text = join_hops(&hops);
        let chain = UnverifiedChain::parse(&text);
        prop_assert!(chain.is_ok(), "{:?}: {}", chain.err(), text);
        prop_assert_eq!(chain.unwrap().hop_count(), hops.len());
    }

    #[test]
    fn a_chain_with_an_empty_trailing_hop_is_refused(
        hops in proptest::collection::vec(hop(), 1..MAX_HOPS),
    ) {
        let text = join_hops(&hops) + "~";
        let chain = UnverifiedChain::parse(&text);
        prop_assert!(chain.is_err(), "parsed into {} hops: {}", chain.unwrap().hop_count(), text);
    }
}

fn join_hops(hops: &[(String, Vec<String>)]) -> String {
    let mut text = String::new();
    for (i, (jwt, disclosures)) in hops.iter().enumerate() {
        if i > 0 {
            text.push('~');
        }
        text.push_str(jwt);
        text.push('~');
        for d in disclosures {
            text.push_str(d);
            text.push('~');
        }
    }
    text
}

proptest! {
    // Key generation and ECDSA are the cost here; fewer cases suffice.
    #![proptest_config(config(64))]

    #[test]
    fn a_generated_key_survives_its_jwk_as_a_value_and_as_text(kid in kid()) {
        let key = SigningKey::generate(kid).unwrap();
        let public = key.public();

        let from_value = PublicJwk::from_value(&public.to_value()).unwrap();
        let from_text = PublicJwk::from_json(&public.to_value().to_string()).unwrap();
        prop_assert_eq!(&from_value, public);
        prop_assert_eq!(&from_text, public);
        prop_assert_eq!(from_value.thumbprint(), public.thumbprint());
        prop_assert_eq!(from_text.thumbprint(), public.thumbprint());
    }

    #[test]
    fn a_thumbprint_is_the_rfc7638_digest_of_the_required_members_alone(kid in kid()) {
        let key = SigningKey::generate(kid).unwrap();
        let jwk = key.public().to_value();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap(),
        );
        prop_assert_eq!(key.public().thumbprint(), sha256_b64(canonical.as_bytes()));
        let without_kid = key.public().clone().with_kid(None);
        prop_assert_eq!(without_kid.thumbprint(), key.public().thumbprint());
    }

    #[test]
    fn signed_claims_read_back_unchanged(
        claims in proptest::collection::btree_map(any::<String>(), json_value(), 0..6),
    ) {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let claims: Map<String, Value> = claims.into_iter().collect();
        let payload = Value::Object(claims.clone()).to_string();
        let token = sign_compact(&key, Some("JWT"), false, payload.as_bytes()).unwrap();

        let policy = HeaderPolicy::trusted_key(TypRule::OneOf(&["JWT"]));
        let jws = UnverifiedJws::parse(&token, &policy).unwrap();
        prop_assert_eq!(jws.header().kid(), Some("k"));
        prop_assert_eq!(jws.verify(key.public()).unwrap().into_claims(), claims);
    }
}

// ---------------------------------------------------------------------------------------------
// The vectors: how the conformance runner sees a case.

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ap2-v0.2")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn case_names() -> Vec<String> {
    let manifest = read_json(&fixtures().join("manifest.json"));
    let cases = manifest["cases"].as_array().expect("manifest lists cases");
    let file = |c: &Value| c["file"].as_str().expect("case file").to_owned();
    let name = |f: String| {
        f.trim_start_matches("cases/")
            .trim_end_matches(".json")
            .to_owned()
    };
    cases.iter().map(file).map(name).collect()
}

/// Trust as the runner builds it: the manifest's root `kid`s are issuers, every other `kid` a
/// merchant, and the first key under a `kid` wins (a later one reusing it is an impostor).
fn trust() -> Trust {
    let manifest = read_json(&fixtures().join("manifest.json"));
    let roots = &manifest["verifier_profile"]["trusted_root_kids"];
    let keys = read_json(&fixtures().join("keys.json"));
    let mut trust = Trust {
        issuers: KeySet::new(),
        merchants: KeySet::new(),
    };
    for entry in keys["keys"].as_object().expect("keys object").values() {
        let key = PublicJwk::from_value(&entry["public_jwk"]).expect("public JWK");
        let kid = key.kid().expect("every vector key has a kid").to_owned();
        let is_root = roots
            .as_array()
            .unwrap()
            .contains(&Value::from(kid.as_str()));
        let set = if is_root {
            &mut trust.issuers
        } else {
            &mut trust.merchants
        };
        if set.get(&kid).is_err() {
            set.insert(key).unwrap();
        }
    }
    trust
}

/// One vector case, its checkout JWT already verified and its order's open checkout hash known.
struct Scene {
    name: String,
    case: Value,
    policy: Policy,
    trust: Trust,
    checkout: CheckoutJwt,
    open_checkout_hash: Option<String>,
}

impl Scene {
    fn load(name: &str) -> Scene {
        let case = read_json(&fixtures().join("cases").join(format!("{name}.json")));
        let trust = trust();
        let now = case["now"].as_i64().expect("now");
        let checkout = CheckoutJwt::verify(
            case["checkout_jwt"].as_str().unwrap(),
            &trust.merchants,
            now,
        )
        .expect("the vector's checkout JWT verifies");
        let mut scene = Scene {
            name: name.to_owned(),
            case,
            policy: Policy::default(),
            trust,
            checkout,
            open_checkout_hash: None,
        };
        scene.open_checkout_hash = scene.order_open_checkout_hash();
        scene
    }

    fn chain(&self) -> &str {
        self.case["chain"].as_str().expect("chain")
    }

    fn checkout_jwt(&self) -> &str {
        self.case["checkout_jwt"].as_str().expect("checkout_jwt")
    }

    fn now(&self) -> i64 {
        self.case["now"].as_i64().expect("now")
    }

    fn verifier(&self) -> Verifier<'_> {
        Verifier {
            policy: &self.policy,
            trust: &self.trust,
        }
    }

    /// The runner's whole decision for `chain` with `checkout_jwt`; `Err` names the refusal.
    fn decide(&self, chain: &str, checkout_jwt: &str) -> Result<(), String> {
        if checkout_jwt == self.checkout_jwt() {
            return self.decide_with(chain, &self.checkout);
        }
        let checkout = CheckoutJwt::verify(checkout_jwt, &self.trust.merchants, self.now())
            .map_err(|e| e.reason().to_owned())?;
        self.decide_with(chain, &checkout)
    }

    fn decide_with(&self, chain: &str, checkout: &CheckoutJwt) -> Result<(), String> {
        let chain = UnverifiedChain::parse(chain).map_err(|e| format!("parse: {e}"))?;
        let challenge = challenge(&self.case["expected_aud"], &self.case["expected_nonce"]);
        let now = self.now();
        let outcome = match self.case["kind"].as_str() {
            Some("checkout") => self
                .verifier()
                .checkout(&chain, checkout, challenge.as_ref(), now)
                .map(drop),
            Some("payment") => {
                let bindings = PaymentBindings {
                    checkout,
                    open_checkout_hash: self.open_checkout_hash.as_deref(),
                };
                let usage = usage(&self.case["mandate_context"]);
                self.verifier()
                    .payment(&chain, &bindings, &usage, challenge.as_ref(), now)
                    .map(drop)
            }
            other => panic!("{}: unknown kind {other:?}", self.name),
        };
        outcome.map_err(|e| e.reason().to_owned())
    }

    /// The open checkout hash of the order, from its checkout chain as presented (unmodified).
    fn order_open_checkout_hash(&self) -> Option<String> {
        let order = self
            .case
            .get("order_checkout_chain")
            .filter(|o| !o.is_null())?;
        let chain = UnverifiedChain::parse(order["chain"].as_str().unwrap()).unwrap();
        let challenge = challenge(&order["expected_aud"], &order["expected_nonce"]);
        let verified = self
            .verifier()
            .checkout(&chain, &self.checkout, challenge.as_ref(), self.now())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: order checkout chain refused: {}",
                    self.name,
                    e.reason()
                )
            });
        let hash = (!verified.open().is_empty()).then(|| verified.chain().root().segment_hash());
        assert_eq!(
            hash.as_deref(),
            self.case["expected_open_checkout_hash"].as_str(),
            "{}: open checkout hash",
            self.name
        );
        hash
    }
}

fn challenge<'a>(aud: &'a Value, nonce: &'a Value) -> Option<Challenge<'a>> {
    match (aud.as_str(), nonce.as_str()) {
        (Some(aud), Some(nonce)) => Some(Challenge { aud, nonce }),
        _ => None,
    }
}

fn usage(context: &Value) -> Usage {
    if context.is_null() {
        return Usage::default();
    }
    Usage {
        total_minor: context["total_amount"].as_u64().unwrap(),
        uses: context["total_uses"].as_u64().unwrap(),
        last_use: context["last_used_date"].as_f64().map(|d| d.floor() as i64),
    }
}

// ---------------------------------------------------------------------------------------------
// Single-byte edits.

/// One change to a text: a byte replaced by a character, a byte removed, a character inserted.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Replace(usize, char),
    Delete(usize),
    Insert(usize, char),
}

impl Edit {
    /// The edited text, or `None` when a replacement would leave the text as it was.
    fn apply(self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let (at, skip, new) = match self {
            Edit::Replace(i, c) if c.is_ascii() && bytes[i] == c as u8 => return None,
            Edit::Replace(i, c) => (i, 1, Some(c)),
            Edit::Delete(i) => (i, 1, None),
            Edit::Insert(i, c) => (i, 0, Some(c)),
        };
        let mut out = String::with_capacity(text.len() + 4);
        out.push_str(&text[..at]);
        out.extend(new);
        out.push_str(&text[at + skip..]);
        Some(out)
    }
}

/// Edits anywhere in `text`, with extra weight on the bytes around separators and the ends,
/// where a framing mistake would hide.
fn edits(text: &str) -> BoxedStrategy<Edit> {
    assert!(
        text.is_ascii(),
        "vector texts are ASCII, so byte positions are character positions"
    );
    let len = text.len();
    let mut edges = vec![0, len - 1];
    for (i, b) in text.bytes().enumerate() {
        if b == b'~' || b == b'.' {
            edges.extend([i.saturating_sub(1), i, (i + 1).min(len - 1)]);
        }
    }
    let byte = prop_oneof![3 => 0..len, 1 => select(edges.clone())];
    let gap = prop_oneof![2 => 0..=len, 1 => select(edges), 1 => Just(len)];
    let character = prop_oneof![
        3 => select(B64URL.chars().collect::<Vec<_>>()),
        2 => select(SEPARATORS.chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ];
    prop_oneof![
        2 => (byte.clone(), character.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        1 => byte.prop_map(Edit::Delete),
        1 => (gap, character).prop_map(|(i, c)| Edit::Insert(i, c)),
    ]
    .boxed()
}

/// A different character for every byte: the next base64url letter, or `A` for a separator.
fn neighbour(b: u8) -> char {
    match B64URL.bytes().position(|a| a == b) {
        Some(k) => B64URL.as_bytes()[(k + 1) % B64URL.len()] as char,
        None => 'A',
    }
}

/// Where an accepted edit sits, with a few bytes of context, for the failure message.
fn locate(text: &str, edit: Edit) -> String {
    let (Edit::Replace(i, _) | Edit::Delete(i) | Edit::Insert(i, _)) = edit;
    let from = i.saturating_sub(12);
    let to = (i + 12).min(text.len());
    format!(
        "{edit:?} of {} bytes, around `{}`",
        text.len(),
        &text[from..to]
    )
}

fn assert_accepted_untouched(scene: &Scene) {
    let verdict = scene.decide(scene.chain(), scene.checkout_jwt());
    assert_eq!(
        verdict,
        Ok(()),
        "{}: the untouched vector must verify",
        scene.name
    );
}

fn run_tampering(
    scene: &Scene,
    target: &str,
    cases: u32,
    decide: impl Fn(&str) -> Result<(), String>,
) {
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&edits(target), |edit| {
        let Some(tampered) = edit.apply(target) else {
            return Err(TestCaseError::reject(
                "the replacement equals the original byte",
            ));
        };
        prop_assert!(
            decide(&tampered).is_err(),
            "{}: {} verified",
            scene.name,
            locate(target, edit)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Applies every edit `sweep` lists for each accepted vector's chain; returns those that verified.
fn sweep_accepted_chains(sweep: impl Fn(&str) -> Vec<Edit>) -> Vec<String> {
    let mut accepted = Vec::new();
    for name in ACCEPTED_CASES {
        let scene = Scene::load(name);
        assert_accepted_untouched(&scene);
        let chain = scene.chain();
        for edit in sweep(chain) {
            let Some(tampered) = edit.apply(chain) else {
                continue;
            };
            if scene.decide(&tampered, scene.checkout_jwt()).is_ok() {
                accepted.push(format!("{name}: {}", locate(chain, edit)));
            }
        }
    }
    accepted
}

fn assert_none_verified(accepted: &[String]) {
    assert!(
        accepted.is_empty(),
        "edits that verified:\n{}",
        accepted.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Vector properties.

#[test]
fn every_vector_chain_parses_into_the_hops_its_separators_mark() {
    for name in case_names() {
        let case = read_json(&fixtures().join("cases").join(format!("{name}.json")));
        let mut chains = vec![case["chain"].as_str().unwrap().to_owned()];
        chains.extend(
            case["order_checkout_chain"]["chain"]
                .as_str()
                .map(str::to_owned),
        );
        for text in chains {
            let hops: Vec<&str> = text.split("~~").collect();
            let chain = UnverifiedChain::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(chain.hop_count(), hops.len(), "{name}");

            // Each hop but the last, given back the `~` that ends it, is a chain of one hop, and
            // the hops joined again with `~` are the text that was presented.
            let (last, rest) = hops.split_last().expect("split yields at least one piece");
            let mut segments: Vec<String> = rest.iter().map(|h| format!("{h}~")).collect();
            segments.push((*last).to_owned());
            for segment in &segments {
                assert_eq!(
                    UnverifiedChain::parse(segment).map(|c| c.hop_count()),
                    Ok(1),
                    "{name}"
                );
            }
            assert_eq!(segments.join("~"), text, "{name}");
        }
    }
}

#[test]
fn the_accepted_vectors_verify_untouched() {
    let mut hop_counts = Vec::new();
    for name in ACCEPTED_CASES {
        let scene = Scene::load(name);
        assert_accepted_untouched(&scene);
        hop_counts.push(UnverifiedChain::parse(scene.chain()).unwrap().hop_count());
    }
    assert_eq!(hop_counts, [2, 2, 1]);
}

#[test]
fn no_single_byte_edit_of_an_accepted_chain_verifies() {
    for name in ACCEPTED_CASES {
        let scene = Scene::load(name);
        assert_accepted_untouched(&scene);
        run_tampering(&scene, scene.chain(), 256, |chain| {
            scene.decide(chain, scene.checkout_jwt())
        });
    }
}

#[test]
fn no_single_byte_edit_of_the_checkout_jwt_verifies() {
    for name in ACCEPTED_CASES {
        let scene = Scene::load(name);
        assert_accepted_untouched(&scene);
        run_tampering(&scene, scene.checkout_jwt(), 128, |jwt| {
            scene.decide(scene.chain(), jwt)
        });
    }
}

// The sweeps below are exhaustive over positions: every byte (or gap) of every accepted chain,
// about 8,000 verifications each, one to three seconds in the dev profile.

#[test]
fn replacing_any_one_byte_of_an_accepted_chain_by_another_base64url_letter_never_verifies() {
    let accepted = sweep_accepted_chains(|chain| {
        chain
            .bytes()
            .enumerate()
            .map(|(i, b)| Edit::Replace(i, neighbour(b)))
            .collect()
    });
    assert_none_verified(&accepted);
}

#[test]
fn replacing_any_one_byte_of_an_accepted_chain_by_a_separator_never_verifies() {
    let accepted = sweep_accepted_chains(|chain| {
        let separator = |b| if b == b'~' { '.' } else { '~' };
        chain
            .bytes()
            .enumerate()
            .map(|(i, b)| Edit::Replace(i, separator(b)))
            .collect()
    });
    assert_none_verified(&accepted);
}

#[test]
fn deleting_any_one_byte_of_an_accepted_chain_never_verifies() {
    let accepted = sweep_accepted_chains(|chain| (0..chain.len()).map(Edit::Delete).collect());
    assert_none_verified(&accepted);
}

#[test]
fn inserting_a_tilde_anywhere_in_an_accepted_chain_never_verifies() {
    let accepted =
        sweep_accepted_chains(|chain| (0..=chain.len()).map(|i| Edit::Insert(i, '~')).collect());
    assert_none_verified(&accepted);
}

#[test]
fn an_edit_helper_changes_exactly_one_place() {
    assert_eq!(Edit::Replace(1, 'x').apply("abc").as_deref(), Some("axc"));
    assert_eq!(Edit::Replace(1, 'b').apply("abc"), None);
    assert_eq!(Edit::Replace(1, 'é').apply("abc").as_deref(), Some("aéc"));
    assert_eq!(Edit::Delete(2).apply("abc").as_deref(), Some("ab"));
    assert_eq!(Edit::Insert(3, '~').apply("abc").as_deref(), Some("abc~"));
    assert_eq!(neighbour(b'_'), 'A');
    assert_eq!(neighbour(b'~'), 'A');
    assert_eq!(neighbour(b'A'), 'B');
}
