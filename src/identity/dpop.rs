//! DPoP proofs (RFC 9449): making them (agents) and checking them (token service, resource
//! servers), and stateless server nonces.
//!
//! A proof is checked in the order of RFC 9449 §4.3: one compact JWS, `typ` `dpop+jwt`, ES256,
//! the public key in the header (never a private one), the signature with that key, then `jti`,
//! `htm`, `htu` (without query and fragment), `iat` within the window, the server nonce where
//! one is required, and `ath` where an access token is presented. Single use of `jti` is the
//! caller's atomic insert (the store); this module has no state. A nonce is a time bucket and an
//! HMAC tag over it, so any instance holding the same secret accepts it.

use aws_lc_rs::hmac;
use serde_json::{json, Map, Value};

use crate::jose::{b64, ct_eq, sha256_b64, sign_compact, HeaderPolicy, PublicJwk, SigningKey};
use crate::jose::{Error as JoseError, TypRule, UnverifiedJws};

/// The `typ` of a DPoP proof.
pub const DPOP_TYP: &str = "dpop+jwt";

/// Longest `jti` we accept, in bytes.
const MAX_JTI_LEN: usize = 256;

/// Makes a DPoP proof for `htm` and `htu` at `now`, with `ath` for `access_token` and the
/// server `nonce` when given.
pub fn make_proof(
    key: &SigningKey,
    htm: &str,
    htu: &str,
    now: i64,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, JoseError> {
    let jti = super::random_token(16)?;
    let mut claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": now});
    let obj = claims
        .as_object_mut()
        .expect("json! object literal is an object");
    if let Some(token) = access_token {
        obj.insert("ath".into(), sha256_b64(token.as_bytes()).into());
    }
    if let Some(nonce) = nonce {
        obj.insert("nonce".into(), nonce.into());
    }
    sign_compact(key, Some(DPOP_TYP), true, claims.to_string().as_bytes())
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request method.
    pub htm: &'a str,
    /// The request URI without query and fragment, as this service is reached.
    pub htu: &'a str,
    /// The access token presented with the proof, if any: `ath` must hash it.
    pub access_token: Option<&'a str>,
    /// Now, Unix seconds.
    pub now: i64,
    /// How old `iat` may be, in seconds.
    pub max_age: i64,
    /// How far in the future `iat` may be, in seconds.
    pub skew: i64,
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone)]
pub struct CheckedProof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    /// The proof's `jti` (single use is the caller's to enforce).
    pub jti: String,
    /// The proof's `iat`.
    pub iat: i64,
    /// The server nonce it carries, if any (the caller checks it).
    pub nonce: Option<String>,
}

/// Checks a proof; the error is a fixed description of the rule that refused it.
pub fn check_proof(proof: &str, check: &ProofCheck<'_>) -> Result<CheckedProof, &'static str> {
    const TYPS: &[&str] = &[DPOP_TYP];
    let policy = HeaderPolicy {
        typ: TypRule::OneOf(TYPS),
        embedded_jwk: true,
    };
    let jws = UnverifiedJws::parse(proof, &policy).map_err(|_| "DPoP proof header refused")?;
    let key: PublicJwk = jws
        .header()
        .jwk()
        .cloned()
        .ok_or("DPoP proof carries no key")?;
    let verified = jws
        .verify_with_embedded_key()
        .map_err(|_| "DPoP proof signature invalid")?;
    let claims = verified.claims();

    let jti = string(claims, "jti").ok_or("DPoP proof jti missing")?;
    if jti.len() > MAX_JTI_LEN {
        return Err("DPoP proof jti too long");
    }
    if string(claims, "htm") != Some(check.htm) {
        return Err("DPoP proof htm does not match the request method");
    }
    let htu = string(claims, "htu").ok_or("DPoP proof htu missing")?;
    if without_query(htu) != check.htu {
        return Err("DPoP proof htu does not match the request URI");
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("DPoP proof iat missing")?;
    if iat < check.now - check.max_age || iat > check.now + check.skew {
        return Err("DPoP proof iat outside the accepted window");
    }
    check_ath(claims, check.access_token)?;

    Ok(CheckedProof {
        jkt: key.thumbprint(),
        jti: jti.to_owned(),
        iat,
        nonce: string(claims, "nonce").map(str::to_owned),
    })
}

/// `ath` must hash the presented token, and must be absent when no token is presented.
fn check_ath(claims: &Map<String, Value>, token: Option<&str>) -> Result<(), &'static str> {
    match (claims.get("ath"), token) {
        (None, None) => Ok(()),
        (Some(_), None) => Err("DPoP proof ath present without an access token"),
        (None, Some(_)) => Err("DPoP proof ath missing"),
        (Some(ath), Some(token)) => {
            let expected = sha256_b64(token.as_bytes());
            let ath = ath.as_str().ok_or("DPoP proof ath malformed")?;
            match ct_eq(ath.as_bytes(), expected.as_bytes()) {
                true => Ok(()),
                false => Err("DPoP proof ath does not match the access token"),
            }
        }
    }
}

fn without_query(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    &uri[..end]
}

fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// Stateless DPoP server nonces (RFC 9449 §8): valid in the bucket they were made in and the
/// next one.
pub struct NonceMint {
    key: hmac::Key,
    period: i64,
}

impl std::fmt::Debug for NonceMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceMint")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl NonceMint {
    /// A mint keyed with `secret`, with buckets of `period` seconds.
    pub fn new(secret: &[u8], period: i64) -> Self {
        NonceMint {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            period: period.max(1),
        }
    }

    /// The nonce for `now`.
    pub fn issue(&self, now: i64) -> String {
        self.nonce_for(now.div_euclid(self.period))
    }

    /// Whether `nonce` was made by this mint in the current or the previous bucket.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let bucket = now.div_euclid(self.period);
        [bucket, bucket - 1]
            .iter()
            .any(|b| ct_eq(self.nonce_for(*b).as_bytes(), nonce.as_bytes()))
    }

    fn nonce_for(&self, bucket: i64) -> String {
        let tag = hmac::sign(&self.key, &bucket.to_be_bytes());
        let mut bytes = bucket.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tag.as_ref()[..16]);
        b64::encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTU: &str = "https://ap2.example/oauth2/token";

    fn check(now: i64) -> ProofCheck<'static> {
        ProofCheck {
            htm: "POST",
            htu: HTU,
            access_token: None,
            now,
            max_age: 60,
            skew: 5,
        }
    }

    #[test]
    fn a_fresh_proof_passes_and_names_its_key() {
        let key = SigningKey::generate(None).unwrap();
        let proof = make_proof(&key, "POST", HTU, 1000, None, Some("n")).unwrap();
        let checked = check_proof(&proof, &check(1010)).unwrap();
        assert_eq!(checked.jkt, key.public().thumbprint());
        assert_eq!(checked.nonce.as_deref(), Some("n"));
    }

    #[test]
    fn mismatched_method_uri_time_or_ath_is_refused() {
        let key = SigningKey::generate(None).unwrap();
        let get = make_proof(&key, "GET", HTU, 1000, None, None).unwrap();
        assert!(check_proof(&get, &check(1000)).unwrap_err().contains("htm"));
        let other = make_proof(&key, "POST", "https://evil.example/t", 1000, None, None).unwrap();
        assert!(check_proof(&other, &check(1000))
            .unwrap_err()
            .contains("htu"));
        let old = make_proof(&key, "POST", HTU, 900, None, None).unwrap();
        assert!(check_proof(&old, &check(1000)).unwrap_err().contains("iat"));
        let future = make_proof(&key, "POST", HTU, 1010, None, None).unwrap();
        assert!(check_proof(&future, &check(1000))
            .unwrap_err()
            .contains("iat"));

        let with_ath = make_proof(&key, "POST", HTU, 1000, Some("token-a"), None).unwrap();
        let mut c = check(1000);
        c.access_token = Some("token-b");
        assert!(check_proof(&with_ath, &c).unwrap_err().contains("ath"));
        assert!(check_proof(&with_ath, &check(1000))
            .unwrap_err()
            .contains("ath"));
        c.access_token = Some("token-a");
        assert!(check_proof(&with_ath, &c).is_ok());
    }

    #[test]
    fn a_query_on_htu_is_ignored() {
        let key = SigningKey::generate(None).unwrap();
        let proof = make_proof(&key, "POST", &format!("{HTU}?x=1"), 1000, None, None).unwrap();
        assert!(check_proof(&proof, &check(1000)).is_ok());
    }

    #[test]
    fn a_proof_signed_by_another_key_than_the_embedded_one_fails() {
        let key = SigningKey::generate(None).unwrap();
        let other = SigningKey::generate(None).unwrap();
        let proof = make_proof(&key, "POST", HTU, 1000, None, None).unwrap();
        let forged = make_proof(&other, "POST", HTU, 1000, None, None).unwrap();
        let (head, _) = proof.split_once('.').unwrap();
        let (_, rest) = forged.split_once('.').unwrap();
        let spliced = format!("{head}.{rest}");
        assert_eq!(
            check_proof(&spliced, &check(1000)).unwrap_err(),
            "DPoP proof signature invalid"
        );
    }

    #[test]
    fn an_access_token_is_not_a_proof() {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let token = sign_compact(&key, Some("at+jwt"), false, br#"{"jti":"x"}"#).unwrap();
        assert_eq!(
            check_proof(&token, &check(1000)).unwrap_err(),
            "DPoP proof header refused"
        );
    }

    #[test]
    fn nonces_last_two_buckets_and_do_not_forge() {
        let mint = NonceMint::new(b"secret", 60);
        let nonce = mint.issue(1000);
        assert!(mint.accepts(&nonce, 1000));
        assert!(mint.accepts(&nonce, 1060));
        assert!(!mint.accepts(&nonce, 1140));
        assert!(!NonceMint::new(b"other", 60).accepts(&nonce, 1000));
        assert!(!mint.accepts("AAAA", 1000));
    }
}
