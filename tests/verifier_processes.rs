//! The verifier as operators run it: `ap2-mandate serve` processes. Two processes on one
//! PostgreSQL give the same single-use guarantee as one; a process killed with SIGKILL under
//! load and started again has every payment it accepted in its ledger and audit chain, and
//! refuses every replay.
//!
//! Tokens are issued in-process on the same store and master key as the processes (all of them
//! sign and verify with the keys kept in the store), as if behind one public URL.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ap2_mandate::jose::b64;
use ap2_mandate::store::{AuditLog as _, DecisionLedger as _, Store, StoreConfig};
use serde_json::Value;
use support::oauth::MASTER_KEY;
use support::verifier::{world_at, Actor, World};

const ISSUER: &str = "https://ap2.test";

/// A `serve` process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(data_dir: &Path, url: &str, schema: Option<&str>, jwks: &[PathBuf; 3]) -> Server {
    let port = support::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"));
    cmd.args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--issuer",
        ISSUER,
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .args(["--database-url", url])
    .arg("--trust-issuer")
    .arg(&jwks[0])
    .arg("--trust-issuer-cnf-only")
    .arg(&jwks[1])
    .arg("--trust-merchant")
    .arg(&jwks[2])
    .args([
        "--log",
        "error",
        "--agent-rate",
        "100000",
        "--agent-burst",
        "100000",
    ])
    .env("AP2_MASTER_KEY", b64::encode(MASTER_KEY))
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(schema) = schema {
        cmd.args(["--schema", schema]);
    }
    let child = cmd.spawn().expect("start ap2-mandate serve");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = ap2_mandate::outbound::client(None, None).unwrap();
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{}/healthz", server.base)).send().await {
            if res.status() == 200 {
                return server;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presents `body` to `base` with a fresh proof; the answer's status and body.
async fn present(
    client: &reqwest::Client,
    w: &World,
    a: &Actor,
    base: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let headers = w.auth(a, &a.agent.key, "/v1/payments/verify");
    let mut req = client
        .post(format!("{base}/v1/payments/verify"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(support::unique(label));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_accept_one_presentation_once() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::unique("procs").to_lowercase();
    let mut config = StoreConfig::new(url.clone());
    config.schema = Some(schema.clone());
    let store = Store::open(&config).await.unwrap();
    let w = Arc::new(world_at(store, Some(ISSUER)).await);
    let dir = temp_dir("ap2_procs");
    let jwks = w.write_jwks(&dir);
    let a = serve(&dir, &url, Some(&schema), &jwks).await;
    let b = serve(&dir, &url, Some(&schema), &jwks).await;

    let alice = Arc::new(w.actor("shopper", "alice").await);
    let (open_checkout, open_payment) = w.open_pair(&alice);
    let body = Arc::new(
        w.fresh_payment(&alice, &open_checkout, &open_payment, "chk_p", 12900)
            .await,
    );
    let client = ap2_mandate::outbound::client(None, None).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (w, alice, body, client) = (w.clone(), alice.clone(), body.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            present(&client, &w, &alice, &base, &body).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let (status, answer) = t.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        outcomes.push(answer["status"].as_str().unwrap().to_owned());
    }
    let wins = outcomes.iter().filter(|s| *s == "Success").count();
    assert_eq!(
        wins, 1,
        "exactly one of 50 over two processes: {outcomes:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One accepted or refused presentation, as the client saw it.
struct Seen {
    body: Value,
    answer: Value,
}

async fn killed_under_load(url: String, schema: Option<String>, label: &str) {
    let mut config = StoreConfig::new(url.clone());
    config.schema = schema.clone();
    let store = Store::open(&config).await.unwrap();
    let w = Arc::new(world_at(store, Some(ISSUER)).await);
    let dir = temp_dir("ap2_kill");
    let jwks = w.write_jwks(&dir);
    let mut server = serve(&dir, &url, schema.as_deref(), &jwks).await;

    let alice = Arc::new(w.actor("shopper", "alice").await);
    let open_checkout = Arc::new(w.open_checkout(&w.wallet, w.evidence(&alice), &alice.agent));
    let open_payment = Arc::new(w.open_payment(
        &w.wallet,
        w.evidence(&alice),
        &alice.agent,
        &open_checkout,
        vec![],
    ));
    let client = ap2_mandate::outbound::client(None, None).unwrap();
    let base = Arc::new(server.base.clone());
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let (w, alice, client, base) = (w.clone(), alice.clone(), client.clone(), base.clone());
        let (oc, op) = (open_checkout.clone(), open_payment.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for n in 0.. {
                let id = format!("chk_{worker}_{n}");
                let body = w.fresh_payment(&alice, &oc, &op, &id, 1000).await;
                match present(&client, &w, &alice, &base, &body).await {
                    Ok((200, answer)) => seen.push(Seen { body, answer }),
                    Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                    Err(_) => break, // the server is gone
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().expect("SIGKILL the server");
    let _ = server.child.wait();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let accepted: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.answer["status"] == "Success")
        .collect();
    assert!(
        accepted.len() >= 5,
        "{label}: load reached the server ({} accepted)",
        accepted.len()
    );

    let restarted = serve(&dir, &url, schema.as_deref(), &jwks).await;
    let store = w.h.service.store();
    // Every accepted payment is in the audit chain, and the ledger counts exactly the accepted
    // decisions the chain holds (never fewer than the client saw).
    let records = store.tail(100_000).await.unwrap();
    let successes: Vec<_> = records
        .iter()
        .filter(|r| r.record.action == "payment.verify" && r.record.outcome == "success")
        .collect();
    for s in &accepted {
        let id = s.answer["correlation_id"].as_str().unwrap();
        assert!(
            successes.iter().any(|r| r.record.correlation_id == id),
            "{label}: an accepted payment is missing from the audit chain"
        );
    }
    let usage = store
        .usage(&support::verifier::ledger_id(&open_payment))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "{label}: killed under load; client saw {} accepted of {} decided; ledger holds {} uses",
        accepted.len(),
        seen.len(),
        usage.uses
    );
    assert_eq!(usage.uses as usize, successes.len(), "{label}");
    assert!(usage.uses as usize >= accepted.len(), "{label}");
    assert_eq!(usage.total_minor, 1000 * usage.uses, "{label}");
    store.verify().await.unwrap().unwrap();

    // Every accepted presentation, replayed to the restarted process, is refused.
    for s in accepted.iter().take(20) {
        let (status, answer) = present(&client, &w, &alice, &restarted.base, &s.body)
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["status"], "Error",
            "{label}: a replay after restart: {answer}"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_sqlite_server_keeps_every_accepted_payment_and_refuses_replays() {
    let dir = temp_dir("ap2_kill_db");
    let url = format!("sqlite://{}?mode=rwc", dir.join("ap2.db").display());
    killed_under_load(url, None, "sqlite").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_postgres_server_keeps_every_accepted_payment_and_refuses_replays() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::unique("kill").to_lowercase();
    killed_under_load(url, Some(schema), "postgres").await;
}
