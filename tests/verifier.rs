//! The checkout verifier end to end over real HTTP on loopback, on SQLite and PostgreSQL: an
//! agent with its own registered key and a DPoP-bound token for the verifier asks for a
//! challenge, closes mandates a wallet signed for its human, and presents them; the verifier
//! approves exactly what the chain, the agent, the human and the state all allow.

mod support;

use std::sync::Arc;

use ap2_mandate::jose::UnverifiedJws;
use ap2_mandate::jose::{sha256_b64, sign_compact, HeaderPolicy, KeySet, SigningKey, TypRule};
use ap2_mandate::mandate::build::{close, join};
use ap2_mandate::store::records::IdentityRecords as _;
use ap2_mandate::store::{AuditLog as _, DecisionLedger as _, Store};
use serde_json::{json, Map, Value};
use support::oauth::{Resp, TestAgent};

use support::verifier::{ledger_id, merchant, world, Actor, World, SHOP_AUD};

fn decision(res: &Resp) -> (String, String) {
    assert_eq!(res.status, 200, "{}", res.body);
    let body = res.json();
    let status = body["status"].as_str().unwrap().to_owned();
    let reason = body["reasons"][0].as_str().unwrap_or("").to_owned();
    (status, reason)
}

fn refused_with(res: &Resp, code: &str, reason: &str) {
    let body = res.json();
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(body["status"], "Error", "{}", res.body);
    assert_eq!(body["error"], code, "{}", res.body);
    assert_eq!(body["reasons"], json!([reason]), "{}", res.body);
}

async fn audit_count(w: &World) -> usize {
    w.h.service.store().tail(10_000).await.unwrap().len()
}

async fn happy_path_and_refusals(store: Store, label: &str) {
    let w = world(store).await;
    let alice = w.actor("shopper", "alice").await;
    let first_grant = alice.claims.grant_id.clone();
    let (open_checkout, open_payment) = w.open_pair(&alice);

    // The happy path: Success, a signed receipt that verifies against our JWKS, a payment id.
    let body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_1", 12900)
        .await;
    let res = w.present(&alice, &body).await;
    assert_eq!(
        decision(&res),
        ("Success".into(), String::new()),
        "{label}: {}",
        res.body
    );
    let answer = res.json();
    assert!(answer["payment_id"].as_str().unwrap().starts_with("pay_"));
    let jwks =
        w.h.call("GET", "/.well-known/jwks.json", &[], None)
            .await
            .json();
    let receipts = KeySet::from_jwks(&jwks).unwrap();
    let jws = UnverifiedJws::parse(
        answer["receipt"].as_str().unwrap(),
        &HeaderPolicy::trusted_key(TypRule::OneOf(&["JWT"])),
    )
    .unwrap();
    let receipt = receipts.verify(jws).unwrap().into_claims();
    assert_eq!(receipt["status"], "Success");
    assert_eq!(receipt["iss"], w.aud.as_str());
    assert_eq!(receipt["payment_id"], answer["payment_id"]);
    assert_eq!(receipt["reference"], answer["reference"]);
    let last_hop = body["payment_mandate"]
        .as_str()
        .unwrap()
        .rsplit("~~")
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        answer["reference"],
        sha256_b64(last_hop.as_bytes()),
        "{label}: reference is the closing hop as presented"
    );

    // The same presentation again: the challenge is spent.
    let again = w.present(&alice, &body).await;
    refused_with(&again, "invalid_credential", "nonce_used");

    // The same closed mandate under a fresh challenge cannot be built without re-signing; a
    // re-signed closing hop for the same checkout is a replay of its transaction_id.
    let nonce = w.challenge(&alice).await;
    let jwt = body["checkout_jwt"].as_str().unwrap();
    let replay = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": body["checkout_mandate"]});
    refused_with(
        &w.present(&alice, &replay).await,
        "invalid_mandate",
        "replayed",
    );

    // A nonce never issued here.
    let jwt = w.checkout("chk_2", 12900, "USD");
    let forged = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, &jwt, 12900, "never-issued"),
        "checkout_jwt": jwt, "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &forged).await,
        "invalid_credential",
        "nonce_unknown",
    );

    // A nonce another verifier issued (for its own audience) is not one of ours.
    w.h.service
        .store()
        .issue_nonce(
            "n-elsewhere",
            "https://other-verifier.example",
            None,
            w.h.now() + 300,
        )
        .await
        .unwrap();
    let elsewhere = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, &jwt, 12900, "n-elsewhere"),
        "checkout_jwt": jwt, "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &elsewhere).await,
        "invalid_credential",
        "nonce_unknown",
    );

    // An expired nonce.
    let nonce = w.challenge(&alice).await;
    w.h.advance(301);
    let alice = w.token_for_again(alice).await;
    let late = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, &jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &late).await,
        "invalid_credential",
        "nonce_expired",
    );

    // The signed data always wins: the amount must be the checkout total.
    let body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_3", 12900)
        .await;
    let nonce = w.challenge(&alice).await;
    let jwt = body["checkout_jwt"].as_str().unwrap();
    let cheap = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, jwt, 100, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": body["checkout_mandate"]});
    refused_with(
        &w.present(&alice, &cheap).await,
        "invalid_mandate",
        "amount_mismatch",
    );

    // Above the mandate's amount range.
    let big = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_big", 60000)
        .await;
    refused_with(
        &w.present(&alice, &big).await,
        "invalid_mandate",
        "amount_out_of_range",
    );

    // Unsigned fields in the body are refused, not trusted.
    let mut extra = body.clone();
    extra["amount"] = json!(1);
    let res = w.present(&alice, &extra).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (400, "invalid_request"),
        "{}",
        res.body
    );

    // A wrong media type.
    let res =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &w.auth(&alice, &alice.agent.key, "/v1/payments/verify"),
            Some(("text/plain", body.to_string())),
        )
        .await;
    assert_eq!(res.status, 415, "{}", res.body);

    // Without the payment.reference order (the policy requires it), the payment is refused.
    let mut no_order = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_4", 12900)
        .await;
    no_order.as_object_mut().unwrap().remove("checkout_mandate");
    refused_with(
        &w.present(&alice, &no_order).await,
        "invalid_mandate",
        "payment_reference_mismatch",
    );

    // A proof for another URL, a replayed proof, a bearer token, no token at all: 401.
    let fresh = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_5", 12900)
        .await;
    let wrong_url = w.auth(&alice, &alice.agent.key, "/v1/checkouts/verify");
    let res =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &wrong_url,
            Some(("application/json", fresh.to_string())),
        )
        .await;
    assert_eq!(res.status, 401, "{}", res.body);
    assert!(res.header("www-authenticate").unwrap().starts_with("DPoP "));
    let headers = w.auth(&alice, &alice.agent.key, "/v1/payments/verify");
    let first =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &headers,
            Some(("application/json", fresh.to_string())),
        )
        .await;
    assert_eq!(decision(&first).0, "Success", "{}", first.body);
    let replayed =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &headers,
            Some(("application/json", fresh.to_string())),
        )
        .await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    let bearer = [("authorization", format!("Bearer {}", alice.token))];
    let res =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &bearer,
            Some(("application/json", fresh.to_string())),
        )
        .await;
    assert_eq!(res.status, 401, "{}", res.body);
    let res =
        w.h.call(
            "POST",
            "/v1/payments/verify",
            &[],
            Some(("application/json", fresh.to_string())),
        )
        .await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (401, "invalid_token"),
        "{}",
        res.body
    );

    // Another agent presenting alice's mandate with its own valid token: its key is not the
    // key the mandate delegates to.
    let mallory = w.actor("mallory", "alice").await;
    let stolen = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_6", 12900)
        .await;
    let nonce = w.challenge(&mallory).await;
    let jwt = stolen["checkout_jwt"].as_str().unwrap();
    let as_mallory = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": stolen["checkout_mandate"]});
    refused_with(
        &w.present(&mallory, &as_mallory).await,
        "invalid_credential",
        "agent_key_mismatch",
    );

    // Even with a copy of alice's agent's key, mallory's token (bound to that key) names
    // mallory, not the agent the mandate's delegation names.
    let (code, verifier) =
        w.h.authorize(
            &mallory.agent,
            "alice",
            "payments:present",
            &[("resource", &w.aud)],
        )
        .await;
    let stolen_key = support::oauth::clone_key(&alice.agent.key);
    let res =
        w.h.token_with(
            &mallory.agent,
            &stolen_key,
            &[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", support::oauth::REDIRECT),
                ("code_verifier", verifier.as_str()),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let token = res.json()["access_token"].as_str().unwrap().to_owned();
    let claims =
        w.h.service
            .verify_token(&token, w.h.now(), false)
            .await
            .unwrap();
    let thief = Actor {
        agent: TestAgent {
            id: mallory.agent.id.clone(),
            key: stolen_key,
        },
        user: claims.sub.clone(),
        token,
        claims,
    };
    let nonce = w.challenge(&thief).await;
    let with_key = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": stolen["checkout_mandate"]});
    refused_with(
        &w.present(&thief, &with_key).await,
        "invalid_credential",
        "agent_mismatch",
    );

    // A nonce issued to mallory cannot be answered by alice's agent.
    let jwt = w.checkout("chk_7", 12900, "USD");
    let other_nonce = json!({"payment_mandate": w.close_payment(&open_payment, &alice.agent.key, &jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &other_nonce).await,
        "invalid_credential",
        "nonce_other_agent",
    );

    // Bob's token for alice's agent cannot spend alice's mandate.
    let bob_agent = TestAgent {
        id: alice.agent.id.clone(),
        key: SigningKey::from_jwk(
            &serde_json::from_str::<Value>(&alice.agent.key.to_private_jwk().unwrap()).unwrap(),
        )
        .unwrap(),
    };
    w.h.user("bob").await;
    let bob = w.token_for(bob_agent, "bob").await;
    let for_bob = w
        .fresh_payment(&bob, &open_checkout, &open_payment, "chk_8", 12900)
        .await;
    refused_with(
        &w.present(&bob, &for_bob).await,
        "invalid_credential",
        "subject_mismatch",
    );

    // A root without delegation evidence from the wallet is refused; from the SDK-style issuer
    // (cnf only by policy) it is accepted.
    let bare_checkout = w.open_checkout(&w.wallet, Map::new(), &alice.agent);
    let bare_payment = w.open_payment(&w.wallet, Map::new(), &alice.agent, &bare_checkout, vec![]);
    let bare = w
        .fresh_payment(&alice, &bare_checkout, &bare_payment, "chk_9", 12900)
        .await;
    refused_with(
        &w.present(&alice, &bare).await,
        "invalid_credential",
        "delegation_evidence_missing",
    );
    let sdk_checkout = w.open_checkout(&w.sdk_root, Map::new(), &alice.agent);
    let sdk_payment = w.open_payment(&w.sdk_root, Map::new(), &alice.agent, &sdk_checkout, vec![]);
    let sdk = w
        .fresh_payment(&alice, &sdk_checkout, &sdk_payment, "chk_10", 12900)
        .await;
    assert_eq!(decision(&w.present(&alice, &sdk).await).0, "Success");

    // Under cnf-only trust, another agent's token cannot present it: its DPoP key is not the
    // mandate's cnf key.
    let nonce = w.challenge(&mallory).await;
    let jwt = w.checkout("chk_12", 12900, "USD");
    let sdk_stolen = json!({"payment_mandate": w.close_payment(&sdk_payment, &alice.agent.key, &jwt, 12900, &nonce),
        "checkout_jwt": jwt, "checkout_mandate": w.order(&sdk_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&mallory, &sdk_stolen).await,
        "invalid_credential",
        "agent_key_mismatch",
    );

    // A closing hop made for another audience.
    let nonce = w.challenge(&alice).await;
    let jwt = w.checkout("chk_13", 12900, "USD");
    let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
        "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "USD"},
        "payment_instrument": {"id": "pi_card_1", "type": "card"}});
    let closing = close(
        &alice.agent.key,
        &open_payment,
        closed,
        SHOP_AUD,
        &nonce,
        w.h.now(),
    )
    .unwrap();
    let elsewhere = json!({"payment_mandate": join(&[&open_payment, &closing]), "checkout_jwt": jwt,
        "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &elsewhere).await,
        "invalid_credential",
        "aud_mismatch",
    );

    // A checkout signed by a key nobody trusts.
    let stranger = SigningKey::generate(Some("shop-1".into())).unwrap();
    let mut untrusted = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_11", 12900)
        .await;
    let body = json!({"id": "chk_11", "merchant": merchant(), "currency": "USD", "status": "ready_for_complete",
        "line_items": [{"id": "li_1", "item": {"id": "sku_boot", "title": "Boot", "price": 12900}, "quantity": 1}],
        "totals": [{"type": "total", "amount": 12900}], "links": []});
    untrusted["checkout_jwt"] =
        sign_compact(&stranger, Some("JWT"), false, body.to_string().as_bytes())
            .unwrap()
            .into();
    refused_with(
        &w.present(&alice, &untrusted).await,
        "invalid_mandate",
        "checkout_jwt_untrusted",
    );

    // Every decision, accepted or refused, is in the audit chain, and the chain is whole.
    let records = w.h.service.store().tail(10_000).await.unwrap();
    let verifies: Vec<_> = records
        .iter()
        .filter(|r| r.record.action == "payment.verify")
        .collect();
    let accepted = verifies
        .iter()
        .filter(|r| r.record.outcome == "success")
        .count();
    assert_eq!(accepted, 3, "{label}: the three accepted payments");
    let first_ok = verifies
        .iter()
        .find(|r| r.record.outcome == "success")
        .unwrap();
    assert_eq!(
        first_ok.record.agent_id.as_deref(),
        Some(alice.agent.id.as_str())
    );
    assert_eq!(
        first_ok.record.user_id.as_deref(),
        Some(alice.user.as_str())
    );
    assert_eq!(first_ok.record.grant_id, first_grant);
    assert!(first_ok.record.mandate_hash.is_some() && first_ok.record.token_jti.is_some());
    assert_eq!(first_ok.record.amount.as_deref(), Some("129.00 USD"));
    assert_eq!(first_ok.record.merchant.as_deref(), Some("mer_shop_1"));
    assert!(verifies
        .iter()
        .any(|r| r.record.reason.as_deref() == Some("replayed")));
    w.h.service.store().verify().await.unwrap().unwrap();
    assert!(audit_count(&w).await > 10);

    // The same decisions in the metrics, by outcome and reason, with latency histograms.
    let metrics = w.h.call("GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, 200);
    let value = |needle: &str| -> u64 {
        metrics
            .body
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse().unwrap())
    };
    assert_eq!(
        value("ap2_decisions_total{action=\"payment.verify\",outcome=\"success\",reason=\"\"}"),
        3
    );
    assert_eq!(value("ap2_decisions_total{action=\"payment.verify\",outcome=\"refused\",reason=\"replayed\"}"), 1);
    assert!(value("ap2_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/payments/verify\",status=\"200\"}") >= 10);
    assert!(
        !metrics.body.contains(&alice.agent.id),
        "no ids in metric labels"
    );
}

impl World {
    /// A fresh token for the same agent and user (the clock moved past the old one).
    async fn token_for_again(&self, a: Actor) -> Actor {
        let user = self.h.service.store().user(&a.user).await.unwrap().username;
        self.token_for(a.agent, &user).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_are_verified_and_refused_over_http() {
    for (label, store) in support::stores().await {
        happy_path_and_refusals(store, label).await;
    }
}

async fn disabled_and_revoked(store: Store, label: &str) {
    let w = world(store).await;
    let alice = w.actor("shopper", "alice").await;
    let (open_checkout, open_payment) = w.open_pair(&alice);

    // A second grant for the same agent and user: revoking the first grant revokes its tokens,
    // and a mandate issued under it is refused even with a token of the second grant.
    let again = w
        .token_for(
            TestAgent {
                id: alice.agent.id.clone(),
                key: clone_key(&alice.agent.key),
            },
            "alice",
        )
        .await;
    assert_ne!(again.claims.grant_id, alice.claims.grant_id);
    let body = w
        .fresh_payment(&again, &open_checkout, &open_payment, "chk_a", 12900)
        .await;
    w.h.service
        .store()
        .revoke_grant(alice.claims.grant_id.as_deref().unwrap(), w.h.now())
        .await
        .unwrap();
    refused_with(
        &w.present(&again, &body).await,
        "invalid_credential",
        "grant_not_active",
    );
    let res = w.present(&alice, &body).await;
    assert_eq!(
        res.status, 401,
        "{label}: a token of the revoked grant: {}",
        res.body
    );

    // Disabling the agent stops every token of it at once.
    let res =
        w.h.admin_json(
            "POST",
            &format!("/v1/agents/{}/disable", alice.agent.id),
            &json!({}),
        )
        .await;
    assert!(res.status < 300, "{}", res.body);
    let body = w.fresh_body_without_challenge(&again, &open_checkout, &open_payment, "chk_b");
    let res = w.present(&again, &body).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (401, "invalid_token"),
        "{label}: {}",
        res.body
    );
}

impl World {
    fn fresh_body_without_challenge(
        &self,
        a: &Actor,
        open_checkout: &str,
        open_payment: &str,
        id: &str,
    ) -> Value {
        let jwt = self.checkout(id, 12900, "USD");
        json!({"payment_mandate": self.close_payment(open_payment, &a.agent.key, &jwt, 12900, "n"),
            "checkout_jwt": jwt, "checkout_mandate": self.order(open_checkout, &a.agent, &jwt)})
    }
}

fn clone_key(key: &SigningKey) -> SigningKey {
    SigningKey::from_jwk(&serde_json::from_str::<Value>(&key.to_private_jwk().unwrap()).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_agents_and_revoked_grants_are_refused() {
    for (label, store) in support::stores().await {
        disabled_and_revoked(store, label).await;
    }
}

async fn idempotency(store: Store, label: &str) {
    let w = world(store).await;
    let alice = w.actor("shopper", "alice").await;
    let (open_checkout, open_payment) = w.open_pair(&alice);
    let mut body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_i", 12900)
        .await;
    body["idempotency_key"] = "order-42-attempt".into();

    let first = w.present(&alice, &body).await;
    assert_eq!(decision(&first).0, "Success", "{label}: {}", first.body);
    let retry = w.present(&alice, &body).await;
    assert_eq!(retry.status, 200);
    assert_eq!(
        retry.body, first.body,
        "{label}: an exact retry gets the first answer byte for byte"
    );
    let header_retry = w
        .post(
            &alice,
            "/v1/payments/verify",
            &body,
            &[("idempotency-key", "order-42-attempt".into())],
        )
        .await;
    assert_eq!(header_retry.body, first.body);

    let mut changed = body.clone();
    changed["checkout_mandate"] = Value::Null;
    changed.as_object_mut().unwrap().remove("checkout_mandate");
    let res = w.present(&alice, &changed).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (422, "idempotency_key_reused"),
        "{}",
        res.body
    );

    let res = w
        .post(
            &alice,
            "/v1/payments/verify",
            &body,
            &[("idempotency-key", "another".into())],
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.body);

    // A refusal is kept under its key too.
    let mut refused = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_j", 60000)
        .await;
    refused["idempotency_key"] = "order-43".into();
    let first = w.present(&alice, &refused).await;
    refused_with(&first, "invalid_mandate", "amount_out_of_range");
    assert_eq!(w.present(&alice, &refused).await.body, first.body);

    // The store goes away: every verifier route fails closed with 503 and decides nothing.
    let pending = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_k", 12900)
        .await;
    w.h.service.store().close().await;
    let res = w.present(&alice, &pending).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (503, "temporarily_unavailable"),
        "{label}: {}",
        res.body
    );
    let res =
        w.h.call(
            "POST",
            "/v1/challenges",
            &w.auth(&alice, &alice.agent.key, "/v1/challenges"),
            None,
        )
        .await;
    assert_eq!(res.status, 503, "{label}: {}", res.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_return_the_first_answer() {
    for (label, store) in support::stores().await {
        idempotency(store, label).await;
    }
}

async fn races(store: Store, label: &str) {
    let w = Arc::new(world(store).await);
    let alice = Arc::new(w.actor("shopper", "alice").await);
    let open_checkout = w.open_checkout(&w.wallet, w.evidence(&alice), &alice.agent);

    // 50 parallel presentations of one mandate: exactly one Success.
    let open_payment = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        vec![],
    );
    let body = Arc::new(
        w.fresh_payment(&alice, &open_checkout, &open_payment, "chk_r", 12900)
            .await,
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (w, alice, body) = (w.clone(), alice.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            decision(&w.present(&alice, &body).await)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let wins = outcomes.iter().filter(|(s, _)| s == "Success").count();
    assert_eq!(wins, 1, "{label}: {outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|(s, r)| s == "Success" || r == "nonce_used" || r == "replayed"));

    // A budget of 100.00 and ten parallel distinct payments of 15.00: exactly six.
    let budget = vec![json!({"type": "payment.budget", "max": 100, "currency": "USD"})];
    let open_payment = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        budget,
    );
    let mut bodies = Vec::new();
    for i in 0..10 {
        bodies.push(
            w.fresh_payment(
                &alice,
                &open_checkout,
                &open_payment,
                &format!("chk_b{i}"),
                1500,
            )
            .await,
        );
    }
    let mut tasks = Vec::new();
    for body in bodies {
        let (w, alice) = (w.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            decision(&w.present(&alice, &body).await)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let wins = outcomes.iter().filter(|(s, _)| s == "Success").count();
    assert_eq!(wins, 6, "{label}: {outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|(s, r)| s == "Success" || r == "budget_exceeded"));
    let usage =
        ap2_mandate::store::DecisionLedger::usage(w.h.service.store(), &ledger_id(&open_payment))
            .await
            .unwrap()
            .unwrap();
    assert_eq!((usage.total_minor, usage.uses), (9000, 6), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_presentations_spend_once_and_budgets_hold() {
    for (label, store) in support::stores().await {
        races(store, label).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_mandates_are_verified_for_the_merchant() {
    for (label, store) in support::stores().await {
        let w = world(store).await;
        let alice = w.actor("shopper", "alice").await;
        let open_checkout = w.open_checkout(&w.wallet, w.evidence(&alice), &alice.agent);
        let jwt = w.checkout("chk_c", 12900, "USD");
        let nonce = w.challenge(&alice).await;
        let closed = json!({"vct": "mandate.checkout.1", "checkout_jwt": jwt,
            "checkout_hash": sha256_b64(jwt.as_bytes())});
        let closing = close(
            &alice.agent.key,
            &open_checkout,
            closed,
            &w.aud,
            &nonce,
            w.h.now(),
        )
        .unwrap();
        let body =
            json!({"checkout_mandate": join(&[&open_checkout, &closing]), "checkout_jwt": jwt});
        // Larger than the 64 KiB other routes take: the verify routes read up to two chains.
        let padded = format!("{body}{}", " ".repeat(100_000));
        let headers = w.auth(&alice, &alice.agent.key, "/v1/checkouts/verify");
        let res =
            w.h.call(
                "POST",
                "/v1/checkouts/verify",
                &headers,
                Some(("application/json", padded)),
            )
            .await;
        assert_eq!(
            decision(&res),
            ("Success".into(), String::new()),
            "{label}: {}",
            res.body
        );
        assert!(res.json()["order_id"].as_str().unwrap().starts_with("ord_"));
        let again = w.post(&alice, "/v1/checkouts/verify", &body, &[]).await;
        refused_with(&again, "invalid_credential", "nonce_used");

        // Two boots where the mandate allows one: the line items do not match.
        let lines = json!({"id": "chk_d", "merchant": merchant(), "status": "ready_for_complete",
            "line_items": [{"id": "li_1", "item": {"id": "sku_boot", "title": "Boot", "price": 12900},
                "quantity": 2, "totals": [{"type": "total", "amount": 25800}]}],
            "currency": "USD", "totals": [{"type": "total", "amount": 25800}], "links": []});
        let two = sign_compact(
            &w.merchant,
            Some("JWT"),
            false,
            lines.to_string().as_bytes(),
        )
        .unwrap();
        let nonce = w.challenge(&alice).await;
        let closed = json!({"vct": "mandate.checkout.1", "checkout_jwt": two,
            "checkout_hash": sha256_b64(two.as_bytes())});
        let closing = close(
            &alice.agent.key,
            &open_checkout,
            closed,
            &w.aud,
            &nonce,
            w.h.now(),
        )
        .unwrap();
        let body =
            json!({"checkout_mandate": join(&[&open_checkout, &closing]), "checkout_jwt": two});
        let res = w.post(&alice, "/v1/checkouts/verify", &body, &[]).await;
        refused_with(&res, "invalid_mandate", "line_items_not_matched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_over_their_rate_are_told_when_to_come_back() {
    let store = support::sqlite_store().await;
    let limits = ap2_mandate::http::guard::LimitsConfig {
        agent_rate: 0.5,
        agent_burst: 2.0,
        ..Default::default()
    };
    let w = support::verifier::world_limited(store, limits).await;
    let alice = w.actor("shopper", "alice").await;
    w.challenge(&alice).await;
    w.challenge(&alice).await;
    let res =
        w.h.call(
            "POST",
            "/v1/challenges",
            &w.auth(&alice, &alice.agent.key, "/v1/challenges"),
            None,
        )
        .await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (429, "rate_limited"),
        "{}",
        res.body
    );
    let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");

    // Another agent is not held back by alice's.
    let bob = w.actor("other", "bob").await;
    w.challenge(&bob).await;

    // Every answer carries a request id; a well-formed one from the caller is kept.
    let res =
        w.h.call(
            "GET",
            "/healthz",
            &[("x-request-id", "trace-42".into())],
            None,
        )
        .await;
    assert_eq!(res.header("x-request-id").as_deref(), Some("trace-42"));
    let res =
        w.h.call(
            "GET",
            "/healthz",
            &[("x-request-id", "bad id;<script>".into())],
            None,
        )
        .await;
    let fresh = res.header("x-request-id").unwrap();
    assert!(fresh != "bad id" && !fresh.is_empty());

    // Oversized headers are refused before anything else.
    let res =
        w.h.call(
            "GET",
            "/healthz",
            &[("x-padding", "a".repeat(20_000))],
            None,
        )
        .await;
    assert_eq!(res.status, 431);
}

async fn delegation_and_policy(store: Store, label: &str) {
    use ap2_mandate::store::records::{
        ConsentRequest, ConsentStatus, NewMandate, WalletRecords as _,
    };
    let w = world(store).await;
    let alice = w.actor("shopper", "alice").await;
    let store = w.h.service.store();
    let now = w.h.now();
    let open_checkout = w.open_checkout(&w.wallet, w.evidence(&alice), &alice.agent);
    let pay = |open_payment: &str, id: &str, amount: u64| {
        let (w, alice, oc) = (&w, &alice, open_checkout.clone());
        let op = open_payment.to_owned();
        let id = id.to_owned();
        async move { w.fresh_payment(alice, &oc, &op, &id, amount).await }
    };

    // A pending consent request of `a`, and a mandate record of `a` for the open mandate `op`.
    let consent_of = |id: String, a: &Actor| ConsentRequest {
        id,
        user_id: a.user.clone(),
        agent_id: a.agent.id.clone(),
        grant_id: a.claims.grant_id.clone(),
        token_jti: Some(a.claims.jti.clone()),
        body: "{}".into(),
        status: ConsentStatus::Pending,
        created_at: now,
        expires_at: now + 600,
        decided_at: None,
    };
    let mandate_of = |id: String, op: &str, a: &Actor| NewMandate {
        id,
        hash: ledger_id(op),
        status_list_id: format!("sl_{label}"),
        user_id: a.user.clone(),
        agent_id: a.agent.id.clone(),
        grant_id: a.claims.grant_id.clone(),
        consent_id: None,
        exp: now + 3600,
    };

    // A consent the human denied.
    let consent = consent_of(format!("con_{label}"), &alice);
    store.create_consent(&consent).await.unwrap();
    store
        .decide_consent(&consent.id, &alice.user, false, now)
        .await
        .unwrap()
        .unwrap();
    let mut denied = w.evidence(&alice);
    denied["delegation"]["consent_id"] = consent.id.clone().into();
    let op = w.open_payment(&w.wallet, denied, &alice.agent, &open_checkout, vec![]);
    refused_with(
        &w.present(&alice, &pay(&op, "chk_c1", 12900).await).await,
        "invalid_credential",
        "consent_not_approved",
    );

    // A mandate this instance's wallet issued and the human revoked.
    let op = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        vec![],
    );
    store
        .create_status_list(&format!("sl_{label}"), 1024)
        .await
        .unwrap();
    let mandate = mandate_of(format!("man_{label}"), &op, &alice);
    store.allocate_mandate(&mandate).await.unwrap();
    assert_eq!(
        decision(&w.present(&alice, &pay(&op, "chk_c2", 12900).await).await).0,
        "Success"
    );
    store.revoke_mandate(&mandate.id, now).await.unwrap();
    refused_with(
        &w.present(&alice, &pay(&op, "chk_c3", 12900).await).await,
        "invalid_credential",
        "mandate_revoked",
    );

    // A root that points into a status list nobody here keeps.
    let mut listed = w.evidence(&alice);
    listed.insert(
        "status".into(),
        json!({"status_list": {"idx": 7, "uri": "https://elsewhere.example/sl/1"}}),
    );
    let op = w.open_payment(&w.wallet, listed, &alice.agent, &open_checkout, vec![]);
    refused_with(
        &w.present(&alice, &pay(&op, "chk_c4", 12900).await).await,
        "invalid_credential",
        "mandate_status_unknown",
    );

    // Records that exist but are someone else's: a grant of another human and agent, a consent
    // that other human approved, a consent still pending, and a mandate record of theirs.
    let bob = w.actor("other-shopper", "bob").await;
    let mut borrowed = w.evidence(&alice);
    borrowed["delegation"]["grant_id"] = bob.claims.grant_id.clone().into();
    let op = w.open_payment(&w.wallet, borrowed, &alice.agent, &open_checkout, vec![]);
    refused_with(
        &w.present(&alice, &pay(&op, "chk_d1", 12900).await).await,
        "invalid_credential",
        "grant_not_active",
    );
    let theirs = consent_of(format!("con_bob_{label}"), &bob);
    store.create_consent(&theirs).await.unwrap();
    store
        .decide_consent(&theirs.id, &bob.user, true, now)
        .await
        .unwrap()
        .unwrap();
    let pending = consent_of(format!("con_pending_{label}"), &alice);
    store.create_consent(&pending).await.unwrap();
    for (consent, id) in [(&theirs.id, "chk_d2"), (&pending.id, "chk_d3")] {
        let mut named = w.evidence(&alice);
        named["delegation"]["consent_id"] = consent.clone().into();
        let op = w.open_payment(&w.wallet, named, &alice.agent, &open_checkout, vec![]);
        refused_with(
            &w.present(&alice, &pay(&op, id, 12900).await).await,
            "invalid_credential",
            "consent_not_approved",
        );
    }
    let op = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        vec![],
    );
    store
        .allocate_mandate(&mandate_of(format!("man_bob_{label}"), &op, &bob))
        .await
        .unwrap();
    refused_with(
        &w.present(&alice, &pay(&op, "chk_d4", 12900).await).await,
        "invalid_credential",
        "subject_mismatch",
    );

    // Evidence of the wrong shape.
    let mut odd = w.evidence(&alice);
    odd["delegation"]["agent_id"] = json!(5);
    let op = w.open_payment(&w.wallet, odd, &alice.agent, &open_checkout, vec![]);
    refused_with(
        &w.present(&alice, &pay(&op, "chk_c5", 12900).await).await,
        "invalid_credential",
        "delegation_evidence_malformed",
    );

    // The order's checkout chain does not verify.
    let op = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        vec![],
    );
    let mut broken = pay(&op, "chk_c6", 12900).await;
    let order = broken["checkout_mandate"]
        .as_str()
        .unwrap()
        .replacen('e', "f", 1);
    broken["checkout_mandate"] = order.into();
    refused_with(
        &w.present(&alice, &broken).await,
        "invalid_credential",
        "order_mandate_invalid",
    );

    // The verifier's own policy: a cap per payment below the mandate's range.
    refused_with(
        &w.present(&alice, &pay(&op, "chk_c7", 48000).await).await,
        "invalid_mandate",
        "amount_above_policy_max",
    );

    // Recurrence across payments, kept by the ledger: daily spacing, and a count.
    let daily = vec![
        json!({"type": "payment.agent_recurrence", "frequency": "DAILY", "max_occurrences": 5}),
    ];
    let op = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        daily,
    );
    assert_eq!(
        decision(&w.present(&alice, &pay(&op, "chk_d1", 1000).await).await).0,
        "Success"
    );
    refused_with(
        &w.present(&alice, &pay(&op, "chk_d2", 1000).await).await,
        "invalid_mandate",
        "recurrence_too_soon",
    );
    let once = vec![
        json!({"type": "payment.agent_recurrence", "frequency": "ON_DEMAND", "max_occurrences": 1}),
    ];
    let op = w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        once,
    );
    assert_eq!(
        decision(&w.present(&alice, &pay(&op, "chk_o1", 1000).await).await).0,
        "Success"
    );
    refused_with(
        &w.present(&alice, &pay(&op, "chk_o2", 1000).await).await,
        "invalid_mandate",
        "recurrence_limit_reached",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_standing_and_verifier_policy_are_enforced() {
    for (label, store) in support::stores().await {
        delegation_and_policy(store, label).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currencies_outside_the_policy_are_refused() {
    let store = support::sqlite_store().await;
    let w = world(store).await;
    let alice = w.actor("shopper", "alice").await;
    let open_checkout = w.open_checkout(&w.wallet, w.evidence(&alice), &alice.agent);
    // An open payment mandate without an amount range (the policy does not require one), paid in
    // euros: the mandate allows it, this verifier does not.
    let now = w.h.now();
    let mandate = json!({"vct": "mandate.payment.open.1", "constraints": [
        {"type": "payment.reference", "conditional_transaction_id": sha256_b64(open_checkout.as_bytes())},
        {"type": "payment.allowed_payees", "allowed": [merchant()]}],
        "cnf": {"jwk": alice.agent.key.public().to_value()}, "iat": now - 60, "exp": now + 3600});
    let op =
        ap2_mandate::mandate::build::issue(&w.wallet, "dc+sd-jwt", w.evidence(&alice), mandate)
            .unwrap();
    let jwt = w.checkout("chk_eur", 12900, "EUR");
    let nonce = w.challenge(&alice).await;
    let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
        "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "EUR"},
        "payment_instrument": {"id": "pi_card_1", "type": "card"}});
    let closing = close(&alice.agent.key, &op, closed, &w.aud, &nonce, now).unwrap();
    let body = json!({"payment_mandate": join(&[&op, &closing]), "checkout_jwt": jwt,
        "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
    refused_with(
        &w.present(&alice, &body).await,
        "invalid_mandate",
        "currency_not_allowed",
    );

    // The same open mandate paid first in dollars, then in yen: its ledger keeps one currency.
    for (id, currency, amount, expected) in [
        ("chk_usd", "USD", 1000, None),
        ("chk_jpy", "JPY", 1000, Some("ledger_currency_mismatch")),
    ] {
        let jwt = w.checkout(id, amount, currency);
        let nonce = w.challenge(&alice).await;
        let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
            "payee": merchant(), "payment_amount": {"amount": amount, "currency": currency},
            "payment_instrument": {"id": "pi_card_1", "type": "card"}});
        let closing = close(&alice.agent.key, &op, closed, &w.aud, &nonce, now).unwrap();
        let body = json!({"payment_mandate": join(&[&op, &closing]), "checkout_jwt": jwt,
            "checkout_mandate": w.order(&open_checkout, &alice.agent, &jwt)});
        let res = w.present(&alice, &body).await;
        match expected {
            None => assert_eq!(decision(&res).0, "Success", "{}", res.body),
            Some(reason) => refused_with(&res, "invalid_mandate", reason),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_mandate_signed_by_the_wallet_is_spent_once_even_after_sweeping() {
    for (label, store) in support::stores().await {
        let w = world(store).await;
        let alice = w.actor("shopper", "alice").await;
        let now = w.h.now();
        // Human-present: the wallet signs the closed payment itself, naming the agent's key.
        let jwt = w.checkout("chk_hp", 12900, "USD");
        let mut claims = w.evidence(&alice);
        claims["delegation"]["agent_jkt"] = alice.claims.jkt.clone().into();
        let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
            "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "USD"},
            "payment_instrument": {"id": "pi_card_1", "type": "card"}, "iat": now, "exp": now + 3600});
        let root =
            ap2_mandate::mandate::build::issue(&w.wallet, "dc+sd-jwt", claims, closed).unwrap();
        let body = json!({"payment_mandate": root, "checkout_jwt": jwt});
        let first = w.present(&alice, &body).await;
        assert_eq!(decision(&first).0, "Success", "{label}: {}", first.body);

        // Ten minutes on, after a sweep, the same closed mandate is still spent.
        w.h.advance(600);
        let alice = w.token_for_again(alice).await;
        w.h.service.store().sweep(w.h.now()).await.unwrap();
        refused_with(
            &w.present(&alice, &body).await,
            "invalid_mandate",
            "replayed",
        );

        // Another agent's key cannot use it.
        let mallory = w.actor("mallory", "alice").await;
        let jwt = w.checkout("chk_hp2", 12900, "USD");
        let mut claims = w.evidence(&alice);
        claims["delegation"]["agent_jkt"] = alice.claims.jkt.clone().into();
        let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
            "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "USD"},
            "payment_instrument": {"id": "pi_card_1", "type": "card"}, "iat": w.h.now(), "exp": w.h.now() + 3600});
        let root =
            ap2_mandate::mandate::build::issue(&w.wallet, "dc+sd-jwt", claims, closed).unwrap();
        let body = json!({"payment_mandate": root, "checkout_jwt": jwt});
        refused_with(
            &w.present(&mallory, &body).await,
            "invalid_credential",
            "agent_mismatch",
        );
    }
}
