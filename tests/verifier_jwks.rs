//! Trusted keys published at JWKS URLs: a remote wallet's mandate keys and a merchant's checkout
//! keys, fetched from a loopback server. The verifier trusts what the URL publishes now: a key
//! the publisher adds is fetched at its first use (at most once per 30 seconds per URL, however
//! many presentations name unknown keys), a key it removes stops being trusted at the next
//! fetch, and a URL that cannot be fetched keeps its last keys for two refresh periods only.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ap2_mandate::jose::{KeySet, SigningKey};
use ap2_mandate::jwks::{TrustedKeys, FETCH_TIMEOUT};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{json, Map, Value};
use support::verifier::{world_trusting, Actor, World};

/// The documents the publisher serves, by name, and how often each was fetched.
#[derive(Clone, Default)]
struct Publisher {
    docs: Arc<Mutex<HashMap<String, (StatusCode, String)>>>,
    fetches: Arc<Mutex<HashMap<String, usize>>>,
    base: Arc<Mutex<String>>,
}

async fn document(State(p): State<Publisher>, Path(name): Path<String>) -> (StatusCode, String) {
    *p.fetches.lock().unwrap().entry(name.clone()).or_default() += 1;
    p.docs
        .lock()
        .unwrap()
        .get(&name)
        .cloned()
        .unwrap_or((StatusCode::NOT_FOUND, String::new()))
}

impl Publisher {
    async fn start() -> Publisher {
        let publisher = Publisher::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *publisher.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/jwks/{name}", get(document))
            .with_state(publisher.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        publisher
    }

    fn url(&self, name: &str) -> String {
        format!("{}/jwks/{name}", self.base.lock().unwrap())
    }

    fn publish(&self, name: &str, keys: &[&SigningKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.public().to_value()).collect();
        self.answer(name, StatusCode::OK, json!({ "keys": keys }).to_string());
    }

    fn answer(&self, name: &str, status: StatusCode, body: String) {
        self.docs
            .lock()
            .unwrap()
            .insert(name.to_owned(), (status, body));
    }

    fn fetches(&self, name: &str) -> usize {
        self.fetches.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

fn from_url(url: String, refresh: i64) -> TrustedKeys {
    let http = ap2_mandate::outbound::client(None, Some(FETCH_TIMEOUT)).unwrap();
    TrustedKeys::with_urls(KeySet::new(), vec![url], refresh, http).unwrap()
}

/// A fresh order paid under mandates the SDK-style issuer signed with `root`, its checkout
/// signed with `shop`; returns the status and the reasons.
async fn pay(
    w: &World,
    a: &Actor,
    root: &SigningKey,
    shop: &SigningKey,
    id: &str,
) -> (String, Value) {
    let open_checkout = w.open_checkout(root, Map::new(), &a.agent);
    let open_payment = w.open_payment(root, Map::new(), &a.agent, &open_checkout, vec![]);
    let jwt = w.checkout_by(shop, id, 4900, "USD");
    let nonce = w.challenge(a).await;
    let body = json!({
        "payment_mandate": w.close_payment(&open_payment, &a.agent.key, &jwt, 4900, &nonce),
        "checkout_jwt": jwt,
        "checkout_mandate": w.order(&open_checkout, &a.agent, &jwt)});
    let answer = w.present(a, &body).await.json();
    (
        answer["status"].as_str().unwrap_or("").to_owned(),
        answer["reasons"].clone(),
    )
}

fn key(kid: &str) -> SigningKey {
    SigningKey::generate(Some(kid.into())).unwrap()
}

#[tokio::test]
async fn issuer_keys_follow_what_the_url_publishes() {
    let publisher = Publisher::start().await;
    let sdk = from_url(publisher.url("sdk"), 300);
    let shops = from_url(publisher.url("shop"), 300);
    let w = world_trusting(support::sqlite_store().await, sdk.clone(), shops.clone()).await;
    let alice = w.actor("shopper", "alice").await;
    let shop = &w.merchant;
    publisher.publish("sdk", &[&w.sdk_root]);
    publisher.publish("shop", &[shop]);

    // Nothing is trusted before the first fetch, however the key ids read.
    assert_eq!(sdk.current(w.h.now()).0.len(), 0);
    // The start-up fetch: both URLs' keys are trusted.
    for keys in [&sdk, &shops] {
        let reports = keys.refresh(w.h.now(), true).await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, Ok(1), "{reports:?}");
    }
    assert_eq!(
        pay(&w, &alice, &w.sdk_root, shop, "chk_j1").await,
        ("Success".into(), json!([]))
    );
    assert_eq!(
        publisher.fetches("sdk"),
        1,
        "a known key id fetches nothing"
    );

    // The issuer rotates: a mandate under its new key is accepted after one early fetch (the
    // URL was last fetched more than 30 s ago).
    let rotated = key("sdk-root-2");
    publisher.publish("sdk", &[&w.sdk_root, &rotated]);
    w.h.advance(31);
    assert_eq!(pay(&w, &alice, &rotated, shop, "chk_j2").await.0, "Success");
    assert_eq!(publisher.fetches("sdk"), 2);

    // A flood of mandates under a key nobody publishes: each refused (the order chain is checked
    // first), one fetch per 30 s.
    let stranger = key("sdk-root-9");
    for i in 0..4 {
        let (status, reasons) = pay(&w, &alice, &stranger, shop, &format!("chk_f{i}")).await;
        assert_eq!(status, "Error", "{reasons}");
        assert_eq!(reasons, json!(["order_mandate_invalid"]));
    }
    assert_eq!(publisher.fetches("sdk"), 2, "tried within the last 30 s");
    w.h.advance(31);
    assert_eq!(pay(&w, &alice, &stranger, shop, "chk_f9").await.0, "Error");
    assert_eq!(publisher.fetches("sdk"), 3, "one more fetch after 30 s");

    // The issuer removes its old key: trusted until the next scheduled fetch, then refused.
    publisher.publish("sdk", &[&rotated]);
    assert!(
        sdk.refresh(w.h.now(), false).await.is_empty(),
        "not due yet"
    );
    assert_eq!(
        pay(&w, &alice, &w.sdk_root, shop, "chk_j3").await.0,
        "Success"
    );
    w.h.advance(300);
    let alice = w.token_for(alice.agent, "alice").await;
    let reports = sdk.refresh(w.h.now(), false).await;
    assert_eq!(reports.len(), 1, "due after the refresh period");
    assert_eq!(
        pay(&w, &alice, &w.sdk_root, shop, "chk_j4").await,
        ("Error".into(), json!(["order_mandate_invalid"]))
    );
    assert_eq!(pay(&w, &alice, &rotated, shop, "chk_j5").await.0, "Success");

    // The URL fails: its last keys stay for two refresh periods after the last good fetch,
    // then none are trusted (fail closed), until it answers again.
    publisher.answer("sdk", StatusCode::INTERNAL_SERVER_ERROR, String::new());
    w.h.advance(300);
    let alice = w.token_for(alice.agent, "alice").await;
    let reports = sdk.refresh(w.h.now(), false).await;
    assert!(reports[0].outcome.is_err(), "{reports:?}");
    assert_eq!(pay(&w, &alice, &rotated, shop, "chk_j6").await.0, "Success");
    w.h.advance(300);
    let alice = w.token_for(alice.agent, "alice").await;
    assert_eq!(
        pay(&w, &alice, &rotated, shop, "chk_j7").await,
        ("Error".into(), json!(["order_mandate_invalid"]))
    );
    publisher.answer("sdk", StatusCode::OK, "{\"keys\": [], \"keys\": []}".into());
    w.h.advance(31);
    assert_eq!(
        pay(&w, &alice, &rotated, shop, "chk_j8").await.0,
        "Error",
        "a document with a duplicate member is not used"
    );
    publisher.publish("sdk", &[&rotated]);
    w.h.advance(31);
    assert_eq!(pay(&w, &alice, &rotated, shop, "chk_j9").await.0, "Success");
}

#[tokio::test]
async fn merchant_keys_follow_what_the_url_publishes() {
    let publisher = Publisher::start().await;
    let sdk = from_url(publisher.url("sdk"), 300);
    let shops = from_url(publisher.url("shop"), 300);
    let w = world_trusting(support::sqlite_store().await, sdk.clone(), shops.clone()).await;
    let alice = w.actor("shopper", "alice").await;
    publisher.publish("sdk", &[&w.sdk_root]);
    publisher.publish("shop", &[&w.merchant]);
    sdk.refresh(w.h.now(), true).await;
    shops.refresh(w.h.now(), true).await;
    let root = &w.sdk_root;
    assert_eq!(
        pay(&w, &alice, root, &w.merchant, "chk_m1").await.0,
        "Success"
    );

    // A checkout under a key the merchant has just published: fetched early, accepted.
    let rotated = key("shop-2");
    publisher.publish("shop", &[&w.merchant, &rotated]);
    w.h.advance(31);
    assert_eq!(pay(&w, &alice, root, &rotated, "chk_m2").await.0, "Success");
    assert_eq!(publisher.fetches("shop"), 2);

    // A key nobody publishes (even under a published key id) is refused.
    let forged = key("shop-2");
    let (status, reasons) = pay(&w, &alice, root, &forged, "chk_m3").await;
    assert_eq!(status, "Error");
    assert_eq!(reasons, json!(["checkout_jwt_untrusted"]));

    // Removed from the document: refused once the removal is fetched.
    publisher.publish("shop", &[&rotated]);
    w.h.advance(300);
    let alice = w.token_for(alice.agent, "alice").await;
    shops.refresh(w.h.now(), false).await;
    let (status, reasons) = pay(&w, &alice, root, &w.merchant, "chk_m4").await;
    assert_eq!(status, "Error");
    assert_eq!(reasons, json!(["checkout_jwt_untrusted"]));
    assert_eq!(pay(&w, &alice, root, &rotated, "chk_m5").await.0, "Success");
}

#[tokio::test]
async fn a_published_key_id_cannot_take_over_another_issuers() {
    let publisher = Publisher::start().await;
    let sdk = from_url(publisher.url("sdk"), 300);
    let shops = from_url(publisher.url("shop"), 300);
    let w = world_trusting(support::sqlite_store().await, sdk.clone(), shops.clone()).await;
    let alice = w.actor("shopper", "alice").await;
    // The SDK-style issuer publishes, beside its own key, a key under the wallet's key id.
    let impostor = key("wallet-1");
    publisher.publish("sdk", &[&w.sdk_root, &impostor]);
    publisher.publish("shop", &[&w.merchant]);
    sdk.refresh(w.h.now(), true).await;
    shops.refresh(w.h.now(), true).await;

    // The wallet (configured first) keeps its key id: its mandates, with evidence, pass.
    let (open_checkout, open_payment) = w.open_pair(&alice);
    let body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_t1", 4900)
        .await;
    assert_eq!(w.present(&alice, &body).await.json()["status"], "Success");
    // Mandates the impostor key signs under that id are refused, though `cnf`-only would do.
    let (status, _) = pay(&w, &alice, &impostor, &w.merchant, "chk_t2").await;
    assert_eq!(status, "Error");
    assert_eq!(
        pay(&w, &alice, &w.sdk_root, &w.merchant, "chk_t3").await.0,
        "Success"
    );
}
