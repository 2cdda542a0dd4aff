//! Verification speed: set A's `valid_hnp_payment` chain in-process, next to one bare ES256
//! verification on the same backend (aws-lc-rs), measured in the same run.
//!
//! Run: `cargo bench --bench chain`. The chain figure covers parsing, both hop signatures,
//! disclosures, bindings, times and every constraint; the merchant's checkout JWT is verified
//! once beforehand (it is a separate input), and is timed on its own as well.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use ap2_mandate::jose::{b64, PublicJwk};
use ap2_mandate::mandate::{CheckoutJwt, PaymentBindings, Policy, Trust, Usage, Verifier};
use ap2_mandate::sdjwt::{Challenge, UnverifiedChain};
use criterion::{criterion_group, Criterion};
use serde_json::Value;

fn load(name: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ap2-v0.2");
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("fixture")).expect("json")
}

fn trust() -> Trust {
    let keys = load("keys.json");
    let mut trust = Trust::default();
    for (name, set) in [
        ("root", &mut trust.issuers),
        ("merchant", &mut trust.merchants),
    ] {
        set.insert(PublicJwk::from_value(&keys["keys"][name]["public_jwk"]).expect("key"))
            .expect("insert");
    }
    trust
}

fn bench(c: &mut Criterion) {
    let case = load("cases/valid_hnp_payment.json");
    let s = |k: &str| case[k].as_str().expect("string field").to_owned();
    let (chain, checkout_jwt, aud, nonce) = (
        s("chain"),
        s("checkout_jwt"),
        s("expected_aud"),
        s("expected_nonce"),
    );
    let open_hash = s("expected_open_checkout_hash");
    let now = case["now"].as_i64().expect("now");
    let trust = trust();
    let policy = Policy::default();
    let verifier = Verifier {
        policy: &policy,
        trust: &trust,
    };
    let checkout =
        CheckoutJwt::verify(&checkout_jwt, &trust.merchants, now).expect("checkout verifies");
    let challenge = Challenge {
        aud: &aud,
        nonce: &nonce,
    };
    let bindings = PaymentBindings {
        checkout: &checkout,
        open_checkout_hash: Some(&open_hash),
    };
    let usage = Usage::default();

    let mut group = c.benchmark_group("es256");
    group.bench_function("valid_hnp_payment chain (2 signatures)", |b| {
        b.iter(|| {
            let parsed = UnverifiedChain::parse(black_box(&chain)).expect("parses");
            verifier
                .payment(&parsed, &bindings, &usage, Some(&challenge), now)
                .expect("verifies")
        })
    });

    let (input, sig) = checkout_jwt.rsplit_once('.').expect("jwt");
    let sig: [u8; 64] = b64::decode(sig).expect("b64").try_into().expect("64 bytes");
    let merchant = trust
        .merchants
        .get("northwind-checkout-k1")
        .expect("merchant key");
    group.bench_function("bare ES256 verify (aws-lc-rs)", |b| {
        b.iter(|| {
            merchant
                .verify(black_box(input.as_bytes()), black_box(&sig))
                .expect("valid")
        })
    });

    group.bench_function("checkout JWT verify (1 signature)", |b| {
        b.iter(|| {
            CheckoutJwt::verify(black_box(&checkout_jwt), &trust.merchants, now).expect("verifies")
        })
    });
    group.finish();
}

/// The same two measurements interleaved in blocks, so that drifting clock speed on a shared
/// machine affects both alike; prints the chain's cost in units of two bare verifications.
fn interleaved_ratio() {
    let case = load("cases/valid_hnp_payment.json");
    let s = |k: &str| case[k].as_str().expect("string field").to_owned();
    let (chain, checkout_jwt) = (s("chain"), s("checkout_jwt"));
    let (aud, nonce, open_hash) = (
        s("expected_aud"),
        s("expected_nonce"),
        s("expected_open_checkout_hash"),
    );
    let now = case["now"].as_i64().expect("now");
    let trust = trust();
    let policy = Policy::default();
    let verifier = Verifier {
        policy: &policy,
        trust: &trust,
    };
    let checkout =
        CheckoutJwt::verify(&checkout_jwt, &trust.merchants, now).expect("checkout verifies");
    let challenge = Challenge {
        aud: &aud,
        nonce: &nonce,
    };
    let bindings = PaymentBindings {
        checkout: &checkout,
        open_checkout_hash: Some(&open_hash),
    };
    let (input, sig) = checkout_jwt.rsplit_once('.').expect("jwt");
    let sig: [u8; 64] = b64::decode(sig).expect("b64").try_into().expect("64 bytes");
    let merchant = trust
        .merchants
        .get("northwind-checkout-k1")
        .expect("merchant key");

    let (blocks, per_block) = (40, 250);
    let (mut chain_time, mut bare_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..blocks {
        let t = Instant::now();
        for _ in 0..per_block {
            let parsed = UnverifiedChain::parse(black_box(&chain)).expect("parses");
            black_box(
                verifier
                    .payment(&parsed, &bindings, &Usage::default(), Some(&challenge), now)
                    .expect("verifies"),
            );
        }
        chain_time += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_block {
            merchant
                .verify(black_box(input.as_bytes()), black_box(&sig))
                .expect("valid");
        }
        bare_time += t.elapsed();
    }
    let n = (blocks * per_block) as u32;
    println!(
        "interleaved: chain {:?}, bare ES256 {:?}, chain = {:.3} x two bare verifications",
        chain_time / n,
        bare_time / n,
        chain_time.as_secs_f64() / bare_time.as_secs_f64() / 2.0
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    interleaved_ratio();
    Criterion::default().configure_from_args().final_summary();
}
