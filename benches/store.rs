//! Storage cost of one verification decision beside one bare single-row insert on the same
//! backend, measured in the same run: SQLite (WAL) at `synchronous=NORMAL` and at `FULL`, and
//! PostgreSQL when `AP2_BENCH_POSTGRES_URL` or `AP2_TEST_POSTGRES_URL` is set.
//!
//! Run: `AP2_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench store`.
//! A decision is `begin_idempotent` then `commit` (nonce, redemption, ledger spend within a
//! budget, idempotency answer, audit record): two transactions, with the nonces issued before
//! the clock starts. The decision's own transaction (`commit`, all five parts) is also timed
//! alone, its idempotency key claimed before the clock. The insert is one autocommitted row in
//! `seen_jtis`. Criterion times each one at a time; on PostgreSQL a plain timed loop then runs
//! 8 concurrent tasks. Reads, sweeping and several instances on one database are not measured
//! here.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ap2_mandate::store::{
    AuditRecord, Begin, Decision, DecisionLedger, Durability, IdempotencyDone, NonceUse,
    Redemption, Spend, Store, StoreConfig,
};
use criterion::Criterion;
use tokio::runtime::Runtime;

const NOW: i64 = 1_780_000_000;
const AUD: &str = "https://verifier.example";
/// Concurrent tasks in the PostgreSQL throughput run.
const TASKS: u64 = 8;

/// Ids unique across the whole run, so no iteration ever meets an earlier one's rows.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut rows = Vec::new();
    for target in targets() {
        let store = rt
            .block_on(Store::open(&target.config))
            .expect("open the store");
        let (decision, transaction, insert) = sequential(&mut criterion, &rt, target.label, &store);
        rows.push(Row::new(target.label, decision, Some(transaction), insert));
        if target.concurrent {
            let (decision, insert) = rt.block_on(concurrent(&store, decision));
            rows.push(Row::new("postgres, 8 tasks", decision, None, insert));
        }
        rt.block_on(target.clean_up(store));
    }

    criterion.final_summary();
    print_table(&rows);
}

/// One backend to measure, and what to remove afterwards.
struct Target {
    label: &'static str,
    config: StoreConfig,
    concurrent: bool,
    file: Option<PathBuf>,
}

fn targets() -> Vec<Target> {
    let mut out = Vec::new();
    for (label, durability) in [
        ("sqlite, NORMAL", Durability::Normal),
        ("sqlite, FULL", Durability::Full),
    ] {
        let path =
            std::env::temp_dir().join(format!("ap2_bench_{}_{}.db", std::process::id(), out.len()));
        let mut config = StoreConfig::sqlite(&path);
        config.durability = durability;
        out.push(Target {
            label,
            config,
            concurrent: false,
            file: Some(path),
        });
    }
    let url = ["AP2_BENCH_POSTGRES_URL", "AP2_TEST_POSTGRES_URL"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()));
    match url {
        Some(url) => {
            let mut config = StoreConfig::new(url);
            config.schema = Some(format!("bench_{}", std::process::id()));
            out.push(Target {
                label: "postgres",
                config,
                concurrent: true,
                file: None,
            });
        }
        None => eprintln!("no AP2_BENCH_POSTGRES_URL or AP2_TEST_POSTGRES_URL: PostgreSQL skipped"),
    }
    out
}

impl Target {
    async fn clean_up(&self, store: Store) {
        if let Some(schema) = &self.config.schema {
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(store.pool())
                .await
                .expect("drop the bench schema");
        }
        store.close().await;
        if let Some(path) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// Criterion's one-at-a-time timings; returns ops/s over every timed iteration it ran: decisions
/// (claim and commit), decision transactions alone (commit), bare inserts.
fn sequential(c: &mut Criterion, rt: &Runtime, label: &str, store: &Store) -> (f64, f64, f64) {
    let mut group = c.benchmark_group(format!("store/{label}"));
    // With `timed_claim`, the idempotency key is claimed inside the timing; without, before it
    // (as the nonces are issued), so only the decision's own transaction is timed.
    let mut timed = |name: &str, timed_claim: bool| {
        let decisions = Tally::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let first = reserve(iters);
                rt.block_on(async {
                    issue_nonces(store, first..first + iters).await;
                    if !timed_claim {
                        claim_keys(store, first..first + iters).await;
                    }
                    let start = Instant::now();
                    for id in first..first + iters {
                        decide(store, id, "open-0", timed_claim).await;
                    }
                    decisions.add(iters, start.elapsed())
                })
            })
        });
        decisions.per_second()
    };
    let decisions = timed("decision (begin_idempotent + commit)", true);
    let transactions = timed("decision transaction alone (commit)", false);

    let inserts = Tally::default();
    group.bench_function("bare insert (seen_jtis)", |b| {
        b.iter_custom(|iters| {
            let first = reserve(iters);
            rt.block_on(async {
                let start = Instant::now();
                for id in first..first + iters {
                    insert(store, id).await;
                }
                inserts.add(iters, start.elapsed())
            })
        })
    });
    group.finish();
    (decisions, transactions, inserts.per_second())
}

/// Eight tasks on the pool, each with its own open mandate, sized from the sequential rate so
/// a run takes at most about 3 s; returns decisions/s and inserts/s.
async fn concurrent(store: &Store, sequential_rate: f64) -> (f64, f64) {
    let per_task = ((sequential_rate * 3.0 / TASKS as f64) as u64).max(25);
    let first = reserve(per_task * TASKS);
    issue_nonces(store, first..first + per_task * TASKS).await;
    let decisions = run_tasks(store, first, per_task, true).await;

    let per_task = per_task * 3;
    let first = reserve(per_task * TASKS);
    let inserts = run_tasks(store, first, per_task, false).await;
    (decisions, inserts)
}

async fn run_tasks(store: &Store, first: u64, per_task: u64, decisions: bool) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let ids = first + t * per_task..first + (t + 1) * per_task;
        tasks.push(tokio::spawn(async move {
            let open = format!("open-{t}");
            for id in ids {
                if decisions {
                    decide(&store, id, &open, true).await;
                } else {
                    insert(&store, id).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (per_task * TASKS) as f64 / start.elapsed().as_secs_f64()
}

fn reserve(n: u64) -> u64 {
    NEXT_ID.fetch_add(n, Ordering::Relaxed)
}

async fn issue_nonces(store: &Store, ids: std::ops::Range<u64>) {
    for id in ids {
        store
            .issue_nonce(&format!("n-{id}"), AUD, None, NOW + 300)
            .await
            .expect("issue nonce");
    }
}

async fn claim_keys(store: &Store, ids: std::ops::Range<u64>) {
    for id in ids {
        claim_key(store, &format!("key-{id}")).await;
    }
}

async fn claim_key(store: &Store, key: &str) {
    let begun = store.begin_idempotent(key, key, NOW, 60).await;
    assert_eq!(begun, Ok(Begin::Started));
}

/// One accepted payment: claim the idempotency key (unless claimed already), then commit
/// everything the decision writes.
async fn decide(store: &Store, id: u64, open: &str, claim: bool) {
    let (nonce, closed, key) = (
        format!("n-{id}"),
        format!("closed-{id}"),
        format!("key-{id}"),
    );
    if claim {
        claim_key(store, &key).await;
    }
    let audit = AuditRecord {
        at: NOW,
        action: "payment.verify".into(),
        outcome: "success".into(),
        agent_id: Some("agent-bench".into()),
        mandate_hash: Some(closed.clone()),
        amount: Some("19.99 USD".into()),
        correlation_id: format!("bench-{id}"),
        ..Default::default()
    };
    let decision = Decision {
        now: NOW,
        nonce: Some(NonceUse {
            value: &nonce,
            aud: AUD,
            agent: None,
        }),
        redemption: Some(Redemption {
            closed_hash: &closed,
            transaction_id: &closed,
            keep_until: NOW + 3600,
        }),
        spend: Some(Spend {
            open_hash: open,
            currency: "USD",
            amount_minor: 1999,
            budget_max_minor: Some(1_000_000_000_000_000),
            max_uses: None,
            next_allowed_at: None,
            keep_until: NOW + 3600,
        }),
        idempotency: Some(IdempotencyDone {
            key: &key,
            request_hash: &key,
            response: "accepted",
            keep_until: NOW + 86400,
        }),
        audit: &audit,
    };
    let committed = store.commit(&decision).await.expect("store available");
    assert!(committed.is_ok(), "decision {id} refused: {committed:?}");
}

async fn insert(store: &Store, id: u64) {
    sqlx::query("INSERT INTO seen_jtis (scope, jti, exp) VALUES ($1, $2, $3)")
        .bind("bench")
        .bind(format!("jti-{id}"))
        .bind(NOW + 300)
        .execute(store.pool())
        .await
        .expect("insert");
}

/// Timed iterations and their total time, warm-up included.
#[derive(Default)]
struct Tally {
    iters: Cell<u64>,
    time: Cell<Duration>,
}

impl Tally {
    /// Counts a timed run and hands its time back to criterion.
    fn add(&self, iters: u64, time: Duration) -> Duration {
        self.iters.set(self.iters.get() + iters);
        self.time.set(self.time.get() + time);
        time
    }

    fn per_second(&self) -> f64 {
        self.iters.get() as f64 / self.time.get().as_secs_f64()
    }
}

/// One line of the summary.
struct Row {
    label: &'static str,
    decisions: f64,
    transaction: Option<f64>,
    inserts: f64,
}

impl Row {
    fn new(label: &'static str, decisions: f64, transaction: Option<f64>, inserts: f64) -> Row {
        Row {
            label,
            decisions,
            transaction,
            inserts,
        }
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>16} {:>16}",
        "backend", "decisions/s", "commits/s", "inserts/s", "decision/insert", "commit/insert"
    );
    for r in rows {
        let (commits, commit_ratio) = match r.transaction {
            Some(k) => (format!("{k:.0}"), format!("{:.2}x", r.inserts / k)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<20} {:>12.0} {:>12} {:>12.0} {:>15.2}x {:>16}",
            r.label,
            r.decisions,
            commits,
            r.inserts,
            r.inserts / r.decisions,
            commit_ratio,
        );
    }
    println!("(decision: begin_idempotent + commit, two transactions; commit: the decision's own");
    println!(" transaction alone, its key claimed before the clock; x/insert: time of one in bare");
    println!(" inserts; sequential rows are criterion's timed iterations, warm-up included)");
}
