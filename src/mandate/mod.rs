//! AP2 v0.2 mandates: types, constraints, verification of checkout and payment chains, receipts,
//! and reading AP2 v0.1 JSON.
//!
//! [`Verifier`] turns an [`UnverifiedChain`](crate::sdjwt::UnverifiedChain) into a
//! [`VerifiedCheckoutMandate`] or [`VerifiedPaymentMandate`] given the verified merchant
//! checkout and the bindings the spec makes mandatory. Every refusal is an [`Error`] that keeps
//! its precise reason for our logs and maps to one AP2 code for the wire. Replay and spending
//! state are not kept here: the caller passes [`Usage`] in and records the decision itself.

pub mod build;
mod checkout;
mod constraint;
pub mod describe;
mod line_items;
mod receipt;
mod types;
pub mod v01;
mod verify;

pub use checkout::CheckoutJwt;
pub use constraint::{
    AcceptableItem, Constraint, Frequency, LineItemRequirement, PaymentFacts, Usage,
};
pub use line_items::CartLine;
pub use receipt::{CheckoutReceipt, PaymentReceipt, ReceiptStatus};
pub use types::{
    amount_value, ClosedCheckoutMandate, ClosedPaymentMandate, Merchant, OpenCheckoutMandate,
    OpenPaymentMandate, PaymentInstrument, PaymentPreset, Pisp, Vct,
};
pub use verify::{
    PaymentBindings, Policy, PolicyError, Trust, VerifiedCheckoutMandate, VerifiedPaymentMandate,
    Verifier,
};

use crate::{jose, sdjwt};

/// The AP2 error codes a verifier answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ap2Code {
    /// The mandate does not verify (signature, trust, binding, disclosure, time, type).
    InvalidCredential,
    /// The mandate verifies but does not approve this action.
    InvalidMandate,
    /// A constraint cannot be evaluated (unknown type).
    UnresolvedConstraint,
    /// The verifier does not accept mandates for this action.
    MandatesNotSupported,
}

impl Ap2Code {
    /// The code as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Ap2Code::InvalidCredential => "invalid_credential",
            Ap2Code::InvalidMandate => "invalid_mandate",
            Ap2Code::UnresolvedConstraint => "unresolved_constraint",
            Ap2Code::MandatesNotSupported => "mandates_not_supported",
        }
    }

    /// The fixed description shown to callers (details stay in our logs).
    pub fn description(self) -> &'static str {
        match self {
            Ap2Code::InvalidCredential => "The mandate could not be verified.",
            Ap2Code::InvalidMandate => "The mandate does not approve this action.",
            Ap2Code::UnresolvedConstraint => {
                "The mandate has a constraint this verifier cannot evaluate."
            }
            Ap2Code::MandatesNotSupported => {
                "This verifier does not accept mandates for this action."
            }
        }
    }
}

/// A constraint or binding that evaluated false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The checkout's merchant is not among the revealed allowed merchants.
    MerchantNotAllowed,
    /// The cart does not match the line-item requirements exactly.
    LineItemsNotMatched,
    /// The amount is outside `payment.amount_range`.
    AmountOutOfRange,
    /// The payment's currency differs from the constraint's.
    CurrencyMismatch,
    /// The payee is not among the revealed allowed payees.
    PayeeNotAllowed,
    /// The instrument is not among the revealed allowed instruments.
    InstrumentNotAllowed,
    /// The PISP is missing or not allowed.
    PispNotAllowed,
    /// `payment.reference` does not name this order's open checkout.
    ReferenceMismatch,
    /// The execution instant is outside `payment.execution_date`.
    ExecutionDateOutsideWindow,
    /// `max_occurrences` is reached.
    RecurrenceLimitReached,
    /// The previous use is closer than `frequency` allows.
    RecurrenceTooSoon,
    /// The running total would pass `payment.budget`.
    BudgetExceeded,
    /// A field the open mandate fixed differs in the closed one.
    PresetMismatch,
    /// A constraint type the verifier's policy requires is absent.
    RequiredConstraintMissing,
}

impl Violation {
    /// A stable reason code for logs and the `reasons` list.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::MerchantNotAllowed => "merchant_not_allowed",
            Violation::LineItemsNotMatched => "line_items_not_matched",
            Violation::AmountOutOfRange => "amount_out_of_range",
            Violation::CurrencyMismatch => "currency_mismatch",
            Violation::PayeeNotAllowed => "payee_not_allowed",
            Violation::InstrumentNotAllowed => "instrument_not_allowed",
            Violation::PispNotAllowed => "pisp_not_allowed",
            Violation::ReferenceMismatch => "payment_reference_mismatch",
            Violation::ExecutionDateOutsideWindow => "execution_date_outside_window",
            Violation::RecurrenceLimitReached => "recurrence_limit_reached",
            Violation::RecurrenceTooSoon => "recurrence_too_soon",
            Violation::BudgetExceeded => "budget_exceeded",
            Violation::PresetMismatch => "preset_mismatch",
            Violation::RequiredConstraintMissing => "required_constraint_missing",
        }
    }
}

/// Why a mandate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The chain failed a signature, trust, binding, disclosure or time check.
    #[error("chain refused: {0}")]
    Chain(#[from] sdjwt::Error),
    /// A mandate's `vct` is not the exact type its place requires.
    #[error("wrong vct")]
    WrongVct,
    /// A mandate's content does not match the AP2 schema.
    #[error("malformed mandate: {0}")]
    Malformed(&'static str),
    /// A closed mandate signed by the issuer alone, and the policy does not accept those.
    #[error("issuer-signed closed mandates are not accepted")]
    IssuerSignedClosedNotAllowed,
    /// The checkout JWT is not signed by a trusted merchant key.
    #[error("checkout JWT not trusted: {0}")]
    CheckoutUntrusted(jose::Error),
    /// The checkout JWT's content is not a UCP checkout we can read.
    #[error("malformed checkout JWT")]
    MalformedCheckout,
    /// The checkout has expired.
    #[error("checkout expired")]
    CheckoutExpired,
    /// `checkout_hash` does not match the presented checkout JWT.
    #[error("checkout_hash mismatch")]
    CheckoutHashMismatch,
    /// The checkout JWT inside the mandate is not the presented one.
    #[error("embedded checkout JWT differs from the presented one")]
    CheckoutJwtMismatch,
    /// `transaction_id` does not match the presented checkout JWT.
    #[error("transaction_id mismatch")]
    TransactionIdMismatch,
    /// The payment amount or currency differs from the checkout total.
    #[error("payment amount differs from the checkout total")]
    AmountMismatch,
    /// The payee is not the checkout's merchant.
    #[error("payee differs from the checkout merchant")]
    PayeeMismatch,
    /// A constraint evaluated false.
    #[error("constraint violated: {}", .0.reason())]
    Violated(Violation),
    /// A constraint cannot be evaluated.
    #[error("unresolved constraint")]
    UnresolvedConstraint,
}

impl Error {
    /// The AP2 code this refusal maps to.
    pub fn code(&self) -> Ap2Code {
        match self {
            Error::Chain(_)
            | Error::WrongVct
            | Error::Malformed(_)
            | Error::IssuerSignedClosedNotAllowed => Ap2Code::InvalidCredential,
            Error::UnresolvedConstraint => Ap2Code::UnresolvedConstraint,
            _ => Ap2Code::InvalidMandate,
        }
    }

    /// A precise, stable reason code (for logs and the verifier's `reasons`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Chain(e) => chain_reason(e),
            Error::WrongVct => "wrong_vct",
            Error::Malformed(_) => "malformed_mandate",
            Error::IssuerSignedClosedNotAllowed => "issuer_signed_closed_not_allowed",
            Error::CheckoutUntrusted(_) => "checkout_jwt_untrusted",
            Error::MalformedCheckout => "checkout_jwt_malformed",
            Error::CheckoutExpired => "checkout_expired",
            Error::CheckoutHashMismatch => "checkout_hash_mismatch",
            Error::CheckoutJwtMismatch => "checkout_jwt_mismatch",
            Error::TransactionIdMismatch => "transaction_id_mismatch",
            Error::AmountMismatch => "amount_mismatch",
            Error::PayeeMismatch => "payee_mismatch",
            Error::Violated(v) => v.reason(),
            Error::UnresolvedConstraint => "unresolved_constraint",
        }
    }
}

fn chain_reason(e: &sdjwt::Error) -> &'static str {
    use sdjwt::Error as E;
    match e {
        E::Malformed => "chain_malformed",
        E::TooLarge => "chain_too_large",
        E::Jws(jose::Error::InvalidSignature) => "invalid_signature",
        E::Jws(jose::Error::AlgorithmNotAllowed) => "algorithm_not_allowed",
        E::Jws(_) => "jws_header_refused",
        E::UntrustedIssuer => "untrusted_issuer",
        E::UnsupportedHashAlgorithm => "unsupported_sd_alg",
        E::DuplicateDisclosure | E::DuplicateDigest => "duplicate_disclosure",
        E::UnreferencedDisclosure => "unreferenced_disclosure",
        E::DisclosureKindMismatch | E::ClaimCollision => "disclosure_misplaced",
        E::MissingDelegatePayload => "missing_delegate_payload",
        E::MissingConfirmationKey => "missing_cnf",
        E::UnexpectedConfirmationKey => "unexpected_cnf",
        E::HopTypeMismatch => "hop_typ_mismatch",
        E::BindingMismatch => "sd_hash_mismatch",
        E::MissingClaim(_) => "missing_claim",
        E::AudienceMismatch => "aud_mismatch",
        E::NonceMismatch => "nonce_mismatch",
        E::ChallengeMismatch => "challenge_mismatch",
        E::Expired => "expired",
        E::IssuedInFuture => "iat_in_future",
        E::TooOld => "closing_hop_too_old",
    }
}
