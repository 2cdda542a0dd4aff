//! The verifier's policy: whom it trusts and what it accepts, checked once at start-up.

use crate::jwks::TrustedKeys;
use crate::mandate::Policy;
use crate::money::{Amount, Currency};

/// The longest a challenge may stay open, seconds.
pub const MAX_CHALLENGE_LIFETIME: i64 = 600;

/// How a trusted issuer's mandates are tied back to a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceRule {
    /// Every root must carry delegation evidence (our wallet's mandates).
    Required,
    /// Roots without evidence (as Google's reference SDK makes them) bind the agent by `cnf`
    /// alone; roots that carry evidence are still checked in full.
    CnfOnly,
}

/// One trusted mandate issuer.
#[derive(Debug, Clone)]
pub struct IssuerProfile {
    /// A name for logs and configuration messages.
    pub name: String,
    /// Its signing keys (each with a `kid`, unique across issuers), from files or its JWKS URL.
    pub keys: TrustedKeys,
    /// How its mandates are tied to a human.
    pub evidence: EvidenceRule,
}

/// Everything a verifier decides with.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// This verifier's audience: challenges name it, closing hops must carry it, and agents'
    /// access tokens must be issued for it.
    pub audience: String,
    /// The core's chain and constraint policy (skew, closing-hop age, required constraints).
    pub policy: Policy,
    /// Trusted mandate issuers.
    pub issuers: Vec<IssuerProfile>,
    /// Keys that may sign merchants' checkout JWTs, from files or JWKS URLs.
    pub merchants: TrustedKeys,
    /// Currencies accepted; `None` accepts every ISO 4217 currency.
    pub allowed_currencies: Option<Vec<Currency>>,
    /// The largest single payment, per currency (none: no cap beyond the mandate's).
    pub max_payment: Vec<Amount>,
    /// How long a challenge stays open, seconds.
    pub challenge_lifetime: i64,
    /// Longest a remote wallet's status list is cached, seconds (its own `ttl` may say less).
    pub status_cache: i64,
    /// PEM certificates trusted for HTTPS fetches besides the public roots (a private CA).
    pub tls_roots: Option<Vec<u8>>,
}

impl VerifierConfig {
    /// A configuration with the given audience and trust, and safe defaults elsewhere.
    pub fn new(
        audience: impl Into<String>,
        issuers: Vec<IssuerProfile>,
        merchants: TrustedKeys,
    ) -> Self {
        VerifierConfig {
            audience: audience.into(),
            policy: Policy::default(),
            issuers,
            merchants,
            allowed_currencies: None,
            max_payment: Vec::new(),
            challenge_lifetime: 300,
            status_cache: 60,
            tls_roots: None,
        }
    }

    /// Refuses a configuration that could not be safe, naming the option.
    pub fn check(&self) -> Result<(), String> {
        if !crate::identity::https_or_loopback(&self.audience) {
            return Err("verifier audience must be an https URL (http only on loopback)".into());
        }
        if self.issuers.is_empty() || self.issuers.iter().any(|i| i.keys.is_empty()) {
            return Err("verifier needs at least one trusted mandate issuer with keys".into());
        }
        // No trusted merchant is a verifier that refuses every presentation: useless until
        // configured, never unsafe.
        if !(0..=3600).contains(&self.status_cache) {
            return Err("the status list cache must be 0..=3600 seconds".into());
        }
        if !(1..=MAX_CHALLENGE_LIFETIME).contains(&self.challenge_lifetime) {
            return Err(format!(
                "challenge lifetime must be 1..={MAX_CHALLENGE_LIFETIME} seconds"
            ));
        }
        if self.allowed_currencies.as_ref().is_some_and(Vec::is_empty) {
            return Err("allowed currencies, when given, must name at least one".into());
        }
        for (i, cap) in self.max_payment.iter().enumerate() {
            if cap.minor() == 0 {
                return Err("a maximum payment must be above zero".into());
            }
            if self.max_payment[..i]
                .iter()
                .any(|c| c.currency() == cap.currency())
            {
                return Err("one maximum payment per currency".into());
            }
        }
        Ok(())
    }
}
