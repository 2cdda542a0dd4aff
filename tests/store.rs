//! The store's guarantees, on SQLite and (when configured) PostgreSQL: single use, budgets,
//! recurrence, idempotency, the audit chain, keys at rest, sweeping and failing closed.

mod support;

use std::sync::Arc;

use ap2_mandate::store::{
    AuditLog, AuditRecord, Begin, Decision, DecisionLedger, IdempotencyDone, NonceUse, Redemption,
    Refusal, Spend, Store,
};

const NOW: i64 = 1_780_000_000;

fn record(action: &str) -> AuditRecord {
    AuditRecord {
        at: NOW,
        action: action.into(),
        outcome: "success".into(),
        correlation_id: "c-1".into(),
        ..Default::default()
    }
}

fn spend<'a>(open_hash: &'a str, amount: i64, budget: Option<i64>) -> Spend<'a> {
    Spend {
        open_hash,
        currency: "USD",
        amount_minor: amount,
        budget_max_minor: budget,
        max_uses: None,
        next_allowed_at: None,
        keep_until: NOW + 3600,
    }
}

#[tokio::test]
async fn a_nonce_is_consumed_once_and_only_for_its_audience() {
    for (name, store) in support::stores().await {
        store
            .issue_nonce("n-1", "https://v.example", None, NOW + 300)
            .await
            .unwrap();
        store
            .issue_nonce("n-old", "https://v.example", None, NOW - 1)
            .await
            .unwrap();
        let audit = record("payment.verify");
        let decide = |value: &'static str, aud: &'static str| Decision {
            now: NOW,
            nonce: Some(NonceUse { value, aud }),
            redemption: None,
            spend: None,
            idempotency: None,
            audit: &audit,
        };
        assert_eq!(
            store
                .commit(&decide("n-1", "https://other.example"))
                .await
                .unwrap(),
            Err(Refusal::NonceUnknown),
            "{name}"
        );
        assert!(
            store
                .commit(&decide("n-1", "https://v.example"))
                .await
                .unwrap()
                .is_ok(),
            "{name}"
        );
        assert_eq!(
            store
                .commit(&decide("n-1", "https://v.example"))
                .await
                .unwrap(),
            Err(Refusal::NonceUsed),
            "{name}"
        );
        assert_eq!(
            store
                .commit(&decide("n-never", "https://v.example"))
                .await
                .unwrap(),
            Err(Refusal::NonceUnknown),
            "{name}"
        );
        assert_eq!(
            store
                .commit(&decide("n-old", "https://v.example"))
                .await
                .unwrap(),
            Err(Refusal::NonceExpired),
            "{name}"
        );
        assert_eq!(
            store.verify().await.unwrap(),
            Ok(1),
            "{name}: only the success is recorded"
        );
    }
}

#[tokio::test]
async fn a_refused_decision_changes_nothing() {
    for (name, store) in support::stores().await {
        store
            .issue_nonce("n-1", "aud", None, NOW + 300)
            .await
            .unwrap();
        let audit = record("payment.verify");
        let first = Decision {
            now: NOW,
            nonce: None,
            redemption: Some(Redemption {
                closed_hash: "c1",
                transaction_id: "t1",
                keep_until: NOW + 60,
            }),
            spend: None,
            idempotency: None,
            audit: &audit,
        };
        store.commit(&first).await.unwrap().unwrap();
        // Same transaction id: refused, and the nonce and the ledger must stay untouched.
        let replay = Decision {
            now: NOW,
            nonce: Some(NonceUse {
                value: "n-1",
                aud: "aud",
            }),
            redemption: Some(Redemption {
                closed_hash: "c2",
                transaction_id: "t1",
                keep_until: NOW + 60,
            }),
            spend: Some(spend("open-1", 100, Some(1000))),
            idempotency: None,
            audit: &audit,
        };
        assert_eq!(
            store.commit(&replay).await.unwrap(),
            Err(Refusal::Replayed),
            "{name}"
        );
        assert_eq!(
            store.usage("open-1").await.unwrap(),
            None,
            "{name}: no ledger row"
        );
        let nonce_only = Decision {
            now: NOW,
            nonce: Some(NonceUse {
                value: "n-1",
                aud: "aud",
            }),
            redemption: None,
            spend: None,
            idempotency: None,
            audit: &audit,
        };
        assert!(
            store.commit(&nonce_only).await.unwrap().is_ok(),
            "{name}: nonce still unused"
        );
    }
}

async fn concurrent_redemptions(stores: &[Arc<Store>], attempts: usize) -> usize {
    let audit = Arc::new(record("payment.verify"));
    let mut tasks = Vec::new();
    for i in 0..attempts {
        let store = stores[i % stores.len()].clone();
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            let d = Decision {
                now: NOW,
                nonce: None,
                redemption: Some(Redemption {
                    closed_hash: "closed-1",
                    transaction_id: "tx-1",
                    keep_until: NOW + 60,
                }),
                spend: None,
                idempotency: None,
                audit: &audit,
            };
            store.commit(&d).await.unwrap().is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    wins
}

async fn concurrent_spends(
    stores: &[Arc<Store>],
    attempts: usize,
    amount: i64,
    budget: i64,
) -> (usize, i64) {
    let audit = Arc::new(record("payment.verify"));
    let mut tasks = Vec::new();
    for i in 0..attempts {
        let store = stores[i % stores.len()].clone();
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            let closed = format!("spend-closed-{i}");
            let tx = format!("spend-tx-{i}");
            let d = Decision {
                now: NOW,
                nonce: None,
                redemption: Some(Redemption {
                    closed_hash: &closed,
                    transaction_id: &tx,
                    keep_until: NOW + 60,
                }),
                spend: Some(spend("open-1", amount, Some(budget))),
                idempotency: None,
                audit: &audit,
            };
            match store.commit(&d).await.unwrap() {
                Ok(_) => true,
                Err(Refusal::BudgetExceeded) => false,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    let total = stores[0]
        .usage("open-1")
        .await
        .unwrap()
        .map_or(0, |u| u.total_minor);
    (wins, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redemptions_of_one_mandate_give_exactly_one() {
    for (name, store) in support::stores().await {
        assert_eq!(
            concurrent_redemptions(&[Arc::new(store)], 50).await,
            1,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_100_takes_exactly_six_concurrent_spends_of_15() {
    for (name, store) in support::stores().await {
        let store = Arc::new(store);
        assert_eq!(
            concurrent_spends(std::slice::from_ref(&store), 10, 1500, 10000).await,
            (6, 9000),
            "{name}"
        );
        assert_eq!(store.verify().await.unwrap(), Ok(6), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_100_takes_exactly_100_of_101_concurrent_spends_of_1() {
    for (name, store) in support::stores().await {
        assert_eq!(
            concurrent_spends(&[Arc::new(store)], 101, 100, 10000).await,
            (100, 10000),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_on_one_postgres_give_the_same_exact_counts() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let mut config = ap2_mandate::store::StoreConfig::new(url);
    config.schema = Some(support::unique("t").to_lowercase());
    let a = Arc::new(Store::open(&config).await.unwrap());
    let b = Arc::new(Store::open(&config).await.unwrap());
    assert_eq!(concurrent_redemptions(&[a.clone(), b.clone()], 50).await, 1);
    assert_eq!(
        concurrent_spends(&[a.clone(), b.clone()], 10, 1500, 10000).await,
        (6, 9000)
    );
    assert_eq!(a.verify().await.unwrap(), Ok(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_under_one_idempotency_key_execute_once() {
    for (name, store) in support::stores().await {
        let store = Arc::new(store);
        let audit = Arc::new(record("payment.verify"));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (store, audit) = (store.clone(), audit.clone());
            tasks.push(tokio::spawn(async move {
                match store
                    .begin_idempotent("key-1", "body-hash", NOW, 60)
                    .await
                    .unwrap()
                {
                    Begin::Started => {
                        let d = Decision {
                            now: NOW,
                            nonce: None,
                            redemption: Some(Redemption {
                                closed_hash: "c",
                                transaction_id: "t",
                                keep_until: NOW + 60,
                            }),
                            spend: None,
                            idempotency: Some(IdempotencyDone {
                                key: "key-1",
                                request_hash: "body-hash",
                                response: "first answer",
                                keep_until: NOW + 86400,
                            }),
                            audit: &audit,
                        };
                        store.commit(&d).await.unwrap().unwrap();
                        1
                    }
                    Begin::InProgress | Begin::Replay(_) => 0,
                    Begin::Conflict => panic!("same body is no conflict"),
                }
            }));
        }
        let mut executed = 0;
        for t in tasks {
            executed += t.await.unwrap();
        }
        assert_eq!(executed, 1, "{name}");
        assert_eq!(
            store
                .begin_idempotent("key-1", "body-hash", NOW, 60)
                .await
                .unwrap(),
            Begin::Replay("first answer".into()),
            "{name}"
        );
        assert_eq!(
            store
                .begin_idempotent("key-1", "other-body", NOW, 60)
                .await
                .unwrap(),
            Begin::Conflict,
            "{name}"
        );
        assert_eq!(store.verify().await.unwrap(), Ok(1), "{name}");
    }
}

#[tokio::test]
async fn an_abandoned_idempotency_claim_can_be_taken_over_after_it_lapses() {
    for (name, store) in support::stores().await {
        assert_eq!(
            store.begin_idempotent("k", "h", NOW, 60).await.unwrap(),
            Begin::Started,
            "{name}"
        );
        assert_eq!(
            store
                .begin_idempotent("k", "h", NOW + 10, 60)
                .await
                .unwrap(),
            Begin::InProgress,
            "{name}"
        );
        assert_eq!(
            store
                .begin_idempotent("k", "h", NOW + 61, 60)
                .await
                .unwrap(),
            Begin::Started,
            "{name}"
        );
        store.release_idempotent("k", "h").await.unwrap();
        assert_eq!(
            store
                .begin_idempotent("k", "h2", NOW + 62, 60)
                .await
                .unwrap(),
            Begin::Started,
            "{name}"
        );
    }
}

#[tokio::test]
async fn recurrence_limits_hold_in_the_ledger() {
    for (name, store) in support::stores().await {
        let audit = record("payment.verify");
        let mut s = spend("open-r", 100, None);
        s.max_uses = Some(2);
        s.next_allowed_at = Some(NOW + 86400);
        let at = |now: i64, i: usize, s: Spend<'static>| {
            let closed: &'static str = Box::leak(format!("c{i}").into_boxed_str());
            Decision {
                now,
                nonce: None,
                redemption: Some(Redemption {
                    closed_hash: closed,
                    transaction_id: closed,
                    keep_until: now + 60,
                }),
                spend: Some(s),
                idempotency: None,
                audit: Box::leak(Box::new(audit.clone())),
            }
        };
        let first = store.commit(&at(NOW, 1, s)).await.unwrap().unwrap();
        assert_eq!(
            first.ledger.map(|l| (l.total_minor, l.uses)),
            Some((100, 1)),
            "{name}"
        );
        assert_eq!(
            store.commit(&at(NOW + 10, 2, s)).await.unwrap(),
            Err(Refusal::RecurrenceTooSoon),
            "{name}"
        );
        let mut later = s;
        later.next_allowed_at = Some(NOW + 2 * 86400);
        assert!(
            store
                .commit(&at(NOW + 86400, 3, later))
                .await
                .unwrap()
                .is_ok(),
            "{name}"
        );
        let mut third = s;
        third.next_allowed_at = Some(NOW + 9 * 86400);
        assert_eq!(
            store.commit(&at(NOW + 5 * 86400, 4, third)).await.unwrap(),
            Err(Refusal::RecurrenceLimitReached),
            "{name}"
        );
        let mut euros = spend("open-r", 100, None);
        euros.currency = "EUR";
        assert_eq!(
            store.commit(&at(NOW + 9 * 86400, 5, euros)).await.unwrap(),
            Err(Refusal::CurrencyMismatch),
            "{name}"
        );
    }
}
