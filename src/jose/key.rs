//! ES256 signing keys.
//!
//! A key is generated with the system's randomness or imported from a private JWK. The private
//! scalar is held by aws-lc-rs (freed and cleared with the key); the copy we can export for
//! storage is wrapped in `Zeroizing` so it is wiped when dropped. `Debug` never shows it.

use std::fmt;

use aws_lc_rs::encoding::{AsBigEndian as _, EcPrivateKeyBin};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{b64, Error, PublicJwk};

/// A P-256 private key that signs ES256.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicJwk,
}

impl SigningKey {
    /// Generates a new key with the system's randomness.
    pub fn generate(kid: Option<String>) -> Result<Self, Error> {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| Error::Crypto)?;
        Self::from_pair(pair, kid)
    }

    /// Imports a private JWK (`kty` `EC`, `crv` `P-256`, `x`, `y`, `d`).
    pub fn from_jwk(value: &Value) -> Result<Self, Error> {
        let obj = value.as_object().ok_or(Error::InvalidKey)?;
        let d_text = obj
            .get("d")
            .and_then(Value::as_str)
            .ok_or(Error::InvalidKey)?;
        let d = Zeroizing::new(b64::decode_array::<32>(d_text).map_err(|_| Error::InvalidKey)?);
        let mut public_members = obj.clone();
        public_members.remove("d");
        let public = PublicJwk::from_members(&public_members)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            d.as_slice(),
            &public.sec1(),
        )
        .map_err(|_| Error::InvalidKey)?;
        Ok(SigningKey { pair, public })
    }

    fn from_pair(pair: EcdsaKeyPair, kid: Option<String>) -> Result<Self, Error> {
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 0x04 {
            return Err(Error::Crypto);
        }
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&point[1..33]);
        y.copy_from_slice(&point[33..65]);
        let public = PublicJwk::from_coordinates(x, y, kid)?;
        Ok(SigningKey { pair, public })
    }

    /// The public half, with this key's `kid`.
    pub fn public(&self) -> &PublicJwk {
        &self.public
    }

    /// The key's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.public.kid()
    }

    /// Signs `message`, returning the raw 64-byte `r‖s` signature.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::Crypto)?;
        sig.as_ref().try_into().map_err(|_| Error::Crypto)
    }

    /// The private JWK as JSON text, for encrypted storage. Wiped from memory when dropped.
    pub fn to_private_jwk(&self) -> Result<Zeroizing<String>, Error> {
        let d: EcPrivateKeyBin<'_> = self
            .pair
            .private_key()
            .as_be_bytes()
            .map_err(|_| Error::Crypto)?;
        let mut jwk = self.public.to_value();
        let d_b64 = Zeroizing::new(b64::encode(d.as_ref()));
        if let Value::Object(m) = &mut jwk {
            m.insert("d".into(), Value::String(d_b64.as_str().to_owned()));
        }
        let text = Zeroizing::new(jwk.to_string());
        if let Value::Object(m) = &mut jwk {
            if let Some(Value::String(s)) = m.get_mut("d") {
                zeroize::Zeroize::zeroize(s);
            }
        }
        Ok(text)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_verifies() {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let sig = key.sign(b"hello").unwrap();
        assert!(key.public().verify(b"hello", &sig).is_ok());
        assert_eq!(
            key.public().verify(b"hellp", &sig),
            Err(Error::InvalidSignature)
        );
    }

    #[test]
    fn private_jwk_round_trips() {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let text = key.to_private_jwk().unwrap();
        let again = SigningKey::from_jwk(&serde_json::from_str(&text).unwrap()).unwrap();
        assert!(again.public().same_key(key.public()));
        let sig = again.sign(b"m").unwrap();
        assert!(key.public().verify(b"m", &sig).is_ok());
    }

    #[test]
    fn debug_never_shows_the_private_scalar() {
        let key = SigningKey::generate(None).unwrap();
        let text = key.to_private_jwk().unwrap();
        let d = serde_json::from_str::<Value>(&text).unwrap()["d"]
            .as_str()
            .unwrap()
            .to_owned();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&d));
        assert!(shown.contains("SigningKey"));
    }

    #[test]
    fn mismatched_private_and_public_halves_are_refused() {
        let a = SigningKey::generate(None).unwrap();
        let b = SigningKey::generate(None).unwrap();
        let mut jwk: Value = serde_json::from_str(&a.to_private_jwk().unwrap()).unwrap();
        let b_pub = b.public().to_value();
        jwk["x"] = b_pub["x"].clone();
        jwk["y"] = b_pub["y"].clone();
        assert!(SigningKey::from_jwk(&jwk).is_err());
    }
}
