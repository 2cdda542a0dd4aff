//! The merchant's signed checkout (`checkout_jwt`, a UCP Checkout object as an ES256 JWT).
//!
//! Both checkout and payment mandates bind to it by hash (`checkout_hash`, `transaction_id`:
//! base64url SHA-256 of the compact JWT's ASCII bytes). The verifier checks its signature
//! against its own trusted merchant keys before any mandate is evaluated against its content.

use serde::Deserialize;
use serde_json::Value;

use super::line_items::CartLine;
use super::types::Merchant;
use super::Error;
use crate::calendar::{self, DayEdge};
use crate::jose::{sha256_b64, HeaderPolicy, KeySet, TypRule, UnverifiedJws};
use crate::money::{Amount, Currency};

/// A checkout JWT whose signature verified under a trusted merchant key.
#[derive(Debug, Clone)]
pub struct CheckoutJwt {
    raw: String,
    hash: String,
    kid: String,
    id: String,
    merchant: Option<Merchant>,
    cart: Vec<CartLine>,
    total: Amount,
}

#[derive(Deserialize)]
struct WireCheckout {
    id: String,
    #[serde(default)]
    merchant: Option<Merchant>,
    line_items: Vec<WireLine>,
    currency: String,
    totals: Vec<WireTotal>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct WireLine {
    item: WireItem,
    quantity: u64,
}

#[derive(Deserialize)]
struct WireItem {
    id: String,
}

#[derive(Deserialize)]
struct WireTotal {
    #[serde(rename = "type")]
    kind: String,
    amount: i64,
}

impl CheckoutJwt {
    /// Verifies `raw` against the trusted merchant keys (chosen by `kid`) and reads its content.
    pub fn verify(raw: &str, merchants: &KeySet, now: i64) -> Result<Self, Error> {
        let policy = HeaderPolicy::trusted_key(TypRule::OneOfOrAbsent(&["JWT"]));
        let jws = UnverifiedJws::parse(raw, &policy).map_err(Error::CheckoutUntrusted)?;
        let kid = jws
            .header()
            .kid()
            .ok_or(Error::CheckoutUntrusted(crate::jose::Error::MissingKeyId))?
            .to_owned();
        let key = merchants.get(&kid).map_err(Error::CheckoutUntrusted)?;
        let claims = jws
            .verify(key)
            .map_err(Error::CheckoutUntrusted)?
            .into_claims();

        let wire = WireCheckout::deserialize(Value::Object(claims))
            .map_err(|_| Error::MalformedCheckout)?;
        if let Some(expires_at) = &wire.expires_at {
            let at = calendar::parse_rfc3339(expires_at, DayEdge::End)
                .map_err(|_| Error::MalformedCheckout)?;
            if now > at {
                return Err(Error::CheckoutExpired);
            }
        }
        let currency = Currency::from_code(&wire.currency).map_err(|_| Error::MalformedCheckout)?;
        let total = total(&wire.totals, currency)?;
        let cart = wire
            .line_items
            .into_iter()
            .map(|l| CartLine {
                item_id: l.item.id,
                quantity: l.quantity,
            })
            .collect();
        Ok(CheckoutJwt {
            hash: sha256_b64(raw.as_bytes()),
            raw: raw.to_owned(),
            kid,
            id: wire.id,
            merchant: wire.merchant,
            cart,
            total,
        })
    }

    /// The compact JWT as presented.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// base64url SHA-256 of the compact JWT: what `checkout_hash` and `transaction_id` must be.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The merchant key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The merchant's checkout id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The merchant named in the checkout, if any.
    pub fn merchant(&self) -> Option<&Merchant> {
        self.merchant.as_ref()
    }

    /// The cart's lines.
    pub fn cart(&self) -> &[CartLine] {
        &self.cart
    }

    /// The checkout total (the `totals` entry of type `total`).
    pub fn total(&self) -> Amount {
        self.total
    }
}

fn total(totals: &[WireTotal], currency: Currency) -> Result<Amount, Error> {
    let mut found = totals.iter().filter(|t| t.kind == "total");
    match (found.next(), found.next()) {
        (Some(t), None) => {
            Amount::from_minor_i64(t.amount, currency).map_err(|_| Error::MalformedCheckout)
        }
        _ => Err(Error::MalformedCheckout),
    }
}
