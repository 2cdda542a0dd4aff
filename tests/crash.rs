//! Crash safety of the store: a writer killed with SIGKILL at a random moment loses no decision
//! it reported, never passes a budget, and leaves an audit chain that still verifies.
//!
//! The writer is this test binary run again as a child (`crash_child`, a no-op unless
//! `AP2_CRASH_CHILD_DB` is set). It prints one line per decision after the store has answered,
//! and the parent kills it 300 to 1500 ms after it is ready, reopens the store and checks every
//! line. Runs on SQLite (WAL, `synchronous=NORMAL`) and on PostgreSQL when
//! `AP2_TEST_POSTGRES_URL` is set. Power loss is not simulated: NORMAL durability only promises
//! that a commit outlives the process, and that is what is tested here.

#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ap2_mandate::store::{
    AuditLog, AuditRecord, Begin, Decision, DecisionLedger, Durability, IdempotencyDone, NonceUse,
    Redemption, Refusal, Spend, Store, StoreConfig,
};
use sqlx::Row as _;

/// The store URL for the child; its presence is what turns `crash_child` into a writer.
const CHILD_DB: &str = "AP2_CRASH_CHILD_DB";
/// The PostgreSQL schema for the child, if any.
const CHILD_SCHEMA: &str = "AP2_CRASH_CHILD_SCHEMA";
/// Marks the child's own lines among the test harness's output.
const TAG: &str = "AP2-CRASH ";
const NOW: i64 = 1_780_000_000;
const AUD: &str = "https://verifier.example";
/// Open mandates and their budgets (minor units): the first runs out after a few payments, the
/// second after about a hundred, the last never.
const MANDATES: [(&str, i64); 3] = [
    ("open-small", 1_000),
    ("open-medium", 60_000),
    ("open-large", 1_000_000_000),
];

#[test]
fn a_killed_sqlite_writer_loses_no_reported_decision() {
    let path = support::sqlite_path();
    let _files = RemoveOnDrop(path.clone());
    let mut config = StoreConfig::sqlite(&path);
    config.durability = Durability::Normal;
    crash_and_check("sqlite", &config);
}

#[test]
fn a_killed_postgres_writer_loses_no_reported_decision() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let mut config = StoreConfig::new(url);
    let schema = support::unique("crash").to_lowercase();
    config.schema = Some(schema.clone());
    crash_and_check("postgres", &config);
    runtime().block_on(async {
        let store = Store::open(&config).await.expect("reopen to clean up");
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(store.pool())
            .await
            .expect("drop the test schema");
        store.close().await;
    });
}

/// The writer. In ordinary test runs the variable is absent and this returns at once.
#[test]
fn crash_child() {
    let Ok(url) = std::env::var(CHILD_DB) else {
        return;
    };
    let mut config = StoreConfig::new(url);
    config.schema = std::env::var(CHILD_SCHEMA).ok();
    config.durability = Durability::Normal;
    runtime().block_on(write_until_killed(&config));
}

fn crash_and_check(name: &str, config: &StoreConfig) {
    let started = Instant::now();
    let (lines, delay) = run_and_kill(config);
    let (committed, refused, in_flight) = runtime().block_on(check(name, config, &lines));
    eprintln!(
        "{name}: killed {delay:?} after ready; {committed} committed and {refused} refused \
         decisions reported and found intact (unreported commit: {in_flight}); {:?} in all",
        started.elapsed()
    );
}

/// Starts the child, kills it at a random moment once it is writing, and returns its lines.
fn run_and_kill(config: &StoreConfig) -> (Vec<Line>, Duration) {
    let mut child = Reaped(spawn_child(config));
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let (sender, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || forward_lines(stdout, sender));
    wait_until_ready(&lines);

    let delay = random_delay();
    std::thread::sleep(delay);
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended before it was killed: {status}"
    );

    reader.join().expect("reader thread");
    (
        lines.into_iter().filter_map(|l| Line::parse(&l)).collect(),
        delay,
    )
}

fn spawn_child(config: &StoreConfig) -> Child {
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, child_url(config))
        .env_remove(CHILD_SCHEMA)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(schema) = &config.schema {
        command.env(CHILD_SCHEMA, schema);
    }
    command.spawn().expect("start the child")
}

/// The child's URL: on PostgreSQL its sessions carry a name, so the parent can wait for the
/// server to notice they are gone before it reads.
fn child_url(config: &StoreConfig) -> String {
    match &config.schema {
        Some(schema) => {
            let sep = if config.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}application_name=crash_{schema}", config.url)
        }
        None => config.url.clone(),
    }
}

/// Waits until the server has ended the killed child's sessions: a transaction it was
/// committing may still land, and must land before the checks read.
async fn wait_for_child_sessions(store: &Store, schema: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(format!("crash_{schema}"))
                .fetch_one(store.pool())
                .await
                .expect("read pg_stat_activity");
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the killed child's sessions linger"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends on every complete line; a line cut short by the kill never reached the parent.
fn forward_lines(stdout: ChildStdout, sender: Sender<String>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) && line.ends_with('\n') {
        if sender.send(std::mem::take(&mut line)).is_err() {
            return;
        }
    }
}

fn wait_until_ready(lines: &Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the child reports ready within 10 s");
        if matches!(Line::parse(&line), Some(Line::Ready)) {
            return;
        }
    }
}

/// 300 to 1499 ms, from the clock's low bits: enough spread for a test, no extra dependency.
fn random_delay() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let mixed = (nanos ^ (nanos >> 11) ^ std::process::id()).wrapping_mul(2_654_435_761);
    Duration::from_millis(300 + u64::from(mixed >> 8) % 1200)
}

/// Everything the child reported, checked against the reopened store.
async fn check(name: &str, config: &StoreConfig, lines: &[Line]) -> (usize, usize, bool) {
    let store = Store::open(config).await.expect("reopen after the crash");
    if let Some(schema) = &config.schema {
        wait_for_child_sessions(&store, schema).await;
    }
    let decided: Vec<Reported> = lines.iter().filter_map(Line::decided).collect();
    let committed: Vec<Planned> = decided
        .iter()
        .filter(|d| d.committed)
        .map(|d| Planned::new(d.i))
        .collect();
    let refused = decided.len() - committed.len();
    assert!(!committed.is_empty(), "{name}: the child committed nothing");
    assert!(refused > 0, "{name}: no budget was ever exhausted");

    // The one decision that may have committed without being reported.
    let next = Planned::new(decided.last().map_or(0, |d| d.i + 1));
    let redemptions = pairs(&store, "SELECT closed_hash, decision FROM redemptions").await;
    let in_flight = redemptions.contains_key(&next.closed);

    check_rows(name, &store, &decided, &redemptions).await;
    check_ledger(name, &store, &committed, in_flight.then_some(&next)).await;
    assert_eq!(
        redemptions.len(),
        committed.len() + usize::from(in_flight),
        "{name}: redemptions that nobody decided"
    );

    let audited = store.verify().await.expect("read the audit log");
    let n = audited.unwrap_or_else(|b| panic!("{name}: {b}"));
    let reported = decided.len() as i64;
    assert!(
        n == reported || n == reported + 1,
        "{name}: {n} audit records for {reported} reported decisions"
    );

    check_replays(
        name,
        &store,
        committed.iter().chain(in_flight.then_some(&next)),
    )
    .await;
    assert_eq!(
        store.verify().await.unwrap(),
        Ok(n),
        "{name}: replays wrote"
    );
    store.close().await;
    (committed.len(), refused, in_flight)
}

/// Redemption, audit record, nonce and idempotency answer of each reported decision.
async fn check_rows(
    name: &str,
    store: &Store,
    decided: &[Reported],
    redemptions: &HashMap<String, String>,
) {
    let used_nonces = pairs(
        store,
        "SELECT value, aud FROM nonces WHERE used_at IS NOT NULL",
    )
    .await;
    let answers = pairs(
        store,
        "SELECT key, response FROM idempotency WHERE state = 'done'",
    )
    .await;
    let audit = audit_records(store).await;
    for &Reported { i, seq, committed } in decided {
        let p = Planned::new(i);
        let (outcome, answer) = if committed {
            ("success", "accepted")
        } else {
            ("refused", "refused")
        };
        let record = audit.get(&seq);
        assert!(
            record.is_some_and(|r| r.correlation_id == p.correlation && r.outcome == outcome),
            "{name}: decision {i} is not audit record {seq}"
        );
        assert_eq!(
            answers.get(&p.key).map(String::as_str),
            Some(answer),
            "{name}: {i}"
        );
        if committed {
            assert_eq!(
                redemptions.get(&p.closed),
                Some(&p.correlation),
                "{name}: {i}"
            );
            assert!(used_nonces.contains_key(&p.nonce), "{name}: nonce of {i}");
        } else {
            assert!(!redemptions.contains_key(&p.closed), "{name}: refused {i}");
        }
    }
}

/// Each open mandate's total is exactly what was committed against it, within its budget.
async fn check_ledger(
    name: &str,
    store: &Store,
    committed: &[Planned],
    in_flight: Option<&Planned>,
) {
    for (k, (open, budget)) in MANDATES.iter().enumerate() {
        let total = store
            .usage(open)
            .await
            .expect("read the ledger")
            .map_or(0, |u| u.total_minor);
        let expected: i64 = committed
            .iter()
            .chain(in_flight)
            .filter(|p| p.mandate == k)
            .map(|p| p.amount)
            .sum();
        assert_eq!(total, expected, "{name}: ledger of {open}");
        assert!(total <= *budget, "{name}: {open} spent {total} of {budget}");
    }
}

async fn check_replays(name: &str, store: &Store, committed: impl Iterator<Item = &Planned>) {
    for p in committed {
        let audit = p.audit("success", None);
        let replay = p.decision(&audit, false);
        assert_eq!(
            store.commit(&replay).await.expect("commit"),
            Err(Refusal::Replayed),
            "{name}: replay of {}",
            p.closed
        );
    }
}

/// The first two text columns of every row, as a map.
async fn pairs(store: &Store, sql: &str) -> HashMap<String, String> {
    let rows = sqlx::query(sql)
        .fetch_all(store.pool())
        .await
        .expect("read rows");
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

async fn audit_records(store: &Store) -> HashMap<i64, AuditRecord> {
    let rows = sqlx::query("SELECT seq, record FROM audit")
        .fetch_all(store.pool())
        .await
        .expect("read the audit log");
    rows.iter()
        .map(|r| {
            let text: String = r.get(1);
            (r.get(0), serde_json::from_str(&text).expect("audit JSON"))
        })
        .collect()
}

/// The child's loop: one decision at a time, reported once the store has answered. It stops on
/// its own after 30 s or when the parent stops reading, so a lost parent leaves no writer behind.
async fn write_until_killed(config: &StoreConfig) {
    let store = Store::open(config)
        .await
        .expect("the child opens the store");
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut report = |line: &str| writeln!(out, "{TAG}{line}").and_then(|()| out.flush());
    if report("ready").is_err() {
        return;
    }
    for i in 0.. {
        let line = decide(&store, i).await;
        if report(&line).is_err() || Instant::now() > deadline {
            return;
        }
    }
}

/// Challenge, idempotency claim, then the decision; a refusal is recorded as a real verifier
/// would record it.
async fn decide(store: &Store, i: u64) -> String {
    let p = Planned::new(i);
    store
        .issue_nonce(&p.nonce, AUD, None, NOW + 300)
        .await
        .expect("issue nonce");
    let begun = store.begin_idempotent(&p.key, &p.key, NOW, 60).await;
    assert_eq!(begun, Ok(Begin::Started));

    let audit = p.audit("success", None);
    match store
        .commit(&p.decision(&audit, true))
        .await
        .expect("commit")
    {
        Ok(done) => format!("ok {i} {}", done.audit_seq),
        Err(refusal) => {
            assert_eq!(refusal, Refusal::BudgetExceeded, "decision {i}");
            let audit = p.audit("refused", Some("budget_exceeded"));
            let seq = store
                .record_refusal(&audit, Some(p.answer("refused")))
                .await
                .expect("record the refusal");
            format!("refused {i} {seq}")
        }
    }
}

/// A line of the child's.
#[derive(Debug)]
enum Line {
    Ready,
    Decided(Reported),
}

/// A decision as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Reported {
    /// Which decision (see [`Planned::new`]).
    i: u64,
    /// Its audit record's sequence number.
    seq: i64,
    /// Committed, or refused and the refusal recorded.
    committed: bool,
}

impl Line {
    /// Finds the tag anywhere: the harness may print `test crash_child ... ` on the same line.
    fn parse(line: &str) -> Option<Line> {
        let (_, rest) = line.split_once(TAG)?;
        let mut words = rest.split_whitespace();
        let kind = words.next()?;
        if kind == "ready" {
            return Some(Line::Ready);
        }
        let i = words.next()?.parse().ok()?;
        let seq = words.next()?.parse().ok()?;
        Some(Line::Decided(Reported {
            i,
            seq,
            committed: kind == "ok",
        }))
    }

    fn decided(&self) -> Option<Reported> {
        match *self {
            Line::Decided(reported) => Some(reported),
            Line::Ready => None,
        }
    }
}

/// What the child's decision `i` is; both processes derive it from `i` alone.
struct Planned {
    closed: String,
    transaction: String,
    nonce: String,
    key: String,
    correlation: String,
    mandate: usize,
    amount: i64,
}

impl Planned {
    fn new(i: u64) -> Planned {
        Planned {
            closed: format!("closed-{i}"),
            transaction: format!("tx-{i}"),
            nonce: format!("nonce-{i}"),
            key: format!("key-{i}"),
            correlation: format!("decision-{i}"),
            mandate: (i % MANDATES.len() as u64) as usize,
            amount: 100 + (i as i64 * 7919) % 900,
        }
    }

    fn audit(&self, outcome: &str, reason: Option<&str>) -> AuditRecord {
        AuditRecord {
            at: NOW,
            action: "payment.verify".into(),
            outcome: outcome.into(),
            reason: reason.map(Into::into),
            mandate_hash: Some(self.closed.clone()),
            correlation_id: self.correlation.clone(),
            ..Default::default()
        }
    }

    /// The full decision, or (without `fresh`) a replay of its redemption and spend alone.
    fn decision<'a>(&'a self, audit: &'a AuditRecord, fresh: bool) -> Decision<'a> {
        let (open, budget) = MANDATES[self.mandate];
        Decision {
            now: NOW,
            nonce: fresh.then_some(NonceUse {
                value: &self.nonce,
                aud: AUD,
                agent: None,
            }),
            redemption: Some(Redemption {
                closed_hash: &self.closed,
                transaction_id: &self.transaction,
                keep_until: NOW + 3600,
            }),
            spend: Some(Spend {
                open_hash: open,
                currency: "USD",
                amount_minor: self.amount,
                budget_max_minor: Some(budget),
                max_uses: None,
                next_allowed_at: None,
                keep_until: NOW + 3600,
            }),
            idempotency: fresh.then(|| self.answer("accepted")),
            audit,
        }
    }

    fn answer<'a>(&'a self, response: &'a str) -> IdempotencyDone<'a> {
        IdempotencyDone {
            key: &self.key,
            request_hash: &self.key,
            response,
            keep_until: NOW + 86400,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Kills and reaps the child if the test fails before doing so itself.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes an SQLite file and its WAL companions.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
