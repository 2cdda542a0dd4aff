//! The consent page in a real browser: headless Chromium (Debian's `chromium`) driven through
//! Playwright by `tests/browser/consent.py`. A person signs in, reads the amounts and the
//! merchant, and approves; another denies; a third person cannot approve someone else's request.
//! Screenshots at phone and desktop widths are kept in `target/browser-artifacts/`.
//!
//! Set `AP2_BROWSER_PYTHON` to a Python with Playwright (and `AP2_CHROMIUM` to the browser, default
//! `/usr/bin/chromium`); without it the test says so and passes, unless
//! `AP2_REQUIRE_BROWSER=1` (as in CI).

mod support;

use std::path::PathBuf;

use serde_json::{json, Value};
use support::oauth::PASSWORD;
use support::verifier::{merchant, world, Actor, World};

fn python() -> Option<String> {
    match std::env::var("AP2_BROWSER_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("AP2_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "AP2_REQUIRE_BROWSER=1 but AP2_BROWSER_PYTHON is not set"
            );
            eprintln!("AP2_BROWSER_PYTHON is not set: the browser test is skipped");
            None
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the browser script; its JSON report.
async fn browse(python: &str, url: &str, user: &str, action: &str, shot: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/consent.py");
    let prefix = artifacts().join(shot);
    let args = (
        python.to_owned(),
        script,
        url.to_owned(),
        user.to_owned(),
        action.to_owned(),
        prefix,
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&args.0)
            .arg(&args.1)
            .args([&args.2, &args.3, PASSWORD, &args.4])
            .arg(&args.5)
            .output()
            .expect("run the browser script")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script's JSON report")
}

async fn request(w: &World, a: &Actor) -> (String, String) {
    let body = json!({"mode": "open",
        "checkout": {"constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Trail boot"}], "quantity": 2}]},
            {"type": "checkout.allowed_merchants", "allowed": [merchant()]}]},
        "payment": {"constraints": [
            {"type": "payment.amount_range", "currency": "JPY", "min": 1, "max": 30000},
            {"type": "payment.allowed_payees", "allowed": [merchant()]},
            {"type": "payment.budget", "max": 50000, "currency": "JPY"},
            {"type": "payment.agent_recurrence", "frequency": "MONTHLY", "max_occurrences": 3}]},
        "cnf": {"jwk": a.agent.key.public().to_value()}});
    let res = w
        .call_as(a, "POST", "/v1/mandate-requests", Some(&body))
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let answer = res.json();
    (
        answer["id"].as_str().unwrap().to_owned(),
        answer["consent_url"].as_str().unwrap().to_owned(),
    )
}

async fn status(w: &World, a: &Actor, id: &str) -> String {
    let res = w
        .call_as(a, "GET", &format!("/v1/mandate-requests/{id}"), None)
        .await;
    res.json()["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_denies_and_cannot_decide_for_another_in_chromium() {
    let Some(python) = python() else {
        return;
    };
    let store = support::sqlite_store().await;
    let w = world(store).await;
    let agent =
        w.h.register(
            "Trip planner",
            &["mandates:request"],
            0,
            &[w.wallet_aud().as_str()],
        )
        .await;
    w.h.user("alice").await;
    w.h.user("bob").await;
    let alice = w
        .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
        .await;

    // Approve: the page names the agent and shows yen without decimals, the merchant and items.
    let (id, url) = request(&w, &alice).await;
    let seen = browse(&python, &url, "alice", "approve", "consent-approve").await;
    let text = seen["text"].as_str().unwrap();
    for expected in [
        "Trip planner",
        "ops@example.com",
        "30000 JPY",
        "50000 JPY",
        "Example Shop",
        "mer_shop_1",
        "2 x Trail boot",
        "3",
    ] {
        assert!(
            text.contains(expected),
            "the page lacks {expected:?}:\n{text}"
        );
    }
    assert!(!text.contains("30000.00"), "yen has no minor unit:\n{text}");
    assert_eq!(seen["can_approve"], true);
    assert!(
        seen["outcome"].as_str().unwrap().contains("Approved"),
        "{seen}"
    );
    assert_eq!(status(&w, &alice, &id).await, "approved");

    // The person's own list of mandates, signed in from a real browser too.
    let seen = browse(
        &python,
        &format!("{}/mandates", w.h.issuer),
        "alice",
        "look",
        "mandates",
    )
    .await;
    let text = seen["text"].as_str().unwrap();
    assert!(
        text.contains("Trip planner") && text.contains("man_"),
        "{text}"
    );

    // Deny.
    let (id, url) = request(&w, &alice).await;
    let seen = browse(&python, &url, "alice", "deny", "consent-deny").await;
    assert!(
        seen["outcome"].as_str().unwrap().contains("Denied"),
        "{seen}"
    );
    assert_eq!(status(&w, &alice, &id).await, "denied");

    // Bob signs in on alice's request: told it is not his, no approve button, nothing changes.
    let (id, url) = request(&w, &alice).await;
    let seen = browse(&python, &url, "bob", "approve", "consent-other-user").await;
    assert_eq!(seen["can_approve"], false, "{seen}");
    assert!(
        seen["text"].as_str().unwrap().contains("another person"),
        "{seen}"
    );
    assert_eq!(status(&w, &alice, &id).await, "pending");

    for shot in [
        "consent-approve",
        "consent-deny",
        "consent-other-user",
        "mandates",
    ] {
        for width in ["phone", "desktop"] {
            let file = artifacts().join(format!("{shot}-{width}.png"));
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1000, "{} is missing or empty", file.display());
        }
    }
}
