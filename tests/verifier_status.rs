//! Revocation of mandates from a wallet that runs elsewhere: the verifier fetches the status
//! list the mandate names (OAuth Token Status List), trusts it only under the keys of the
//! issuer that signed the mandate, caches it for its `ttl`, and refuses whenever the list cannot
//! be had or trusted. The wallet here is a loopback server signing with the SDK-style issuer's
//! key (`cnf`-only profile).

mod support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ap2_mandate::jose::{sign_compact, SigningKey};
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{json, Map, Value};
use support::oauth::clone_key;
use support::verifier::{world, Actor, World};

/// The remote wallet's lists: one bit per mandate, what it signs with, how often it was asked.
#[derive(Clone)]
struct Lists {
    bits: Arc<Mutex<Vec<u8>>>,
    issuer: Arc<SigningKey>,
    stranger: Arc<SigningKey>,
    clock: Arc<AtomicI64>,
    base: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn list(
    State(l): State<Lists>,
    Path(name): Path<String>,
) -> ([(&'static str, &'static str); 1], String) {
    l.fetches.fetch_add(1, Ordering::SeqCst);
    let base = l.base.lock().unwrap().clone();
    let now = l.clock.load(Ordering::SeqCst);
    let raw = l.bits.lock().unwrap().clone();
    let lst = ap2_mandate::jose::b64::encode(miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6));
    // `forged` is signed by a key the verifier does not trust for this issuer; `renamed` names
    // another list as its subject.
    let (key, sub) = match name.as_str() {
        "forged" => (&l.stranger, format!("{base}/lists/forged")),
        "renamed" => (&l.issuer, format!("{base}/lists/1")),
        _ => (&l.issuer, format!("{base}/lists/{name}")),
    };
    let claims = json!({"sub": sub, "iat": now, "exp": now + 3600, "ttl": 30,
        "status_list": {"bits": 1, "lst": lst}});
    let token = sign_compact(
        key,
        Some("statuslist+jwt"),
        false,
        claims.to_string().as_bytes(),
    )
    .unwrap();
    ([("content-type", "application/statuslist+jwt")], token)
}

async fn serve_lists(w: &World) -> Lists {
    let lists = Lists {
        bits: Arc::new(Mutex::new(vec![0u8; 4])),
        issuer: Arc::new(clone_key(&w.sdk_root)),
        stranger: Arc::new(SigningKey::generate(Some("sdk-root-1".into())).unwrap()),
        clock: w.h.clock.clone(),
        base: Arc::new(Mutex::new(String::new())),
        fetches: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *lists.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/lists/{name}", get(list))
        .with_state(lists.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    lists
}

/// Root claims of an SDK-style mandate that points into a status list.
fn with_status(uri: &str, idx: Value) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("iss".into(), "https://sdk-wallet.example".into());
    claims.insert(
        "status".into(),
        json!({"status_list": {"idx": idx, "uri": uri}}),
    );
    claims
}

/// A fresh order paid under mandates whose roots point at `uri` (entries 3 and `idx`).
async fn pay(w: &World, a: &Actor, uri: &str, idx: Value, order: &str) -> Value {
    let open_checkout = w.open_checkout(&w.sdk_root, with_status(uri, json!(3)), &a.agent);
    let open_payment = w.open_payment(
        &w.sdk_root,
        with_status(uri, idx),
        &a.agent,
        &open_checkout,
        vec![],
    );
    let body = w
        .fresh_payment(a, &open_checkout, &open_payment, order, 4900)
        .await;
    w.present(a, &body).await.json()
}

fn outcome(answer: &Value) -> (String, Value) {
    (
        answer["status"].as_str().unwrap_or("").to_owned(),
        answer["reasons"].clone(),
    )
}

#[tokio::test]
async fn a_remote_wallets_revocation_is_read_from_its_signed_status_list() {
    let w = world(support::sqlite_store().await).await;
    let alice = w.actor("shopper", "alice").await;
    let lists = serve_lists(&w).await;
    let base = lists.base.lock().unwrap().clone();
    let uri = format!("{base}/lists/1");

    // Entry 5 clear: accepted, after one fetch.
    let answer = pay(&w, &alice, &uri, json!(5), "chk_s1").await;
    assert_eq!(outcome(&answer), ("Success".into(), json!([])), "{answer}");
    assert_eq!(lists.fetches.load(Ordering::SeqCst), 1);

    // The wallet revokes entry 5. Within the list's ttl (30 s) the cached list still answers,
    // and nothing is fetched again.
    lists.bits.lock().unwrap()[0] |= 1 << 5;
    let answer = pay(&w, &alice, &uri, json!(6), "chk_s2").await;
    assert_eq!(outcome(&answer).0, "Success", "{answer}");
    assert_eq!(
        lists.fetches.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );

    // Past the ttl the list is fetched again: entry 5 is refused, entry 6 is still good.
    w.h.advance(31);
    let answer = pay(&w, &alice, &uri, json!(5), "chk_s3").await;
    assert_eq!(
        outcome(&answer),
        ("Error".into(), json!(["mandate_revoked"])),
        "{answer}"
    );
    assert_eq!(lists.fetches.load(Ordering::SeqCst), 2);
    let answer = pay(&w, &alice, &uri, json!(6), "chk_s4").await;
    assert_eq!(outcome(&answer).0, "Success", "{answer}");

    // Every list that cannot be trusted or had is an unknown status, refused.
    let unknown = json!(["mandate_status_unknown"]);
    for (i, (label, uri, idx)) in [
        (
            "signed by another key",
            format!("{base}/lists/forged"),
            json!(6),
        ),
        (
            "naming another list",
            format!("{base}/lists/renamed"),
            json!(6),
        ),
        ("past the list's end", uri.clone(), json!(4096)),
        ("an index that is not a number", uri.clone(), json!("6")),
        (
            "plain http off loopback",
            "http://wallet.example/lists/1".to_owned(),
            json!(6),
        ),
        (
            "nobody listening",
            "http://127.0.0.1:9/lists/1".to_owned(),
            json!(6),
        ),
        ("not found", format!("{base}/elsewhere/1"), json!(6)),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = pay(&w, &alice, &uri, idx, &format!("chk_u{i}")).await;
        assert_eq!(
            outcome(&answer),
            ("Error".into(), unknown.clone()),
            "{label}: {answer}"
        );
    }
}
