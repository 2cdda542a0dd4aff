//! `ap2-mandate act`: the agent's side from the command line, against a real instance on
//! loopback. The agent proposes and waits while the person approves on the consent page, gets a
//! challenge, closes its mandates for a merchant's checkout, and presents the payment.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::verifier::{decide, merchant, sign_in_at, world};

fn act(args: Vec<String>) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
        .arg("act")
        .args(args)
        .output()
        .expect("run ap2-mandate act")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_side_from_the_command_line() {
    let store = support::sqlite_store().await;
    let w = world(store).await;
    let agent =
        w.h.register(
            "cli agent",
            &["mandates:request", "payments:present"],
            0,
            &[w.wallet_aud().as_str(), w.aud.as_str()],
        )
        .await;
    w.h.user("alice").await;
    let dir = std::env::temp_dir().join(support::unique("ap2_act"));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = write(&dir, "agent.jwk", &agent.key.to_private_jwk().unwrap());
    let key = support::oauth::clone_key(&agent.key);
    let wallet = w
        .token_with_scope(agent, "alice", "mandates:request", &w.wallet_aud())
        .await;
    let verifier = w
        .token_with_scope(
            support::oauth::TestAgent {
                id: wallet.agent.id.clone(),
                key,
            },
            "alice",
            "payments:present",
            &w.aud,
        )
        .await;
    let wallet_token = write(&dir, "wallet.token", &wallet.token);
    let verifier_token = write(&dir, "verifier.token", &verifier.token);
    let proposal = json!({"mode": "open",
        "checkout": {"constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1}]},
            {"type": "checkout.allowed_merchants", "allowed": [merchant()]}]},
        "payment": {"constraints": [
            {"type": "payment.amount_range", "currency": "USD", "min": 1, "max": 50000},
            {"type": "payment.allowed_payees", "allowed": [merchant(), {"id": "mer_other", "name": "Other Shop"}]}]},
        "cnf": {"jwk": wallet.agent.key.public().to_value()}});
    let body = write(&dir, "proposal.json", &proposal.to_string());
    let base = w.h.issuer.clone();

    // Request and wait, while the person approves.
    let args: Vec<String> = ["request", "--url", &base, "--key", &s(&key_file), "--token"]
        .iter()
        .map(|a| a.to_string())
        .chain([
            s(&wallet_token),
            "--body".into(),
            s(&body),
            "--wait".into(),
            "30".into(),
        ])
        .collect();
    let waiting = tokio::task::spawn_blocking(move || act(args));
    let id = loop {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM consent_requests")
            .fetch_all(w.h.service.store().pool())
            .await
            .unwrap();
        if let Some(id) = ids.first() {
            break id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (session, review) = sign_in_at(&w, &format!("/consent/{id}"), "alice").await;
    let done = decide(&w, &id, &session, &review, "approve").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let output = waiting.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], "pending");
    assert_eq!(lines[1]["status"], "approved");
    let open_payment = write(
        &dir,
        "payment.sdjwt",
        lines[1]["payment_mandate"].as_str().unwrap(),
    );
    let open_checkout = write(
        &dir,
        "checkout.sdjwt",
        lines[1]["checkout_mandate"].as_str().unwrap(),
    );

    // A challenge, the merchant's checkout, the order closed for the merchant, the payment
    // closed for the verifier, presented.
    let challenge = act(vec![
        "challenge".into(),
        "--url".into(),
        base.clone(),
        "--key".into(),
        s(&key_file),
        "--token".into(),
        s(&verifier_token),
    ]);
    assert!(
        challenge.status.success(),
        "{}",
        String::from_utf8_lossy(&challenge.stderr)
    );
    let challenge: Value = serde_json::from_slice(&challenge.stdout).unwrap();
    let jwt = write(&dir, "checkout.jwt", &w.checkout("chk_cli", 12900, "USD"));
    let close = |kind: &str, mandate: &Path, aud: &str, nonce: &str| {
        let mut args = vec![
            "close".to_owned(),
            "--kind".into(),
            kind.into(),
            "--mandate".into(),
            s(mandate),
            "--key".into(),
            s(&key_file),
            "--checkout-jwt".into(),
            s(&jwt),
            "--aud".into(),
            aud.into(),
            "--nonce".into(),
            nonce.into(),
        ];
        if kind == "payment" {
            args.extend([
                "--instrument".into(),
                r#"{"id": "pi_card_1", "type": "card"}"#.into(),
            ]);
            // The verifier needs to see only the payee being paid.
            args.extend(["--withhold".into(), "mer_other".into()]);
        }
        let out = act(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let order = write(
        &dir,
        "order.chain",
        &close(
            "checkout",
            &open_checkout,
            "https://shop.example",
            "n-order",
        ),
    );
    let payment = write(
        &dir,
        "payment.chain",
        &close(
            "payment",
            &open_payment,
            challenge["aud"].as_str().unwrap(),
            challenge["nonce"].as_str().unwrap(),
        ),
    );
    let present = |chain: &Path| {
        act(vec![
            "present".into(),
            "--url".into(),
            base.clone(),
            "--key".into(),
            s(&key_file),
            "--token".into(),
            s(&verifier_token),
            "--kind".into(),
            "payment".into(),
            "--chain".into(),
            s(chain),
            "--checkout-jwt".into(),
            s(&jwt),
            "--order-chain".into(),
            s(&order),
        ])
    };
    let presented = std::fs::read_to_string(&payment).unwrap();
    let issued = std::fs::read_to_string(&open_payment).unwrap();
    assert!(issued.contains(&other_payee_disclosure(&issued)));
    assert!(
        !presented.contains(&other_payee_disclosure(&issued)),
        "mer_other is withheld"
    );

    // The server runs on the runtime's workers; this thread may block on the process.
    let first = present(&payment);
    let decision: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(decision["status"], "Success", "{decision}");
    assert!(first.status.success());

    // The same presentation again: refused, and the exit status says so.
    let again = present(&payment);
    let decision: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(decision["reasons"], json!(["nonce_used"]), "{decision}");
    assert_eq!(again.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The encoded disclosure of the `mer_other` payee in an issued mandate.
fn other_payee_disclosure(sd_jwt: &str) -> String {
    sd_jwt
        .trim_end_matches('~')
        .split('~')
        .skip(1)
        .find(|d| {
            let d = ap2_mandate::sdjwt::Disclosure::parse(d).unwrap();
            d.value().get("id").and_then(Value::as_str) == Some("mer_other")
        })
        .expect("the issued mandate discloses mer_other")
        .to_owned()
}
