//! `ap2-mandate inspect`: a chain explained hop by hop, clearly marked as not verified.

use std::process::ExitCode;

use ap2_mandate::calendar::format_utc;
use ap2_mandate::danger::{insecure_decode_chain, insecure_decode_jwt, InsecureHop};
use ap2_mandate::jose::PublicJwk;
use ap2_mandate::mandate::{describe, ClosedPaymentMandate, Constraint, Vct};
use ap2_mandate::money::{Amount, Currency};
use serde_json::{Map, Value};

pub fn run(chain: &str) -> anyhow::Result<ExitCode> {
    let hops =
        insecure_decode_chain(chain).map_err(|e| anyhow::anyhow!("not a mandate chain: {e}"))?;
    say!("NOT VERIFIED: decoded only. No signature, trusted key, binding or time was checked;");
    say!("use `ap2-mandate verify` to decide anything.\n");
    for (i, hop) in hops.iter().enumerate() {
        let place = match (i, hops.len()) {
            (0, 1) => "issuer-signed closed mandate",
            (0, _) => "root SD-JWT (issuer)",
            (n, len) if n + 1 == len => "closing hop (agent)",
            _ => "intermediate hop",
        };
        say!("Hop {} of {}: {place}", i + 1, hops.len());
        print_hop(hop);
        say!();
    }
    Ok(ExitCode::SUCCESS)
}

fn print_hop(hop: &InsecureHop) {
    let h = |k: &str| {
        hop.header
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    say!(
        "  signed by    kid {} (alg {}, typ {})",
        h("kid"),
        h("alg"),
        h("typ")
    );
    for claim in ["iss", "sub", "aud", "nonce", "sd_hash"] {
        if let Some(v) = hop.payload.get(claim).and_then(Value::as_str) {
            say!("  {claim:<12} {v}");
        }
    }
    print_times("hop", &hop.payload);
    say!("  disclosures  {}", hop.disclosures.len());
    say!("  hop hash     {}", hop.segment_hash);
    let resolved = match &hop.resolved {
        Ok(r) => r,
        Err(e) => return say!("  DISCLOSURES DO NOT RESOLVE: {e}"),
    };
    match resolved
        .get("delegate_payload")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([Value::Object(mandate)]) => print_mandate(mandate),
        _ => say!("  mandate      none disclosed"),
    }
}

fn print_mandate(m: &Map<String, Value>) {
    let vct = m.get("vct").and_then(Value::as_str).unwrap_or("-");
    let known = Vct::parse(vct).map_or(" (NOT an AP2 v0.2 type)", |_| "");
    say!("  mandate      {vct}{known}");
    print_times("mandate", m);
    if let Some(jwk) = m.get("cnf").and_then(|c| c.get("jwk")) {
        match PublicJwk::from_value(jwk) {
            Ok(k) => say!(
                "  agent key    jkt {} (kid {})",
                k.thumbprint(),
                k.kid().unwrap_or("-")
            ),
            Err(e) => say!("  agent key    INVALID: {e}"),
        }
    }
    if let Some(list) = m.get("constraints").and_then(Value::as_array) {
        say!("  constraints");
        for c in list {
            match Constraint::parse(c) {
                Ok(c) => say!("    - {}", describe::constraint(&c)),
                Err(e) => say!("    - MALFORMED: {e}"),
            }
        }
    }
    match Vct::parse(vct) {
        Some(Vct::Payment) => match ClosedPaymentMandate::from_delegate(m) {
            Ok(p) => {
                say!("  payment      {}", describe::closed_payment(&p));
                say!("  transaction  {}", p.transaction_id);
            }
            Err(e) => say!("  payment      MALFORMED: {e}"),
        },
        Some(Vct::Checkout) => print_checkout(m),
        _ => {}
    }
}

fn print_checkout(m: &Map<String, Value>) {
    if let Some(hash) = m.get("checkout_hash").and_then(Value::as_str) {
        say!("  checkout     hash {hash}");
    }
    let Some(jwt) = m.get("checkout_jwt").and_then(Value::as_str) else {
        return say!("  checkout     JWT not disclosed");
    };
    let Ok((header, c)) = insecure_decode_jwt(jwt) else {
        return say!("  checkout     JWT MALFORMED");
    };
    let merchant = c
        .get("merchant")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("-");
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("-");
    say!(
        "  checkout     {} from {merchant} (signed by kid {kid})",
        c.get("id").and_then(Value::as_str).unwrap_or("-")
    );
    let currency = c
        .get("currency")
        .and_then(Value::as_str)
        .and_then(|x| Currency::from_code(x).ok());
    for line in c
        .get("line_items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let title = line
            .pointer("/item/title")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let id = line
            .pointer("/item/id")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let qty = line.get("quantity").and_then(Value::as_u64).unwrap_or(0);
        let price = line.pointer("/item/price").and_then(Value::as_u64);
        say!("    {qty} x {title} ({id}) at {}", money(price, currency));
    }
    let total = c.get("totals").and_then(Value::as_array).and_then(|t| {
        t.iter()
            .find(|x| x.get("type").and_then(Value::as_str) == Some("total"))
            .and_then(|x| x.get("amount")?.as_u64())
    });
    say!("    total {}", money(total, currency));
}

fn money(minor: Option<u64>, currency: Option<Currency>) -> String {
    match (minor, currency) {
        (Some(v), Some(c)) => {
            Amount::from_minor(v, c).map_or_else(|_| "-".into(), |a| a.to_string())
        }
        _ => "-".into(),
    }
}

fn print_times(what: &str, claims: &Map<String, Value>) {
    for (name, label) in [("iat", "issued"), ("exp", "expires")] {
        if let Some(t) = claims.get(name).and_then(Value::as_i64) {
            say!("  {:<12} {} ({what} {name})", label, format_utc(t));
        }
    }
}
