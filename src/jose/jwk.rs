//! P-256 public keys as JWKs (RFC 7517, RFC 7518 §6.2) and their RFC 7638 thumbprints.
//!
//! Import is strict: `kty` `EC`, `crv` `P-256`, 32-byte coordinates of a point on the curve,
//! `alg` (if present) `ES256`, `use` (if present) `sig`, and no private member. The parsed
//! aws-lc-rs key is kept so that verifying with a known key costs no re-parsing.

use std::fmt;

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::{Map, Value};

use super::{b64, sha256_b64, Error, ES256};

/// A validated P-256 public key.
#[derive(Clone)]
pub struct PublicJwk {
    x: [u8; 32],
    y: [u8; 32],
    kid: Option<String>,
    parsed: ParsedPublicKey,
}

impl PublicJwk {
    /// Imports a public JWK from parsed JSON.
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let obj = value.as_object().ok_or(Error::InvalidKey)?;
        Self::from_members(obj)
    }

    /// Imports a public JWK from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let obj = crate::json::parse_object(text.as_bytes(), 4096)?;
        Self::from_members(&obj)
    }

    /// Imports a public JWK from the members of a JSON object.
    pub fn from_members(obj: &Map<String, Value>) -> Result<Self, Error> {
        if obj.contains_key("d") {
            return Err(Error::PrivateKeyMaterial);
        }
        check_public_members(obj)?;
        let x = coordinate(obj, "x")?;
        let y = coordinate(obj, "y")?;
        let kid = match obj.get("kid") {
            None => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
            Some(_) => return Err(Error::InvalidKey),
        };
        Self::from_coordinates(x, y, kid)
    }

    /// Builds a key from affine coordinates, checking that the point is on P-256.
    pub fn from_coordinates(x: [u8; 32], y: [u8; 32], kid: Option<String>) -> Result<Self, Error> {
        let sec1 = sec1_uncompressed(&x, &y);
        p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| Error::InvalidKey)?;
        let parsed =
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, sec1).map_err(|_| Error::InvalidKey)?;
        Ok(PublicJwk { x, y, kid, parsed })
    }

    /// Returns the same key under another `kid` (or none).
    pub fn with_kid(mut self, kid: Option<String>) -> Self {
        self.kid = kid;
        self
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        let x = b64::encode(self.x);
        let y = b64::encode(self.y);
        thumbprint_of(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)])
    }

    /// The JWK as JSON: `kty`, `crv`, `x`, `y` and `kid` when set.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("crv".into(), "P-256".into());
        if let Some(kid) = &self.kid {
            m.insert("kid".into(), kid.clone().into());
        }
        m.insert("kty".into(), "EC".into());
        m.insert("x".into(), b64::encode(self.x).into());
        m.insert("y".into(), b64::encode(self.y).into());
        Value::Object(m)
    }

    /// The uncompressed SEC1 encoding `04‖x‖y`.
    pub fn sec1(&self) -> [u8; 65] {
        sec1_uncompressed(&self.x, &self.y)
    }

    /// True when both keys are the same point (`kid` is not compared).
    pub fn same_key(&self, other: &PublicJwk) -> bool {
        self.x == other.x && self.y == other.y
    }

    /// Verifies a raw 64-byte ES256 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| Error::InvalidSignature)
    }
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk")
            .field("kid", &self.kid)
            .field("jkt", &self.thumbprint())
            .finish()
    }
}

impl PartialEq for PublicJwk {
    fn eq(&self, other: &Self) -> bool {
        self.same_key(other) && self.kid == other.kid
    }
}

impl Eq for PublicJwk {}

/// RFC 7638 §3: SHA-256 over the required members, sorted by name, as compact JSON.
///
/// Kept general (any string members) so that the RFC's own RSA example tests the procedure.
pub fn thumbprint_of(members: &[(&str, &str)]) -> String {
    let mut sorted = members.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut canonical = String::from("{");
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(*value).to_string());
    }
    canonical.push('}');
    sha256_b64(canonical.as_bytes())
}

fn check_public_members(obj: &Map<String, Value>) -> Result<(), Error> {
    if obj.get("kty").and_then(Value::as_str) != Some("EC") {
        return Err(Error::InvalidKey);
    }
    if obj.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Err(Error::InvalidKey);
    }
    if let Some(alg) = obj.get("alg") {
        if alg.as_str() != Some(ES256) {
            return Err(Error::InvalidKey);
        }
    }
    if let Some(usage) = obj.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(Error::InvalidKey);
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or(Error::InvalidKey)?;
        if !ops.iter().all(|op| op.as_str() == Some("verify")) {
            return Err(Error::InvalidKey);
        }
    }
    Ok(())
}

fn coordinate(obj: &Map<String, Value>, name: &str) -> Result<[u8; 32], Error> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(Error::InvalidKey)?;
    b64::decode_array::<32>(text).map_err(|_| Error::InvalidKey)
}

fn sec1_uncompressed(x: &[u8; 32], y: &[u8; 32]) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[0] = 0x04;
    out[1..33].copy_from_slice(x);
    out[33..].copy_from_slice(y);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7515 Appendix A.3.1's public key.
    const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn rfc7515_a3_key_imports() {
        let key = PublicJwk::from_json(A3_JWK).unwrap();
        assert_eq!(key.kid(), None);
    }

    #[test]
    fn private_member_is_refused_where_public_key_expected() {
        let with_d = A3_JWK.replace(
            "\"kty\"",
            "\"d\":\"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI\",\"kty\"",
        );
        assert_eq!(
            PublicJwk::from_json(&with_d).unwrap_err(),
            Error::PrivateKeyMaterial
        );
    }

    #[test]
    fn wrong_kty_crv_or_alg_is_refused() {
        for (from, to) in [
            ("\"kty\":\"EC\"", "\"kty\":\"RSA\""),
            ("\"crv\":\"P-256\"", "\"crv\":\"P-384\""),
            ("\"crv\":\"P-256\"", "\"crv\":\"P-256\",\"alg\":\"ES384\""),
            ("\"crv\":\"P-256\"", "\"crv\":\"P-256\",\"use\":\"enc\""),
        ] {
            let jwk = A3_JWK.replace(from, to);
            assert_eq!(
                PublicJwk::from_json(&jwk).unwrap_err(),
                Error::InvalidKey,
                "{to}"
            );
        }
    }

    #[test]
    fn off_curve_point_is_refused() {
        let x = b64::decode_array::<32>("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU").unwrap();
        let mut y = b64::decode_array::<32>("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0").unwrap();
        y[31] ^= 1;
        assert_eq!(
            PublicJwk::from_coordinates(x, y, None).unwrap_err(),
            Error::InvalidKey
        );
        assert!(PublicJwk::from_coordinates([0; 32], [0; 32], None).is_err());
    }

    #[test]
    fn short_coordinate_is_refused() {
        let jwk = A3_JWK.replace(
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVE",
        );
        assert_eq!(PublicJwk::from_json(&jwk).unwrap_err(), Error::InvalidKey);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1: the RSA example key and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jkt = thumbprint_of(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]);
        assert_eq!(jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn rfc9449_example_key_thumbprint() {
        // RFC 9449 §6.1: the DPoP proof key of the examples and its `jkt`.
        let jwk = r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#;
        let key = PublicJwk::from_json(jwk).unwrap();
        assert_eq!(
            key.thumbprint(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn thumbprint_is_stable_and_ignores_kid() {
        let key = PublicJwk::from_json(A3_JWK).unwrap();
        let named = key.clone().with_kid(Some("k1".into()));
        assert_eq!(key.thumbprint(), named.thumbprint());
        assert_eq!(key.thumbprint().len(), 43);
    }
}
