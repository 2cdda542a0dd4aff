//! Decoding without verifying. Everything here skips checks on purpose and says so in its name.
//!
//! For humans reading a chain (`ap2-mandate inspect`) and for diagnostics: nothing returned
//! here may be used to decide anything, because no signature, trust anchor, binding or time
//! has been checked. Verification lives in [`crate::mandate::Verifier`].

use serde_json::{Map, Value};

use crate::jose::{b64, sha256_b64};
use crate::json;
use crate::sdjwt::{self, resolve, Disclosure, UnverifiedChain};

/// One hop decoded without any check.
#[derive(Debug, Clone)]
pub struct InsecureHop {
    /// The JWS header as sent (not checked against any policy).
    pub header: Map<String, Value>,
    /// The JWT payload as sent (signature NOT verified).
    pub payload: Map<String, Value>,
    /// The disclosures that parse.
    pub disclosures: Vec<Disclosure>,
    /// The payload with disclosures resolved, or why they do not resolve.
    pub resolved: Result<Map<String, Value>, sdjwt::Error>,
    /// base64url SHA-256 of the hop as presented (what a next hop's `sd_hash` would name).
    pub segment_hash: String,
}

/// Decodes every hop of a chain WITHOUT verifying anything.
pub fn insecure_decode_chain(chain: &str) -> Result<Vec<InsecureHop>, sdjwt::Error> {
    let parsed = UnverifiedChain::parse(chain)?;
    parsed
        .insecure_parts()
        .map(|(jwt, disclosures, text)| decode_hop(jwt, disclosures, text))
        .collect()
}

/// A JSON object as decoded.
pub type Object = Map<String, Value>;

/// Decodes a compact JWT's header and payload WITHOUT verifying its signature.
pub fn insecure_decode_jwt(jwt: &str) -> Result<(Object, Object), sdjwt::Error> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p)) = (parts.next(), parts.next()) else {
        return Err(sdjwt::Error::Malformed);
    };
    Ok((decode_part(h)?, decode_part(p)?))
}

fn decode_hop(jwt: &str, encoded: &[&str], text: &str) -> Result<InsecureHop, sdjwt::Error> {
    let (header, payload) = insecure_decode_jwt(jwt)?;
    let disclosures: Vec<Disclosure> = encoded
        .iter()
        .filter_map(|d| Disclosure::parse(d).ok())
        .collect();
    let resolved = if disclosures.len() == encoded.len() {
        resolve(payload.clone(), &disclosures)
    } else {
        Err(sdjwt::Error::Malformed)
    };
    Ok(InsecureHop {
        header,
        payload,
        disclosures,
        resolved,
        segment_hash: sha256_b64(text.as_bytes()),
    })
}

fn decode_part(part: &str) -> Result<Map<String, Value>, sdjwt::Error> {
    let bytes = b64::decode(part).map_err(|_| sdjwt::Error::Malformed)?;
    json::parse_object(&bytes, crate::jose::MAX_JWS_LEN).map_err(|_| sdjwt::Error::Malformed)
}

/// One string claim of a compact JWT's payload, WITHOUT verifying anything: only to pick which
/// trusted key or registered client to verify the token with, after which the verified claims
/// are what count.
pub fn insecure_string_claim(jwt: &str, name: &str) -> Option<String> {
    let (_, payload) = insecure_decode_jwt(jwt).ok()?;
    payload.get(name)?.as_str().map(str::to_owned)
}
