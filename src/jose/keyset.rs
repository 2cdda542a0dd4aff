//! A set of trusted public keys, selected by `kid` and nothing else.
//!
//! The set is ours (configuration, vectors, a wallet's JWKS we chose to trust); a token can only
//! pick among its members by `kid`. Two keys with one `kid` are refused at insertion, so a
//! lookup is never ambiguous.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Error, PublicJwk, UnverifiedJws, VerifiedJws, VerifiedSignatures};

/// Trusted keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, PublicJwk>,
    seen: Option<Arc<VerifiedSignatures>>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; it must have a `kid` that is not already in the set.
    pub fn insert(&mut self, key: PublicJwk) -> Result<(), Error> {
        let kid = key.kid().ok_or(Error::MissingKeyId)?.to_owned();
        if self.by_kid.contains_key(&kid) {
            return Err(Error::DuplicateKeyId);
        }
        self.by_kid.insert(kid, key);
        Ok(())
    }

    /// Builds a set from a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(value: &serde_json::Value) -> Result<Self, Error> {
        let keys = value
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or(Error::InvalidKey)?;
        let mut set = KeySet::new();
        for key in keys {
            set.insert(PublicJwk::from_value(key)?)?;
        }
        Ok(set)
    }

    /// Remembers up to `capacity` signatures that verified under this set's keys, so that a
    /// token presented again (an open mandate, used for payment after payment) skips ECDSA.
    pub fn remember_verified(mut self, capacity: usize) -> Self {
        self.seen = Some(Arc::new(VerifiedSignatures::new(capacity)));
        self
    }

    /// This set's keys, remembering verifications in the same memory as `other` (a set rebuilt
    /// after its keys changed keeps what the old one learnt: each memory names its key, so a
    /// key no longer in the set cannot be matched).
    pub fn sharing_remembered(mut self, other: &KeySet) -> Self {
        self.seen = other.seen.clone();
        self
    }

    /// Picks the key by the header's `kid` and verifies `jws` with it.
    pub fn verify<'a>(&self, jws: UnverifiedJws<'a>) -> Result<VerifiedJws<'a>, Error> {
        let kid = jws.header().kid().ok_or(Error::MissingKeyId)?;
        let key = self.get(kid)?;
        match &self.seen {
            Some(seen) => jws.verify_remembered(key, seen),
            None => jws.verify(key),
        }
    }

    /// The key with exactly this `kid` (bytes compared, no normalization).
    pub fn get(&self, kid: &str) -> Result<&PublicJwk, Error> {
        self.by_kid.get(kid).ok_or(Error::UnknownKeyId)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &PublicJwk> {
        self.by_kid.values()
    }
}
