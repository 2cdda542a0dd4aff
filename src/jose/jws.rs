//! Compact JWS (RFC 7515 §7.1) for ES256, with the header checked before any cryptography.
//!
//! Order of checks: size, shape, header JSON (strict), `alg` exactly `ES256`, no `crit`, no key
//! URLs, no embedded keys unless the caller asked for one (DPoP), no `b64`/`cty`/unknown
//! parameters, `typ` as the caller expects, then the signature's length (64 bytes, `r‖s`), and
//! only then the signature itself. The payload is parsed only after the signature verifies.

use serde_json::{Map, Value};

use super::{b64, Error, PublicJwk, SigningKey, ES256, MAX_JWS_LEN};
use crate::json;

/// Largest header we parse, in bytes of JSON.
const MAX_HEADER_LEN: usize = 4096;

/// What `typ` a token must carry.
#[derive(Debug, Clone, Copy)]
pub enum TypRule<'a> {
    /// One of these values, compared exactly.
    OneOf(&'a [&'a str]),
    /// One of these values, or no `typ` at all.
    OneOfOrAbsent(&'a [&'a str]),
}

/// What a caller accepts in a JWS header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPolicy<'a> {
    /// The expected `typ`.
    pub typ: TypRule<'a>,
    /// Whether the header must carry its own public key in `jwk` (only DPoP proofs do).
    pub embedded_jwk: bool,
}

impl<'a> HeaderPolicy<'a> {
    /// A policy for tokens verified with a trusted key: no embedded key, `typ` as given.
    pub const fn trusted_key(typ: TypRule<'a>) -> Self {
        HeaderPolicy {
            typ,
            embedded_jwk: false,
        }
    }
}

/// The accepted parameters of a JWS header.
#[derive(Debug, Clone)]
pub struct Header {
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<PublicJwk>,
}

impl Header {
    /// The `typ` parameter.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The `kid` parameter; use it only to pick among keys you already trust.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The embedded public key, present only when the policy required one.
    pub fn jwk(&self) -> Option<&PublicJwk> {
        self.jwk.as_ref()
    }

    fn parse(encoded: &str, policy: &HeaderPolicy<'_>) -> Result<Self, Error> {
        if encoded.len() > MAX_HEADER_LEN * 4 / 3 + 4 {
            return Err(Error::TooLarge);
        }
        let bytes = b64::decode(encoded)?;
        let obj = json::parse_object(&bytes, MAX_HEADER_LEN)?;

        if obj.get("alg").and_then(Value::as_str) != Some(ES256) {
            return Err(Error::AlgorithmNotAllowed);
        }
        check_parameters(&obj, policy)?;

        let typ = optional_string(&obj, "typ")?;
        check_typ(typ.as_deref(), policy.typ)?;
        let kid = optional_string(&obj, "kid")?;
        let jwk = match obj.get("jwk") {
            Some(value) if policy.embedded_jwk => Some(PublicJwk::from_value(value)?),
            Some(_) => return Err(Error::EmbeddedKey),
            None if policy.embedded_jwk => return Err(Error::EmbeddedKey),
            None => None,
        };
        Ok(Header { typ, kid, jwk })
    }
}

/// A compact JWS whose header passed the policy and whose signature has not been checked.
///
/// Nothing of the payload is reachable from here: only [`UnverifiedJws::verify`] yields it.
#[derive(Debug, Clone)]
pub struct UnverifiedJws<'a> {
    header: Header,
    signing_input: &'a str,
    payload: &'a str,
    signature: [u8; 64],
}

impl<'a> UnverifiedJws<'a> {
    /// Splits and checks a compact JWS against `policy`.
    pub fn parse(token: &'a str, policy: &HeaderPolicy<'_>) -> Result<Self, Error> {
        if token.len() > MAX_JWS_LEN {
            return Err(Error::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed);
        };

        let header = Header::parse(h, policy)?;
        let signature = b64::decode_array::<64>(s).map_err(|_| Error::InvalidSignature)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(UnverifiedJws {
            header,
            signing_input,
            payload: p,
            signature,
        })
    }

    /// The checked header (to pick a trusted key by `kid`).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes that were signed.
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// Verifies the signature with `key`, then parses the payload as a strict JSON object.
    pub fn verify(self, key: &PublicJwk) -> Result<VerifiedJws<'a>, Error> {
        key.verify(self.signing_input.as_bytes(), &self.signature)?;
        let claims = decode_payload(self.payload)?;
        Ok(VerifiedJws {
            header: self.header,
            signing_input: self.signing_input,
            claims,
        })
    }

    /// Like [`UnverifiedJws::verify`], skipping the ECDSA step when `seen` remembers this exact
    /// key, signed input and signature verifying before; a fresh success is remembered.
    pub fn verify_remembered(
        self,
        key: &PublicJwk,
        seen: &super::VerifiedSignatures,
    ) -> Result<VerifiedJws<'a>, Error> {
        let digest =
            super::VerifiedSignatures::digest(&key.sec1(), self.signing_input, &self.signature);
        if !seen.contains(&digest) {
            key.verify(self.signing_input.as_bytes(), &self.signature)?;
            seen.insert(digest);
        }
        let claims = decode_payload(self.payload)?;
        Ok(VerifiedJws {
            header: self.header,
            signing_input: self.signing_input,
            claims,
        })
    }

    /// Verifies with the key the header itself carries (DPoP proofs only).
    pub fn verify_with_embedded_key(self) -> Result<VerifiedJws<'a>, Error> {
        let key = self.header.jwk.clone().ok_or(Error::EmbeddedKey)?;
        self.verify(&key)
    }
}

/// A JWS whose signature verified under a key the caller chose.
#[derive(Debug, Clone)]
pub struct VerifiedJws<'a> {
    header: Header,
    signing_input: &'a str,
    claims: Map<String, Value>,
}

impl<'a> VerifiedJws<'a> {
    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The signed bytes (stable identity for single use: never the signature bytes).
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// The verified payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// Takes the verified payload.
    pub fn into_claims(self) -> Map<String, Value> {
        self.claims
    }
}

/// Signs `payload` as a compact JWS with `alg` ES256, the given `typ`, and the key's `kid`.
///
/// With `embed_jwk`, the public key goes into the header instead of the `kid` (DPoP proofs).
pub fn sign_compact(
    key: &SigningKey,
    typ: Option<&str>,
    embed_jwk: bool,
    payload: &[u8],
) -> Result<String, Error> {
    let mut header = Map::new();
    header.insert("alg".into(), ES256.into());
    if let Some(typ) = typ {
        header.insert("typ".into(), typ.into());
    }
    if embed_jwk {
        header.insert("jwk".into(), key.public().clone().with_kid(None).to_value());
    } else if let Some(kid) = key.kid() {
        header.insert("kid".into(), kid.into());
    }

    let mut token = b64::encode(Value::Object(header).to_string());
    token.push('.');
    token.push_str(&b64::encode(payload));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(signature));
    Ok(token)
}

fn decode_payload(encoded: &str) -> Result<Map<String, Value>, Error> {
    let bytes = b64::decode(encoded)?;
    Ok(json::parse_object(&bytes, MAX_JWS_LEN)?)
}

fn check_parameters(obj: &Map<String, Value>, policy: &HeaderPolicy<'_>) -> Result<(), Error> {
    for name in obj.keys() {
        match name.as_str() {
            "alg" | "typ" | "kid" => {}
            "jwk" if policy.embedded_jwk => {}
            "crit" => return Err(Error::CriticalHeader),
            "jku" | "x5u" => return Err(Error::KeyUrlNotAllowed),
            "jwk" | "x5c" | "x5t" | "x5t#S256" => return Err(Error::EmbeddedKey),
            _ => return Err(Error::UnsupportedHeader),
        }
    }
    Ok(())
}

fn check_typ(typ: Option<&str>, rule: TypRule<'_>) -> Result<(), Error> {
    let ok = match (rule, typ) {
        (TypRule::OneOf(allowed), Some(t)) | (TypRule::OneOfOrAbsent(allowed), Some(t)) => {
            allowed.contains(&t)
        }
        (TypRule::OneOfOrAbsent(_), None) => true,
        (TypRule::OneOf(_), None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::UnexpectedType)
    }
}

fn optional_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(Error::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: TypRule<'static> = TypRule::OneOfOrAbsent(&["JWT"]);

    fn forge(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header),
            b64::encode(payload),
            b64::encode(sig)
        )
    }

    #[test]
    fn rfc7515_a3_example_verifies() {
        // RFC 7515 Appendix A.3: the ES256 example, token and key as published.
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let key = PublicJwk::from_json(
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        )
        .unwrap();
        let jws = UnverifiedJws::parse(token, &HeaderPolicy::trusted_key(JWT)).unwrap();
        let verified = jws.verify(&key).unwrap();
        assert_eq!(verified.claims()["iss"], "joe");
        assert_eq!(verified.claims()["exp"], 1300819380);
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let key = SigningKey::generate(Some("k1".into())).unwrap();
        let token = sign_compact(&key, Some("JWT"), false, br#"{"a":1}"#).unwrap();
        let jws = UnverifiedJws::parse(&token, &HeaderPolicy::trusted_key(JWT)).unwrap();
        assert_eq!(jws.header().kid(), Some("k1"));
        assert_eq!(jws.verify(key.public()).unwrap().claims()["a"], 1);
    }

    #[test]
    fn header_attacks_are_refused_before_crypto() {
        let sig = [7u8; 64];
        let cases: &[(&str, Error)] = &[
            (r#"{"alg":"none"}"#, Error::AlgorithmNotAllowed),
            (r#"{"alg":"HS256"}"#, Error::AlgorithmNotAllowed),
            (r#"{"alg":"es256"}"#, Error::AlgorithmNotAllowed),
            (r#"{"alg":"ES384"}"#, Error::AlgorithmNotAllowed),
            (r#"{"typ":"JWT"}"#, Error::AlgorithmNotAllowed),
            (r#"{"alg":["ES256"]}"#, Error::AlgorithmNotAllowed),
            (
                r#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
                Error::CriticalHeader,
            ),
            (
                r#"{"alg":"ES256","jku":"https://evil.example/jwks"}"#,
                Error::KeyUrlNotAllowed,
            ),
            (
                r#"{"alg":"ES256","x5u":"https://evil.example/x"}"#,
                Error::KeyUrlNotAllowed,
            ),
            (r#"{"alg":"ES256","jwk":{"kty":"EC"}}"#, Error::EmbeddedKey),
            (r#"{"alg":"ES256","x5c":["MIIB"]}"#, Error::EmbeddedKey),
            (r#"{"alg":"ES256","b64":false}"#, Error::UnsupportedHeader),
            (r#"{"alg":"ES256","cty":"JWT"}"#, Error::UnsupportedHeader),
            (r#"{"alg":"ES256","zip":"DEF"}"#, Error::UnsupportedHeader),
            (r#"{"alg":"ES256","typ":"at+jwt"}"#, Error::UnexpectedType),
            (r#"{"alg":"ES256","kid":7}"#, Error::Malformed),
            (r#"{"alg":"ES256","alg":"ES256"}"#, Error::DuplicateMember),
        ];
        for (header, want) in cases {
            let token = forge(header, "{}", &sig);
            let got = UnverifiedJws::parse(&token, &HeaderPolicy::trusted_key(JWT)).unwrap_err();
            assert_eq!(got, *want, "{header}");
        }
    }

    #[test]
    fn signature_of_wrong_length_or_der_is_refused() {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let token = sign_compact(&key, None, false, b"{}").unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let raw = b64::decode(sig).unwrap();
        for bad in [
            &raw[..63],
            &[raw.as_slice(), &[0]].concat()[..],
            &[0x30, 0x44, 0x02, 0x20][..],
        ] {
            let forged = format!("{input}.{}", b64::encode(bad));
            let got = UnverifiedJws::parse(&forged, &HeaderPolicy::trusted_key(JWT)).unwrap_err();
            assert_eq!(got, Error::InvalidSignature);
        }
    }

    #[test]
    fn wrong_key_and_changed_payload_do_not_verify() {
        let key = SigningKey::generate(Some("k".into())).unwrap();
        let other = SigningKey::generate(Some("k".into())).unwrap();
        let token = sign_compact(&key, None, false, br#"{"amount":1}"#).unwrap();
        let jws = UnverifiedJws::parse(&token, &HeaderPolicy::trusted_key(JWT)).unwrap();
        assert_eq!(
            jws.verify(other.public()).unwrap_err(),
            Error::InvalidSignature
        );

        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(br#"{"amount":9}"#),
            parts[2]
        );
        let jws = UnverifiedJws::parse(&forged, &HeaderPolicy::trusted_key(JWT)).unwrap();
        assert_eq!(
            jws.verify(key.public()).unwrap_err(),
            Error::InvalidSignature
        );
    }

    #[test]
    fn shape_and_size_are_checked() {
        let policy = HeaderPolicy::trusted_key(JWT);
        assert_eq!(
            UnverifiedJws::parse("a.b", &policy).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            UnverifiedJws::parse("a.b.c.d", &policy).unwrap_err(),
            Error::Malformed
        );
        let huge = "a".repeat(MAX_JWS_LEN + 1);
        assert_eq!(
            UnverifiedJws::parse(&huge, &policy).unwrap_err(),
            Error::TooLarge
        );
        let padded = forge(r#"{"alg":"ES256"}"#, "{}", &[1; 64]).replacen('.', "=.", 1);
        assert_eq!(
            UnverifiedJws::parse(&padded, &policy).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn embedded_key_is_required_when_asked_and_used() {
        let key = SigningKey::generate(None).unwrap();
        let token = sign_compact(&key, Some("dpop+jwt"), true, b"{}").unwrap();
        let dpop = HeaderPolicy {
            typ: TypRule::OneOf(&["dpop+jwt"]),
            embedded_jwk: true,
        };
        let jws = UnverifiedJws::parse(&token, &dpop).unwrap();
        assert!(jws.verify_with_embedded_key().is_ok());
        let no_key = sign_compact(&key, Some("dpop+jwt"), false, b"{}").unwrap();
        assert_eq!(
            UnverifiedJws::parse(&no_key, &dpop).unwrap_err(),
            Error::EmbeddedKey
        );
    }
}
