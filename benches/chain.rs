//! Verification speed: set A's `valid_hnp_payment` chain in-process, next to one bare ES256
//! verification on the same backend (aws-lc-rs), measured in the same run.
//!
//! Run: `cargo bench --bench chain`. The chain figure covers parsing, both hop signatures,
//! disclosures, bindings, times and every constraint; the merchant's checkout JWT is verified
//! once beforehand (it is a separate input), and is timed on its own as well. The same chain is
//! also timed with its root remembered (`KeySet::remember_verified`), as when an open mandate is
//! presented again. After criterion, an interleaved measurement gives the chain's cost in units
//! of bare verifications.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use ap2_mandate::jose::{b64, PublicJwk};
use ap2_mandate::mandate::{CheckoutJwt, PaymentBindings, Policy, Trust, Usage, Verifier};
use ap2_mandate::sdjwt::{Challenge, UnverifiedChain};
use criterion::{criterion_group, Criterion};
use serde_json::Value;

/// The case's inputs, with the trust and the verified checkout the chain is checked against.
struct Setup {
    chain: String,
    checkout_jwt: String,
    aud: String,
    nonce: String,
    open_hash: String,
    now: i64,
    trust: Trust,
    policy: Policy,
    checkout: CheckoutJwt,
    signature: [u8; 64],
}

impl Setup {
    /// With `remember`, the issuer keys remember verified roots (an open mandate presented
    /// again); without, every verification is cold.
    fn load(remember: bool) -> Setup {
        let case = load("cases/valid_hnp_payment.json");
        let s = |k: &str| case[k].as_str().expect("string field").to_owned();
        let now = case["now"].as_i64().expect("now");
        let mut trust = trust();
        if remember {
            trust.issuers = trust.issuers.remember_verified(1024);
        }
        let checkout_jwt = s("checkout_jwt");
        let checkout =
            CheckoutJwt::verify(&checkout_jwt, &trust.merchants, now).expect("checkout verifies");
        let sig = checkout_jwt.rsplit_once('.').expect("jwt").1;
        let signature = b64::decode(sig).expect("b64").try_into().expect("64 bytes");
        Setup {
            chain: s("chain"),
            checkout_jwt,
            aud: s("expected_aud"),
            nonce: s("expected_nonce"),
            open_hash: s("expected_open_checkout_hash"),
            now,
            trust,
            policy: Policy::default(),
            checkout,
            signature,
        }
    }

    /// One full in-process verification of the chain.
    fn verify_chain(&self) {
        let verifier = Verifier {
            policy: &self.policy,
            trust: &self.trust,
        };
        let challenge = Challenge {
            aud: &self.aud,
            nonce: &self.nonce,
        };
        let bindings = PaymentBindings {
            checkout: &self.checkout,
            open_checkout_hash: Some(&self.open_hash),
        };
        let parsed = UnverifiedChain::parse(black_box(&self.chain)).expect("parses");
        let verified = verifier
            .payment(
                &parsed,
                &bindings,
                &Usage::default(),
                Some(&challenge),
                self.now,
            )
            .expect("verifies");
        black_box(verified);
    }

    /// One bare ES256 verification: the checkout JWT's signature with its pre-parsed key.
    fn bare_verify(&self) {
        let input = &self.checkout_jwt[..self.checkout_jwt.rfind('.').expect("jwt")];
        let merchant = self
            .trust
            .merchants
            .get("northwind-checkout-k1")
            .expect("merchant key");
        merchant
            .verify(black_box(input.as_bytes()), black_box(&self.signature))
            .expect("valid");
    }
}

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
    let setup = Setup::load(false);
    let warm = Setup::load(true);
    let mut group = c.benchmark_group("es256");
    group.bench_function("valid_hnp_payment chain (2 signatures)", |b| {
        b.iter(|| setup.verify_chain())
    });
    group.bench_function("same chain, root remembered (1 signature)", |b| {
        b.iter(|| warm.verify_chain())
    });
    group.bench_function("bare ES256 verify (aws-lc-rs)", |b| {
        b.iter(|| setup.bare_verify())
    });
    group.bench_function("checkout JWT verify (1 signature)", |b| {
        b.iter(|| {
            CheckoutJwt::verify(
                black_box(&setup.checkout_jwt),
                &setup.trust.merchants,
                setup.now,
            )
            .expect("verifies")
        })
    });
    group.finish();
}

/// The two measurements interleaved in blocks, so that drifting clock speed on a shared machine
/// affects both alike; prints the chain's cost in units of two bare verifications.
fn interleaved_ratio() {
    let setup = Setup::load(false);
    let warm = Setup::load(true);
    let (blocks, per_block) = (40, 250);
    let (mut chain_time, mut warm_time, mut bare_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..blocks {
        let t = Instant::now();
        for _ in 0..per_block {
            setup.verify_chain();
        }
        chain_time += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_block {
            warm.verify_chain();
        }
        warm_time += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_block {
            setup.bare_verify();
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
    println!(
        "interleaved: chain with its root remembered {:?} = {:.3} bare verifications",
        warm_time / n,
        warm_time.as_secs_f64() / bare_time.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    interleaved_ratio();
    Criterion::default().configure_from_args().final_summary();
}
