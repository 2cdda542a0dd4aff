//! Trusted keys from files and from JWKS URLs: a wallet's mandate keys or a merchant's checkout
//! keys, kept fresh while the process runs.
//!
//! Keys read from a file stay trusted until restart. Keys published at a URL are fetched at
//! start-up, fetched again every `refresh` seconds, and fetched early (at most once per
//! [`MIN_REFETCH`] seconds per URL) when a token names a key id we do not hold, so a rotated
//! key is picked up at its first use. A key the publisher removes stops being trusted at the
//! next fetch. A URL that cannot be fetched keeps its last good keys for two refresh periods,
//! then contributes none (fail closed): a publisher that vanishes cannot keep its keys trusted
//! forever, and a short outage does not stop payments.
//!
//! A fetched document must be strict JSON with a `keys` array; members that are not EC P-256
//! keys are skipped (they are not for us), and a P-256 member that is malformed, carries
//! private parts or lacks a `kid` makes the whole document unusable. A key id held by a file and
//! by a URL, or by two URLs, is taken from the first source and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::jose::{KeySet, PublicJwk};

/// Fewest seconds between two fetches of one URL prompted by an unknown key id.
pub const MIN_REFETCH: i64 = 30;
/// Shortest and longest refresh period, seconds.
pub const REFRESH_RANGE: std::ops::RangeInclusive<i64> = 30..=86_400;
/// Largest JWKS document read, bytes.
const MAX_JWKS: usize = 256 << 10;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// A set of trusted keys, some of which may come from URLs. Cheap to clone (shared).
#[derive(Clone)]
pub struct TrustedKeys(Arc<Inner>);

struct Inner {
    fixed: KeySet,
    remotes: Vec<Remote>,
    http: Option<reqwest::Client>,
    refresh: i64,
    view: RwLock<Arc<View>>,
    generation: AtomicU64,
}

struct Remote {
    url: String,
    state: Mutex<RemoteState>,
    /// One fetch of this URL at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RemoteState {
    keys: KeySet,
    fetched_at: Option<i64>,
    tried_at: Option<i64>,
}

/// The keys trusted now.
struct View {
    keys: Arc<KeySet>,
    generation: u64,
    /// When a URL's keys go stale and the view must be rebuilt without them.
    stale_at: i64,
}

/// What one fetch of a URL gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The URL.
    pub url: String,
    /// The number of P-256 keys it published, or why it could not be used.
    pub outcome: Result<usize, String>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKeys")
            .field("fixed", &self.0.fixed.len())
            .field(
                "urls",
                &self.0.remotes.iter().map(|r| &r.url).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl From<KeySet> for TrustedKeys {
    fn from(keys: KeySet) -> Self {
        TrustedKeys::build(keys, Vec::new(), None, *REFRESH_RANGE.end())
    }
}

impl Default for TrustedKeys {
    fn default() -> Self {
        TrustedKeys::from(KeySet::new())
    }
}

impl TrustedKeys {
    /// `fixed` keys and the keys published at `urls` (https, or http on loopback), fetched with
    /// `http` every `refresh` seconds. Nothing is fetched until [`TrustedKeys::refresh`].
    pub fn with_urls(
        fixed: KeySet,
        urls: Vec<String>,
        refresh: i64,
        http: reqwest::Client,
    ) -> Result<TrustedKeys, String> {
        if !REFRESH_RANGE.contains(&refresh) {
            return Err(format!(
                "the JWKS refresh period must be {} to {} seconds",
                REFRESH_RANGE.start(),
                REFRESH_RANGE.end()
            ));
        }
        if let Some(url) = urls.iter().find(|u| !crate::identity::https_or_loopback(u)) {
            return Err(format!(
                "JWKS URL `{url}` must be https (http only on loopback)"
            ));
        }
        Ok(TrustedKeys::build(fixed, urls, Some(http), refresh))
    }

    fn build(
        fixed: KeySet,
        urls: Vec<String>,
        http: Option<reqwest::Client>,
        refresh: i64,
    ) -> Self {
        let view = View {
            keys: Arc::new(fixed.clone()),
            generation: 0,
            stale_at: i64::MAX,
        };
        TrustedKeys(Arc::new(Inner {
            fixed,
            remotes: urls
                .into_iter()
                .map(|url| Remote {
                    url,
                    state: Mutex::new(RemoteState::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            http,
            refresh,
            view: RwLock::new(Arc::new(view)),
            generation: AtomicU64::new(0),
        }))
    }

    /// True when no key can ever be trusted: no file key and no URL.
    pub fn is_empty(&self) -> bool {
        self.0.fixed.is_empty() && self.0.remotes.is_empty()
    }

    /// The URLs keys are fetched from.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.0.remotes.iter().map(|r| r.url.as_str())
    }

    /// The keys read from files.
    pub fn fixed(&self) -> &KeySet {
        &self.0.fixed
    }

    /// The refresh period, seconds.
    pub fn refresh_period(&self) -> i64 {
        self.0.refresh
    }

    /// The keys trusted at `now`, and a number that changes whenever they may have changed.
    pub fn current(&self, now: i64) -> (Arc<KeySet>, u64) {
        let view = self.view();
        if now < view.stale_at {
            return (view.keys.clone(), view.generation);
        }
        let view = self.rebuild(now);
        (view.keys.clone(), view.generation)
    }

    fn view(&self) -> Arc<View> {
        // A poisoned lock only means a panic elsewhere mid-swap of an Arc: the value is whole.
        self.0
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetches every URL whose refresh is due at `now` (all of them with `force`).
    pub async fn refresh(&self, now: i64, force: bool) -> Vec<FetchReport> {
        let refresh = self.0.refresh;
        let mut reports = Vec::new();
        let gap = if force { None } else { Some(refresh) };
        for remote in &self.0.remotes {
            if let Some(report) = self.fetch(remote, now, gap).await {
                reports.push(report);
            }
        }
        if !reports.is_empty() {
            self.rebuild(now);
        }
        reports
    }

    /// Fetches the URLs early when `kid` is not among the trusted keys, each at most once per
    /// [`MIN_REFETCH`] seconds; true when the keys were fetched again.
    pub async fn refresh_for(&self, kid: &str, now: i64) -> bool {
        if self.0.remotes.is_empty() || self.current(now).0.get(kid).is_ok() {
            return false;
        }
        let mut fetched = false;
        for remote in &self.0.remotes {
            if let Some(report) = self.fetch(remote, now, Some(MIN_REFETCH)).await {
                tracing::info!(url = %report.url, ok = report.outcome.is_ok(),
                    "JWKS fetched early for an unknown key id");
                fetched = true;
            }
        }
        if fetched {
            self.rebuild(now);
        }
        fetched
    }

    /// Fetches `remote` unless it was tried less than `gap` seconds before `now` (checked once
    /// this caller's turn to fetch has come, so callers queued behind a fetch do not repeat it).
    async fn fetch(&self, remote: &Remote, now: i64, gap: Option<i64>) -> Option<FetchReport> {
        let _one = remote.fetching.lock().await;
        if let (Some(gap), Some(at)) = (gap, remote.tried_at()) {
            if now - at < gap {
                return None;
            }
        }
        let outcome = match &self.0.http {
            Some(http) => fetch_jwks(http, &remote.url).await,
            None => Err("no HTTP client".to_owned()),
        };
        let mut state = remote.lock();
        state.tried_at = Some(now);
        match &outcome {
            Ok(keys) => {
                state.keys = keys.clone();
                state.fetched_at = Some(now);
            }
            Err(reason) => {
                tracing::warn!(url = %remote.url, %reason, "JWKS could not be fetched; its last good keys stay until stale");
            }
        }
        Some(FetchReport {
            url: remote.url.clone(),
            outcome: outcome.map(|keys| keys.len()),
        })
    }

    /// Rebuilds the trusted set from the files and every URL's keys still fresh at `now`.
    fn rebuild(&self, now: i64) -> Arc<View> {
        let mut keys = self.0.fixed.clone();
        let mut stale_at = i64::MAX;
        let stale_after = 2 * self.0.refresh;
        for remote in &self.0.remotes {
            let state = remote.lock();
            let Some(fetched_at) = state.fetched_at else {
                continue;
            };
            if now >= fetched_at + stale_after {
                continue;
            }
            stale_at = stale_at.min(fetched_at + stale_after);
            for key in state.keys.keys() {
                match key.kid().map(|kid| keys.get(kid)) {
                    Some(Ok(held)) if held == key => {}
                    Some(Ok(_)) => {
                        tracing::warn!(url = %remote.url, kid = key.kid().unwrap_or(""),
                            "JWKS key id already held by another source with another key; skipped");
                    }
                    _ => {
                        // Every fetched key has a kid, unique within its document.
                        let _ = keys.insert(key.clone());
                    }
                }
            }
        }
        let generation = self.0.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let view = Arc::new(View {
            keys: Arc::new(keys),
            generation,
            stale_at,
        });
        *self.0.view.write().unwrap_or_else(|p| p.into_inner()) = view.clone();
        view
    }
}

impl Remote {
    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tried_at(&self) -> Option<i64> {
        self.lock().tried_at
    }
}

/// The P-256 keys of the JWKS at `url`.
async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let accept = "application/jwk-set+json, application/json";
    parse_jwks(&crate::outbound::get_bounded(http, url, accept, MAX_JWKS).await?)
}

/// The P-256 keys of a JWKS document; other key types are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    let value = crate::json::parse(body, MAX_JWKS).map_err(|e| format!("not strict JSON ({e})"))?;
    let members = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no `keys` array")?;
    let mut keys = KeySet::new();
    for member in members {
        let ours = member.get("kty").and_then(Value::as_str) == Some("EC")
            && member.get("crv").and_then(Value::as_str) == Some("P-256");
        if !ours {
            continue;
        }
        let key =
            PublicJwk::from_value(member).map_err(|e| format!("a P-256 key is unusable ({e})"))?;
        keys.insert(key)
            .map_err(|e| format!("a P-256 key is unusable ({e})"))?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use serde_json::json;

    fn jwk(kid: &str) -> Value {
        SigningKey::generate(Some(kid.into()))
            .unwrap()
            .public()
            .to_value()
    }

    #[test]
    fn a_jwks_keeps_p256_keys_and_skips_other_types() {
        let doc = json!({"keys": [jwk("a"),
            {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AA"},
            jwk("b")]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.get("a").is_ok() && keys.get("b").is_ok());
    }

    #[test]
    fn a_bad_p256_member_spoils_the_document() {
        let mut private = SigningKey::generate(Some("p".into()))
            .unwrap()
            .public()
            .to_value();
        private["d"] = json!("AAAA");
        let mut no_kid = jwk("n");
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut off_curve = jwk("o");
        off_curve["y"] = off_curve["x"].clone();
        for bad in [
            json!({"keys": [jwk("a"), private]}),
            json!({"keys": [no_kid]}),
            json!({"keys": [off_curve]}),
            json!({"keys": [jwk("a"), jwk("a")]}),
            json!({"key": [jwk("a")]}),
            json!([jwk("a")]),
        ] {
            assert!(parse_jwks(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        let duplicate_member = br#"{"keys": [], "keys": []}"#;
        assert!(parse_jwks(duplicate_member).is_err());
    }

    #[test]
    fn urls_must_be_https_or_loopback_and_the_period_bounded() {
        let http = crate::outbound::client(None, None).unwrap();
        let url = |u: &str| vec![u.to_owned()];
        assert!(TrustedKeys::with_urls(
            KeySet::new(),
            url("http://wallet.example/jwks"),
            300,
            http.clone()
        )
        .is_err());
        assert!(TrustedKeys::with_urls(
            KeySet::new(),
            url("https://wallet.example/jwks"),
            10,
            http.clone()
        )
        .is_err());
        let ok =
            TrustedKeys::with_urls(KeySet::new(), url("https://wallet.example/jwks"), 300, http)
                .unwrap();
        assert!(
            !ok.is_empty(),
            "a URL is a source even before its first fetch"
        );
        assert_eq!(ok.current(0).0.len(), 0, "nothing trusted before a fetch");
        assert!(TrustedKeys::default().is_empty());
    }

    #[test]
    fn a_url_cannot_replace_a_files_key_and_its_keys_go_stale() {
        let file_key = SigningKey::generate(Some("k1".into()))
            .unwrap()
            .public()
            .clone();
        let mut fixed = KeySet::new();
        fixed.insert(file_key.clone()).unwrap();
        let url = vec!["https://wallet.example/jwks".to_owned()];
        let keys = TrustedKeys::with_urls(
            fixed,
            url,
            300,
            crate::outbound::client(None, None).unwrap(),
        )
        .unwrap();
        let mut published = KeySet::new();
        for kid in ["k1", "k2"] {
            published
                .insert(
                    SigningKey::generate(Some(kid.into()))
                        .unwrap()
                        .public()
                        .clone(),
                )
                .unwrap();
        }
        {
            let mut state = keys.0.remotes[0].lock();
            state.keys = published;
            state.fetched_at = Some(1_000);
        }
        keys.rebuild(1_000);
        let (set, first) = keys.current(1_000);
        assert_eq!(set.get("k1").unwrap(), &file_key, "the file's k1 stays");
        assert!(set.get("k2").is_ok());
        assert_eq!(keys.current(1_599).1, first, "fresh until two periods pass");
        let (set, later) = keys.current(1_600);
        assert_ne!(later, first);
        assert!(set.get("k2").is_err(), "stale: the URL's keys are gone");
        assert!(set.get("k1").is_ok(), "a file's keys never go stale");
    }
}
