//! The wallet end to end over real HTTP on loopback (SQLite and PostgreSQL): an agent with a
//! token for the wallet proposes open mandates, the human signs in on the consent page and
//! approves, the agent fetches the signed mandates, closes them under the verifier's challenge
//! and presents them to the verifier of the same instance; then revocation stops them. Every
//! refusal of the wallet has its test here.

mod support;

use ap2_mandate::jose::sha256_b64;
use ap2_mandate::mandate::build::{close, join};
use ap2_mandate::store::records::{IdentityRecords as _, WalletRecords as _};
use ap2_mandate::store::{AuditLog as _, Store};
use serde_json::{json, Value};
use support::oauth::{hidden, Resp};
use support::verifier::{decide, merchant, sign_in_at, world, Actor, World};

/// What the agent proposes: one boot from the shop, paid to the shop, up to 500.00 USD each and
/// 300.00 USD in all.
fn proposal(a: &Actor) -> Value {
    json!({"mode": "open",
        "checkout": {"constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1}]},
            {"type": "checkout.allowed_merchants", "allowed": [merchant()]}]},
        "payment": {"constraints": [
            {"type": "payment.amount_range", "currency": "USD", "min": 1, "max": 50000},
            {"type": "payment.allowed_payees", "allowed": [merchant()]},
            {"type": "payment.budget", "max": 300, "currency": "USD"}]},
        "cnf": {"jwk": a.agent.key.public().to_value()}})
}

/// The human signs in on the consent page; the session cookie and the review page.
async fn sign_in(w: &World, id: &str, username: &str) -> (String, Resp) {
    sign_in_at(w, &format!("/consent/{id}"), username).await
}

async fn propose(w: &World, a: &Actor, body: &Value) -> Resp {
    w.call_as(a, "POST", "/v1/mandate-requests", Some(body))
        .await
}

async fn whole_flow(store: Store, label: &str) {
    let w = world(store).await;
    let agent =
        w.h.register(
            "shopper",
            &["mandates:request", "payments:present"],
            0,
            &[w.wallet_aud().as_str(), w.aud.as_str()],
        )
        .await;
    w.h.user("alice").await;
    let key = support::oauth::clone_key(&agent.key);
    let alice = w
        .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
        .await;

    // Propose.
    let res = propose(&w, &alice, &proposal(&alice)).await;
    assert_eq!(res.status, 201, "{label}: {}", res.body);
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.json()["consent_url"],
        format!("{}/consent/{id}", w.h.issuer)
    );
    let status = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    assert_eq!(status.json()["status"], "pending", "{}", status.body);
    assert!(status.json().get("payment_mandate").is_none());

    // The human reviews: the agent, its owner, amounts in the currency's format, the merchant.
    let (session, review) = sign_in(&w, &id, "alice").await;
    assert_eq!(review.status, 200, "{}", review.body);
    for expected in [
        "shopper",
        "ops@example.com",
        "500.00 USD",
        "300.00 USD",
        "Example Shop",
        "mer_shop_1",
        "Boot",
    ] {
        assert!(
            review.body.contains(expected),
            "{label}: the page lacks {expected}: {}",
            review.body
        );
    }
    let csp = review.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(review.header("x-frame-options").as_deref(), Some("DENY"));

    // A forged form (no anti-forgery token) changes nothing.
    let forged =
        w.h.post_form(
            &format!("/consent/{id}"),
            &[("cookie", format!("ap2_session={session}"))],
            &[("action", "approve")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);

    // Bob cannot decide alice's request.
    w.h.user("bob").await;
    let (_, bobs) = sign_in(&w, &id, "bob").await;
    assert_eq!(bobs.status, 403, "{}", bobs.body);
    assert!(bobs.body.contains("another person"));
    let still = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    assert_eq!(still.json()["status"], "pending");

    // Approve; a second approval is refused and signs nothing more.
    let done = decide(&w, &id, &session, &review, "approve").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("2 mandates were signed"),
        "{}",
        done.body
    );
    let again = decide(&w, &id, &session, &review, "approve").await;
    assert_eq!(again.status, 409, "{}", again.body);
    let fetched = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    let fetched = fetched.json();
    assert_eq!(fetched["status"], "approved");
    let open_checkout = fetched["checkout_mandate"].as_str().unwrap().to_owned();
    let open_payment = fetched["payment_mandate"].as_str().unwrap().to_owned();
    assert_eq!(
        w.h.service
            .store()
            .issued_mandates(&id)
            .await
            .unwrap()
            .len(),
        2
    );

    // The signed roots say who, for whom and under what.
    let root = ap2_mandate::danger::insecure_decode_chain(&open_payment).unwrap();
    let claims = &root[0].payload;
    assert_eq!(claims["sub"], alice.user.as_str());
    assert_eq!(claims["iss"], w.h.issuer.as_str());
    assert_eq!(claims["delegation"]["agent_id"], alice.agent.id.as_str());
    assert_eq!(
        claims["delegation"]["grant_id"],
        json!(alice.claims.grant_id)
    );
    assert_eq!(claims["delegation"]["consent_id"], id.as_str());
    assert!(claims["status"]["status_list"]["idx"].is_i64());

    // The agent closes them under the verifier's challenge and presents them: accepted.
    let verifier_actor = w
        .token_with_scope(
            support::oauth::TestAgent {
                id: alice.agent.id.clone(),
                key,
            },
            "alice",
            "payments:present",
            &w.aud,
        )
        .await;
    let pay = |checkout_id: &str| {
        let (w, a, oc, op) = (
            &w,
            &verifier_actor,
            open_checkout.clone(),
            open_payment.clone(),
        );
        let checkout_id = checkout_id.to_owned();
        async move {
            let jwt = w.checkout(&checkout_id, 12900, "USD");
            let nonce = w.challenge(a).await;
            let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
                "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "USD"},
                "payment_instrument": {"id": "pi_card_1", "type": "card"}});
            let closing = close(&a.agent.key, &op, closed, &w.aud, &nonce, w.h.now()).unwrap();
            json!({"payment_mandate": join(&[&op, &closing]), "checkout_jwt": jwt,
                "checkout_mandate": w.order(&oc, &a.agent, &jwt)})
        }
    };
    let res = w.present(&verifier_actor, &pay("chk_w1").await).await;
    assert_eq!(res.json()["status"], "Success", "{label}: {}", res.body);
    let res = w.present(&verifier_actor, &pay("chk_w2").await).await;
    assert_eq!(res.json()["status"], "Success", "{label}: {}", res.body);
    // The budget the human approved (300.00) stops the third 129.00.
    let res = w.present(&verifier_actor, &pay("chk_w3").await).await;
    assert_eq!(
        res.json()["reasons"],
        json!(["budget_exceeded"]),
        "{label}: {}",
        res.body
    );

    // Revoked: the verifier refuses it from then on.
    let mandate_id = fetched["payment_mandate_id"].as_str().unwrap();
    let res =
        w.h.admin_json(
            "POST",
            &format!("/v1/mandates/{mandate_id}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = w.present(&verifier_actor, &pay("chk_w4").await).await;
    assert_eq!(
        res.json()["reasons"],
        json!(["mandate_revoked"]),
        "{label}: {}",
        res.body
    );
    let mandate = w.h.service.store().mandate(mandate_id).await.unwrap();
    assert!(mandate.revoked_at.is_some());

    // The status list token says so too: signed by a key of our JWKS, its bit set, the
    // checkout mandate's bit clear.
    let uri = claims["status"]["status_list"]["uri"].as_str().unwrap();
    let path = uri.strip_prefix(w.h.issuer.as_str()).unwrap();
    let res = w.h.call("GET", path, &[], None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("application/statuslist+jwt")
    );
    let jwks =
        w.h.call("GET", "/.well-known/jwks.json", &[], None)
            .await
            .json();
    let keys = ap2_mandate::jose::KeySet::from_jwks(&jwks).unwrap();
    let jws = ap2_mandate::jose::UnverifiedJws::parse(
        &res.body,
        &ap2_mandate::jose::HeaderPolicy::trusted_key(ap2_mandate::jose::TypRule::OneOf(&[
            "statuslist+jwt",
        ])),
    )
    .unwrap();
    let list = keys.verify(jws).unwrap().into_claims();
    assert_eq!(list["sub"], uri);
    assert_eq!(list["status_list"]["bits"], 1);
    let lst = ap2_mandate::jose::b64::decode(list["status_list"]["lst"].as_str().unwrap()).unwrap();
    let bits = miniz_oxide::inflate::decompress_to_vec_zlib(&lst).unwrap();
    let bit = |idx: i64| (bits[(idx / 8) as usize] >> (idx % 8)) & 1;
    let checkout_root = ap2_mandate::danger::insecure_decode_chain(&open_checkout).unwrap();
    let checkout_idx = checkout_root[0].payload["status"]["status_list"]["idx"]
        .as_i64()
        .unwrap();
    assert_eq!(
        bit(mandate.status_index),
        1,
        "{label}: the revoked mandate's bit"
    );
    assert_eq!(bit(checkout_idx), 0, "{label}: the other mandate's bit");

    // Disabling the agent revokes every mandate it holds, at once.
    let checkout_id = fetched["checkout_mandate_id"].as_str().unwrap();
    assert!(w
        .h
        .service
        .store()
        .mandate(checkout_id)
        .await
        .unwrap()
        .revoked_at
        .is_none());
    let res =
        w.h.admin_json(
            "POST",
            &format!("/v1/agents/{}/disable", alice.agent.id),
            &json!({}),
        )
        .await;
    assert_eq!(res.json()["revoked_mandates"], 1, "{}", res.body);
    assert!(w
        .h
        .service
        .store()
        .mandate(checkout_id)
        .await
        .unwrap()
        .revoked_at
        .is_some());

    // Every step is audited.
    let records = w.h.service.store().tail(1000).await.unwrap();
    for action in [
        "mandate.request",
        "mandate.consent",
        "mandate.issue",
        "mandate.revoke",
    ] {
        assert!(
            records.iter().any(|r| r.record.action == action),
            "{label}: no {action} record"
        );
    }
    w.h.service.store().verify().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approve_fetch_close_verify_and_revoke() {
    for (label, store) in support::stores().await {
        whole_flow(store, label).await;
    }
}

async fn refusals(store: Store, label: &str) {
    let w = world(store).await;
    let agent =
        w.h.register(
            "shopper",
            &["mandates:request", "payments:present"],
            0,
            &[w.wallet_aud().as_str(), w.aud.as_str()],
        )
        .await;
    w.h.user("alice").await;
    let other_key = support::oauth::clone_key(&agent.key);
    let alice = w
        .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
        .await;
    let good = proposal(&alice);
    let refused = |res: &Resp, rule: &str| {
        assert_eq!(res.status, 400, "{label}: {}", res.body);
        assert_eq!(res.error(), "invalid_request");
        assert!(
            res.json()["error_description"]
                .as_str()
                .unwrap()
                .contains(rule),
            "{label}: {}",
            res.body
        );
    };
    let with = |pointer: &str, value: Value| {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    refused(
        &propose(
            &w,
            &alice,
            &with("/payment/constraints/0/type", json!("payment.per_day_cap")),
        )
        .await,
        "unknown",
    );
    refused(
        &propose(&w, &alice, &with("/payment/constraints/0/max", json!(-5))).await,
        "malformed",
    );
    refused(
        &propose(
            &w,
            &alice,
            &with("/payment/constraints/2/currency", json!("usd")),
        )
        .await,
        "malformed",
    );
    refused(
        &propose(
            &w,
            &alice,
            &with(
                "/checkout/constraints/1/type",
                json!("payment.allowed_payees"),
            ),
        )
        .await,
        "wrong mandate",
    );
    let stranger = ap2_mandate::jose::SigningKey::generate(Some("x".into())).unwrap();
    refused(
        &propose(&w, &alice, &with("/cnf/jwk", stranger.public().to_value())).await,
        "cnf is not the key",
    );
    refused(
        &propose(&w, &alice, &with("/mode", json!("closed"))).await,
        "closed mandate request",
    );
    refused(
        &propose(&w, &alice, &with("/mode", json!("later"))).await,
        "open or closed",
    );
    let now = w.h.now();
    let mut past = good.clone();
    past["expires_at"] = json!(now - 1);
    refused(&propose(&w, &alice, &past).await, "expires_at");
    let mut long = good.clone();
    long["expires_at"] = json!(now + 400 * 86400);
    refused(&propose(&w, &alice, &long).await, "expires_at");
    let mut reference = good.clone();
    reference["payment"]["constraints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "payment.reference", "conditional_transaction_id": "x"}));
    refused(&propose(&w, &alice, &reference).await, "set by the wallet");
    let mut unknown = good.clone();
    unknown["note"] = json!("hi");
    refused(&propose(&w, &alice, &unknown).await, "does not match");

    // Each refused proposal is audited with its reason, and stores nothing else.
    let records = w.h.service.store().tail(1000).await.unwrap();
    let refusals = records
        .iter()
        .filter(|r| r.record.action == "mandate.request" && r.record.outcome == "refused")
        .count();
    assert_eq!(refusals, 11, "{label}");

    // A token for the wallet without the scope.
    let scopeless = w
        .token_with_scope(
            support::oauth::TestAgent {
                id: alice.agent.id.clone(),
                key: support::oauth::clone_key(&alice.agent.key),
            },
            "alice",
            "payments:present",
            &w.wallet_aud(),
        )
        .await;
    let res = propose(&w, &scopeless, &good).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (403, "insufficient_scope"),
        "{}",
        res.body
    );

    // A token for the verifier, not the wallet; then a token of a disabled agent.
    let wrong_aud = w
        .token_with_scope(
            support::oauth::TestAgent {
                id: alice.agent.id.clone(),
                key: other_key,
            },
            "alice",
            "payments:present",
            &w.aud,
        )
        .await;
    let res = propose(&w, &wrong_aud, &good).await;
    assert_eq!(
        (res.status, res.error().as_str()),
        (401, "invalid_token"),
        "{}",
        res.body
    );
    // Nothing above stored a request.
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_requests")
        .fetch_one(w.h.service.store().pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "{label}: refused proposals store nothing");

    // Deny: nothing signed, the agent sees it denied.
    let res = propose(&w, &alice, &good).await;
    let id = res.json()["id"].as_str().unwrap().to_owned();
    let (session, review) = sign_in(&w, &id, "alice").await;
    let denied = decide(&w, &id, &session, &review, "deny").await;
    assert_eq!(denied.status, 200);
    assert!(denied.body.contains("Nothing was signed"));
    let fetched = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    assert_eq!(fetched.json()["status"], "denied");
    assert!(fetched.json().get("payment_mandate").is_none());
    assert!(w
        .h
        .service
        .store()
        .issued_mandates(&id)
        .await
        .unwrap()
        .is_empty());

    // Expired before the human decided.
    let res = propose(&w, &alice, &good).await;
    let late = res.json()["id"].as_str().unwrap().to_owned();
    w.h.advance(601);
    let alice = w
        .token_with_scope(alice.agent, "alice", "mandates:request", &w.wallet_aud())
        .await;
    let (_, page) = sign_in(&w, &late, "alice").await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("expired"));
    let fetched = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{late}"), None)
        .await;
    assert_eq!(fetched.json()["status"], "expired");

    // Another agent cannot read alice's agent's request.
    let other =
        w.h.register(
            "other",
            &["mandates:request"],
            0,
            &[w.wallet_aud().as_str()],
        )
        .await;
    let other = w
        .token_with_scope(other, "alice", "mandates:request", &w.wallet_aud())
        .await;
    let res = w
        .call_as(&other, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    assert_eq!(res.status, 404, "{}", res.body);

    // Disabled agent: its token stops at once.
    w.h.service
        .store()
        .disable_agent(&alice.agent.id, w.h.now())
        .await
        .unwrap();
    let res = propose(&w, &alice, &good).await;
    assert_eq!(res.status, 401, "{}", res.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proposals_and_decisions_sign_nothing() {
    for (label, store) in support::stores().await {
        refusals(store, label).await;
    }
}

/// The wire shape of a decoded root hop: header members, payload claim names, the mandate
/// object's members, and how many members each disclosure has (2: array element, 3: property).
fn shape(chain: &str) -> (Vec<String>, Vec<String>, Vec<String>, Vec<usize>) {
    let hops = ap2_mandate::danger::insecure_decode_chain(chain).unwrap();
    let root = &hops[0];
    let keys = |m: &serde_json::Map<String, Value>| {
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.sort();
        k
    };
    let resolved = root.resolved.as_ref().unwrap();
    let mandate = resolved["delegate_payload"][0].as_object().unwrap();
    let sizes = root
        .disclosures
        .iter()
        .map(|d| {
            serde_json::from_slice::<Vec<Value>>(
                &ap2_mandate::jose::b64::decode(d.encoded()).unwrap(),
            )
            .unwrap()
            .len()
        })
        .collect();
    (
        keys(&root.header),
        keys(&root.payload),
        keys(mandate),
        sizes,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_mandates_have_the_reference_sdk_wire_shape() {
    let store = support::sqlite_store().await;
    let w = world(store).await;
    let agent =
        w.h.register(
            "shopper",
            &["mandates:request"],
            0,
            &[w.wallet_aud().as_str()],
        )
        .await;
    w.h.user("alice").await;
    let alice = w
        .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
        .await;
    let res = propose(&w, &alice, &proposal(&alice)).await;
    let id = res.json()["id"].as_str().unwrap().to_owned();
    let (session, review) = sign_in(&w, &id, "alice").await;
    assert_eq!(
        decide(&w, &id, &session, &review, "approve").await.status,
        200
    );
    let fetched = w
        .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await
        .json();
    let ours = shape(fetched["payment_mandate"].as_str().unwrap());

    // Set A's payment root, made by Google's AP2 reference SDK.
    let case: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/ap2-v0.2/cases/valid_hnp_payment.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let sdk_root = case["chain"]
        .as_str()
        .unwrap()
        .split("~~")
        .next()
        .unwrap()
        .to_owned()
        + "~";
    let sdk = shape(&sdk_root);

    // Same header members (alg ES256, kid, typ) and the same mandate object members.
    assert_eq!(ours.0, sdk.0);
    assert_eq!(ours.2, sdk.2, "mandate object members");
    // Every claim the SDK's root has, ours has; ours adds exactly who, for whom and under what.
    for claim in &sdk.1 {
        assert!(ours.1.contains(claim), "missing {claim}");
    }
    let extra: Vec<&String> = ours.1.iter().filter(|c| !sdk.1.contains(c)).collect();
    assert_eq!(extra, ["delegation", "exp", "iat", "iss", "status", "sub"]);
    // Disclosures: array elements only (allowed entries, then the mandate itself last), as the SDK.
    assert!(ours.3.iter().all(|n| *n == 2) && sdk.3.iter().all(|n| *n == 2));
    let hops =
        ap2_mandate::danger::insecure_decode_chain(fetched["payment_mandate"].as_str().unwrap())
            .unwrap();
    let last = hops[0].disclosures.last().unwrap();
    assert!(
        last.value().get("vct").is_some(),
        "the mandate's own disclosure comes last"
    );

    // Offline, with the core verifier alone: the wallet's key from our JWKS, the merchant's key,
    // the agent's closing hop for another verifier's challenge.
    let jwks =
        w.h.call("GET", "/.well-known/jwks.json", &[], None)
            .await
            .json();
    let mut issuers = ap2_mandate::jose::KeySet::new();
    for key in jwks["keys"].as_array().unwrap() {
        if key["kid"].as_str().unwrap().starts_with("mandates-") {
            issuers
                .insert(ap2_mandate::jose::PublicJwk::from_value(key).unwrap())
                .unwrap();
        }
    }
    let mut merchants = ap2_mandate::jose::KeySet::new();
    merchants.insert(w.merchant.public().clone()).unwrap();
    let trust = ap2_mandate::mandate::Trust { issuers, merchants };
    let policy = ap2_mandate::mandate::Policy::default();
    let verifier = ap2_mandate::mandate::Verifier {
        policy: &policy,
        trust: &trust,
    };
    let jwt = w.checkout("chk_offline", 12900, "USD");
    let now = w.h.now();
    let open_payment = fetched["payment_mandate"].as_str().unwrap();
    let open_checkout = fetched["checkout_mandate"].as_str().unwrap();
    let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
        "payee": merchant(), "payment_amount": {"amount": 12900, "currency": "USD"},
        "payment_instrument": {"id": "pi_card_1", "type": "card"}});
    let closing = close(
        &alice.agent.key,
        open_payment,
        closed,
        "https://cp.example",
        "n-offline",
        now,
    )
    .unwrap();
    let chain = join(&[open_payment, &closing]);
    let checkout = ap2_mandate::mandate::CheckoutJwt::verify(&jwt, &trust.merchants, now).unwrap();
    let open_hash = sha256_b64(open_checkout.as_bytes());
    let verified = verifier
        .payment(
            &ap2_mandate::sdjwt::UnverifiedChain::parse(&chain).unwrap(),
            &ap2_mandate::mandate::PaymentBindings {
                checkout: &checkout,
                open_checkout_hash: Some(&open_hash),
            },
            &ap2_mandate::mandate::Usage::default(),
            Some(&ap2_mandate::sdjwt::Challenge {
                aud: "https://cp.example",
                nonce: "n-offline",
            }),
            now,
        )
        .unwrap();
    assert_eq!(verified.closed().payment_amount.minor(), 12900);
    assert_eq!(verified.agent_key().unwrap().thumbprint(), alice.claims.jkt);

    // The human's own list: both mandates, each with a revoke button; bob cannot revoke them.
    let checkout_id = fetched["checkout_mandate_id"].as_str().unwrap();
    let (alice_session, list) = sign_in_at(&w, "/mandates", "alice").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.body.contains(checkout_id) && list.body.contains("shopper"),
        "{}",
        list.body
    );
    w.h.user("bob").await;
    let (bob_session, bob_list) = sign_in_at(&w, "/mandates", "bob").await;
    assert!(bob_list.body.contains("no active mandates"));
    // Bob's own valid anti-forgery token, so only the ownership check can stop him.
    let bob_csrf =
        w.h.service
            .session(&bob_session, w.h.now())
            .await
            .unwrap()
            .unwrap()
            .csrf;
    let res =
        w.h.post_form(
            "/mandates",
            &[("cookie", format!("ap2_session={bob_session}"))],
            &[
                ("action", "revoke"),
                ("csrf", bob_csrf.as_str()),
                ("mandate", checkout_id),
            ],
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert!(w
        .h
        .service
        .store()
        .mandate(checkout_id)
        .await
        .unwrap()
        .revoked_at
        .is_none());
    let csrf = hidden(&list.body, "csrf");
    let res =
        w.h.post_form(
            "/mandates",
            &[("cookie", format!("ap2_session={alice_session}"))],
            &[
                ("action", "revoke"),
                ("csrf", csrf.as_str()),
                ("mandate", checkout_id),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body.contains("revoked"));
    assert!(
        !res.body.contains(checkout_id),
        "a revoked mandate leaves the list"
    );
    assert!(w
        .h
        .service
        .store()
        .mandate(checkout_id)
        .await
        .unwrap()
        .revoked_at
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_approvals_sign_once() {
    for (label, store) in support::stores().await {
        let w = std::sync::Arc::new(world(store).await);
        let agent =
            w.h.register(
                "shopper",
                &["mandates:request"],
                0,
                &[w.wallet_aud().as_str()],
            )
            .await;
        w.h.user("alice").await;
        let alice = w
            .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
            .await;
        let res = propose(&w, &alice, &proposal(&alice)).await;
        let id = res.json()["id"].as_str().unwrap().to_owned();
        let (session, review) = sign_in(&w, &id, "alice").await;
        let csrf = hidden(&review.body, "csrf");
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (w, id, session, csrf) = (w.clone(), id.clone(), session.clone(), csrf.clone());
            tasks.push(tokio::spawn(async move {
                w.h.post_form(
                    &format!("/consent/{id}"),
                    &[("cookie", format!("ap2_session={session}"))],
                    &[("action", "approve"), ("csrf", csrf.as_str())],
                )
                .await
                .status
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{label}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "{label}: {statuses:?}"
        );
        assert_eq!(
            w.h.service
                .store()
                .issued_mandates(&id)
                .await
                .unwrap()
                .len(),
            2,
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_present_purchase_is_signed_closed_and_spent_once() {
    for (label, store) in support::stores().await {
        let w = world(store).await;
        let agent =
            w.h.register(
                "shopper",
                &["mandates:request", "payments:present"],
                0,
                &[w.wallet_aud().as_str(), w.aud.as_str()],
            )
            .await;
        w.h.user("alice").await;
        let key = support::oauth::clone_key(&agent.key);
        let alice = w
            .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
            .await;
        let jwt = w.checkout("chk_hp", 12900, "USD");
        let closed = |jwt: &str| {
            json!({"mode": "closed", "checkout_jwt": jwt,
                "payment": {"payment_instrument": {"id": "pi_card_1", "type": "card", "description": "Visa ****1111"}},
                "cnf": {"jwk": alice.agent.key.public().to_value()}})
        };

        // Refused: a checkout no trusted merchant signed; a window past the hour.
        let stranger = ap2_mandate::jose::SigningKey::generate(Some("shop-1".into())).unwrap();
        let forged = jwt.rsplit_once('.').unwrap().0.to_owned();
        let forged = format!(
            "{forged}.{}",
            ap2_mandate::jose::b64::encode(stranger.sign(forged.as_bytes()).unwrap())
        );
        let res = propose(&w, &alice, &closed(&forged)).await;
        assert_eq!(res.status, 400, "{label}: {}", res.body);
        assert!(res.body.contains("trusted merchant"), "{}", res.body);
        let mut long = closed(&jwt);
        long["expires_at"] = json!(w.h.now() + 7200);
        assert_eq!(propose(&w, &alice, &long).await.status, 400);

        // The person sees exactly the order and the payment, approves; the wallet signs both.
        let res = propose(&w, &alice, &closed(&jwt)).await;
        assert_eq!(res.status, 201, "{label}: {}", res.body);
        let id = res.json()["id"].as_str().unwrap().to_owned();
        let (session, review) = sign_in(&w, &id, "alice").await;
        for expected in [
            "129.00 USD",
            "Example Shop (mer_shop_1)",
            "1 x sku_boot",
            "Visa ****1111",
        ] {
            assert!(
                review.body.contains(expected),
                "{label}: the page lacks {expected}: {}",
                review.body
            );
        }
        assert_eq!(
            decide(&w, &id, &session, &review, "approve").await.status,
            200
        );
        let fetched = w
            .call_as(&alice, "GET", &format!("/v1/mandate-requests/{id}"), None)
            .await
            .json();
        let payment = fetched["payment_mandate"].as_str().unwrap().to_owned();
        let checkout = fetched["checkout_mandate"].as_str().unwrap().to_owned();
        assert!(!payment.contains("~~"), "a closed mandate is a root alone");

        // Presented as they are: accepted once by each role, then spent.
        let presenter = w
            .token_with_scope(
                support::oauth::TestAgent {
                    id: alice.agent.id.clone(),
                    key,
                },
                "alice",
                "payments:present",
                &w.aud,
            )
            .await;
        let body = json!({"payment_mandate": payment, "checkout_jwt": jwt});
        let res = w.present(&presenter, &body).await;
        assert_eq!(res.json()["status"], "Success", "{label}: {}", res.body);
        let res = w.present(&presenter, &body).await;
        assert_eq!(
            res.json()["reasons"],
            json!(["replayed"]),
            "{label}: {}",
            res.body
        );
        let body = json!({"checkout_mandate": checkout, "checkout_jwt": jwt});
        let res = w.post(&presenter, "/v1/checkouts/verify", &body, &[]).await;
        assert_eq!(res.json()["status"], "Success", "{label}: {}", res.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_stay_within_the_tokens_authorization_details() {
    let store = support::sqlite_store().await;
    let w = world(store).await;
    let agent =
        w.h.register(
            "shopper",
            &["mandates:request"],
            0,
            &[w.wallet_aud().as_str()],
        )
        .await;
    w.h.user("alice").await;
    // The person approved this agent for up to 300.00 USD at mer_shop_1, for a week.
    let until = w.h.now() + 7 * 86400;
    let details = json!([{"type": "payment", "max_amount": {"currency": "USD", "value": 30000},
        "merchants": ["mer_shop_1"], "valid_until": until}])
    .to_string();
    let aud = w.wallet_aud();
    let (code, verifier) =
        w.h.authorize(
            &agent,
            "alice",
            "mandates:request",
            &[
                ("resource", aud.as_str()),
                ("authorization_details", details.as_str()),
            ],
        )
        .await;
    let token = w.h.redeem(&agent, &code, &verifier).await;
    let claims =
        w.h.service
            .verify_token(&token, w.h.now(), false)
            .await
            .unwrap();
    assert!(claims.authorization_details.is_some());
    let alice = Actor {
        user: claims.sub.clone(),
        agent,
        token,
        claims,
    };

    let mut within = proposal(&alice);
    within["payment"]["constraints"][0]["max"] = json!(30000);
    within["expires_at"] = json!(until - 60);
    let res = propose(&w, &alice, &within).await;
    assert_eq!(res.status, 201, "{}", res.body);

    let refused = |res: &Resp, rule: &str| {
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(
            res.json()["error_description"]
                .as_str()
                .unwrap()
                .contains(rule),
            "{}",
            res.body
        );
    };
    let mut more = within.clone();
    more["payment"]["constraints"][0]["max"] = json!(30001);
    refused(&propose(&w, &alice, &more).await, "exceed");
    let mut bigger_budget = within.clone();
    bigger_budget["payment"]["constraints"][2]["max"] = json!(301);
    refused(&propose(&w, &alice, &bigger_budget).await, "exceed");
    let mut other_shop = within.clone();
    other_shop["payment"]["constraints"][1]["allowed"] =
        json!([{"id": "mer_other", "name": "Other"}]);
    refused(&propose(&w, &alice, &other_shop).await, "merchant");
    let mut later = within.clone();
    later["expires_at"] = json!(until + 60);
    refused(&propose(&w, &alice, &later).await, "valid_until");
}
