//! Mandate contents in plain words, for people: the CLI's `inspect` and the consent page.
//!
//! Deterministic: the same content always reads the same. Amounts are written in their
//! currency's own precision (JPY without decimals, KWD with three); ids follow names in
//! parentheses so look-alike names cannot hide a different merchant.

use super::constraint::{Constraint, Frequency};
use super::types::{ClosedPaymentMandate, Merchant, PaymentInstrument, Pisp};
use crate::calendar::format_utc;
use crate::money::{Amount, Currency};

/// One constraint in words.
pub fn constraint(c: &Constraint) -> String {
    match c {
        Constraint::AllowedMerchants(list) => {
            format!("merchant must be one of: {}", merchants(list))
        }
        Constraint::LineItems(reqs) => {
            let parts: Vec<String> = reqs
                .iter()
                .map(|r| {
                    let items: Vec<String> = r
                        .acceptable_items
                        .iter()
                        .map(|a| format!("{} ({})", a.title, a.id))
                        .collect();
                    let items = if items.is_empty() {
                        "nothing revealed".to_owned()
                    } else {
                        items.join(" or ")
                    };
                    format!("{} x {}", r.quantity, items)
                })
                .collect();
            format!("cart must be exactly: {}", parts.join("; "))
        }
        Constraint::AmountRange { currency, min, max } => {
            format!(
                "each payment from {} to {}",
                minor(*min, *currency),
                minor(*max, *currency)
            )
        }
        Constraint::AllowedPayees(list) => format!("payee must be one of: {}", merchants(list)),
        Constraint::AllowedPaymentInstruments(list) => {
            format!(
                "pay only with: {}",
                list_or_none(list.iter().map(instrument).collect())
            )
        }
        Constraint::AllowedPisps(list) => format!(
            "only through: {}",
            list_or_none(list.iter().map(pisp).collect())
        ),
        Constraint::Reference {
            conditional_transaction_id,
        } => {
            format!("pays only the order of open checkout {conditional_transaction_id}")
        }
        Constraint::ExecutionDate {
            not_before,
            not_after,
        } => {
            let from = not_before.map_or("any time".to_owned(), format_utc);
            let to = not_after.map_or("any time".to_owned(), format_utc);
            format!("executed from {from} to {to}")
        }
        Constraint::AgentRecurrence {
            frequency,
            max_occurrences,
        } => {
            let times = max_occurrences.map_or("any number of times".to_owned(), |n| {
                format!("at most {n} times")
            });
            format!("{times}, {}", frequency_words(*frequency))
        }
        Constraint::Budget(max) => format!("in total at most {max}"),
        Constraint::Unknown(name) => {
            format!("UNKNOWN constraint `{name}`: cannot be evaluated, so it is refused")
        }
    }
}

/// A closed payment in words.
pub fn closed_payment(p: &ClosedPaymentMandate) -> String {
    let mut text = format!(
        "pay {} to {} with {}",
        p.payment_amount,
        merchant(&p.payee),
        instrument(&p.payment_instrument)
    );
    if let Some(x) = &p.pisp {
        text.push_str(&format!(" through {}", pisp(x)));
    }
    if let Some(date) = &p.execution_date {
        text.push_str(&format!(" on {date}"));
    }
    text
}

/// A merchant as `Name (id)`.
pub fn merchant(m: &Merchant) -> String {
    format!("{} ({})", m.name, m.id)
}

fn merchants(list: &[Merchant]) -> String {
    list_or_none(list.iter().map(merchant).collect())
}

fn instrument(i: &PaymentInstrument) -> String {
    match &i.description {
        Some(d) => format!("{d} ({}, {})", i.kind, i.id),
        None => format!("{} ({})", i.kind, i.id),
    }
}

fn pisp(p: &Pisp) -> String {
    format!("{} / {} ({})", p.brand_name, p.legal_name, p.domain_name)
}

fn list_or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "nothing revealed (so nothing is allowed)".to_owned()
    } else {
        items.join(", ")
    }
}

fn minor(value: u64, currency: Currency) -> String {
    Amount::from_minor(value, currency).map_or_else(
        |_| format!("{value} (minor units) {currency}"),
        |a| a.to_string(),
    )
}

fn frequency_words(f: Frequency) -> &'static str {
    match f {
        Frequency::OnDemand => "whenever needed",
        Frequency::Daily => "at most once a day",
        Frequency::Weekly => "at most once a week",
        Frequency::Biweekly => "at most once every two weeks",
        Frequency::Monthly => "at most once a month",
        Frequency::Quarterly => "at most once a quarter",
        Frequency::Annually => "at most once a year",
    }
}
