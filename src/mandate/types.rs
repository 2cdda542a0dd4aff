//! AP2 v0.2 mandate contents: the four `vct`s and the objects they carry.
//!
//! Parsed from a verified chain's resolved delegate objects. Field names follow the AP2 schemas
//! (`code/sdk/schemas/ap2`); amounts are integer minor units. The schemas allow members they do
//! not name, so unknown members of mandates are ignored here, but never those of constraints.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::constraint::Constraint;
use super::Error;
use crate::jose::PublicJwk;
use crate::money::{Amount, Currency};

/// The exact AP2 v0.2 mandate types (`vct`), compared byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vct {
    /// `mandate.checkout.open.1`: what an agent may put in a checkout.
    CheckoutOpen,
    /// `mandate.checkout.1`: approval of one checkout.
    Checkout,
    /// `mandate.payment.open.1`: what an agent may pay.
    PaymentOpen,
    /// `mandate.payment.1`: approval of one payment.
    Payment,
}

impl Vct {
    /// Reads a `vct` value; anything but the four exact strings is refused.
    pub fn parse(text: &str) -> Option<Vct> {
        match text {
            "mandate.checkout.open.1" => Some(Vct::CheckoutOpen),
            "mandate.checkout.1" => Some(Vct::Checkout),
            "mandate.payment.open.1" => Some(Vct::PaymentOpen),
            "mandate.payment.1" => Some(Vct::Payment),
            _ => None,
        }
    }

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Vct::CheckoutOpen => "mandate.checkout.open.1",
            Vct::Checkout => "mandate.checkout.1",
            Vct::PaymentOpen => "mandate.payment.open.1",
            Vct::Payment => "mandate.payment.1",
        }
    }

    /// The `vct` of a delegate object, checked against what its place in the chain requires.
    pub(crate) fn expect(obj: &Map<String, Value>, want: Vct) -> Result<(), Error> {
        let found = obj.get("vct").and_then(Value::as_str).and_then(Vct::parse);
        if found == Some(want) {
            Ok(())
        } else {
            Err(Error::WrongVct)
        }
    }
}

/// A merchant or payee (AP2 `Merchant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// The merchant's identifier; the only member compared by constraints.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The merchant's website.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
}

/// A payment instrument (AP2 `PaymentInstrument`); other members are allowed and kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentInstrument {
    /// The instrument's identifier.
    pub id: String,
    /// The instrument type, such as `card`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Display text, such as `Visa ****4242`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A payment initiation service provider (AP2 `PISP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pisp {
    /// Legal name.
    pub legal_name: String,
    /// Brand name.
    pub brand_name: String,
    /// Domain name.
    pub domain_name: String,
}

/// An AP2 `Amount` as it is on the wire: integer minor units and a currency code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireAmount {
    amount: i64,
    currency: String,
}

/// An open checkout mandate (`mandate.checkout.open.1`).
#[derive(Debug, Clone)]
pub struct OpenCheckoutMandate {
    /// The constraints, as revealed.
    pub constraints: Vec<Constraint>,
    /// The key allowed to close it.
    pub cnf: PublicJwk,
}

/// A closed checkout mandate (`mandate.checkout.1`).
#[derive(Debug, Clone)]
pub struct ClosedCheckoutMandate {
    /// The merchant's checkout JWT, when disclosed.
    pub checkout_jwt: Option<String>,
    /// base64url SHA-256 of the checkout JWT it approves.
    pub checkout_hash: String,
}

/// An open payment mandate (`mandate.payment.open.1`).
#[derive(Debug, Clone)]
pub struct OpenPaymentMandate {
    /// The constraints, as revealed.
    pub constraints: Vec<Constraint>,
    /// The key allowed to close it.
    pub cnf: PublicJwk,
    /// Fields fixed in advance that the closed mandate must repeat unchanged.
    pub preset: PaymentPreset,
}

/// Closed-payment fields an open payment mandate may fix in advance.
#[derive(Debug, Clone, Default)]
pub struct PaymentPreset {
    /// A fixed payee.
    pub payee: Option<Merchant>,
    /// A fixed amount.
    pub payment_amount: Option<Amount>,
    /// A fixed instrument.
    pub payment_instrument: Option<PaymentInstrument>,
    /// A fixed PISP.
    pub pisp: Option<Pisp>,
    /// A fixed execution date.
    pub execution_date: Option<String>,
}

/// A closed payment mandate (`mandate.payment.1`).
#[derive(Debug, Clone)]
pub struct ClosedPaymentMandate {
    /// base64url SHA-256 of the checkout JWT being paid.
    pub transaction_id: String,
    /// Who is paid.
    pub payee: Merchant,
    /// How much.
    pub payment_amount: Amount,
    /// With what.
    pub payment_instrument: PaymentInstrument,
    /// Through which PISP, if any.
    pub pisp: Option<Pisp>,
    /// When (RFC 3339); absent means immediately.
    pub execution_date: Option<String>,
}

impl OpenCheckoutMandate {
    /// Reads the content of a (resolved) mandate object; this checks shape and type only.
    pub fn from_delegate(obj: &Map<String, Value>) -> Result<Self, Error> {
        Self::with_key(obj, cnf(obj)?)
    }

    /// Reads the content, with the `cnf` key already parsed by the chain.
    pub(crate) fn with_key(obj: &Map<String, Value>, cnf: PublicJwk) -> Result<Self, Error> {
        Vct::expect(obj, Vct::CheckoutOpen)?;
        expiry(obj)?;
        Ok(OpenCheckoutMandate {
            constraints: constraints(obj)?,
            cnf,
        })
    }
}

impl ClosedCheckoutMandate {
    /// Reads the content of a (resolved) mandate object; this checks shape and type only.
    pub fn from_delegate(obj: &Map<String, Value>) -> Result<Self, Error> {
        Vct::expect(obj, Vct::Checkout)?;
        let checkout_jwt = match obj.get("checkout_jwt") {
            None => None,
            Some(Value::String(jwt)) => Some(jwt.clone()),
            Some(_) => return Err(Error::Malformed("checkout_jwt")),
        };
        let checkout_hash = string(obj, "checkout_hash")?;
        Ok(ClosedCheckoutMandate {
            checkout_jwt,
            checkout_hash,
        })
    }
}

impl OpenPaymentMandate {
    /// Reads the content of a (resolved) mandate object; this checks shape and type only.
    pub fn from_delegate(obj: &Map<String, Value>) -> Result<Self, Error> {
        Self::with_key(obj, cnf(obj)?)
    }

    /// Reads the content, with the `cnf` key already parsed by the chain.
    pub(crate) fn with_key(obj: &Map<String, Value>, cnf: PublicJwk) -> Result<Self, Error> {
        Vct::expect(obj, Vct::PaymentOpen)?;
        expiry(obj)?;
        let preset = PaymentPreset {
            payee: optional(obj, "payee")?,
            payment_amount: optional::<WireAmount>(obj, "payment_amount")?
                .map(amount)
                .transpose()?,
            payment_instrument: optional(obj, "payment_instrument")?,
            pisp: optional(obj, "pisp")?,
            execution_date: optional(obj, "execution_date")?,
        };
        Ok(OpenPaymentMandate {
            constraints: constraints(obj)?,
            cnf,
            preset,
        })
    }
}

impl ClosedPaymentMandate {
    /// Reads the content of a (resolved) mandate object; this checks shape and type only.
    pub fn from_delegate(obj: &Map<String, Value>) -> Result<Self, Error> {
        Vct::expect(obj, Vct::Payment)?;
        let wire: WireAmount = required(obj, "payment_amount")?;
        Ok(ClosedPaymentMandate {
            transaction_id: string(obj, "transaction_id")?,
            payee: required(obj, "payee")?,
            payment_amount: amount(wire)?,
            payment_instrument: required(obj, "payment_instrument")?,
            pisp: optional(obj, "pisp")?,
            execution_date: optional(obj, "execution_date")?,
        })
    }

    /// The closed content as AP2 JSON (for building mandates).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("vct".into(), Vct::Payment.as_str().into());
        m.insert("transaction_id".into(), self.transaction_id.clone().into());
        m.insert(
            "payee".into(),
            serde_json::to_value(&self.payee).unwrap_or(Value::Null),
        );
        m.insert("payment_amount".into(), amount_value(&self.payment_amount));
        m.insert(
            "payment_instrument".into(),
            serde_json::to_value(&self.payment_instrument).unwrap_or(Value::Null),
        );
        if let Some(pisp) = &self.pisp {
            m.insert(
                "pisp".into(),
                serde_json::to_value(pisp).unwrap_or(Value::Null),
            );
        }
        if let Some(date) = &self.execution_date {
            m.insert("execution_date".into(), date.clone().into());
        }
        Value::Object(m)
    }
}

/// An amount as AP2 JSON: `{"amount": <minor>, "currency": "<code>"}`.
pub fn amount_value(a: &Amount) -> Value {
    serde_json::json!({ "amount": a.minor(), "currency": a.currency().code() })
}

fn amount(wire: WireAmount) -> Result<Amount, Error> {
    let currency = Currency::from_code(&wire.currency).map_err(|_| Error::Malformed("currency"))?;
    Amount::from_minor_i64(wire.amount, currency).map_err(|_| Error::Malformed("amount"))
}

/// An open mandate is standing authority: it must say when it ends (the chain checked the value).
fn expiry(obj: &Map<String, Value>) -> Result<i64, Error> {
    obj.get("exp")
        .and_then(Value::as_i64)
        .ok_or(Error::Malformed("exp"))
}

fn constraints(obj: &Map<String, Value>) -> Result<Vec<Constraint>, Error> {
    let list = obj
        .get("constraints")
        .and_then(Value::as_array)
        .ok_or(Error::Malformed("constraints"))?;
    list.iter().map(Constraint::parse).collect()
}

fn cnf(obj: &Map<String, Value>) -> Result<PublicJwk, Error> {
    let jwk = obj
        .get("cnf")
        .and_then(|c| c.get("jwk"))
        .ok_or(Error::Malformed("cnf"))?;
    PublicJwk::from_value(jwk).map_err(|_| Error::Malformed("cnf"))
}

fn string(obj: &Map<String, Value>, name: &'static str) -> Result<String, Error> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Error::Malformed(name)),
    }
}

fn required<T: for<'de> Deserialize<'de>>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<T, Error> {
    let value = obj.get(name).ok_or(Error::Malformed(name))?;
    T::deserialize(value).map_err(|_| Error::Malformed(name))
}

fn optional<T: for<'de> Deserialize<'de>>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, Error> {
    obj.get(name)
        .map(|v| T::deserialize(v).map_err(|_| Error::Malformed(name)))
        .transpose()
}
