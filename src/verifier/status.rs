//! Status lists of wallets that run elsewhere (OAuth Token Status List): fetched by the URL a
//! mandate names, verified under the keys of the issuer that signed the mandate, cached for
//! their `ttl` (bounded), and read bit by bit.
//!
//! Every failure is an unknown status, which the verifier refuses: an unreachable list, a list
//! signed by someone else, a list for another URL, an expired list, an index past its end.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::jose::{HeaderPolicy, KeySet, TypRule, UnverifiedJws};

/// The media type and `typ` of a status list token.
const STATUS_LIST_TYP: &str = "statuslist+jwt";
/// Largest status list token we read, bytes.
const MAX_TOKEN: usize = 1 << 20;
/// Largest list once inflated, bytes (128 Mi entries of one bit).
const MAX_LIST: usize = 16 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// A mandate's status: where its list is and which entry is its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRef {
    /// The list's URL (the token's `sub`).
    pub uri: String,
    /// The entry.
    pub idx: u64,
}

impl StatusRef {
    /// The `status.status_list` claim of a mandate root, if it is well formed.
    pub fn from_claims(claims: &serde_json::Map<String, Value>) -> Option<StatusRef> {
        let list = claims.get("status")?.get("status_list")?;
        Some(StatusRef {
            uri: list.get("uri")?.as_str()?.to_owned(),
            idx: list.get("idx")?.as_u64()?,
        })
    }
}

/// What a list says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The entry is zero: valid.
    Valid,
    /// The entry is not zero: revoked, suspended, or anything else but valid.
    Revoked,
    /// The list could not be had or trusted.
    Unknown,
}

/// A verified list, as cached.
struct Cached {
    bits: u8,
    list: Vec<u8>,
    fresh_until: i64,
}

/// The cache of remote lists, one per URL.
pub struct RemoteStatus {
    http: reqwest::Client,
    max_cache: i64,
    lists: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for RemoteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStatus")
            .field("max_cache", &self.max_cache)
            .finish_non_exhaustive()
    }
}

impl RemoteStatus {
    /// A cache that keeps a list at most `max_cache` seconds (less when its `ttl` says so),
    /// fetching over HTTPS that also trusts the PEM certificates of `extra_roots`.
    pub fn new(max_cache: i64, extra_roots: Option<&[u8]>) -> Result<RemoteStatus, String> {
        let http = crate::outbound::client(extra_roots, Some(FETCH_TIMEOUT))?;
        Ok(RemoteStatus {
            http,
            max_cache,
            lists: Mutex::new(HashMap::new()),
        })
    }

    /// The standing of `entry`, under a list signed by one of `keys`.
    pub async fn standing(&self, entry: &StatusRef, keys: &KeySet, now: i64) -> Standing {
        if !crate::identity::https_or_loopback(&entry.uri) {
            return Standing::Unknown;
        }
        // One fetch at a time: a burst of presentations under one list waits for the first.
        let mut lists = self.lists.lock().await;
        let fresh = lists.get(&entry.uri).is_some_and(|c| c.fresh_until > now);
        if !fresh {
            match self.fetch(&entry.uri, keys, now).await {
                Some(list) => {
                    lists.insert(entry.uri.clone(), list);
                }
                None => {
                    lists.remove(&entry.uri);
                    return Standing::Unknown;
                }
            }
        }
        match lists.get(&entry.uri).and_then(|c| read(c, entry.idx)) {
            Some(0) => Standing::Valid,
            Some(_) => Standing::Revoked,
            None => Standing::Unknown,
        }
    }

    async fn fetch(&self, uri: &str, keys: &KeySet, now: i64) -> Option<Cached> {
        let body =
            crate::outbound::get_bounded(&self.http, uri, "application/statuslist+jwt", MAX_TOKEN)
                .await
                .ok()?;
        let text = std::str::from_utf8(&body).ok()?.trim();
        verified_list(text, uri, keys, now, self.max_cache)
    }
}

/// The list a status list token carries, once its signature, subject and times hold.
fn verified_list(
    token: &str,
    uri: &str,
    keys: &KeySet,
    now: i64,
    max_cache: i64,
) -> Option<Cached> {
    let policy = HeaderPolicy::trusted_key(TypRule::OneOf(&[STATUS_LIST_TYP]));
    let jws = UnverifiedJws::parse(token, &policy).ok()?;
    let claims = keys.verify(jws).ok()?.into_claims();
    if claims.get("sub").and_then(Value::as_str) != Some(uri) {
        return None;
    }
    let iat = claims.get("iat").and_then(Value::as_i64)?;
    if iat > now + 60 {
        return None;
    }
    let exp = claims.get("exp").and_then(Value::as_i64);
    if exp.is_some_and(|exp| exp <= now) {
        return None;
    }
    let list = claims.get("status_list")?;
    let bits = u8::try_from(list.get("bits")?.as_u64()?).ok()?;
    if ![1, 2, 4, 8].contains(&bits) {
        return None;
    }
    let compressed = crate::jose::b64::decode(list.get("lst")?.as_str()?).ok()?;
    let list =
        miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&compressed, MAX_LIST).ok()?;
    let ttl = claims
        .get("ttl")
        .and_then(Value::as_i64)
        .unwrap_or(max_cache)
        .clamp(0, max_cache);
    let fresh_until = exp.map_or(now + ttl, |exp| exp.min(now + ttl));
    Some(Cached {
        bits,
        list,
        fresh_until,
    })
}

/// Entry `idx` of a list of `bits`-bit entries, least significant first within each byte.
fn read(cached: &Cached, idx: u64) -> Option<u8> {
    let bits = u64::from(cached.bits);
    let position = idx.checked_mul(bits)?;
    let byte = *cached.list.get(usize::try_from(position / 8).ok()?)?;
    let mask = ((1u16 << bits) - 1) as u8;
    Some((byte >> (position % 8)) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{sign_compact, SigningKey};
    use serde_json::json;

    fn token(key: &SigningKey, sub: &str, bits: u8, raw: &[u8], now: i64, ttl: i64) -> String {
        let lst = crate::jose::b64::encode(miniz_oxide::deflate::compress_to_vec_zlib(raw, 6));
        let claims = json!({"sub": sub, "iat": now, "exp": now + 3600, "ttl": ttl,
            "status_list": {"bits": bits, "lst": lst}});
        sign_compact(
            key,
            Some(STATUS_LIST_TYP),
            false,
            claims.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn set(key: &SigningKey) -> KeySet {
        let mut s = KeySet::new();
        s.insert(key.public().clone()).unwrap();
        s
    }

    const URI: &str = "https://wallet.example/lists/1";

    /// A list of `bits`-bit entries signed by `key` for `URI`, issued at 0 with `ttl`, as the
    /// verifier would take it at time 10 from `URI` under `trusted`.
    fn taken(
        key: &SigningKey,
        trusted: &SigningKey,
        bits: u8,
        raw: &[u8],
        ttl: i64,
    ) -> Option<Cached> {
        verified_list(
            &token(key, URI, bits, raw, 0, ttl),
            URI,
            &set(trusted),
            10,
            300,
        )
    }

    #[test]
    fn entries_are_read_least_significant_first_at_every_width() {
        let key = SigningKey::generate(Some("w".into())).unwrap();
        let one = taken(&key, &key, 1, &[0b0000_0100], 60).unwrap();
        assert_eq!(
            (read(&one, 1), read(&one, 2), read(&one, 8)),
            (Some(0), Some(1), None)
        );
        let two = taken(&key, &key, 2, &[0b1001_0000], 60).unwrap();
        assert_eq!(
            (read(&two, 2), read(&two, 3), read(&two, 0)),
            (Some(1), Some(2), Some(0))
        );
        assert_eq!(one.fresh_until, 70, "the list's ttl, from now");
    }

    #[test]
    fn a_list_from_another_signer_url_or_time_is_not_trusted() {
        let key = SigningKey::generate(Some("w".into())).unwrap();
        let other = SigningKey::generate(Some("w".into())).unwrap();
        assert!(taken(&key, &key, 1, &[0], 60).is_some(), "the good list");
        assert!(taken(&key, &other, 1, &[0], 60).is_none(), "another key");
        assert!(taken(&key, &key, 3, &[0], 60).is_none(), "3 bits");
        let good = token(&key, URI, 1, &[0], 0, 60);
        let other_uri = "https://wallet.example/lists/2";
        assert!(
            verified_list(&good, other_uri, &set(&key), 10, 300).is_none(),
            "another URL"
        );
        assert!(
            verified_list(&good, URI, &set(&key), 3600, 300).is_none(),
            "expired"
        );
        let later = token(&key, URI, 1, &[0], 500, 60);
        assert!(
            verified_list(&later, URI, &set(&key), 10, 300).is_none(),
            "issued later"
        );
        let capped = taken(&key, &key, 1, &[0], 100_000).unwrap();
        assert_eq!(capped.fresh_until, 310, "a long ttl is capped");
    }
}
