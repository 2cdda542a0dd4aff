//! The token service end to end: register agents, sign a user in, authorize, redeem the code
//! with `private_key_jwt` and DPoP, call a protected resource, exchange for narrower tokens down
//! two hops of sub-agents, then disable the top agent and watch every token of it die. Over
//! real HTTP on loopback (SQLite and PostgreSQL) and through the router in-process.

mod support;

use ap2_mandate::store::records::IdentityRecords as _;
use ap2_mandate::store::{AuditLog as _, Store};
use serde_json::json;
use support::oauth::Harness;

const SCOPES: &[&str] = &["mandates:request", "payments:present"];

async fn whole_flow(h: &Harness, label: &str) {
    // Register: the top agent may delegate two hops, its sub-agent one, the last none.
    let top = h
        .register("top", SCOPES, 2, &["https://wallet.example"])
        .await;
    let sub = h.register("sub", SCOPES, 1, &[]).await;
    let leaf = h.register("leaf", &["payments:present"], 0, &[]).await;
    h.user("alice").await;

    // Sign in, approve, redeem with private_key_jwt + DPoP.
    let (code, verifier) = h
        .authorize(&top, "alice", "mandates:request payments:present", &[])
        .await;
    let first = h.redeem(&top, &code, &verifier).await;
    let me = h.whoami(&first, &top.key).await;
    assert_eq!(me.status, 200, "{label}: {}", me.body);
    assert_eq!(me.json()["client_id"], top.id.as_str(), "{label}");
    assert_eq!(me.json()["act"], json!({"sub": top.id}), "{label}");

    // Hop 1: the top agent hands a narrower token to its sub-agent.
    let res = h
        .exchange(&top, &first, Some(&sub), &[("scope", "payments:present")])
        .await;
    assert_eq!(res.status, 200, "{label}: {}", res.body);
    assert_eq!(res.json()["token_type"], "DPoP");
    assert_eq!(res.json()["scope"], "payments:present");
    let second = res.json()["access_token"].as_str().unwrap().to_owned();
    let me = h.whoami(&second, &sub.key).await;
    assert_eq!(me.status, 200, "{label}: {}", me.body);
    assert_eq!(
        me.json()["act"],
        json!({"sub": sub.id, "act": {"sub": top.id}}),
        "{label}"
    );
    // Bound to the sub-agent's key: the top agent's key cannot use it.
    assert_eq!(h.whoami(&second, &top.key).await.status, 401, "{label}");

    // Hop 2: the sub-agent hands it on to the leaf.
    let res = h.exchange(&sub, &second, Some(&leaf), &[]).await;
    assert_eq!(res.status, 200, "{label}: {}", res.body);
    let third = res.json()["access_token"].as_str().unwrap().to_owned();
    let me = h.whoami(&third, &leaf.key).await;
    assert_eq!(
        me.json()["act"],
        json!({"sub": leaf.id, "act": {"sub": sub.id, "act": {"sub": top.id}}}),
        "{label}"
    );

    // Disable the top agent: every token of the chain is refused at once.
    let res = h
        .admin_json(
            "POST",
            &format!("/v1/agents/{}/disable", top.id),
            &json!({}),
        )
        .await;
    assert_eq!(res.status, 200, "{label}: {}", res.body);
    for (token, key) in [(&first, &top.key), (&second, &sub.key), (&third, &leaf.key)] {
        let me = h.whoami(token, key).await;
        assert_eq!(me.status, 401, "{label}: {}", me.body);
        assert_eq!(me.error(), "invalid_token");
        assert!(me.header("www-authenticate").unwrap().starts_with("DPoP "));
    }
    let res = h.exchange(&sub, &second, Some(&leaf), &[]).await;
    assert_eq!(res.error(), "invalid_request", "{label}: {}", res.body);

    // Every step is in the audit chain, and the chain is whole.
    let store: &Store = h.service.store();
    let actions: Vec<String> = store
        .tail(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.action)
        .collect();
    for action in [
        "agent.register",
        "grant.approve",
        "token.issue",
        "token.exchange",
        "agent.disable",
        "token.request",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{label}: no {action} in {actions:?}"
        );
    }
    assert!(store.verify().await.unwrap().is_ok(), "{label}");
}

#[tokio::test]
async fn the_whole_flow_over_loopback_http() {
    for (name, store) in support::stores().await {
        let h = Harness::loopback(store).await;
        whole_flow(&h, name).await;
    }
}

#[tokio::test]
async fn the_whole_flow_through_the_router() {
    let (_, store) = support::stores().await.remove(0);
    let h = Harness::oneshot(store).await;
    whole_flow(&h, "oneshot").await;
}

#[tokio::test]
async fn rotated_keys_sign_new_tokens_while_old_ones_verify_until_retired() {
    let (_, store) = support::stores().await.remove(0);
    let h = Harness::oneshot(store).await;
    let top = h.register("top", SCOPES, 0, &[]).await;
    h.user("alice").await;
    let (code, verifier) = h.authorize(&top, "alice", "payments:present", &[]).await;
    let old = h.redeem(&top, &code, &verifier).await;

    h.service.rotate_keys(h.now(), 600).await.unwrap();
    let jwks = h
        .call("GET", "/.well-known/jwks.json", &[], None)
        .await
        .json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    let (code, verifier) = h.authorize(&top, "alice", "payments:present", &[]).await;
    let new = h.redeem(&top, &code, &verifier).await;
    let kid_of = |t: &str| ap2_mandate::danger::insecure_decode_jwt(t).unwrap().0["kid"].clone();
    assert_ne!(kid_of(&old), kid_of(&new));
    assert_eq!(h.whoami(&old, &top.key).await.status, 200);
    assert_eq!(h.whoami(&new, &top.key).await.status, 200);

    // A disabled user's tokens stop too.
    let claims = h.service.verify_token(&new, h.now(), false).await.unwrap();
    h.service
        .store()
        .set_user_status(
            &claims.sub,
            ap2_mandate::store::records::UserStatus::Disabled,
        )
        .await
        .unwrap();
    assert_eq!(h.whoami(&new, &top.key).await.status, 401);
}
