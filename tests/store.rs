//! The store's guarantees, on SQLite and (when configured) PostgreSQL: single use, budgets,
//! recurrence, idempotency, the audit chain, keys at rest, sweeping and failing closed.

mod support;

use std::sync::Arc;

use ap2_mandate::store::{
    AuditLog, AuditRecord, Backend, Begin, Decision, DecisionLedger, IdempotencyDone, KeyVault,
    LedgerTotals, MasterKey, NonceUse, Redemption, Refusal, Spend, Store, StoreError,
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
            nonce: Some(NonceUse {
                value,
                aud,
                agent: None,
            }),
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
                agent: None,
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
                agent: None,
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

#[tokio::test]
async fn the_first_refusal_in_order_is_named_and_none_writes_anything() {
    for (name, store) in support::stores().await {
        let audit = record("payment.verify");
        // A nonce never issued, a fresh mandate, a spend over its budget, a key not held: the
        // nonce, first in order, is named.
        let mut d = Decision {
            now: NOW,
            nonce: Some(NonceUse {
                value: "never-issued",
                aud: "aud",
                agent: None,
            }),
            redemption: Some(Redemption {
                closed_hash: "c9",
                transaction_id: "t9",
                keep_until: NOW + 60,
            }),
            spend: Some(spend("open-9", 500, Some(100))),
            idempotency: Some(IdempotencyDone {
                key: "k-9",
                request_hash: "h",
                response: "r",
                keep_until: NOW + 60,
            }),
            audit: &audit,
        };
        assert_eq!(
            store.commit(&d).await.unwrap(),
            Err(Refusal::NonceUnknown),
            "{name}"
        );
        d.nonce = None;
        assert_eq!(
            store.commit(&d).await.unwrap(),
            Err(Refusal::BudgetExceeded),
            "{name}"
        );
        d.spend = Some(spend("open-9", 50, Some(100)));
        assert_eq!(
            store.commit(&d).await.unwrap(),
            Err(Refusal::IdempotencyLost),
            "{name}"
        );
        assert_eq!(store.usage("open-9").await.unwrap(), None, "{name}");
        // The same decision without the key: accepted, as the first record of the chain (the
        // redemption was never kept, nor was any refused decision's head move).
        d.idempotency = None;
        let committed = store.commit(&d).await.unwrap().unwrap();
        assert_eq!(committed.audit_seq, 1, "{name}");
        assert_eq!(
            committed.ledger,
            Some(LedgerTotals {
                total_minor: 50,
                uses: 1
            }),
            "{name}"
        );
        assert_eq!(store.verify().await.unwrap(), Ok(1), "{name}");
    }
}

#[tokio::test]
async fn a_decision_abandoned_midway_leaves_no_transaction_open_and_nothing_half_written() {
    for (name, store) in support::stores().await {
        let audit = record("payment.verify");
        let closed: Vec<String> = (0..60).map(|i| format!("closed-{i}")).collect();
        // The caller stops waiting after 0 to 59 microseconds: at whatever step that is.
        for (i, closed_hash) in closed.iter().enumerate() {
            let d = Decision {
                now: NOW,
                nonce: None,
                redemption: Some(Redemption {
                    closed_hash,
                    transaction_id: closed_hash,
                    keep_until: NOW + 60,
                }),
                spend: Some(spend("open-a", 1, None)),
                idempotency: None,
                audit: &audit,
            };
            let wait = std::time::Duration::from_micros(i as u64);
            let _ = tokio::time::timeout(wait, store.commit(&d)).await;
        }
        // The next decision runs normally (no transaction was left open on the connection).
        let d = Decision {
            now: NOW,
            nonce: None,
            redemption: Some(Redemption {
                closed_hash: "closed-last",
                transaction_id: "closed-last",
                keep_until: NOW + 60,
            }),
            spend: Some(spend("open-a", 1, None)),
            idempotency: None,
            audit: &audit,
        };
        let committed = store.commit(&d).await.unwrap().unwrap();
        // Every redemption kept has its spend and its audit record, and nothing else was kept.
        let redeemed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM redemptions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let usage = store.usage("open-a").await.unwrap().unwrap();
        assert_eq!(usage.uses, redeemed, "{name}");
        assert_eq!(committed.audit_seq, redeemed, "{name}");
        assert_eq!(store.verify().await.unwrap(), Ok(redeemed), "{name}");
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

async fn append_three(store: &Store) {
    for action in ["token.exchange", "mandate.issue", "payment.verify"] {
        store.append(&record(action)).await.unwrap();
    }
}

/// Disables the append-only guard, as an attacker with database access could.
async fn drop_guards(store: &Store) {
    use sqlx::Executor as _;
    let sql = match store.backend() {
        Backend::Sqlite => "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;",
        Backend::Postgres => {
            "DROP TRIGGER audit_no_update ON audit; DROP TRIGGER audit_no_truncate ON audit;"
        }
    };
    store.pool().execute(sql).await.unwrap();
}

#[tokio::test]
async fn the_database_refuses_to_change_or_delete_audit_records() {
    for (name, store) in support::stores().await {
        append_three(&store).await;
        let update = sqlx::query("UPDATE audit SET record = 'x' WHERE seq = 2")
            .execute(store.pool())
            .await;
        assert!(update.is_err(), "{name}: update refused");
        let delete = sqlx::query("DELETE FROM audit WHERE seq = 3")
            .execute(store.pool())
            .await;
        assert!(delete.is_err(), "{name}: delete refused");
        assert_eq!(store.verify().await.unwrap(), Ok(3), "{name}");
    }
}

#[tokio::test]
async fn changing_one_byte_of_a_record_breaks_the_chain_there() {
    for (name, store) in support::stores().await {
        append_three(&store).await;
        drop_guards(&store).await;
        sqlx::query("UPDATE audit SET record = REPLACE(record, 'mandate.issue', 'mandate.issuf') WHERE seq = 2")
            .execute(store.pool())
            .await
            .unwrap();
        let broken = store.verify().await.unwrap().unwrap_err();
        assert_eq!((broken.seq, broken.why), (2, "content changed"), "{name}");
    }
}

#[tokio::test]
async fn deleting_a_record_breaks_the_chain_and_is_named() {
    for (name, store) in support::stores().await {
        append_three(&store).await;
        drop_guards(&store).await;
        sqlx::query("DELETE FROM audit WHERE seq = 2")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            store.verify().await.unwrap().unwrap_err().seq,
            2,
            "{name}: middle"
        );

        let (_, fresh) = support::stores()
            .await
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        append_three(&fresh).await;
        drop_guards(&fresh).await;
        sqlx::query("DELETE FROM audit WHERE seq = 3")
            .execute(fresh.pool())
            .await
            .unwrap();
        let tail = fresh.verify().await.unwrap().unwrap_err();
        assert_eq!(
            (tail.seq, tail.why),
            (3, "records missing at the end"),
            "{name}: tail"
        );
    }
}

/// On PostgreSQL a decision's audit record is chained inside the database; the chain must read
/// back exactly as records appended by the store itself, whatever the record's text holds.
#[tokio::test]
async fn decisions_and_plain_appends_make_one_verifiable_chain_whatever_the_text() {
    let merchants = [
        "Caf\u{e9} Z\u{fc}rich",
        "\u{6771}\u{4eac} \u{1f6d2} shop",
        "quote \" backslash \\ newline \n tab \t",
        "plain",
        "\u{202e}mirrored",
        "nul-free \u{7f} del",
    ];
    for (name, store) in support::stores().await {
        for (i, merchant) in merchants.iter().enumerate() {
            let mut audit = record("payment.verify");
            audit.merchant = Some((*merchant).to_owned());
            audit.amount = Some(format!("USD {i}.00"));
            let closed = format!("closed-{i}");
            let transaction = format!("t-{i}");
            let decision = Decision {
                now: NOW,
                nonce: None,
                redemption: Some(Redemption {
                    closed_hash: &closed,
                    transaction_id: &transaction,
                    keep_until: NOW + 60,
                }),
                spend: None,
                idempotency: None,
                audit: &audit,
            };
            let committed = store.commit(&decision).await.unwrap().unwrap();
            assert_eq!(committed.audit_seq, 2 * i as i64 + 1, "{name}");
            store.append(&record("token.exchange")).await.unwrap();
        }
        let total = 2 * merchants.len() as i64;
        assert_eq!(store.verify().await.unwrap(), Ok(total), "{name}");
        let tail = store.tail(total).await.unwrap();
        let read: Vec<_> = tail
            .iter()
            .filter_map(|r| r.record.merchant.clone())
            .collect();
        assert_eq!(read.len(), merchants.len(), "{name}");
        for merchant in merchants {
            assert!(read.iter().any(|m| m == merchant), "{name}: {merchant:?}");
        }
    }
}

#[tokio::test]
async fn audit_tail_reads_records_back_in_order() {
    for (name, store) in support::stores().await {
        append_three(&store).await;
        let tail = store.tail(2).await.unwrap();
        let actions: Vec<&str> = tail.iter().map(|r| r.record.action.as_str()).collect();
        assert_eq!(actions, ["mandate.issue", "payment.verify"], "{name}");
        assert_eq!(tail[1].seq, 3, "{name}");
    }
}

#[tokio::test]
async fn signing_keys_are_sealed_at_rest_and_rotate_with_overlap() {
    for (name, store) in support::stores().await {
        let master = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let first = store.signing_key(&master, "receipts", NOW).await.unwrap();
        let again = store
            .signing_key(&master, "receipts", NOW + 1)
            .await
            .unwrap();
        assert!(
            first.public().same_key(again.public()),
            "{name}: the same key comes back"
        );

        let sealed: Vec<u8> = sqlx::query_scalar("SELECT private_enc FROM keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let d = serde_json::from_str::<serde_json::Value>(&first.to_private_jwk().unwrap())
            .unwrap()["d"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !sealed.windows(d.len()).any(|w| w == d.as_bytes()),
            "{name}: no plaintext at rest"
        );

        let wrong = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(
            matches!(
                store.signing_key(&wrong, "receipts", NOW).await,
                Err(StoreError::Corrupt(_))
            ),
            "{name}"
        );

        let second = store
            .rotate(&master, "receipts", NOW + 10, 600)
            .await
            .unwrap();
        let now_signing = store
            .signing_key(&master, "receipts", NOW + 11)
            .await
            .unwrap();
        assert!(
            now_signing.public().same_key(second.public()),
            "{name}: the new key signs"
        );
        let published = store.verification_keys(NOW + 11).await.unwrap();
        assert!(
            published.iter().any(|k| k.same_key(first.public())),
            "{name}: old key still verifies"
        );
        let later = store.verification_keys(NOW + 10 + 601).await.unwrap();
        assert!(
            !later.iter().any(|k| k.same_key(first.public())),
            "{name}: old key retired"
        );
        assert!(later.iter().any(|k| k.same_key(second.public())), "{name}");
    }
}

#[tokio::test]
async fn a_master_key_file_is_created_owner_only_and_reused() {
    let dir = std::env::temp_dir().join(support::unique("ap2_master"));
    let file = dir.join("master.key");
    let a = MasterKey::load_or_create(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let b = MasterKey::load_or_create(&file).unwrap();
    let store = Store::open(&ap2_mandate::store::StoreConfig::sqlite(
        &dir.join("db.sqlite"),
    ))
    .await
    .unwrap();
    let key = store.signing_key(&a, "tokens", NOW).await.unwrap();
    assert!(store
        .signing_key(&b, "tokens", NOW)
        .await
        .unwrap()
        .public()
        .same_key(key.public()));
    assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&file).unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sweeping_removes_the_expired_but_never_makes_a_spent_mandate_spendable() {
    for (name, store) in support::stores().await {
        store
            .issue_nonce("n-old", "aud", None, NOW - 10)
            .await
            .unwrap();
        store
            .issue_nonce("n-live", "aud", None, NOW + 300)
            .await
            .unwrap();
        assert!(store.remember_jti("dpop", "j-old", NOW - 10).await.unwrap());
        let audit = record("payment.verify");
        let redeem = |closed: &'static str, keep_until| Decision {
            now: NOW,
            nonce: None,
            redemption: Some(Redemption {
                closed_hash: closed,
                transaction_id: closed,
                keep_until,
            }),
            spend: None,
            idempotency: None,
            audit: &audit,
        };
        store
            .commit(&redeem("gone", NOW - 1))
            .await
            .unwrap()
            .unwrap();
        store
            .commit(&redeem("kept", NOW + 3600))
            .await
            .unwrap()
            .unwrap();

        let report = store.sweep(NOW).await.unwrap();
        assert_eq!(
            (report.nonces, report.jtis, report.redemptions),
            (1, 1, 1),
            "{name}"
        );
        assert_eq!(
            store.commit(&redeem("kept", NOW + 3600)).await.unwrap(),
            Err(Refusal::Replayed),
            "{name}"
        );
        let live = Decision {
            now: NOW,
            nonce: Some(NonceUse {
                value: "n-live",
                aud: "aud",
                agent: None,
            }),
            redemption: None,
            spend: None,
            idempotency: None,
            audit: &audit,
        };
        assert!(
            store.commit(&live).await.unwrap().is_ok(),
            "{name}: live nonce untouched"
        );
        assert_eq!(
            store.verify().await.unwrap(),
            Ok(3),
            "{name}: sweeping leaves the audit alone"
        );
    }
}

#[tokio::test]
async fn an_unreachable_postgres_fails_closed_quickly() {
    let mut config = ap2_mandate::store::StoreConfig::new("postgres://postgres@127.0.0.1:1/test");
    config.timeout = std::time::Duration::from_millis(500);
    let started = std::time::Instant::now();
    assert!(matches!(
        Store::open(&config).await,
        Err(StoreError::Unavailable)
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_locked_sqlite_database_fails_closed_after_the_timeout() {
    let path = support::sqlite_path();
    let mut config = ap2_mandate::store::StoreConfig::sqlite(&path);
    config.timeout = std::time::Duration::from_millis(300);
    let store = Store::open(&config).await.unwrap();
    // Another process (a second pool here) holds the write lock.
    let other = Store::open(&config).await.unwrap();
    let mut holder = other.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO seen_jtis (scope, jti, exp) VALUES ('x', 'y', 0)")
        .execute(&mut *holder)
        .await
        .unwrap();

    let audit = record("payment.verify");
    let d = Decision {
        now: NOW,
        nonce: None,
        redemption: Some(Redemption {
            closed_hash: "c",
            transaction_id: "t",
            keep_until: NOW,
        }),
        spend: None,
        idempotency: None,
        audit: &audit,
    };
    assert_eq!(store.commit(&d).await.unwrap_err(), StoreError::Unavailable);
    holder.rollback().await.unwrap();
    assert!(
        store.commit(&d).await.unwrap().is_ok(),
        "works again once the lock is gone"
    );
}

#[tokio::test]
async fn the_background_sweeper_removes_expired_rows_on_its_own() {
    for (name, store) in support::stores().await {
        store
            .issue_nonce("n-expired", "aud", None, 1)
            .await
            .unwrap();
        let sweeper = store.spawn_sweeper(std::time::Duration::from_millis(50));
        let mut left = 1;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            left = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM nonces")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if left == 0 {
                break;
            }
        }
        sweeper.abort();
        assert_eq!(left, 0, "{name}");
    }
}

#[tokio::test]
async fn a_first_spend_over_the_budget_is_refused_and_leaves_no_ledger_row() {
    for (name, store) in support::stores().await {
        let audit = record("payment.verify");
        let d = Decision {
            now: NOW,
            nonce: None,
            redemption: None,
            spend: Some(spend("open-big", 20_000, Some(10_000))),
            idempotency: None,
            audit: &audit,
        };
        assert_eq!(
            store.commit(&d).await.unwrap(),
            Err(Refusal::BudgetExceeded),
            "{name}"
        );
        assert_eq!(store.usage("open-big").await.unwrap(), None, "{name}");
        let mut none_left = spend("open-none", 1, None);
        none_left.max_uses = Some(0);
        let d = Decision {
            spend: Some(none_left),
            ..d
        };
        assert_eq!(
            store.commit(&d).await.unwrap(),
            Err(Refusal::RecurrenceLimitReached),
            "{name}"
        );
    }
}

#[tokio::test]
async fn instances_starting_together_on_a_fresh_postgres_schema_all_migrate() {
    let Some(url) = support::postgres_url() else {
        eprintln!("AP2_TEST_POSTGRES_URL is not set: the PostgreSQL start-up race is skipped");
        return;
    };
    let mut config = ap2_mandate::store::StoreConfig::new(url);
    config.schema = Some(support::unique("race").to_lowercase());
    let opened = futures_join(&config).await;
    for (i, store) in opened.iter().enumerate() {
        let store = store
            .as_ref()
            .unwrap_or_else(|e| panic!("instance {i}: {e}"));
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(versions, 4, "every migration applied once");
    }
}

/// Four stores opened at the same moment on one configuration.
async fn futures_join(
    config: &ap2_mandate::store::StoreConfig,
) -> Vec<Result<Store, ap2_mandate::store::StoreError>> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { Store::open(&config).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// SQLite: commits leave the database file alone (no checkpoint inside a request); the store's
/// background task copies the log into it, and the log stays readable throughout.
#[tokio::test]
async fn the_sqlite_log_is_checkpointed_in_the_background() {
    let path = support::sqlite_path();
    let store = Store::open(&ap2_mandate::store::StoreConfig::sqlite(&path))
        .await
        .unwrap();
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // The migrations' pages are copied at the task's first turns.
    tokio::time::sleep(ap2_mandate::store::checkpoint::EVERY * 3).await;
    let before = size();
    let mut audit = record("payment.verify");
    audit.reason = Some("x".repeat(400));
    for _ in 0..1_000 {
        store.append(&audit).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while size() <= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(ap2_mandate::store::checkpoint::EVERY).await;
    }
    assert!(
        size() > before,
        "the database file stayed at {before} bytes: nothing checkpointed the log"
    );
    assert_eq!(store.verify().await.unwrap(), Ok(1_000));
}
