//! SD-JWT (RFC 9901) and Delegate SD-JWT chains as AP2 v0.2 uses them.
//!
//! [`disclosure`] parses and makes disclosures and resolves them into a payload (RFC 9901 §7.1,
//! including the rule that a disclosure no digest references makes the whole SD-JWT invalid).
//! [`chain`] splits a `~~`-joined chain into hops, verifies the root against a trusted issuer key
//! chosen by `kid`, each later hop with the previous hop's `cnf.jwk`, the `sd_hash` (or
//! `issuer_jwt_hash`) bindings, `aud`, `nonce` and times. It knows nothing of AP2 constraints.
//! Only `sha-256` is supported as `_sd_alg`.

pub mod chain;
pub mod disclosure;

pub use chain::{
    sign_segment, ChainPolicy, Challenge, HopKind, UnverifiedChain, VerifiedChain, VerifiedHop,
};
pub use disclosure::{resolve, resolve_owned, Disclosure};

use crate::jose;

/// Largest chain we look at, in bytes.
pub const MAX_CHAIN_LEN: usize = 256 * 1024;
/// Most hops (root included) in one chain.
pub const MAX_HOPS: usize = 8;
/// Most disclosures in one hop.
pub const MAX_DISCLOSURES: usize = 256;

/// Why an SD-JWT or a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The chain, a hop or a disclosure does not have the SD-JWT shape.
    #[error("malformed SD-JWT")]
    Malformed,
    /// The chain is larger than we accept, or has too many hops or disclosures.
    #[error("SD-JWT too large")]
    TooLarge,
    /// A hop's JWS failed a header or signature check.
    #[error("JWS refused: {0}")]
    Jws(jose::Error),
    /// The root names no `kid`, or a `kid` that is not a trusted issuer key.
    #[error("root not signed by a trusted issuer")]
    UntrustedIssuer,
    /// `_sd_alg` names a hash other than `sha-256`.
    #[error("unsupported _sd_alg")]
    UnsupportedHashAlgorithm,
    /// The same disclosure appears twice.
    #[error("duplicate disclosure")]
    DuplicateDisclosure,
    /// The same digest appears twice in a payload.
    #[error("duplicate digest")]
    DuplicateDigest,
    /// A disclosure is referenced by no digest (RFC 9901 §7.1 step 5).
    #[error("unreferenced disclosure")]
    UnreferencedDisclosure,
    /// An object digest points to an array-element disclosure, or the other way round.
    #[error("disclosure kind does not match its place")]
    DisclosureKindMismatch,
    /// A disclosed claim name already exists in its object, or is reserved (`_sd`, `...`).
    #[error("disclosed claim name collides or is reserved")]
    ClaimCollision,
    /// The hop carries no single disclosed `delegate_payload` object.
    #[error("missing delegate payload")]
    MissingDelegatePayload,
    /// The previous hop names no `cnf.jwk`, so nothing may sign this hop.
    #[error("missing confirmation key")]
    MissingConfirmationKey,
    /// A closing hop carries a `cnf` (only intermediate hops may delegate further).
    #[error("unexpected confirmation key on the closing hop")]
    UnexpectedConfirmationKey,
    /// A hop's `typ` does not fit its place in the chain.
    #[error("hop type does not fit its place")]
    HopTypeMismatch,
    /// `sd_hash` / `issuer_jwt_hash` is missing, doubled, or does not match the previous hop.
    #[error("hop binding mismatch")]
    BindingMismatch,
    /// A required claim is missing or has the wrong JSON type.
    #[error("missing or mistyped claim `{0}`")]
    MissingClaim(&'static str),
    /// `aud` is not the audience the verifier expects.
    #[error("audience mismatch")]
    AudienceMismatch,
    /// `nonce` is not the nonce the verifier issued.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// The chain closes with a key-binding hop but the verifier expects none, or the reverse.
    #[error("challenge does not fit the chain")]
    ChallengeMismatch,
    /// An `exp` has passed (beyond the allowed skew).
    #[error("expired")]
    Expired,
    /// An `iat` is in the future (beyond the allowed skew).
    #[error("issued in the future")]
    IssuedInFuture,
    /// The closing hop is older than the policy's maximum age.
    #[error("closing hop too old")]
    TooOld,
}

impl From<jose::Error> for Error {
    fn from(e: jose::Error) -> Self {
        match e {
            jose::Error::TooLarge => Error::TooLarge,
            other => Error::Jws(other),
        }
    }
}
