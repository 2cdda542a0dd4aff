//! AP2 receipts: what a merchant (`CheckoutReceipt`) or a credential provider / processor
//! (`PaymentReceipt`) returns after deciding, signed as an ES256 JWT.
//!
//! `reference` is the base64url SHA-256 of the closing SD-JWT as presented (`jwt~d~…~`),
//! computed the way `sd_hash` is, as AP2's specification says. (The reference SDK's samples
//! hash only the closing hop's JWT; we follow the specification text.)

use serde::Serialize;

use crate::jose::{sign_compact, Error, SigningKey};

/// Whether the action was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReceiptStatus {
    /// Accepted.
    Success,
    /// Refused.
    Error,
}

/// A checkout receipt (merchant role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutReceipt {
    /// Outcome.
    pub status: ReceiptStatus,
    /// Who decided (never empty).
    pub iss: String,
    /// When (Unix seconds).
    pub iat: i64,
    /// Hash of the closed checkout mandate as presented.
    pub reference: String,
    /// The order created, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// AP2 error code, on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fixed description of the error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// A payment receipt (credential provider / network / processor role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentReceipt {
    /// Outcome.
    pub status: ReceiptStatus,
    /// Who decided (never empty).
    pub iss: String,
    /// When (Unix seconds).
    pub iat: i64,
    /// Hash of the closed payment mandate as presented.
    pub reference: String,
    /// Our id for this payment decision.
    pub payment_id: String,
    /// The PSP's confirmation id, when a processor reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psp_confirmation_id: Option<String>,
    /// The network's confirmation id, when one was reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_confirmation_id: Option<String>,
    /// AP2 error code, on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fixed description of the error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

impl CheckoutReceipt {
    /// Signs the receipt as a compact JWT (`typ` `JWT`).
    pub fn sign(&self, key: &SigningKey) -> Result<String, Error> {
        sign_claims(self, key)
    }
}

impl PaymentReceipt {
    /// Signs the receipt as a compact JWT (`typ` `JWT`).
    pub fn sign(&self, key: &SigningKey) -> Result<String, Error> {
        sign_claims(self, key)
    }
}

fn sign_claims<T: Serialize>(claims: &T, key: &SigningKey) -> Result<String, Error> {
    let body = serde_json::to_vec(claims).map_err(|_| Error::Malformed)?;
    sign_compact(key, Some("JWT"), false, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{HeaderPolicy, TypRule, UnverifiedJws};

    #[test]
    fn signed_receipt_verifies_and_omits_absent_fields() {
        let key = SigningKey::generate(Some("r1".into())).unwrap();
        let receipt = PaymentReceipt {
            status: ReceiptStatus::Error,
            iss: "https://verifier.example".into(),
            iat: 1_780_000_120,
            reference: "abc".into(),
            payment_id: "pay_1".into(),
            psp_confirmation_id: None,
            network_confirmation_id: None,
            error: Some("invalid_mandate".into()),
            error_description: Some("The mandate does not approve this action.".into()),
        };
        let jwt = receipt.sign(&key).unwrap();
        let jws = UnverifiedJws::parse(&jwt, &HeaderPolicy::trusted_key(TypRule::OneOf(&["JWT"])))
            .unwrap();
        let claims = jws.verify(key.public()).unwrap().into_claims();
        assert_eq!(claims["status"], "Error");
        assert_eq!(claims["error"], "invalid_mandate");
        assert!(!claims.contains_key("psp_confirmation_id"));
    }
}
