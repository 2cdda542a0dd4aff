//! Signatures already verified, remembered so a re-presented token is not verified twice.
//!
//! An open mandate is standing authority: the same issuer-signed root comes back with every
//! payment made under it. Remembering that exactly these signed bytes, with exactly this
//! signature, verified under exactly this key is as strong as verifying again (verification is
//! deterministic), and saves an ECDSA verification per presentation. Entries are SHA-256
//! digests of (public key point, signing input, signature); the set is bounded and forgets the
//! oldest first. Only successes are remembered. Time, audience and every other check still run.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// A bounded set of (key, signed bytes, signature) digests that verified.
#[derive(Debug)]
pub struct VerifiedSignatures {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedSignatures {
    /// Remembers at most `capacity` verified signatures.
    pub fn new(capacity: usize) -> Self {
        VerifiedSignatures {
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The digest that names one verification.
    pub(crate) fn digest(key: &[u8], signing_input: &str, signature: &[u8; 64]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(key);
        ctx.update(b"\n");
        ctx.update(signing_input.as_bytes());
        ctx.update(b"\n");
        ctx.update(signature);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// True when this exact verification succeeded before.
    pub(crate) fn contains(&self, digest: &[u8; 32]) -> bool {
        // A poisoned lock only means another thread panicked mid-insert; the set stays usable.
        let entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entries.set.contains(digest)
    }

    /// Records a successful verification.
    pub(crate) fn insert(&self, digest: [u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.set.insert(digest) {
            return;
        }
        entries.order.push_back(digest);
        while entries.order.len() > self.capacity {
            if let Some(old) = entries.order.pop_front() {
                entries.set.remove(&old);
            }
        }
    }

    /// How many verifications are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .order
            .len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_is_forgotten_first() {
        let seen = VerifiedSignatures::new(2);
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        seen.insert(a);
        seen.insert(b);
        seen.insert(c);
        assert!(!seen.contains(&a));
        assert!(seen.contains(&b) && seen.contains(&c));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn every_part_of_a_verification_names_it() {
        let sig = [9u8; 64];
        let base = VerifiedSignatures::digest(b"k1", "a.b", &sig);
        assert_ne!(base, VerifiedSignatures::digest(b"k2", "a.b", &sig));
        assert_ne!(base, VerifiedSignatures::digest(b"k1", "a.c", &sig));
        let mut other = sig;
        other[63] ^= 1;
        assert_ne!(base, VerifiedSignatures::digest(b"k1", "a.b", &other));
    }
}
