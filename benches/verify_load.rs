//! Load benchmark of `POST /v1/payments/verify`: `ap2-mandate serve` (the release binary) as
//! operators run it, driven by `wrk` with `benches/verify_load.lua`.
//!
//! Run: `cargo build --release --bin ap2-mandate && cargo bench --bench verify_load`
//! (needs `wrk` on the PATH; Debian: `apt-get install wrk`). `AP2_BENCH_POSTGRES_URL` adds runs on
//! PostgreSQL with one and with two instances; `AP2_BENCH_SECONDS` (default 10) sets each run's
//! length, `AP2_BENCH_CONNECTIONS` (default 16) wrk's connections, `AP2_BENCH_REQUESTS` (default
//! 30000) how many presentations are made ahead of each run, `AP2_BENCH_PAUSE_MS` (default 2) the
//! pause of each of the four connections of the paced SQLite run (about 1,000 requests/s).
//!
//! Every request is a real decision: its own challenge (stored in the verifier's store as
//! `POST /v1/challenges` would), its own merchant checkout, its own closing hop signed by the
//! agent's key over a wallet-signed open payment mandate (with delegation evidence naming the
//! human, the agent and the grant), the order's checkout chain, and its own DPoP proof for the
//! agent's real access token. The server verifies the token, the proof, both chains and the
//! checkout, checks the grant, consumes the proof's `jti`, the nonce, the closed mandate and the
//! transaction id, moves the ledger, writes the audit record and signs a receipt. A run counts
//! only if every answer was a `Success`.

mod support;

use support::{env_number, now_secs};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ap2_mandate::identity::admin::AgentRegistration;
use ap2_mandate::identity::assertion::{make_assertion, JWT_BEARER};
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::grants::AuthorizationParams;
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::{random_token, TokenService, TokenServiceConfig};
use ap2_mandate::jose::{b64, sha256_b64, sign_compact, SigningKey};
use ap2_mandate::mandate::build::{close, issue, join};
use ap2_mandate::store::{DecisionLedger as _, MasterKey, Store, StoreConfig};
use serde_json::{json, Map, Value};

const ISSUER: &str = "https://ap2.bench";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";

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

impl Server {
    /// CPU time used so far (user + system), seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which ends with `)`): utime and stime are 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident memory, MiB (`VmHWM`).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

struct Setup {
    dir: PathBuf,
    url: String,
    schema: Option<String>,
    master: [u8; 32],
    wallet: SigningKey,
    merchant: SigningKey,
}

fn binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/ap2-mandate");
    assert!(
        path.exists(),
        "build the release binary first: cargo build --release --bin ap2-mandate"
    );
    path
}

fn spawn(setup: &Setup) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let write = |name: &str, key: &SigningKey| {
        let path = setup.dir.join(name);
        std::fs::write(
            &path,
            json!({"keys": [key.public().to_value()]}).to_string(),
        )
        .expect("write JWKS");
        path
    };
    let mut cmd = Command::new(binary());
    cmd.args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--issuer",
        ISSUER,
    ])
    .arg("--data-dir")
    .arg(&setup.dir)
    .args(["--database-url", &setup.url])
    .arg("--trust-issuer")
    .arg(write("wallet.jwks.json", &setup.wallet))
    .arg("--trust-merchant")
    .arg(write("merchant.jwks.json", &setup.merchant))
    .args(["--agent-rate", "1000000", "--agent-burst", "1000000"])
    .args(["--max-in-flight", "4096", "--log", "warn"])
    .env("AP2_MASTER_KEY", b64::encode(setup.master))
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(schema) = &setup.schema {
        cmd.args(["--schema", schema]);
    }
    let child = cmd.spawn().expect("start ap2-mandate serve");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// The agent's side: its key, token, and the mandates the wallet signed for its human.
struct Agent {
    key: SigningKey,
    token: String,
    open_checkout: String,
    open_payment: String,
}

async fn agent(service: &TokenService, setup: &Setup, server: &Server) -> Agent {
    let now = now_secs();
    let aud = format!("{ISSUER}/verifier");
    let key = SigningKey::generate(Some("shopper-key".into())).expect("agent key");
    let registration = AgentRegistration {
        name: "shopper".into(),
        owner: "ops@example.com".into(),
        jwks: json!({"keys": [key.public().to_value()]}),
        scopes: vec!["payments:present".into()],
        audiences: vec![aud.clone()],
        max_delegation_depth: 0,
        federated_credentials: vec![],
        redirect_uris: vec![],
    };
    let registered = service
        .register_agent(&registration, now)
        .await
        .expect("register");
    let user = service
        .create_user("alice", &Password::new("correct horse battery staple"), now)
        .await
        .expect("user");
    let verifier = format!("bench-verifier-{now}-0123456789abcdefghijklmnopqrstuvwxyz");
    let params = AuthorizationParams {
        response_type: Some("code".into()),
        client_id: Some(registered.id.clone()),
        redirect_uri: Some(REDIRECT.into()),
        scope: Some("payments:present".into()),
        state: Some("st".into()),
        code_challenge: Some(challenge_s256(&verifier)),
        code_challenge_method: Some("S256".into()),
        resource: Some(aud.clone()),
        ..AuthorizationParams::default()
    };
    let (request, _) = service
        .authorization_request(&params)
        .await
        .unwrap_or_else(|e| panic!("authorization request refused: {e:?}"));
    let code = service
        .approve(&user.id, &request, now)
        .await
        .expect("approve");
    let token_url = format!("{ISSUER}/oauth2/token");
    let assertion = make_assertion(&key, &registered.id, ISSUER, now).expect("assertion");
    let proof = make_proof(
        &key,
        "POST",
        &token_url,
        now,
        None,
        Some(&service.dpop_nonce(now)),
    )
    .expect("proof");
    let body = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ])
    .expect("form");
    let res = ap2_mandate::outbound::client(None, None)
        .expect("HTTP client")
        .post(format!("{}/oauth2/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("dpop", proof)
        .body(body)
        .send()
        .await
        .expect("token request");
    assert_eq!(res.status(), 200, "code redemption");
    let answer: Value =
        serde_json::from_str(&res.text().await.expect("token answer")).expect("token JSON");
    let token = answer["access_token"].as_str().expect("token").to_owned();
    let claims = service
        .verify_token(&token, now, false)
        .await
        .expect("our token");

    let mut evidence = Map::new();
    evidence.insert("sub".into(), user.id.clone().into());
    evidence.insert(
        "delegation".into(),
        json!({"agent_id": registered.id, "grant_id": claims.grant_id}),
    );
    let cnf = json!({"jwk": key.public().to_value()});
    let open_checkout = issue(
        &setup.wallet,
        "dc+sd-jwt",
        evidence.clone(),
        json!({"vct": "mandate.checkout.open.1", "constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1}]},
            {"type": "checkout.allowed_merchants", "allowed": [merchant()]}],
            "cnf": cnf, "iat": now - 60, "exp": now + 3600}),
    )
    .expect("open checkout");
    let open_payment = issue(
        &setup.wallet,
        "dc+sd-jwt",
        evidence,
        json!({"vct": "mandate.payment.open.1", "constraints": [
            {"type": "payment.reference", "conditional_transaction_id": sha256_b64(open_checkout.as_bytes())},
            {"type": "payment.amount_range", "currency": "USD", "min": 1, "max": 50000},
            {"type": "payment.allowed_payees", "allowed": [merchant()]}],
            "cnf": cnf, "iat": now - 60, "exp": now + 3600}),
    )
    .expect("open payment");
    Agent {
        key,
        token,
        open_checkout,
        open_payment,
    }
}

fn merchant() -> Value {
    json!({"id": "mer_shop_1", "name": "Example Shop"})
}

/// Makes `count` presentations into `file`: challenge stored, checkout, both chains, proof.
async fn prepare(store: &Store, setup: &Setup, agent: &Agent, count: u64, file: &Path) {
    let aud = format!("{ISSUER}/verifier");
    let htu = format!("{ISSUER}/v1/payments/verify");
    let now = now_secs();
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).expect("requests file"));
    for i in 0..count {
        let nonce = random_token(24).expect("nonce");
        store
            .issue_nonce(&nonce, &aud, None, now + 600)
            .await
            .expect("store the challenge");
        let body = json!({"id": format!("chk_{i}"), "merchant": merchant(), "status": "ready_for_complete",
            "line_items": [{"id": "li_1", "item": {"id": "sku_boot", "title": "Boot", "price": 1000},
                "quantity": 1, "totals": [{"type": "total", "amount": 1000}]}],
            "currency": "USD", "totals": [{"type": "total", "amount": 1000}], "links": []});
        let jwt = sign_compact(
            &setup.merchant,
            Some("JWT"),
            false,
            body.to_string().as_bytes(),
        )
        .expect("checkout");
        let hash = sha256_b64(jwt.as_bytes());
        let closed_checkout =
            json!({"vct": "mandate.checkout.1", "checkout_jwt": jwt, "checkout_hash": hash});
        let order_hop = close(
            &agent.key,
            &agent.open_checkout,
            closed_checkout,
            "https://shop.example",
            "n-order",
            now,
        )
        .expect("order hop");
        let closed_payment = json!({"vct": "mandate.payment.1", "transaction_id": hash,
            "payee": merchant(), "payment_amount": {"amount": 1000, "currency": "USD"},
            "payment_instrument": {"id": "pi_card_1", "type": "card"}});
        let pay_hop = close(
            &agent.key,
            &agent.open_payment,
            closed_payment,
            &aud,
            &nonce,
            now,
        )
        .expect("payment hop");
        let request = json!({"payment_mandate": join(&[&agent.open_payment, &pay_hop]),
            "checkout_jwt": jwt, "checkout_mandate": join(&[&agent.open_checkout, &order_hop])});
        let proof =
            make_proof(&agent.key, "POST", &htu, now, Some(&agent.token), None).expect("proof");
        writeln!(out, "{proof}\t{request}").expect("write a request");
    }
    out.flush().expect("flush");
}

/// What one wrk process reported.
#[derive(Debug, Default, Clone, Copy)]
struct Wrk {
    requests: u64,
    seconds: f64,
    success: u64,
    refused: u64,
    other: u64,
    exhausted: u64,
    p50_us: u64,
    p99_us: u64,
}

fn wrk(
    base: &str,
    token: &str,
    file: &Path,
    threads: u64,
    connections: u64,
    seconds: u64,
    pause_ms: u64,
) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/verify_load.lua");
    Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(format!("{base}/v1/payments/verify"))
        .env("AP2_LOAD_FILE", file)
        .env("AP2_LOAD_TOKEN", token)
        .env("AP2_LOAD_THREADS", threads.to_string())
        .env("AP2_LOAD_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run wrk (apt-get install wrk)")
}

fn read_wrk(child: Child) -> Wrk {
    let output = child.wait_with_output().expect("wrk output");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |line: &str, name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("wrk output lacks {name}:\n{text}"))
    };
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("wrk output lacks `{prefix}`:\n{text}"))
            .to_owned()
    };
    let decisions = line("AP2 decisions");
    let latency = line("AP2 latency");
    let totals = line("AP2 totals");
    Wrk {
        requests: field(&totals, "requests") as u64,
        seconds: field(&totals, "seconds"),
        success: field(&decisions, "success") as u64,
        refused: field(&decisions, "refused") as u64,
        other: field(&decisions, "other") as u64,
        exhausted: field(&decisions, "exhausted") as u64,
        p50_us: field(&latency, "p50_us") as u64,
        p99_us: field(&latency, "p99_us") as u64,
    }
}

struct Row {
    label: String,
    connections: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    rss_mib: f64,
    cpu_ms: f64,
}

async fn run(
    label: &str,
    url: String,
    schema: Option<String>,
    instances: usize,
    connections: u64,
    pause_ms: u64,
) -> Row {
    let seconds = env_number("AP2_BENCH_SECONDS", 10);
    let count = env_number("AP2_BENCH_REQUESTS", 30_000);
    let tag: String = label.chars().filter(char::is_ascii_alphanumeric).collect();
    let dir = std::env::temp_dir().join(format!(
        "ap2-load-{}-{tag}-{connections}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let mut master = [0u8; 32];
    master.copy_from_slice(&b64::decode(&random_token(32).expect("random")).expect("bytes"));
    let setup = Setup {
        dir: dir.clone(),
        url: url.clone(),
        schema: schema.clone(),
        master,
        wallet: SigningKey::generate(Some("wallet-1".into())).expect("key"),
        merchant: SigningKey::generate(Some("shop-1".into())).expect("key"),
    };
    let mut config = StoreConfig::new(url);
    config.schema = schema;
    let store = Store::open(&config).await.expect("open the store");
    let service = Arc::new(
        TokenService::new(
            store.clone(),
            Arc::new(MasterKey::from_bytes(&master).expect("master")),
            TokenServiceConfig::new(ISSUER),
            vec![],
        )
        .expect("token service"),
    );
    // Keys first (the servers read them from the store), then the servers.
    service.signing_key(now_secs()).await.expect("signing key");
    let servers: Vec<Server> = (0..instances).map(|_| spawn(&setup)).collect();
    let agent = agent(&service, &setup, &servers[0]).await;

    let per_instance = count / instances as u64;
    let mut files = Vec::new();
    for i in 0..instances {
        let file = dir.join(format!("requests-{i}.tsv"));
        prepare(&store, &setup, &agent, per_instance, &file).await;
        files.push(file);
    }
    let cpu_before: f64 = servers.iter().map(Server::cpu_seconds).sum();
    let threads = 2u64.min(connections);
    let per_conn = (connections / instances as u64).max(1);
    let children: Vec<Child> = servers
        .iter()
        .zip(&files)
        .map(|(s, f)| {
            wrk(
                &s.base,
                &agent.token,
                f,
                threads.min(per_conn),
                per_conn,
                seconds,
                pause_ms,
            )
        })
        .collect();
    let results: Vec<Wrk> = children.into_iter().map(read_wrk).collect();
    let rss = servers.iter().map(Server::peak_rss_mib).fold(0.0, f64::max);
    let cpu = servers.iter().map(Server::cpu_seconds).sum::<f64>() - cpu_before;
    drop(servers);
    if let Some(schema) = &setup.schema {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(store.pool())
            .await;
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let rate: f64 = results.iter().map(|w| w.success as f64 / w.seconds).sum();
    let errors: u64 = results
        .iter()
        .map(|w| w.refused + w.other + w.exhausted)
        .sum();
    let requests: u64 = results.iter().map(|w| w.requests).sum();
    let p50 = results.iter().map(|w| w.p50_us).max().unwrap_or(0) as f64 / 1000.0;
    let p99 = results.iter().map(|w| w.p99_us).max().unwrap_or(0) as f64 / 1000.0;
    let decided: u64 = results.iter().map(|w| w.success).sum();
    let cpu_ms = if decided > 0 {
        cpu * 1000.0 / decided as f64
    } else {
        0.0
    };
    eprintln!("{label}: {requests} requests, {results:?}");
    Row {
        label: label.into(),
        connections,
        rate,
        p50_ms: p50,
        p99_ms: p99,
        errors,
        rss_mib: rss,
        cpu_ms,
    }
}

/// Removes a SQLite database and its log files (the server was killed, so they remain).
fn remove_sqlite(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = db.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connections = env_number("AP2_BENCH_CONNECTIONS", 16);
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        let db = std::env::temp_dir().join(format!("ap2-load-{}.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", db.display());
        rows.push(run("sqlite, 1 instance", url.clone(), None, 1, connections, 0).await);
        remove_sqlite(&db);
        for low in [1u64, 4] {
            let db = std::env::temp_dir().join(format!("ap2-load-{}-{low}.db", std::process::id()));
            let url = format!("sqlite://{}?mode=rwc", db.display());
            rows.push(run("sqlite, 1 instance", url, None, 1, low, 0).await);
            remove_sqlite(&db);
        }
        // Near 1,000/s with overlapping requests: four connections, each pausing between
        // its answer and its next request.
        let db = std::env::temp_dir().join(format!("ap2-load-{}-paced.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let pause = env_number("AP2_BENCH_PAUSE_MS", 2);
        rows.push(run("sqlite, paced", url, None, 1, 4, pause).await);
        remove_sqlite(&db);
        if let Ok(pg) = std::env::var("AP2_BENCH_POSTGRES_URL") {
            for instances in [1usize, 2] {
                let schema = format!("load_{}_{instances}", std::process::id());
                rows.push(
                    run(
                        &format!(
                            "postgres, {instances} instance{}",
                            if instances > 1 { "s" } else { "" }
                        ),
                        pg.clone(),
                        Some(schema),
                        instances,
                        connections,
                        0,
                    )
                    .await,
                );
            }
        }
        rows
    });
    println!("\nPOST /v1/payments/verify under wrk (every request a fresh real presentation)");
    println!(
        "{:<24} {:>11} {:>12} {:>9} {:>9} {:>7} {:>13} {:>15}",
        "run",
        "connections",
        "decisions/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "peak RSS MiB",
        "server CPU ms"
    );
    for r in &rows {
        println!(
            "{:<24} {:>11} {:>12.0} {:>9.2} {:>9.2} {:>7} {:>13.1} {:>15.2}",
            r.label, r.connections, r.rate, r.p50_ms, r.p99_ms, r.errors, r.rss_mib, r.cpu_ms
        );
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.errors > 0).collect();
    assert!(
        failed.is_empty(),
        "runs with errors (or too few prepared requests: raise AP2_BENCH_REQUESTS)"
    );
}
