//! ap2-mandate: AP2 payment mandates for AI agents.
//!
//! The pure core lives here: [`money`] (ISO 4217 amounts), [`jose`] (ES256 keys and compact JWS),
//! [`sdjwt`] (RFC 9901 disclosures and Delegate SD-JWT chains) and [`mandate`] (AP2 v0.2
//! mandates, constraints and receipts). None of it performs I/O or reads the clock: time is an
//! argument. Anything that skips a check lives in [`danger`] and is named `insecure_…`.
//! Around it, [`store`] keeps the state that decisions depend on (SQLite or PostgreSQL), and
//! the roles are built on both: [`identity`] (the token service: agent identity and
//! on-behalf-of tokens), [`wallet`] (consent and issuance), [`verifier`] (the checkout
//! verifier), [`http`] (their routes), and [`agent`] (the agent's side).
//!
//! ```
//! use ap2_mandate::money::{Amount, Currency, MoneyError};
//!
//! // AP2 amounts are integer minor units; budgets come in major units and convert exactly.
//! let kwd = Currency::from_code("KWD").unwrap();
//! assert_eq!(Amount::parse_major("1.500", kwd).unwrap().minor(), 1500);
//! assert_eq!(Amount::parse_major("1.5005", kwd), Err(MoneyError::TooManyFractionDigits));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod calendar;
pub mod conformance;
pub mod danger;
pub mod http;
pub mod identity;
pub mod jose;
pub mod json;
pub mod jwks;
pub mod mandate;
pub mod money;
pub mod outbound;
pub mod sdjwt;
pub mod store;
pub mod verifier;
pub mod wallet;
