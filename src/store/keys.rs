//! Signing keys at rest: generated on first use, stored encrypted, rotated with overlap.
//!
//! Private keys are sealed with AES-256-GCM under a master key that never enters the database:
//! from `AP2_MASTER_KEY` (32 bytes, base64url) or from a key file created with owner-only
//! permissions on first start. The additional data binds each ciphertext to its `kid` and
//! purpose, so rows cannot be swapped. Rotation adds a new active key and keeps the old one for
//! verification until its `retire_at`, so signatures made just before a rotation still verify.

use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sqlx::Row as _;
use zeroize::Zeroizing;

use super::{Store, StoreError};
use crate::jose::{b64, PublicJwk, SigningKey};

/// The environment variable that may hold the master key.
pub const MASTER_KEY_ENV: &str = "AP2_MASTER_KEY";

/// The key that seals signing keys at rest.
pub struct MasterKey {
    key: LessSafeKey,
    derive: aws_lc_rs::hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::Config("master key must be 32 bytes".into()))?;
        Ok(MasterKey {
            key: LessSafeKey::new(unbound),
            derive: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes),
        })
    }

    /// A 32-byte secret for one purpose (`label`), derived with HMAC-SHA-256; the same on every
    /// instance that holds this master key.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let tag = aws_lc_rs::hmac::sign(&self.derive, label.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// From `AP2_MASTER_KEY` if set, else from `file`, which is created (mode 0600) if missing.
    pub fn load_or_create(file: &Path) -> Result<Self, StoreError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let bytes =
                Zeroizing::new(b64::decode(text.trim()).map_err(|_| {
                    StoreError::Config(format!("{MASTER_KEY_ENV} is not base64url"))
                })?);
            return Self::from_bytes(&bytes);
        }
        if !file.exists() {
            create_key_file(file)?;
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(file)
                .map_err(|e| StoreError::Config(format!("cannot read master key file: {e}")))?,
        );
        let bytes = Zeroizing::new(
            b64::decode(text.trim())
                .map_err(|_| StoreError::Config("master key file is not base64url".into()))?,
        );
        Self::from_bytes(&bytes)
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| StoreError::Unavailable)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| StoreError::Unavailable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Corrupt("sealed key"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Corrupt("sealed key"))?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| StoreError::Corrupt("sealed key does not open with this master key"))?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

fn create_key_file(file: &Path) -> Result<(), StoreError> {
    use std::io::Write as _;
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| StoreError::Unavailable)?;
    let text = Zeroizing::new(b64::encode(bytes.as_ref()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(file)
        .map_err(|e| StoreError::Config(format!("cannot create master key file: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| StoreError::Config(format!("cannot write master key file: {e}")))?;
    f.sync_all()
        .map_err(|e| StoreError::Config(format!("cannot write master key file: {e}")))
}

/// Signing keys by purpose (`tokens`, `mandates`, `receipts`, `status`).
pub trait KeyVault {
    /// The newest unretired key for `purpose`, generated and stored if there is none.
    fn signing_key(
        &self,
        master: &MasterKey,
        purpose: &str,
        now: i64,
    ) -> impl std::future::Future<Output = Result<SigningKey, StoreError>> + Send;

    /// Adds a new key for `purpose`; the previous ones retire `overlap` seconds from now.
    fn rotate(
        &self,
        master: &MasterKey,
        purpose: &str,
        now: i64,
        overlap: i64,
    ) -> impl std::future::Future<Output = Result<SigningKey, StoreError>> + Send;

    /// Every public key not yet retired (what the JWKS publishes).
    fn verification_keys(
        &self,
        now: i64,
    ) -> impl std::future::Future<Output = Result<Vec<PublicJwk>, StoreError>> + Send;
}

impl KeyVault for Store {
    async fn signing_key(
        &self,
        master: &MasterKey,
        purpose: &str,
        now: i64,
    ) -> Result<SigningKey, StoreError> {
        let row = sqlx::query(
            "SELECT kid, private_enc FROM keys WHERE purpose = $1 AND (retire_at IS NULL OR retire_at > $2) \
             ORDER BY (retire_at IS NULL) DESC, created_at DESC, kid DESC LIMIT 1",
        )
        .bind(purpose)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => unseal(
                master,
                purpose,
                &row.try_get::<String, _>("kid")?,
                &row.try_get::<Vec<u8>, _>("private_enc")?,
            ),
            None => self.rotate(master, purpose, now, 0).await,
        }
    }

    async fn rotate(
        &self,
        master: &MasterKey,
        purpose: &str,
        now: i64,
        overlap: i64,
    ) -> Result<SigningKey, StoreError> {
        let kid = format!(
            "{purpose}-{}",
            crate::jose::b64::encode(random_bytes::<9>()?)
        );
        let key = SigningKey::generate(Some(kid.clone())).map_err(|_| StoreError::Unavailable)?;
        let private = key.to_private_jwk().map_err(|_| StoreError::Unavailable)?;
        let sealed = master.seal(aad(&kid, purpose).as_bytes(), private.as_bytes())?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE keys SET retire_at = $2 WHERE purpose = $1 AND (retire_at IS NULL OR retire_at > $2)")
            .bind(purpose)
            .bind(now + overlap)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO keys (kid, purpose, public_jwk, private_enc, created_at, retire_at) VALUES ($1, $2, $3, $4, $5, NULL)")
            .bind(&kid)
            .bind(purpose)
            .bind(key.public().to_value().to_string())
            .bind(sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn verification_keys(&self, now: i64) -> Result<Vec<PublicJwk>, StoreError> {
        let rows = sqlx::query("SELECT public_jwk FROM keys WHERE retire_at IS NULL OR retire_at > $1 ORDER BY created_at, kid")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                PublicJwk::from_json(&r.try_get::<String, _>("public_jwk")?)
                    .map_err(|_| StoreError::Corrupt("public key"))
            })
            .collect()
    }
}

fn unseal(
    master: &MasterKey,
    purpose: &str,
    kid: &str,
    sealed: &[u8],
) -> Result<SigningKey, StoreError> {
    let plain = master.open(aad(kid, purpose).as_bytes(), sealed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&plain).map_err(|_| StoreError::Corrupt("sealed key"))?;
    let key = SigningKey::from_jwk(&value).map_err(|_| StoreError::Corrupt("sealed key"));
    drop(value);
    key
}

fn aad(kid: &str, purpose: &str) -> String {
    format!("ap2-mandate key\n{kid}\n{purpose}")
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| StoreError::Unavailable)?;
    Ok(out)
}
