//! Project Wycheproof vectors run against our ES256 JOSE API.
//!
//! Three files are read from outside the repository (they are third-party data and are never
//! copied in): ECDSA P-256 with SHA-256 over raw `r‖s` signatures (IEEE P1363, the RFC 7518 §3.4
//! form), JSON Web Signatures (RFC 7515) and JSON Web Keys (RFC 7517). The directory comes from
//! `AP2_WYCHEPROOF_DIR`, else `../shared/vectors/wycheproof/testvectors_v1`; a missing file skips
//! its test with a note on stderr. Only P-256/ES256 cases are run; the others are counted as
//! skipped. Where our stricter policy refuses a vector Wycheproof calls valid, the test names
//! the vector and checks that it fails for exactly that reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use ap2_mandate::jose::{b64, Error, HeaderPolicy, KeySet, PublicJwk, TypRule, UnverifiedJws};

/// Valid JWS vectors that our verifier refuses on purpose: their payload is `foo` (`Zm9v`).
///
/// `UnverifiedJws::verify` hands back a claims set, and a claims set is a JSON object (RFC 7519
/// §7.2, step 10), so a payload that is not one is `Malformed`, and only after the signature has
/// verified. The test checks both halves: the signature verifies with the group's key, and the
/// refusal is `Error::Malformed`.
const JWS_PAYLOAD_NOT_A_JSON_OBJECT: &[u64] = &[18, 378];

/// Flags of `acceptable` ECDSA cases that name a leniency we refuse on purpose.
///
/// Wycheproof calls a case `acceptable` when a verifier may go either way. We must reject one
/// whose flags say the signature is not the exact 64-byte `r‖s` form (a short or long encoding,
/// or any other encoding than P1363): we refuse every other length before decoding. Any other
/// `acceptable` case may go either way; the summary line counts how we decided.
const ACCEPTABLE_BUT_REFUSED_FLAGS: &[&str] = &[
    "SignatureSize",
    "InvalidEncoding",
    "BerEncodedSignature",
    "MissingZero",
];

#[test]
fn ecdsa_p256_p1363_vectors_give_the_expected_result() {
    let Some(file) = load("ecdsa_secp256r1_sha256_p1363_test.json") else {
        return;
    };
    let mut tally = Tally::default();

    for group in array(&file, "testGroups") {
        assert_eq!(text(group, "type"), "EcdsaP1363Verify");
        assert_eq!(text(group, "sha"), "SHA-256");
        assert_eq!(text(&group["publicKey"], "curve"), "secp256r1");

        let key = ecdsa_group_key(group);
        for case in array(group, "tests") {
            let outcome = ecdsa_outcome(key.as_ref().ok(), case, &mut tally);
            tally.reason(&outcome);
            tally.record(case, expectation(case), outcome.is_ok());
        }
    }

    tally.finish("ecdsa_secp256r1_sha256_p1363_test.json", &file, 0);
}

#[test]
fn jws_p256_vectors_give_the_expected_result() {
    let Some(file) = load("json_web_signature_test.json") else {
        return;
    };
    let (groups, skipped) = select_groups(&file, |group| group_key(group).is_some_and(is_p256));
    let typs = typ_values(&groups);
    let typ_refs: Vec<&str> = typs.iter().map(String::as_str).collect();
    let policy = HeaderPolicy {
        typ: TypRule::OneOfOrAbsent(&typ_refs),
        embedded_jwk: false,
    };
    let mut tally = Tally::default();
    let mut listed_seen = Vec::new();

    for group in groups {
        let key = group_key(group).map_or(Err(Error::InvalidKey), PublicJwk::from_value);
        for case in array(group, "tests") {
            let token = text(case, "jws");
            let outcome = jws_outcome(token, key.as_ref().ok(), &policy);
            tally.reason(&outcome);

            if JWS_PAYLOAD_NOT_A_JSON_OBJECT.contains(&id(case)) {
                listed_seen.push(id(case));
                check_payload_refusal(case, key.as_ref().ok(), &policy, outcome, &mut tally);
                continue;
            }
            tally.record(case, expectation(case), outcome.is_ok());
        }
    }

    for listed in JWS_PAYLOAD_NOT_A_JSON_OBJECT
        .iter()
        .filter(|id| !listed_seen.contains(*id))
    {
        tally.mismatches.push(format!(
            "tcId {listed}: listed above but not among the ES256 cases"
        ));
    }
    tally.finish("json_web_signature_test.json", &file, skipped);
}

#[test]
fn jwk_p256_vectors_give_the_expected_result() {
    // The selected groups hold a key that is P-256 or ES256 by name. Each case imports the
    // group's keyset as trusted keys (the public set; where a group gives only a private set,
    // that is what an importer is handed, and we refuse private members), picks the key by the
    // header's `kid`, and verifies the JWS. No selected vector is one where our stricter policy
    // and Wycheproof disagree, so there is no list of exceptions here. The invalid vectors reuse
    // a signature that verifies under the key's coordinates, so the refusal must come from the
    // key import itself; a refusal that came later would hide a lax import, and is a mismatch.
    let Some(file) = load("json_web_key_test.json") else {
        return;
    };
    let (groups, skipped) = select_groups(&file, names_p256_or_es256);
    let policy = HeaderPolicy {
        typ: TypRule::OneOfOrAbsent(&[]),
        embedded_jwk: false,
    };
    let mut tally = Tally::default();

    for group in groups {
        let keyset = group.get("public").or_else(|| group.get("private"));
        let imported = keyset.map_or(Err(Error::InvalidKey), KeySet::from_jwks);
        for case in array(group, "tests") {
            let outcome = keyset_outcome(imported.as_ref(), text(case, "jws"), &policy);
            tally.reason(&outcome);
            tally.record(case, expectation(case), outcome.is_ok());
            if expectation(case) == Expect::Reject && imported.is_ok() {
                tally.mismatch(
                    case,
                    &format!("keyset imported; refused later: {outcome:?}"),
                );
            }
        }
    }

    tally.finish("json_web_key_test.json", &file, skipped);
}

/// What Wycheproof expects of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accept,
    Reject,
    Either,
}

/// Counts and mismatches of one vector file.
#[derive(Default)]
struct Tally {
    run: usize,
    by_expectation: BTreeMap<String, usize>,
    either_accepted: usize,
    refused_by_length: usize,
    reasons: BTreeMap<String, usize>,
    mismatches: Vec<String>,
}

impl Tally {
    fn record(&mut self, case: &Value, expect: Expect, accepted: bool) {
        self.run += 1;
        *self
            .by_expectation
            .entry(text(case, "result").to_owned())
            .or_default() += 1;

        let agrees = match expect {
            Expect::Accept => accepted,
            Expect::Reject => !accepted,
            Expect::Either => {
                self.either_accepted += usize::from(accepted);
                true
            }
        };
        if !agrees {
            self.mismatch(
                case,
                &format!("expected {expect:?}, we accepted: {accepted}"),
            );
        }
    }

    fn mismatch(&mut self, case: &Value, what: &str) {
        self.mismatches.push(format!(
            "tcId {} ({}): {what}",
            id(case),
            text(case, "comment")
        ));
    }

    fn reason(&mut self, outcome: &Result<(), Error>) {
        let reason = match outcome {
            Ok(()) => "accepted".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        *self.reasons.entry(reason).or_default() += 1;
    }

    /// Prints the summary, then fails on any mismatch or on a count that does not add up.
    fn finish(self, name: &str, file: &Value, skipped: usize) {
        eprintln!(
            "wycheproof {name}: {} run {:?}, {skipped} skipped as not P-256; outcomes {:?}; \
             {} not 64 bytes (refused before decoding); {} acceptable accepted",
            self.run,
            self.by_expectation,
            self.reasons,
            self.refused_by_length,
            self.either_accepted,
        );
        assert!(
            self.mismatches.is_empty(),
            "{name}: {} mismatches:\n{}",
            self.mismatches.len(),
            self.mismatches.join("\n"),
        );
        let declared = file["numberOfTests"].as_u64().expect("numberOfTests");
        assert_eq!(
            (self.run + skipped) as u64,
            declared,
            "{name}: cases run and skipped"
        );
        assert!(self.run > 0, "{name}: no case was run");
    }
}

/// Reads a vector file, or says on stderr why it is skipped.
fn load(name: &str) -> Option<Value> {
    let dir = match std::env::var_os("AP2_WYCHEPROOF_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/vectors/wycheproof/testvectors_v1"),
    };
    let path = dir.join(name);
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "wycheproof {name}: skipped, {} is not readable (set AP2_WYCHEPROOF_DIR)",
            path.display()
        );
        return None;
    };
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn expectation(case: &Value) -> Expect {
    match text(case, "result") {
        "valid" => Expect::Accept,
        "invalid" => Expect::Reject,
        "acceptable" if flags_name_a_refused_leniency(case) => Expect::Reject,
        "acceptable" => Expect::Either,
        other => panic!("tcId {}: unknown result {other:?}", id(case)),
    }
}

fn flags_name_a_refused_leniency(case: &Value) -> bool {
    array(case, "flags")
        .iter()
        .any(|f| ACCEPTABLE_BUT_REFUSED_FLAGS.contains(&f.as_str().unwrap_or("")))
}

/// The group's key from its affine coordinates, and a check that the other forms agree.
fn ecdsa_group_key(group: &Value) -> Result<PublicJwk, Error> {
    let point = &group["publicKey"];
    let key = match (coordinate(text(point, "wx")), coordinate(text(point, "wy"))) {
        (Some(x), Some(y)) => PublicJwk::from_coordinates(x, y, None),
        _ => Err(Error::InvalidKey),
    };

    if let (Ok(key), Some(sec1)) = (&key, point.get("uncompressed").and_then(Value::as_str)) {
        assert_eq!(
            key.sec1().as_slice(),
            hex(sec1),
            "uncompressed point differs from wx, wy"
        );
    }
    if let Some(jwk) = group.get("publicKeyJwk") {
        let from_jwk = PublicJwk::from_value(jwk);
        match (&key, &from_jwk) {
            (Ok(a), Ok(b)) => assert!(a.same_key(b), "publicKeyJwk differs from wx, wy"),
            (Err(_), Err(_)) => {}
            _ => panic!("coordinates gave {key:?}, publicKeyJwk gave {from_jwk:?}"),
        }
    }
    key
}

/// A big-endian coordinate as 32 bytes: leading zero bytes dropped, short values left-padded.
fn coordinate(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex(hex_text);
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let significant = &bytes[start..];
    if significant.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - significant.len()..].copy_from_slice(significant);
    Some(out)
}

/// Our answer: a key that failed to import, or a signature that is not 64 bytes, is refused.
fn ecdsa_outcome(key: Option<&PublicJwk>, case: &Value, tally: &mut Tally) -> Result<(), Error> {
    let signature = hex(text(case, "sig"));
    let Ok(signature) = <&[u8; 64]>::try_from(signature.as_slice()) else {
        tally.refused_by_length += 1;
        return Err(Error::InvalidSignature);
    };
    key.ok_or(Error::InvalidKey)?
        .verify(&hex(text(case, "msg")), signature)
}

/// Groups whose key `wanted` selects, and the number of cases in the others.
fn select_groups(file: &Value, wanted: impl Fn(&Value) -> bool) -> (Vec<&Value>, usize) {
    let (chosen, others): (Vec<&Value>, Vec<&Value>) = array(file, "testGroups")
        .iter()
        .partition(|group| wanted(group));
    let skipped = others.iter().map(|group| array(group, "tests").len()).sum();
    (chosen, skipped)
}

/// The JWK a JWS group verifies with: its public key, else what it has.
fn group_key(group: &Value) -> Option<&Value> {
    group.get("public").or_else(|| group.get("private"))
}

fn is_p256(jwk: &Value) -> bool {
    jwk["kty"] == "EC" && jwk["crv"] == "P-256"
}

fn names_p256_or_es256(group: &Value) -> bool {
    ["public", "private"]
        .iter()
        .filter_map(|side| group.get(*side)?.get("keys")?.as_array())
        .flatten()
        .any(|key| key["crv"] == "P-256" || key["alg"] == "ES256")
}

/// Every `typ` the selected vectors carry, so that `typ` plays no part in the verdicts.
fn typ_values(groups: &[&Value]) -> Vec<String> {
    let mut typs: Vec<String> = groups
        .iter()
        .flat_map(|group| array(group, "tests"))
        .filter_map(|case| insecure_header(text(case, "jws")))
        .filter_map(|header| header.get("typ")?.as_str().map(str::to_owned))
        .collect();
    typs.sort();
    typs.dedup();
    typs
}

/// The header of a compact JWS, decoded without any check (only to survey `typ`).
fn insecure_header(token: &str) -> Option<Map<String, Value>> {
    let bytes = b64::decode(token.split('.').next()?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn jws_outcome(
    token: &str,
    key: Option<&PublicJwk>,
    policy: &HeaderPolicy<'_>,
) -> Result<(), Error> {
    let key = key.ok_or(Error::InvalidKey)?;
    UnverifiedJws::parse(token, policy)?.verify(key).map(|_| ())
}

/// For a listed vector: Wycheproof says valid, our signature check agrees, and the refusal is
/// the payload's (`Malformed`), nothing else.
fn check_payload_refusal(
    case: &Value,
    key: Option<&PublicJwk>,
    policy: &HeaderPolicy<'_>,
    outcome: Result<(), Error>,
    tally: &mut Tally,
) {
    tally.run += 1;
    *tally
        .by_expectation
        .entry(text(case, "result").to_owned())
        .or_default() += 1;
    if text(case, "result") != "valid" {
        return tally.mismatch(
            case,
            "listed as a valid vector we refuse, but it is not valid",
        );
    }
    if outcome != Err(Error::Malformed) {
        return tally.mismatch(
            case,
            &format!("listed: expected Malformed, got {outcome:?}"),
        );
    }

    let token = text(case, "jws");
    let signature_verifies = || -> Result<(), Error> {
        let jws = UnverifiedJws::parse(token, policy)?;
        let signature = b64::decode_array::<64>(token.rsplit('.').next().unwrap_or(""))?;
        key.ok_or(Error::InvalidKey)?
            .verify(jws.signing_input().as_bytes(), &signature)
    };
    if let Err(e) = signature_verifies() {
        tally.mismatch(
            case,
            &format!("listed: the signature itself does not verify: {e:?}"),
        );
    }
}

fn keyset_outcome(
    imported: Result<&KeySet, &Error>,
    token: &str,
    policy: &HeaderPolicy<'_>,
) -> Result<(), Error> {
    let set = imported.map_err(|e| *e)?;
    let jws = UnverifiedJws::parse(token, policy)?;
    let kid = jws.header().kid().ok_or(Error::MissingKeyId)?.to_owned();
    jws.verify(set.get(&kid)?).map(|_| ())
}

fn array<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value[name]
        .as_array()
        .map_or_else(|| panic!("`{name}` is not an array"), Vec::as_slice)
}

fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` is not a string"))
}

fn id(case: &Value) -> u64 {
    case["tcId"].as_u64().expect("tcId")
}

/// Decodes lowercase or uppercase hex; the vectors are trusted test data, so bad hex panics.
fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}
