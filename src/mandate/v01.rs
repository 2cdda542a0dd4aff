//! Reading AP2 v0.1 JSON (`IntentMandate`, `CartMandate`, `PaymentMandate`) and translating it
//! into v0.2 contents where a mapping exists.
//!
//! v0.1 amounts are W3C Payment Request floats in major units; they are converted exactly to
//! minor units or refused, never rounded. v0.1 names merchants by display name only, so the name
//! becomes the v0.2 merchant `id` too. What has no v0.2 counterpart (refundability, shipping,
//! risk payloads, the v0.1 user authorization) is not carried over. Nothing here verifies.

use serde::Deserialize;
use serde_json::{json, Number, Value};

use super::types::{amount_value, ClosedPaymentMandate, Merchant, PaymentInstrument};
use crate::calendar::{self, DayEdge};
use crate::money::{Amount, Currency, MoneyError};

/// Why v0.1 JSON could not be read or translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V01Error {
    /// The JSON does not have the v0.1 shape.
    #[error("not an AP2 v0.1 object: {0}")]
    Malformed(String),
    /// An amount cannot be converted exactly.
    #[error("amount cannot be converted exactly: {0}")]
    Amount(#[from] MoneyError),
    /// A date is not RFC 3339.
    #[error("malformed date")]
    Date,
}

/// `PaymentCurrencyAmount`: a float in major units.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentCurrencyAmount {
    /// ISO 4217 code.
    pub currency: String,
    /// Major units.
    pub value: Number,
}

/// `PaymentItem`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentItem {
    /// Display label.
    pub label: String,
    /// Amount.
    pub amount: PaymentCurrencyAmount,
}

/// v0.1 `IntentMandate`.
#[derive(Debug, Clone, Deserialize)]
pub struct IntentMandate {
    /// What the user asked for, in words.
    pub natural_language_description: String,
    /// Allowed merchants, by name.
    #[serde(default)]
    pub merchants: Option<Vec<String>>,
    /// Allowed SKUs.
    #[serde(default)]
    pub skus: Option<Vec<String>>,
    /// When the intent expires (RFC 3339).
    pub intent_expiry: String,
    /// An overall budget, when given.
    #[serde(default)]
    pub budget: Option<PaymentCurrencyAmount>,
}

/// v0.1 `CartMandate`.
#[derive(Debug, Clone, Deserialize)]
pub struct CartMandate {
    /// The cart.
    pub contents: CartContents,
}

/// v0.1 `CartContents`.
#[derive(Debug, Clone, Deserialize)]
pub struct CartContents {
    /// Cart id.
    pub id: String,
    /// The W3C payment request.
    pub payment_request: PaymentRequest,
    /// The merchant's name.
    pub merchant_name: String,
}

/// The parts of a W3C `PaymentRequest` that carry the cart.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentRequest {
    /// `details`.
    pub details: PaymentDetails,
}

/// `PaymentDetailsInit`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentDetails {
    /// The cart lines.
    pub display_items: Vec<PaymentItem>,
    /// The total.
    pub total: PaymentItem,
}

/// v0.1 `PaymentMandate`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMandate {
    /// The contents.
    pub payment_mandate_contents: PaymentMandateContents,
}

/// v0.1 `PaymentMandateContents`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMandateContents {
    /// The total paid.
    pub payment_details_total: PaymentItem,
    /// The payment method chosen.
    pub payment_response: PaymentResponse,
    /// The merchant agent (by name).
    pub merchant_agent: String,
}

/// The parts of a W3C `PaymentResponse` we translate.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentResponse {
    /// The payment method identifier.
    pub method_name: String,
}

/// Reads a v0.1 object of type `T` from JSON text.
pub fn read<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, V01Error> {
    let value = crate::json::parse(text.as_bytes(), 256 * 1024)
        .map_err(|e| V01Error::Malformed(e.to_string()))?;
    T::deserialize(value).map_err(|e| V01Error::Malformed(e.to_string()))
}

impl PaymentCurrencyAmount {
    /// The exact amount in minor units.
    pub fn to_amount(&self) -> Result<Amount, V01Error> {
        let currency = Currency::from_code(&self.currency)?;
        Ok(Amount::from_json_number(&self.value, currency)?)
    }
}

impl IntentMandate {
    /// The open checkout contents (without `cnf`, which the wallet adds for the agent's key).
    pub fn to_open_checkout(&self) -> Result<Value, V01Error> {
        let mut constraints = Vec::new();
        if let Some(merchants) = &self.merchants {
            let allowed: Vec<Value> = merchants
                .iter()
                .map(|m| json!({"id": m, "name": m}))
                .collect();
            constraints.push(json!({"type": "checkout.allowed_merchants", "allowed": allowed}));
        }
        if let Some(skus) = &self.skus {
            // v0.1 lists acceptable SKUs without quantities: one unit of any of them.
            let items: Vec<Value> = skus.iter().map(|s| json!({"id": s, "title": s})).collect();
            constraints.push(json!({"type": "checkout.line_items",
                "items": [{"id": "intent", "acceptable_items": items, "quantity": 1}]}));
        }
        let exp = calendar::parse_rfc3339(&self.intent_expiry, DayEdge::End)
            .map_err(|_| V01Error::Date)?;
        Ok(json!({"vct": "mandate.checkout.open.1", "constraints": constraints, "exp": exp}))
    }

    /// The open payment contents carrying the v0.1 budget, when there is one.
    pub fn to_open_payment(&self) -> Result<Option<Value>, V01Error> {
        let Some(budget) = &self.budget else {
            return Ok(None);
        };
        let amount = budget.to_amount()?;
        let max: Number = amount
            .to_major_string()
            .parse()
            .map_err(|_| V01Error::Malformed("budget".into()))?;
        let exp = calendar::parse_rfc3339(&self.intent_expiry, DayEdge::End)
            .map_err(|_| V01Error::Date)?;
        Ok(Some(
            json!({"vct": "mandate.payment.open.1", "exp": exp, "constraints": [
            {"type": "payment.budget", "max": max, "currency": amount.currency().code()}]}),
        ))
    }
}

impl CartMandate {
    /// The cart as an (unsigned) UCP checkout object, for the merchant to sign as `checkout_jwt`.
    pub fn to_checkout(&self) -> Result<Value, V01Error> {
        let c = &self.contents;
        let total = c.payment_request.details.total.amount.to_amount()?;
        let mut lines = Vec::new();
        for (i, item) in c.payment_request.details.display_items.iter().enumerate() {
            let price = item.amount.to_amount()?;
            if price.currency() != total.currency() {
                return Err(V01Error::Amount(MoneyError::CurrencyMismatch));
            }
            lines.push(json!({"id": format!("li_{}", i + 1),
                "item": {"id": item.label, "title": item.label, "price": price.minor()},
                "quantity": 1, "totals": [{"type": "total", "amount": price.minor()}]}));
        }
        Ok(
            json!({"id": c.id, "merchant": {"id": c.merchant_name, "name": c.merchant_name},
            "line_items": lines, "status": "ready_for_complete", "currency": total.currency().code(),
            "totals": [{"type": "total", "amount": total.minor()}], "links": []}),
        )
    }
}

impl PaymentMandate {
    /// The closed payment contents, bound to the checkout JWT whose hash is `transaction_id`.
    pub fn to_closed_payment(
        &self,
        transaction_id: &str,
    ) -> Result<ClosedPaymentMandate, V01Error> {
        let c = &self.payment_mandate_contents;
        let method = &c.payment_response.method_name;
        Ok(ClosedPaymentMandate {
            transaction_id: transaction_id.to_owned(),
            payee: Merchant {
                id: c.merchant_agent.clone(),
                name: c.merchant_agent.clone(),
                website: None,
            },
            payment_amount: c.payment_details_total.amount.to_amount()?,
            payment_instrument: PaymentInstrument {
                id: method.clone(),
                kind: method.clone(),
                description: None,
            },
            pisp: None,
            execution_date: None,
        })
    }
}

/// The payment amount of a v0.1 payment mandate as v0.2 JSON.
pub fn payment_amount_value(m: &PaymentMandate) -> Result<Value, V01Error> {
    Ok(amount_value(
        &m.payment_mandate_contents
            .payment_details_total
            .amount
            .to_amount()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_amounts_convert_exactly_or_are_refused() {
        let ok: PaymentCurrencyAmount =
            serde_json::from_str(r#"{"currency":"USD","value":19.99}"#).unwrap();
        assert_eq!(ok.to_amount().unwrap().minor(), 1999);
        let jpy: PaymentCurrencyAmount =
            serde_json::from_str(r#"{"currency":"JPY","value":1500.5}"#).unwrap();
        assert_eq!(
            jpy.to_amount(),
            Err(V01Error::Amount(MoneyError::TooManyFractionDigits))
        );
        let kwd: PaymentCurrencyAmount =
            serde_json::from_str(r#"{"currency":"KWD","value":1.5}"#).unwrap();
        assert_eq!(kwd.to_amount().unwrap().minor(), 1500);
    }

    #[test]
    fn intent_translates_to_open_mandates() {
        let intent: IntentMandate = read(
            r#"{"natural_language_description":"boots",
            "merchants":["Northwind"],"skus":["boot42"],"intent_expiry":"2026-06-01T00:00:00Z",
            "budget":{"currency":"JPY","value":15000},"user_cart_confirmation_required":false}"#,
        )
        .unwrap();
        let open = intent.to_open_checkout().unwrap();
        assert_eq!(open["constraints"][0]["allowed"][0]["id"], "Northwind");
        assert_eq!(
            open["constraints"][1]["items"][0]["acceptable_items"][0]["id"],
            "boot42"
        );
        let pay = intent.to_open_payment().unwrap().unwrap();
        assert_eq!(
            pay["constraints"][0],
            json!({"type":"payment.budget","max":15000,"currency":"JPY"})
        );
    }

    #[test]
    fn cart_and_payment_translate() {
        let cart: CartMandate = read(
            r#"{"contents":{"id":"cart_1","merchant_name":"Northwind",
            "user_cart_confirmation_required":true,"cart_expiry":"2026-06-01T00:00:00Z",
            "payment_request":{"method_data":[],"details":{"id":"d1",
            "display_items":[{"label":"Boot","amount":{"currency":"USD","value":129.0}}],
            "total":{"label":"Total","amount":{"currency":"USD","value":129.0}}}}}}"#,
        )
        .unwrap();
        let checkout = cart.to_checkout().unwrap();
        assert_eq!(checkout["totals"][0]["amount"], 12900);
        assert_eq!(checkout["line_items"][0]["item"]["price"], 12900);

        let pm: PaymentMandate = read(r#"{"payment_mandate_contents":{"payment_mandate_id":"pm1",
            "payment_details_id":"d1","merchant_agent":"Northwind","timestamp":"2026-05-28T00:00:00Z",
            "payment_details_total":{"label":"Total","amount":{"currency":"USD","value":129.0}},
            "payment_response":{"request_id":"d1","method_name":"CARD"}}}"#).unwrap();
        let closed = pm.to_closed_payment("tx").unwrap();
        assert_eq!(closed.payment_amount.minor(), 12900);
        assert_eq!(
            payment_amount_value(&pm).unwrap(),
            json!({"amount":12900,"currency":"USD"})
        );
    }
}
