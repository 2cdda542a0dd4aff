//! Runs a directory of AP2 mandate vectors (`manifest.json`, `keys.json`, `cases/*.json`, in
//! the layout of the project's `ap2-v0.2` set) through our verifier and compares verdicts.
//!
//! Trust comes from the files, never from case names: the manifest's
//! `verifier_profile.trusted_root_kids` name the issuer keys, and the first key in `keys.json`
//! with such a `kid` is the anchor (a later key reusing the `kid` is an impostor). The first key
//! of every other `kid` is trusted to sign checkout JWTs. Each case supplies `now`, the expected
//! `aud`/`nonce` (both null: an issuer-signed closed mandate), `mandate_context`, and for
//! payments `order_checkout_chain`, whose open checkout hash `payment.reference` must name.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::jose::{sha256_b64, KeySet, PublicJwk};
use crate::mandate::{
    Ap2Code, CheckoutJwt, Error, PaymentBindings, Policy, Trust, Usage, Verifier,
};
use crate::sdjwt::{Challenge, UnverifiedChain};

/// Why a vector directory could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A file is not in the expected format.
    #[error("{0}: {1}")]
    Format(PathBuf, String),
}

/// A verdict: accepted, or refused with an AP2 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Accept,
    /// Refused.
    Reject(Ap2Code),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Reject(code) => write!(f, "reject {}", code.as_str()),
        }
    }
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// What the vector expects.
    pub expected: Verdict,
    /// What we decided.
    pub got: Verdict,
    /// Our precise reason for a refusal (or a note on an inconsistent vector).
    pub reason: Option<String>,
}

impl CaseResult {
    /// True when our verdict is the expected one.
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

#[derive(Deserialize)]
struct Manifest {
    keys: String,
    verifier_profile: Profile,
    cases: Vec<CaseRef>,
}

#[derive(Deserialize)]
struct Profile {
    trusted_root_kids: Vec<String>,
}

#[derive(Deserialize)]
struct CaseRef {
    file: String,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    kind: String,
    chain: String,
    checkout_jwt: String,
    expected_aud: Option<String>,
    expected_nonce: Option<String>,
    now: i64,
    expect: String,
    error: Option<String>,
    #[serde(default)]
    expected_checkout_hash: Option<String>,
    #[serde(default)]
    expected_transaction_id: Option<String>,
    #[serde(default)]
    expected_open_checkout_hash: Option<String>,
    #[serde(default)]
    order_checkout_chain: Option<OrderChain>,
    #[serde(default)]
    mandate_context: Option<Context>,
}

#[derive(Deserialize)]
struct OrderChain {
    chain: String,
    expected_aud: Option<String>,
    expected_nonce: Option<String>,
}

#[derive(Deserialize)]
struct Context {
    total_amount: u64,
    total_uses: u64,
    last_used_date: Option<f64>,
}

/// Runs every case listed in `dir/manifest.json`.
pub fn run_dir(dir: &Path, policy: &Policy) -> Result<Vec<CaseResult>, ConformanceError> {
    let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
    let keys_path = dir.join(&manifest.keys);
    let trust = load_trust(&keys_path, &manifest.verifier_profile.trusted_root_kids)?;
    let verifier = Verifier {
        policy,
        trust: &trust,
    };
    let mut results = Vec::with_capacity(manifest.cases.len());
    for case_ref in &manifest.cases {
        let path = dir.join(&case_ref.file);
        let case: Case = read_json(&path)?;
        let expected =
            expected_verdict(&case).map_err(|e| ConformanceError::Format(path.clone(), e))?;
        let (got, reason) = match run_case(&verifier, &case) {
            Ok(()) => (Verdict::Accept, None),
            Err(Outcome::Refused(e)) => (Verdict::Reject(e.code()), Some(e.reason().to_owned())),
            Err(Outcome::Inconsistent(note)) => {
                (Verdict::Reject(Ap2Code::MandatesNotSupported), Some(note))
            }
        };
        results.push(CaseResult {
            name: case.name,
            expected,
            got,
            reason,
        });
    }
    Ok(results)
}

enum Outcome {
    Refused(Error),
    Inconsistent(String),
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        Outcome::Refused(e)
    }
}

fn run_case(verifier: &Verifier<'_>, case: &Case) -> Result<(), Outcome> {
    let checkout_hash = sha256_b64(case.checkout_jwt.as_bytes());
    for expected in [&case.expected_checkout_hash, &case.expected_transaction_id]
        .into_iter()
        .flatten()
    {
        if *expected != checkout_hash {
            return Err(Outcome::Inconsistent(
                "vector: expected hash is not the checkout_jwt's".into(),
            ));
        }
    }
    let checkout = CheckoutJwt::verify(&case.checkout_jwt, &verifier.trust.merchants, case.now)?;
    let chain = UnverifiedChain::parse(&case.chain).map_err(Error::from)?;
    let challenge = challenge(&case.expected_aud, &case.expected_nonce)?;
    match case.kind.as_str() {
        "checkout" => verifier
            .checkout(&chain, &checkout, challenge.as_ref(), case.now)
            .map(|_| ())
            .map_err(Outcome::from),
        "payment" => {
            let open_checkout_hash = open_checkout_hash(verifier, case, &checkout)?;
            let bindings = PaymentBindings {
                checkout: &checkout,
                open_checkout_hash: open_checkout_hash.as_deref(),
            };
            let usage = case.mandate_context.as_ref().map(usage).unwrap_or_default();
            verifier
                .payment(&chain, &bindings, &usage, challenge.as_ref(), case.now)
                .map(|_| ())
                .map_err(Outcome::from)
        }
        other => Err(Outcome::Inconsistent(format!(
            "vector: unknown kind `{other}`"
        ))),
    }
}

/// Verifies the order's checkout chain and returns its open checkout hash.
fn open_checkout_hash(
    verifier: &Verifier<'_>,
    case: &Case,
    checkout: &CheckoutJwt,
) -> Result<Option<String>, Outcome> {
    let Some(order) = &case.order_checkout_chain else {
        return Ok(None);
    };
    let chain = UnverifiedChain::parse(&order.chain).map_err(Error::from)?;
    let challenge = challenge(&order.expected_aud, &order.expected_nonce)?;
    let verified = verifier
        .checkout(&chain, checkout, challenge.as_ref(), case.now)
        .map_err(|e| {
            Outcome::Inconsistent(format!(
                "vector: order checkout chain refused: {}",
                e.reason()
            ))
        })?;
    let hash = (!verified.open().is_empty()).then(|| verified.chain().root().segment_hash());
    if hash != case.expected_open_checkout_hash {
        return Err(Outcome::Inconsistent(
            "vector: expected_open_checkout_hash differs from the order chain".into(),
        ));
    }
    Ok(hash)
}

fn challenge<'a>(
    aud: &'a Option<String>,
    nonce: &'a Option<String>,
) -> Result<Option<Challenge<'a>>, Outcome> {
    match (aud, nonce) {
        (Some(aud), Some(nonce)) => Ok(Some(Challenge { aud, nonce })),
        (None, None) => Ok(None),
        _ => Err(Outcome::Inconsistent(
            "vector: expected_aud and expected_nonce must both be set or both null".into(),
        )),
    }
}

fn usage(c: &Context) -> Usage {
    Usage {
        total_minor: c.total_amount,
        uses: c.total_uses,
        last_use: c.last_used_date.map(|d| d.floor() as i64),
    }
}

fn expected_verdict(case: &Case) -> Result<Verdict, String> {
    let code = |name: &str| match name {
        "invalid_credential" => Ok(Ap2Code::InvalidCredential),
        "invalid_mandate" => Ok(Ap2Code::InvalidMandate),
        "unresolved_constraint" => Ok(Ap2Code::UnresolvedConstraint),
        "mandates_not_supported" => Ok(Ap2Code::MandatesNotSupported),
        other => Err(format!("unknown error code `{other}`")),
    };
    match (case.expect.as_str(), case.error.as_deref()) {
        ("accept", None) => Ok(Verdict::Accept),
        ("reject", Some(name)) => Ok(Verdict::Reject(code(name)?)),
        _ => Err("`expect` must be accept (no error) or reject (with an error)".into()),
    }
}

/// `keys.json`: only the `keys` object matters, read in document order.
#[derive(Deserialize)]
struct KeysFile {
    keys: InOrder,
}

/// A JSON object's members in the order the document gives them.
struct InOrder(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = InOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InOrder, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(InOrder(members))
            }
        }
        d.deserialize_map(Members)
    }
}

fn load_trust(path: &Path, root_kids: &[String]) -> Result<Trust, ConformanceError> {
    let text = fs::read(path).map_err(|e| ConformanceError::Io(path.to_owned(), e))?;
    // Strict parse first (duplicates, depth), then a second pass that keeps member order.
    crate::json::parse(&text, 8 * 1024 * 1024).map_err(|e| fmt_err(path, &e.to_string()))?;
    let keys = serde_json::from_slice::<KeysFile>(&text)
        .map_err(|e| fmt_err(path, &e.to_string()))?
        .keys
        .0;
    let mut trust = Trust {
        issuers: KeySet::new(),
        merchants: KeySet::new(),
    };
    for (name, entry) in keys {
        let jwk = entry
            .get("public_jwk")
            .ok_or_else(|| fmt_err(path, &format!("key `{name}` has no public_jwk")))?;
        let key =
            PublicJwk::from_value(jwk).map_err(|e| fmt_err(path, &format!("key `{name}`: {e}")))?;
        let Some(kid) = key.kid().map(str::to_owned) else {
            continue;
        };
        let set = if root_kids.contains(&kid) {
            &mut trust.issuers
        } else {
            &mut trust.merchants
        };
        if set.get(&kid).is_err() {
            set.insert(key).map_err(|e| fmt_err(path, &e.to_string()))?;
        }
    }
    Ok(trust)
}

fn fmt_err(path: &Path, msg: &str) -> ConformanceError {
    ConformanceError::Format(path.to_owned(), msg.to_owned())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConformanceError> {
    let text = fs::read(path).map_err(|e| ConformanceError::Io(path.to_owned(), e))?;
    let value =
        crate::json::parse(&text, 8 * 1024 * 1024).map_err(|e| fmt_err(path, &e.to_string()))?;
    T::deserialize(value).map_err(|e| fmt_err(path, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;

    #[test]
    fn the_first_key_with_a_root_kid_is_the_anchor_whatever_the_names() {
        let real = SigningKey::generate(Some("root-1".into())).unwrap();
        let impostor = SigningKey::generate(Some("root-1".into())).unwrap();
        // Document order, not name order: `z_real` comes first in the file.
        let text = format!(
            r#"{{"keys": {{"z_real": {{"public_jwk": {}}}, "a_impostor": {{"public_jwk": {}}}}}}}"#,
            real.public().to_value(),
            impostor.public().to_value()
        );
        let path = std::env::temp_dir().join(format!("ap2-keys-{}.json", std::process::id()));
        fs::write(&path, text).unwrap();
        let trust = load_trust(&path, &["root-1".to_owned()]).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(trust.issuers.get("root-1").unwrap().same_key(real.public()));
        assert!(trust.merchants.is_empty());
    }
}
