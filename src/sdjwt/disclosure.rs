//! Disclosures (RFC 9901 §4.2) and resolving them into a payload (RFC 9901 §7.1).
//!
//! A disclosure is the base64url of `[salt, name, value]` (an object property) or
//! `[salt, value]` (an array element); its digest is the base64url SHA-256 of the encoded
//! string exactly as presented. Resolving is strict: every digest at most once, every
//! disclosure referenced exactly once, kinds in their places, no claim overwritten.

use serde_json::{Map, Value};

use super::Error;
use crate::jose::{b64, sha256_b64};
use crate::json;

/// Largest disclosure we decode, in bytes of JSON.
const MAX_DISCLOSURE_LEN: usize = 64 * 1024;

/// One disclosure, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Disclosure {
    encoded: String,
    digest: String,
    name: Option<String>,
    value: Value,
}

impl Disclosure {
    /// Parses an encoded disclosure as it appears between `~`s.
    pub fn parse(encoded: &str) -> Result<Self, Error> {
        if encoded.is_empty() || encoded.len() > MAX_DISCLOSURE_LEN * 4 / 3 + 4 {
            return Err(Error::Malformed);
        }
        let bytes = b64::decode(encoded).map_err(|_| Error::Malformed)?;
        let parts = match json::parse(&bytes, MAX_DISCLOSURE_LEN).map_err(|_| Error::Malformed)? {
            Value::Array(parts) => parts,
            _ => return Err(Error::Malformed),
        };
        let (name, value) = split_parts(parts)?;
        Ok(Disclosure {
            digest: sha256_b64(encoded.as_bytes()),
            encoded: encoded.to_owned(),
            name,
            value,
        })
    }

    /// A new object-property disclosure `[salt, name, value]`.
    pub fn property(salt: &str, name: &str, value: Value) -> Result<Self, Error> {
        if is_reserved(name) {
            return Err(Error::ClaimCollision);
        }
        let text = Value::Array(vec![salt.into(), name.into(), value.clone()]).to_string();
        Ok(Self::from_text(&text, Some(name.to_owned()), value))
    }

    /// A new array-element disclosure `[salt, value]`.
    pub fn element(salt: &str, value: Value) -> Self {
        let text = Value::Array(vec![salt.into(), value.clone()]).to_string();
        Self::from_text(&text, None, value)
    }

    /// A fresh random salt: 128 bits, base64url (RFC 9901 §9.3).
    pub fn new_salt() -> Result<String, crate::jose::Error> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| crate::jose::Error::Crypto)?;
        Ok(b64::encode(salt))
    }

    fn from_text(text: &str, name: Option<String>, value: Value) -> Self {
        let encoded = b64::encode(text);
        Disclosure {
            digest: sha256_b64(encoded.as_bytes()),
            encoded,
            name,
            value,
        }
    }

    /// The disclosure as it goes on the wire.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The base64url SHA-256 digest that refers to this disclosure.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The claim name, for an object-property disclosure.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The disclosed value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The placeholder that stands for this disclosure in an array: `{"...": digest}`.
    pub fn array_placeholder(&self) -> Value {
        let mut m = Map::new();
        m.insert("...".into(), self.digest.clone().into());
        Value::Object(m)
    }
}

fn split_parts(parts: Vec<Value>) -> Result<(Option<String>, Value), Error> {
    let mut it = parts.into_iter();
    let salt = it.next();
    let (second, third, extra) = (it.next(), it.next(), it.next());
    if !matches!(salt, Some(Value::String(ref s)) if !s.is_empty()) || extra.is_some() {
        return Err(Error::Malformed);
    }
    match (second, third) {
        (Some(value), None) => Ok((None, value)),
        (Some(Value::String(name)), Some(value)) if !is_reserved(&name) => Ok((Some(name), value)),
        (Some(Value::String(_)), Some(_)) => Err(Error::ClaimCollision),
        _ => Err(Error::Malformed),
    }
}

fn is_reserved(name: &str) -> bool {
    name == "_sd" || name == "..." || name == "_sd_alg"
}

/// Resolves `disclosures` into `payload` (RFC 9901 §7.1 steps 3 to 5).
///
/// Undisclosed digests (and decoys) vanish; `_sd` and the top-level `_sd_alg` are removed.
pub fn resolve(
    payload: Map<String, Value>,
    disclosures: &[Disclosure],
) -> Result<Map<String, Value>, Error> {
    resolve_owned(payload, disclosures.to_vec())
}

/// [`resolve`], consuming the disclosures so that their values move instead of being copied.
pub fn resolve_owned(
    mut payload: Map<String, Value>,
    disclosures: Vec<Disclosure>,
) -> Result<Map<String, Value>, Error> {
    match payload.remove("_sd_alg") {
        None => {}
        Some(Value::String(alg)) if alg == "sha-256" => {}
        Some(_) => return Err(Error::UnsupportedHashAlgorithm),
    }

    let count = disclosures.len();
    let mut by_digest = Vec::with_capacity(count);
    let mut slots = Vec::with_capacity(count);
    for (i, d) in disclosures.into_iter().enumerate() {
        by_digest.push((d.digest, i));
        slots.push(Some((d.name, d.value)));
    }
    // Sorted digests: lookups by binary search, and a duplicate disclosure sits next to its twin.
    by_digest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if by_digest.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Error::DuplicateDisclosure);
    }
    let mut walk = Walk {
        slots,
        by_digest,
        seen: Vec::new(),
        used: 0,
    };
    let resolved = walk.object(payload)?;
    walk.seen.sort_unstable();
    if walk.seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::DuplicateDigest);
    }
    if walk.used != count {
        return Err(Error::UnreferencedDisclosure);
    }
    Ok(resolved)
}

/// A disclosure's claim name (none for an array element) and value.
type Slot = Option<(Option<String>, Value)>;

struct Walk {
    slots: Vec<Slot>,
    /// Disclosure digests, sorted, with the index of their slot.
    by_digest: Vec<(String, usize)>,
    /// Every digest met in the payload (checked for repeats once the walk is done).
    seen: Vec<String>,
    used: usize,
}

impl Walk {
    fn object(&mut self, mut obj: Map<String, Value>) -> Result<Map<String, Value>, Error> {
        if obj.contains_key("...") {
            return Err(Error::Malformed);
        }
        let digests = match obj.remove("_sd") {
            None => Vec::new(),
            Some(Value::Array(digests)) => digests,
            Some(_) => return Err(Error::Malformed),
        };

        // Resolve in place: members keep their slots, disclosed ones are added after.
        for value in obj.values_mut() {
            *value = self.value(std::mem::take(value))?;
        }
        let mut out = obj;
        for digest in digests {
            let Value::String(digest) = digest else {
                return Err(Error::Malformed);
            };
            let Some((name, value)) = self.take(digest)? else {
                continue;
            };
            let name = name.ok_or(Error::DisclosureKindMismatch)?;
            if out.contains_key(&name) {
                return Err(Error::ClaimCollision);
            }
            let value = self.value(value)?;
            out.insert(name, value);
        }
        Ok(out)
    }

    fn array(&mut self, items: Vec<Value>) -> Result<Vec<Value>, Error> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match placeholder_digest(&item)? {
                Some(digest) => {
                    let Some((name, value)) = self.take(digest)? else {
                        continue;
                    };
                    if name.is_some() {
                        return Err(Error::DisclosureKindMismatch);
                    }
                    out.push(self.value(value)?);
                }
                None => out.push(self.value(item)?),
            }
        }
        Ok(out)
    }

    fn value(&mut self, value: Value) -> Result<Value, Error> {
        match value {
            Value::Object(obj) => Ok(Value::Object(self.object(obj)?)),
            Value::Array(items) => Ok(Value::Array(self.array(items)?)),
            scalar => Ok(scalar),
        }
    }

    /// Records `digest` and takes its disclosure, if one was presented.
    fn take(&mut self, digest: String) -> Result<Slot, Error> {
        let found = self
            .by_digest
            .binary_search_by(|(d, _)| d.as_str().cmp(&digest));
        self.seen.push(digest);
        let Ok(pos) = found else { return Ok(None) };
        // A disclosure already taken means its digest appeared twice.
        let slot = self.slots[self.by_digest[pos].1]
            .take()
            .ok_or(Error::DuplicateDigest)?;
        self.used += 1;
        Ok(Some(slot))
    }
}

/// `Some(digest)` when `item` is an array placeholder `{"...": "<digest>"}`.
fn placeholder_digest(item: &Value) -> Result<Option<String>, Error> {
    let Value::Object(obj) = item else {
        return Ok(None);
    };
    match obj.get("...") {
        None => Ok(None),
        Some(Value::String(d)) if obj.len() == 1 => Ok(Some(d.clone())),
        Some(_) => Err(Error::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn rfc9901_example_disclosure_digest() {
        // RFC 9901 §4.2.1: the `given_name` example and its published digest.
        let d = Disclosure::parse(
            "WyJfMjZiYzRMVC1hYzZxMktJNmNCVzVlcyIsICJmYW1pbHlfbmFtZSIsICJNw7ZiaXVzIl0",
        )
        .unwrap();
        assert_eq!(d.name(), Some("family_name"));
        assert_eq!(d.value(), &json!("Möbius"));
        assert_eq!(d.digest(), "X9yH0Ajrdm1Oij4tWso9UzzKJvPoDxwmuEcO3XAdRC0");
    }

    #[test]
    fn property_and_element_disclosures_resolve() {
        let p = Disclosure::property("s1", "email", json!("a@b.example")).unwrap();
        let e = Disclosure::element("s2", json!("DE"));
        let payload = obj(json!({"_sd": [p.digest()], "_sd_alg": "sha-256",
            "nationalities": [e.array_placeholder(), {"...": "decoy-digest"}, "FR"]}));
        let out = resolve(payload, &[e, p]).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"email": "a@b.example", "nationalities": ["DE", "FR"]})
        );
    }

    #[test]
    fn unreferenced_disclosure_is_refused() {
        let p = Disclosure::property("s1", "email", json!("x")).unwrap();
        let stray = Disclosure::property("s2", "payee", json!("y")).unwrap();
        let payload = obj(json!({"_sd": [p.digest()]}));
        assert_eq!(
            resolve(payload, &[p, stray]),
            Err(Error::UnreferencedDisclosure)
        );
    }

    #[test]
    fn duplicated_disclosure_and_digest_are_refused() {
        let p = Disclosure::property("s1", "email", json!("x")).unwrap();
        let payload = obj(json!({"_sd": [p.digest()]}));
        assert_eq!(
            resolve(payload, &[p.clone(), p.clone()]),
            Err(Error::DuplicateDisclosure)
        );
        let payload = obj(json!({"_sd": [p.digest(), p.digest()]}));
        assert_eq!(resolve(payload, &[p]), Err(Error::DuplicateDigest));
    }

    #[test]
    fn kinds_must_fit_their_places() {
        let e = Disclosure::element("s", json!(1));
        assert_eq!(
            resolve(obj(json!({"_sd": [e.digest()]})), &[e]),
            Err(Error::DisclosureKindMismatch)
        );
        let p = Disclosure::property("s", "a", json!(1)).unwrap();
        let payload = obj(json!({"list": [p.array_placeholder()]}));
        assert_eq!(resolve(payload, &[p]), Err(Error::DisclosureKindMismatch));
    }

    #[test]
    fn disclosed_claim_cannot_overwrite() {
        let p = Disclosure::property("s", "amount", json!(1)).unwrap();
        let payload = obj(json!({"amount": 2, "_sd": [p.digest()]}));
        assert_eq!(resolve(payload, &[p]), Err(Error::ClaimCollision));
    }

    #[test]
    fn reserved_names_and_bad_shapes_are_refused() {
        for text in [r#"["s","_sd",1]"#, r#"["s","...",1]"#] {
            assert_eq!(
                Disclosure::parse(&b64::encode(text)),
                Err(Error::ClaimCollision),
                "{text}"
            );
        }
        for text in [
            r#"["s"]"#,
            r#"["s","a",1,2]"#,
            r#"[1,"a",1]"#,
            r#"["","a",1]"#,
            r#"{"a":1}"#,
            r#"["s",1,2]"#,
        ] {
            assert_eq!(
                Disclosure::parse(&b64::encode(text)),
                Err(Error::Malformed),
                "{text}"
            );
        }
        assert_eq!(Disclosure::parse("not base64!"), Err(Error::Malformed));
    }

    #[test]
    fn recursive_disclosures_resolve() {
        let inner = Disclosure::property("s1", "street", json!("Main St")).unwrap();
        let outer = Disclosure::property(
            "s2",
            "address",
            json!({"_sd": [inner.digest()], "city": "X"}),
        )
        .unwrap();
        let payload = obj(json!({"_sd": [outer.digest()]}));
        let out = resolve(payload, &[inner, outer]).unwrap();
        assert_eq!(out["address"], json!({"street": "Main St", "city": "X"}));
    }

    #[test]
    fn other_hash_algorithms_are_refused() {
        assert_eq!(
            resolve(obj(json!({"_sd_alg": "sha-384"})), &[]),
            Err(Error::UnsupportedHashAlgorithm)
        );
    }
}
