//! JOSE for ES256 only: P-256 keys and JWKs (RFC 7517, RFC 7518 §6.2), RFC 7638 thumbprints,
//! and compact JWS (RFC 7515) with a header policy that is checked before any cryptography.
//!
//! Verification and signing run on aws-lc-rs; `p256` checks that public points are on the curve
//! when a key is imported. There is deliberately no other algorithm: `none`, HMAC, RSA and
//! EdDSA are refused by name, and signatures are the raw 64-byte `r‖s` form only.

mod jwk;
mod jws;
mod key;
mod keyset;
mod seen;

pub use jwk::{thumbprint_of, PublicJwk};
pub use jws::{sign_compact, Header, HeaderPolicy, TypRule, UnverifiedJws, VerifiedJws};
pub use key::SigningKey;
pub use keyset::KeySet;
pub use seen::VerifiedSignatures;

use base64::Engine as _;

/// The only signature algorithm we speak.
pub const ES256: &str = "ES256";

/// Largest compact JWS we look at, in bytes.
pub const MAX_JWS_LEN: usize = 64 * 1024;

/// Why a key, header or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is not a compact JWS, or a part is not base64url or JSON.
    #[error("malformed JWS or JWK")]
    Malformed,
    /// The input is larger than we accept.
    #[error("JWS or JWK too large")]
    TooLarge,
    /// A JSON object names the same member twice.
    #[error("duplicate JSON member name")]
    DuplicateMember,
    /// `alg` is missing or is not exactly `ES256`.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header carries `crit`; we understand no extensions.
    #[error("critical header extensions are not supported")]
    CriticalHeader,
    /// The header carries a parameter we do not accept (`b64`, `cty`, or an unknown one).
    #[error("header parameter not allowed")]
    UnsupportedHeader,
    /// The header carries a key (`jwk`, `x5c`) where only a trusted key may be used.
    #[error("embedded key not allowed")]
    EmbeddedKey,
    /// The header points to a key by URL (`jku`, `x5u`).
    #[error("key URL not allowed")]
    KeyUrlNotAllowed,
    /// `typ` is missing or not the type expected here.
    #[error("unexpected token type")]
    UnexpectedType,
    /// The header names no `kid` where one is needed to pick a trusted key.
    #[error("missing key id")]
    MissingKeyId,
    /// The `kid` names no trusted key.
    #[error("unknown key id")]
    UnknownKeyId,
    /// The signature does not verify (any reason: length, range, key, bytes).
    #[error("invalid signature")]
    InvalidSignature,
    /// The JWK is not a valid P-256 public key for ES256.
    #[error("invalid key")]
    InvalidKey,
    /// A public key was expected but private members (`d`) are present.
    #[error("private key material where a public key was expected")]
    PrivateKeyMaterial,
    /// Two trusted keys share a `kid`.
    #[error("duplicate key id")]
    DuplicateKeyId,
    /// The system could not produce randomness or a signature.
    #[error("cryptographic operation failed")]
    Crypto,
}

impl From<crate::json::JsonError> for Error {
    fn from(e: crate::json::JsonError) -> Self {
        match e {
            crate::json::JsonError::TooLarge => Error::TooLarge,
            crate::json::JsonError::DuplicateMember => Error::DuplicateMember,
            _ => Error::Malformed,
        }
    }
}

/// Unpadded base64url (RFC 7515 §2), strict: no padding, no stray bits, no other alphabet.
pub mod b64 {
    use super::*;

    /// Encodes bytes as unpadded base64url.
    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes unpadded base64url, refusing padding and non-canonical trailing bits.
    pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Error::Malformed)
    }

    /// Decodes into a fixed-size array; any other length is refused.
    pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], Error> {
        // Reject on the encoded length first so oversize input is never decoded.
        if text.len() != (N * 4).div_ceil(3) {
            return Err(Error::Malformed);
        }
        let mut out = [0u8; N];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text, &mut out)
            .map_err(|_| Error::Malformed)?;
        if n != N {
            return Err(Error::Malformed);
        }
        Ok(out)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Unpadded base64url of SHA-256 of `data`: the hash form AP2 and SD-JWT use on the wire.
pub fn sha256_b64(data: &[u8]) -> String {
    b64::encode(sha256(data))
}

/// Compares two byte strings in constant time (for digests and secrets).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
