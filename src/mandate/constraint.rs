//! The ten AP2 v0.2 constraint types: parsing and strict evaluation.
//!
//! Parsing is strict: a constraint object may carry only the members its type defines, and a
//! type (or member) we do not know becomes [`Constraint::Unknown`], which never evaluates true
//! (`unresolved_constraint`). Allow-lists compare ids byte for byte; an allow-list with nothing
//! revealed allows nothing. Budgets and recurrence read a caller-supplied [`Usage`].

use serde::Deserialize;
use serde_json::{Map, Value};

use super::checkout::CheckoutJwt;
use super::line_items;
use super::types::{ClosedPaymentMandate, Merchant, PaymentInstrument, Pisp};
use super::{Error, Violation};
use crate::calendar::{self, DayEdge};
use crate::money::{Amount, Currency};

/// One constraint of an open mandate.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// `checkout.allowed_merchants`: the checkout's merchant must be revealed here.
    AllowedMerchants(Vec<Merchant>),
    /// `checkout.line_items`: the cart must match the requirements exactly.
    LineItems(Vec<LineItemRequirement>),
    /// `payment.amount_range`: inclusive bounds in minor units of one currency.
    AmountRange {
        /// The only currency allowed.
        currency: Currency,
        /// Lowest amount (0 when absent).
        min: u64,
        /// Highest amount.
        max: u64,
    },
    /// `payment.allowed_payees`: the payee must be revealed here.
    AllowedPayees(Vec<Merchant>),
    /// `payment.allowed_payment_instruments`: the instrument must be revealed here.
    AllowedPaymentInstruments(Vec<PaymentInstrument>),
    /// `payment.allowed_pisps`: the PISP must be listed here, all three names equal.
    AllowedPisps(Vec<Pisp>),
    /// `payment.reference`: the open checkout mandate this payment belongs to.
    Reference {
        /// base64url SHA-256 of the open checkout SD-JWT as presented.
        conditional_transaction_id: String,
    },
    /// `payment.execution_date`: the execution instant must fall in the window.
    ExecutionDate {
        /// Earliest instant (Unix seconds), inclusive.
        not_before: Option<i64>,
        /// Latest instant (Unix seconds), inclusive.
        not_after: Option<i64>,
    },
    /// `payment.agent_recurrence`: how often and how many times.
    AgentRecurrence {
        /// Least spacing between two uses.
        frequency: Frequency,
        /// Most uses in all.
        max_occurrences: Option<u64>,
    },
    /// `payment.budget`: the running total may not pass `max` (converted exactly from major units).
    Budget(Amount),
    /// A type or member we cannot evaluate; it always fails as `unresolved_constraint`.
    Unknown(String),
}

/// One `checkout.line_items` requirement, as revealed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LineItemRequirement {
    /// The requirement's id.
    pub id: String,
    /// The revealed acceptable items (withheld ones are absent and match nothing).
    pub acceptable_items: Vec<AcceptableItem>,
    /// How many units the checkout must contain, exactly.
    pub quantity: u64,
}

/// An item a requirement accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AcceptableItem {
    /// The item (SKU) id.
    pub id: String,
    /// Its title.
    pub title: String,
}

/// `payment.agent_recurrence` frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Frequency {
    /// No spacing.
    OnDemand,
    /// One calendar day.
    Daily,
    /// Seven days.
    Weekly,
    /// Fourteen days.
    Biweekly,
    /// One calendar month.
    Monthly,
    /// Three calendar months.
    Quarterly,
    /// One calendar year.
    Annually,
}

impl Frequency {
    /// The earliest next use after a use at `last` (Unix seconds).
    pub fn next_allowed(self, last: i64) -> i64 {
        match self {
            Frequency::OnDemand => last,
            Frequency::Daily => last + 86_400,
            Frequency::Weekly => last + 7 * 86_400,
            Frequency::Biweekly => last + 14 * 86_400,
            Frequency::Monthly => calendar::add_months(last, 1),
            Frequency::Quarterly => calendar::add_months(last, 3),
            Frequency::Annually => calendar::add_months(last, 12),
        }
    }
}

/// What the verifier's ledger says about earlier accepted payments under one open mandate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total of earlier accepted payments, in minor units of the mandate's currency.
    pub total_minor: u64,
    /// How many payments were accepted before.
    pub uses: u64,
    /// When the latest one was accepted (Unix seconds).
    pub last_use: Option<i64>,
}

/// What a payment constraint is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFacts<'a> {
    /// The closed payment mandate.
    pub closed: &'a ClosedPaymentMandate,
    /// The open checkout hash of this order, if an open checkout was presented.
    pub open_checkout_hash: Option<&'a str>,
    /// Earlier use of the open mandate.
    pub usage: &'a Usage,
    /// The verifier's clock.
    pub now: i64,
}

impl Constraint {
    /// Parses one constraint object.
    pub fn parse(value: &Value) -> Result<Constraint, Error> {
        let obj = value.as_object().ok_or(Error::Malformed("constraint"))?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or(Error::Malformed("constraint type"))?;
        let Some(members) = known_members(kind) else {
            return Ok(Constraint::Unknown(kind.to_owned()));
        };
        if let Some(extra) = obj
            .keys()
            .find(|k| *k != "type" && !members.contains(&k.as_str()))
        {
            return Ok(Constraint::Unknown(format!("{kind}.{extra}")));
        }
        Self::parse_known(kind, obj).map_err(|_| Error::Malformed("constraint"))
    }

    fn parse_known(kind: &str, obj: &Map<String, Value>) -> Result<Constraint, Error> {
        let bad = |_| Error::Malformed("constraint");
        let field = |name: &'static str| obj.get(name).ok_or(Error::Malformed("constraint"));
        Ok(match kind {
            "checkout.allowed_merchants" => {
                Constraint::AllowedMerchants(Vec::deserialize(field("allowed")?).map_err(bad)?)
            }
            "checkout.line_items" => {
                let items: Vec<LineItemRequirement> =
                    Vec::deserialize(field("items")?).map_err(bad)?;
                if items.is_empty() || items.iter().any(|r| r.quantity == 0) {
                    return Err(Error::Malformed("constraint"));
                }
                Constraint::LineItems(items)
            }
            "payment.amount_range" => parse_amount_range(obj)?,
            "payment.allowed_payees" => {
                Constraint::AllowedPayees(Vec::deserialize(field("allowed")?).map_err(bad)?)
            }
            "payment.allowed_payment_instruments" => Constraint::AllowedPaymentInstruments(
                Vec::deserialize(field("allowed")?).map_err(bad)?,
            ),
            "payment.allowed_pisps" => {
                Constraint::AllowedPisps(Vec::deserialize(field("allowed")?).map_err(bad)?)
            }
            "payment.reference" => Constraint::Reference {
                conditional_transaction_id: String::deserialize(field(
                    "conditional_transaction_id",
                )?)
                .map_err(bad)?,
            },
            "payment.execution_date" => Constraint::ExecutionDate {
                not_before: date_bound(obj, "not_before", DayEdge::Start)?,
                not_after: date_bound(obj, "not_after", DayEdge::End)?,
            },
            "payment.agent_recurrence" => Constraint::AgentRecurrence {
                frequency: Frequency::deserialize(field("frequency")?).map_err(bad)?,
                max_occurrences: obj
                    .get("max_occurrences")
                    .map(u64::deserialize)
                    .transpose()
                    .map_err(bad)?,
            },
            "payment.budget" => {
                let currency = currency(field("currency")?)?;
                let max = field("max")?
                    .as_number()
                    .ok_or(Error::Malformed("constraint"))?;
                Constraint::Budget(
                    Amount::from_json_number(max, currency)
                        .map_err(|_| Error::Malformed("budget"))?,
                )
            }
            _ => return Err(Error::Malformed("constraint")),
        })
    }

    /// The constraint's type, as on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            Constraint::AllowedMerchants(_) => "checkout.allowed_merchants",
            Constraint::LineItems(_) => "checkout.line_items",
            Constraint::AmountRange { .. } => "payment.amount_range",
            Constraint::AllowedPayees(_) => "payment.allowed_payees",
            Constraint::AllowedPaymentInstruments(_) => "payment.allowed_payment_instruments",
            Constraint::AllowedPisps(_) => "payment.allowed_pisps",
            Constraint::Reference { .. } => "payment.reference",
            Constraint::ExecutionDate { .. } => "payment.execution_date",
            Constraint::AgentRecurrence { .. } => "payment.agent_recurrence",
            Constraint::Budget(_) => "payment.budget",
            Constraint::Unknown(name) => name,
        }
    }

    /// Evaluates a checkout constraint against the verified checkout.
    pub fn evaluate_checkout(&self, checkout: &CheckoutJwt) -> Result<(), Error> {
        match self {
            Constraint::AllowedMerchants(allowed) => {
                let merchant = checkout
                    .merchant()
                    .ok_or(Error::Violated(Violation::MerchantNotAllowed))?;
                check(
                    id_allowed(allowed.iter().map(|m| m.id.as_str()), &merchant.id),
                    Violation::MerchantNotAllowed,
                )
            }
            Constraint::LineItems(requirements) => check(
                line_items::satisfied(requirements, checkout.cart()),
                Violation::LineItemsNotMatched,
            ),
            _ => Err(Error::UnresolvedConstraint),
        }
    }

    /// Evaluates a payment constraint against the closed payment and the usage so far.
    pub fn evaluate_payment(&self, facts: &PaymentFacts<'_>) -> Result<(), Error> {
        let closed = facts.closed;
        let amount = &closed.payment_amount;
        match self {
            Constraint::AmountRange { currency, min, max } => {
                check(amount.currency() == *currency, Violation::CurrencyMismatch)?;
                check(
                    (*min..=*max).contains(&amount.minor()),
                    Violation::AmountOutOfRange,
                )
            }
            Constraint::AllowedPayees(allowed) => check(
                id_allowed(allowed.iter().map(|m| m.id.as_str()), &closed.payee.id),
                Violation::PayeeNotAllowed,
            ),
            Constraint::AllowedPaymentInstruments(allowed) => check(
                id_allowed(
                    allowed.iter().map(|i| i.id.as_str()),
                    &closed.payment_instrument.id,
                ),
                Violation::InstrumentNotAllowed,
            ),
            Constraint::AllowedPisps(allowed) => {
                let ok = closed.pisp.as_ref().is_some_and(|p| allowed.contains(p));
                check(ok, Violation::PispNotAllowed)
            }
            Constraint::Reference {
                conditional_transaction_id,
            } => {
                let ok = facts
                    .open_checkout_hash
                    .is_some_and(|h| h.as_bytes() == conditional_transaction_id.as_bytes());
                check(ok, Violation::ReferenceMismatch)
            }
            Constraint::ExecutionDate {
                not_before,
                not_after,
            } => execution_date(closed, *not_before, *not_after, facts.now),
            Constraint::AgentRecurrence {
                frequency,
                max_occurrences,
            } => recurrence(*frequency, *max_occurrences, facts),
            Constraint::Budget(max) => {
                check(
                    amount.currency() == max.currency(),
                    Violation::CurrencyMismatch,
                )?;
                let total = facts.usage.total_minor.checked_add(amount.minor());
                check(
                    total.is_some_and(|t| t <= max.minor()),
                    Violation::BudgetExceeded,
                )
            }
            _ => Err(Error::UnresolvedConstraint),
        }
    }
}

fn known_members(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "checkout.allowed_merchants"
        | "payment.allowed_payees"
        | "payment.allowed_payment_instruments"
        | "payment.allowed_pisps" => &["allowed"],
        "checkout.line_items" => &["items"],
        "payment.amount_range" => &["currency", "min", "max"],
        "payment.reference" => &["conditional_transaction_id"],
        "payment.execution_date" => &["not_before", "not_after"],
        "payment.agent_recurrence" => &["frequency", "max_occurrences"],
        "payment.budget" => &["max", "currency"],
        _ => return None,
    })
}

fn parse_amount_range(obj: &Map<String, Value>) -> Result<Constraint, Error> {
    let bad = Error::Malformed("amount_range");
    let currency = currency(obj.get("currency").ok_or(bad)?)?;
    let max = obj.get("max").and_then(Value::as_u64).ok_or(bad)?;
    let min = match obj.get("min") {
        None => 0,
        Some(v) => v.as_u64().ok_or(bad)?,
    };
    if min > max || max > i64::MAX as u64 {
        return Err(bad);
    }
    Ok(Constraint::AmountRange { currency, min, max })
}

fn currency(value: &Value) -> Result<Currency, Error> {
    let code = value.as_str().ok_or(Error::Malformed("currency"))?;
    Currency::from_code(code).map_err(|_| Error::Malformed("currency"))
}

fn date_bound(
    obj: &Map<String, Value>,
    name: &'static str,
    edge: DayEdge,
) -> Result<Option<i64>, Error> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => calendar::parse_rfc3339(text, edge)
            .map(Some)
            .map_err(|_| Error::Malformed(name)),
        Some(_) => Err(Error::Malformed(name)),
    }
}

fn execution_date(
    closed: &ClosedPaymentMandate,
    not_before: Option<i64>,
    not_after: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    // Absent means "immediately": the window applies to now.
    let when = match &closed.execution_date {
        None => now,
        Some(text) => calendar::parse_rfc3339(text, DayEdge::Start)
            .map_err(|_| Error::Malformed("execution_date"))?,
    };
    let ok = not_before.is_none_or(|nb| when >= nb) && not_after.is_none_or(|na| when <= na);
    check(ok, Violation::ExecutionDateOutsideWindow)
}

fn recurrence(
    frequency: Frequency,
    max: Option<u64>,
    facts: &PaymentFacts<'_>,
) -> Result<(), Error> {
    if let Some(max) = max {
        check(facts.usage.uses < max, Violation::RecurrenceLimitReached)?;
    }
    if let Some(last) = facts.usage.last_use {
        check(
            facts.now >= frequency.next_allowed(last),
            Violation::RecurrenceTooSoon,
        )?;
    }
    Ok(())
}

/// True when `id` is non-empty and equals (as bytes) one revealed id.
fn id_allowed<'a>(mut allowed: impl Iterator<Item = &'a str>, id: &str) -> bool {
    !id.is_empty() && allowed.any(|a| a.as_bytes() == id.as_bytes())
}

fn check(ok: bool, violation: Violation) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Violated(violation))
    }
}
