//! PKCE (RFC 7636) with the S256 method only; `plain` is refused.
//!
//! The verifier is 43 to 128 characters of the unreserved set (§4.1); the challenge is the
//! base64url SHA-256 of the verifier (§4.2), compared in constant time.

use crate::jose::{ct_eq, sha256_b64};

/// Whether `challenge` has the form of an S256 challenge (43 base64url characters).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` is well formed and hashes to `challenge`.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(unreserved) {
        return false;
    }
    ct_eq(
        sha256_b64(verifier.as_bytes()).as_bytes(),
        challenge.as_bytes(),
    )
}

/// The S256 challenge of `verifier` (for clients).
pub fn challenge_s256(verifier: &str) -> String {
    sha256_b64(verifier.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7636_appendix_b_example_verifies() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(verify_s256(verifier, challenge));
        assert_eq!(challenge_s256(verifier), challenge);
    }

    #[test]
    fn a_wrong_short_or_plain_verifier_fails() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(!verify_s256(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!verify_s256("short", challenge));
        assert!(!verify_s256(challenge, challenge));
        assert!(!is_s256_challenge("plain-challenge"));
    }
}
