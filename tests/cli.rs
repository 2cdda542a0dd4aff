//! The `ap2-mandate` binary as a user runs it: conformance, inspect and offline verify.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared vector set beside the repository (or `AP2_VECTORS_DIR`), else our copy.
fn vector_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AP2_VECTORS_DIR") {
        return PathBuf::from(dir);
    }
    let shared = root().join("../shared/vectors/ap2-v0.2");
    if shared.join("manifest.json").exists() {
        return shared;
    }
    eprintln!("../shared/vectors/ap2-v0.2 not found: running the copy in fixtures/ap2-v0.2");
    root().join("fixtures/ap2-v0.2")
}

#[test]
fn conformance_command_reports_32_passed_on_the_shared_set() {
    let out = bin().arg("conformance").arg(vector_dir()).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("32 passed, 0 failed"));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 32);
}

#[test]
fn conformance_command_fails_when_an_expectation_is_wrong() {
    let dir = std::env::temp_dir().join(format!("ap2-cli-vectors-{}", std::process::id()));
    copy_dir(&root().join("fixtures/ap2-v0.2"), &dir);
    let case = dir.join("cases/valid_checkout.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&case).unwrap()).unwrap();
    doc["expect"] = json!("reject");
    doc["error"] = json!("invalid_mandate");
    std::fs::write(&case, doc.to_string()).unwrap();

    let out = bin().arg("conformance").arg(&dir).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout.lines().last(), Some("31 passed, 1 failed"));
    assert!(stdout.lines().any(|l| l.starts_with("FAIL valid_checkout")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_says_not_verified_and_explains_the_mandate() {
    let case = root().join("fixtures/ap2-v0.2/cases/valid_hnp_payment.json");
    let out = bin().arg("inspect").arg(&case).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(stdout.starts_with("NOT VERIFIED"));
    assert!(stdout.contains("each payment from 10.00 USD to 200.00 USD"));
    assert!(stdout.contains("pay 158.00 USD to Northwind Outfitters (mer_nw_7c1f)"));
    assert!(stdout.contains("2026-05-28T20:26:40Z"));
}

#[test]
fn verify_command_accepts_a_valid_payment_and_names_the_code_of_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("ap2-cli-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys: Value = read_json(&root().join("fixtures/ap2-v0.2/keys.json"));
    let jwks = |names: &[&str]| json!({"keys": names.iter().map(|n| keys["keys"][n]["public_jwk"].clone()).collect::<Vec<_>>()});
    std::fs::write(dir.join("issuers.json"), jwks(&["root"]).to_string()).unwrap();
    std::fs::write(dir.join("merchants.json"), jwks(&["merchant"]).to_string()).unwrap();

    let run = |name: &str| {
        let case: Value = read_json(&root().join(format!("fixtures/ap2-v0.2/cases/{name}.json")));
        let s = |k: &str| case[k].as_str().unwrap().to_owned();
        let order = &case["order_checkout_chain"];
        let out = bin()
            .args([
                "verify",
                "--kind",
                "payment",
                "--chain",
                &s("chain"),
                "--checkout-jwt",
                &s("checkout_jwt"),
            ])
            .args(["--aud", &s("expected_aud"), "--nonce", &s("expected_nonce")])
            .args(["--checkout-chain", order["chain"].as_str().unwrap()])
            .args(["--checkout-aud", order["expected_aud"].as_str().unwrap()])
            .args([
                "--checkout-nonce",
                order["expected_nonce"].as_str().unwrap(),
            ])
            .arg("--issuer-jwks")
            .arg(dir.join("issuers.json"))
            .arg("--merchant-jwks")
            .arg(dir.join("merchants.json"))
            .args(["--now", &case["now"].to_string()])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, stdout) = run("valid_hnp_payment");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("Success"));
    let (code, stdout) = run("amount_over_max");
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with("Error: invalid_mandate"), "{stdout}");
    let (code, stdout) = run("wrong_nonce");
    assert_eq!(code, Some(1));
    assert!(
        stdout.starts_with("Error: invalid_credential (nonce_mismatch)"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("cases")).unwrap();
    for entry in ["manifest.json", "keys.json"] {
        std::fs::copy(from.join(entry), to.join(entry)).unwrap();
    }
    for entry in std::fs::read_dir(from.join("cases")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join("cases").join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn audit_verify_passes_on_a_whole_chain_and_names_a_changed_record() {
    use ap2_mandate::store::{AuditLog as _, AuditRecord, Store, StoreConfig};

    let path = std::env::temp_dir().join(format!("ap2-cli-audit-{}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&StoreConfig::new(&url)).await.unwrap();
        for action in ["token.exchange", "mandate.issue", "payment.verify"] {
            let record = AuditRecord {
                at: 1_780_000_000,
                action: action.into(),
                outcome: "success".into(),
                amount: Some("158.00 USD".into()),
                correlation_id: "run-1".into(),
                ..Default::default()
            };
            store.append(&record).await.unwrap();
        }
        store.close().await;
    });

    let audit = |args: &[&str]| {
        let out = bin()
            .arg("audit")
            .args(["--database-url", &url])
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    assert_eq!(
        audit(&["verify"]),
        (Some(0), "audit chain intact: 3 records\n".into())
    );
    let (code, tail) = audit(&["tail", "-n", "2"]);
    assert_eq!(code, Some(0));
    assert!(tail.lines().next().unwrap().starts_with("#2"), "{tail}");
    assert!(
        tail.contains("payment.verify") && tail.contains("amount=158.00 USD"),
        "{tail}"
    );

    rt.block_on(async {
        let store = Store::open(&StoreConfig::new(&url)).await.unwrap();
        sqlx::raw_sql("DROP TRIGGER audit_no_update; UPDATE audit SET record = REPLACE(record, '158.00', '999.00') WHERE seq = 3")
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
    });
    let (code, out) = audit(&["verify"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "audit chain BROKEN at record 3: content changed\n");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn user_agent_and_keys_commands_manage_the_store() {
    let dir = std::env::temp_dir().join(format!("ap2-cli-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = ["--data-dir", dir.to_str().unwrap()];
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = bin()
            .args(args)
            .args(data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };

    let out = run(
        &["user", "add", "alice"],
        Some("correct horse battery staple\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["user", "add", "bob"], Some("short\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password too short"));

    let key = ap2_mandate::jose::SigningKey::generate(Some("k1".into())).unwrap();
    let jwks = dir.join("agent.jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [key.public().to_value()]}).to_string(),
    )
    .unwrap();
    let out = run(
        &[
            "agent",
            "add",
            "--name",
            "shopper",
            "--owner",
            "ops@example.com",
            "--jwks",
            jwks.to_str().unwrap(),
            "--scope",
            "payments:present",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["jwks"]["keys"][0]["kid"], "k1");
    // The same key cannot be registered twice.
    let out = run(
        &[
            "agent",
            "add",
            "--name",
            "copy",
            "--owner",
            "o",
            "--jwks",
            jwks.to_str().unwrap(),
            "--scope",
            "payments:present",
        ],
        None,
    );
    assert!(!out.status.success());

    let out = run(&["agent", "list"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = run(&["agent", "disable", &id], None);
    assert!(out.status.success());
    let out = run(&["agent", "show", &id], None);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "disabled");
    let out = run(&["user", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"alice\""));
    assert!(run(&["keys", "rotate"], None).status.success());
    let out = bin()
        .args(["audit", "verify", "--database-url"])
        .arg(format!("sqlite://{}/ap2.db", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same store found through the data directory, answering in JSON for scripts.
    let out = bin()
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["intact"], true, "{verdict}");
    assert!(verdict["records"].as_i64().unwrap() >= 2, "{verdict}");
    let out = bin()
        .args(["audit", "tail", "-n", "2", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l["seq"].is_i64() && l["record"]["action"].is_string()));
    let _ = std::fs::remove_dir_all(&dir);
}
