//! Building AP2 mandate chains: what a wallet signs and what an agent appends.
//!
//! The layout matches the AP2 reference SDK's: the mandate object is an array-element
//! disclosure of `delegate_payload`; each element of an `allowed` list and of every
//! `acceptable_items` list is its own disclosure (so a holder may reveal only what a verifier
//! needs); a closed checkout's `checkout_jwt` is an object-property disclosure. Inner
//! disclosures come before the mandate's own. Closing hops carry `iat`, `aud`, `nonce` and
//! `sd_hash` of the previous hop exactly as it is presented.

use serde_json::{Map, Value};

use crate::jose::{sha256_b64, Error, SigningKey};
use crate::sdjwt::{sign_segment, Disclosure};

/// The `typ` of hops that close a chain.
pub const CLOSING_TYP: &str = "kb+sd-jwt";

/// Signs a root mandate segment (`jwt~disclosures~`) with the issuer's key.
///
/// `claims` are extra top-level claims of the root JWT (for example `iss`, `sub`, `status`);
/// `mandate` is the mandate object (with `vct`, `iat`, `exp`, and `cnf` for open mandates).
pub fn issue(
    key: &SigningKey,
    typ: &str,
    claims: Map<String, Value>,
    mandate: Value,
) -> Result<String, Error> {
    let (payload, disclosures) = delegate_payload(claims, mandate)?;
    sign_segment(key, typ, &payload, &disclosures)
}

/// Signs a closing hop over `previous` (a segment exactly as it will be presented) with the key
/// named in its `cnf`, approving `closed` for the verifier's `aud` and `nonce`.
pub fn close(
    agent_key: &SigningKey,
    previous: &str,
    closed: Value,
    aud: &str,
    nonce: &str,
    iat: i64,
) -> Result<String, Error> {
    hop(agent_key, CLOSING_TYP, previous, closed, (aud, nonce, iat))
}

/// The `typ` of hops that delegate further to another key.
pub const INTERMEDIATE_TYP: &str = "kb+sd-jwt+kb";

/// Signs an intermediate hop over `previous`: the holder of the previous `cnf` delegates an
/// open mandate (which must carry the next holder's `cnf`) within the same chain.
pub fn delegate(
    holder_key: &SigningKey,
    previous: &str,
    open: Value,
    aud: &str,
    nonce: &str,
    iat: i64,
) -> Result<String, Error> {
    hop(
        holder_key,
        INTERMEDIATE_TYP,
        previous,
        open,
        (aud, nonce, iat),
    )
}

/// A key-binding hop: `iat`, `aud`, `nonce` and `sd_hash` over `previous` as presented.
fn hop(
    key: &SigningKey,
    typ: &str,
    previous: &str,
    content: Value,
    (aud, nonce, iat): (&str, &str, i64),
) -> Result<String, Error> {
    let mut claims = Map::new();
    claims.insert("iat".into(), iat.into());
    claims.insert("aud".into(), aud.into());
    claims.insert("nonce".into(), nonce.into());
    claims.insert("sd_hash".into(), sha256_b64(previous.as_bytes()).into());
    let (payload, disclosures) = delegate_payload(claims, content)?;
    sign_segment(key, typ, &payload, &disclosures)
}

/// Joins segments (each ending in `~`) into a chain: `seg1~seg2~…`, i.e. `~~` between hops.
pub fn join(segments: &[&str]) -> String {
    segments.join("~")
}

/// Re-presents a segment keeping only the disclosures `keep` accepts (the JWT is unchanged).
///
/// Dropping a disclosure hides that element or claim; dropping the mandate's own disclosure
/// makes the segment useless, and verifiers will refuse it.
pub fn present(
    segment: &str,
    keep: impl Fn(&Disclosure) -> bool,
) -> Result<String, crate::sdjwt::Error> {
    let body = segment
        .strip_suffix('~')
        .ok_or(crate::sdjwt::Error::Malformed)?;
    let mut parts = body.split('~');
    let jwt = parts.next().ok_or(crate::sdjwt::Error::Malformed)?;
    let mut out = format!("{jwt}~");
    for encoded in parts {
        if keep(&Disclosure::parse(encoded)?) {
            out.push_str(encoded);
            out.push('~');
        }
    }
    Ok(out)
}

/// `{"delegate_payload": [{"...": d}], <claims>, "_sd_alg": "sha-256"}` and its disclosures.
fn delegate_payload(
    claims: Map<String, Value>,
    mandate: Value,
) -> Result<(Map<String, Value>, Vec<Disclosure>), Error> {
    let mut disclosures = Vec::new();
    let mandate = conceal_mandate(mandate, &mut disclosures)?;
    let outer = Disclosure::element(&Disclosure::new_salt()?, mandate);
    let mut payload = Map::new();
    payload.insert(
        "delegate_payload".into(),
        Value::Array(vec![outer.array_placeholder()]),
    );
    payload.extend(claims);
    payload.insert("_sd_alg".into(), "sha-256".into());
    disclosures.push(outer);
    Ok((payload, disclosures))
}

fn conceal_mandate(mandate: Value, out: &mut Vec<Disclosure>) -> Result<Value, Error> {
    let Value::Object(mut obj) = mandate else {
        return Ok(mandate);
    };
    if let Some(Value::Array(constraints)) = obj.get_mut("constraints") {
        for c in constraints.iter_mut() {
            conceal_constraint(c, out)?;
        }
    }
    if let Some(jwt) = obj.remove("checkout_jwt") {
        let d = Disclosure::property(&Disclosure::new_salt()?, "checkout_jwt", jwt)
            .map_err(|_| Error::Malformed)?;
        obj.insert("_sd".into(), Value::Array(vec![d.digest().into()]));
        out.push(d);
    }
    Ok(Value::Object(obj))
}

fn conceal_constraint(constraint: &mut Value, out: &mut Vec<Disclosure>) -> Result<(), Error> {
    if let Some(Value::Array(allowed)) = constraint.get_mut("allowed") {
        conceal_elements(allowed, out)?;
    }
    if let Some(Value::Array(items)) = constraint.get_mut("items") {
        for requirement in items.iter_mut() {
            if let Some(Value::Array(acceptable)) = requirement.get_mut("acceptable_items") {
                conceal_elements(acceptable, out)?;
            }
        }
    }
    Ok(())
}

fn conceal_elements(list: &mut [Value], out: &mut Vec<Disclosure>) -> Result<(), Error> {
    for element in list.iter_mut() {
        let d = Disclosure::element(&Disclosure::new_salt()?, element.take());
        *element = d.array_placeholder();
        out.push(d);
    }
    Ok(())
}
