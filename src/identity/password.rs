//! Password hashing with argon2id (RFC 9106), parameters as OWASP recommends (19 MiB, 2
//! passes, 1 lane), stored as PHC strings.
//!
//! Checking a password for an unknown user still spends one full hash, so sign-in time does not
//! tell whether a username exists. Passwords are wrapped so they never reach a log.

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::store::records::PasswordHash;

/// Shortest password accepted when a user is created.
pub const MIN_PASSWORD_LEN: usize = 12;

/// A password as typed: kept out of `Debug` and wiped on drop.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Password(Zeroizing::new(text.into()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn hasher() -> Argon2<'static> {
    // Fixed, valid parameters: Params::new only fails outside argon2's documented ranges.
    let params = Params::new(19 * 1024, 2, 1, None).expect("argon2 parameters are in range");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a new password; refuses one shorter than [`MIN_PASSWORD_LEN`] characters.
pub fn hash(password: &Password) -> Result<PasswordHash, &'static str> {
    if password.0.chars().count() < MIN_PASSWORD_LEN {
        return Err("password too short");
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no randomness")?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| "salt encoding failed")?;
    let phc = hasher()
        .hash_password(password.0.as_bytes(), &salt)
        .map_err(|_| "password hashing failed")?;
    Ok(PasswordHash::new(phc.to_string()))
}

/// Whether `password` matches `stored`; `None` (unknown user) spends the same time and fails.
pub fn verify(password: &Password, stored: Option<&PasswordHash>) -> bool {
    // A real hash of a password nobody knows, made once, so the unknown-user path costs the same.
    static DUMMY: std::sync::LazyLock<Option<PasswordHash>> =
        std::sync::LazyLock::new(|| hash(&Password::new("no user has this password")).ok());
    let Some(text) = stored.or(DUMMY.as_ref()).map(PasswordHash::as_str) else {
        return false;
    };
    let Ok(phc) = Phc::new(text) else {
        return false;
    };
    let ok = hasher()
        .verify_password(password.0.as_bytes(), &phc)
        .is_ok();
    ok && stored.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash(&Password::new("correct horse battery")).unwrap();
        assert!(stored
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(
            &Password::new("correct horse battery"),
            Some(&stored)
        ));
        assert!(!verify(
            &Password::new("correct horse battery!"),
            Some(&stored)
        ));
        assert!(!verify(&Password::new("correct horse battery"), None));
    }

    #[test]
    fn short_passwords_are_refused_and_never_printed() {
        assert_eq!(hash(&Password::new("short")), Err("password too short"));
        assert_eq!(
            format!("{:?}", Password::new("hunter2hunter2")),
            "Password(..)"
        );
    }
}
