//! Wallet records on SQLite and (when configured) PostgreSQL: consent decisions, status lists
//! and their indexes, and mandate revocation.

mod support;

use ap2_mandate::store::records::{
    ConsentRefusal, ConsentRequest, ConsentStatus, IdentityRecords, NewMandate, RecordError,
    WalletRecords,
};
use ap2_mandate::store::StoreError;
use support::records::{agent, grant, key, mandate, refused_as, seed, NOW};

fn consent(id: &str, expires_at: i64) -> ConsentRequest {
    ConsentRequest {
        id: id.into(),
        user_id: "u-1".into(),
        agent_id: "a-1".into(),
        grant_id: Some("g-1".into()),
        token_jti: Some("t-1".into()),
        body: r#"{"mode":"open","payment":{"amount_range":{"max":10000}}}"#.into(),
        status: ConsentStatus::Pending,
        created_at: NOW - 10,
        expires_at,
        decided_at: None,
    }
}

#[tokio::test]
async fn a_consent_is_stored_and_decided_once() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        let c1 = consent("c-1", NOW + 600);
        store.create_consent(&c1).await.unwrap();
        store
            .create_consent(&consent("c-2", NOW + 600))
            .await
            .unwrap();
        assert_eq!(store.consent("c-1").await.unwrap(), c1, "{name}");
        assert_eq!(c1.status_at(NOW), ConsentStatus::Pending, "{name}");

        assert_eq!(
            store.decide_consent("c-1", "u-1", true, NOW).await,
            Ok(Ok(())),
            "{name}"
        );
        assert_eq!(
            store.decide_consent("c-2", "u-1", false, NOW).await,
            Ok(Ok(())),
            "{name}"
        );
        let approved = store.consent("c-1").await.unwrap();
        assert_eq!(
            (approved.status, approved.decided_at),
            (ConsentStatus::Approved, Some(NOW)),
            "{name}"
        );
        assert_eq!(
            approved.status_at(NOW + 3600),
            ConsentStatus::Approved,
            "{name}"
        );
        assert_eq!(
            store.consent("c-2").await.unwrap().status,
            ConsentStatus::Denied,
            "{name}"
        );

        assert_eq!(
            store.decide_consent("c-1", "u-1", false, NOW + 1).await,
            Ok(Err(ConsentRefusal::AlreadyDecided)),
            "{name}"
        );
        assert_eq!(store.consent("c-1").await.unwrap(), approved, "{name}");
        assert_eq!(
            store.decide_consent("c-9", "u-1", true, NOW).await,
            Ok(Err(ConsentRefusal::NotFound)),
            "{name}"
        );
        assert_eq!(
            store.consent("c-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_or_invalid_consent_is_refused() {
    for (name, store) in support::stores().await {
        store
            .create_consent(&consent("c-1", NOW + 600))
            .await
            .unwrap();
        let taken = store.create_consent(&consent("c-1", NOW + 900)).await;
        assert!(refused_as(taken, StoreError::AlreadyExists), "{name}");
        let cases = [
            (
                ConsentRequest {
                    body: "[1]".into(),
                    ..consent("c-2", NOW + 600)
                },
                "consent.body",
            ),
            (
                ConsentRequest {
                    body: r#"{"a":1,"a":2}"#.into(),
                    ..consent("c-2", NOW + 600)
                },
                "consent.body",
            ),
            (
                ConsentRequest {
                    status: ConsentStatus::Approved,
                    ..consent("c-2", NOW + 600)
                },
                "consent.status",
            ),
            (
                ConsentRequest {
                    decided_at: Some(NOW),
                    ..consent("c-2", NOW + 600)
                },
                "consent.status",
            ),
            (consent("c-2", NOW - 10), "consent.expires_at"),
            (
                ConsentRequest {
                    user_id: String::new(),
                    ..consent("c-2", NOW + 600)
                },
                "consent.user_id",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(
                store.create_consent(&c).await,
                Err(RecordError::Invalid(field)),
                "{name}: {field}"
            );
        }
        assert_eq!(
            store.consent("c-2").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.consent("c-1").await.unwrap().expires_at,
            NOW + 600,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_approvals_have_exactly_one_winner() {
    for (name, store) in support::stores().await {
        store
            .create_consent(&consent("c-1", NOW + 600))
            .await
            .unwrap();
        let racers: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.decide_consent("c-1", "u-1", i % 2 == 0, NOW).await },
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap().unwrap());
        }

        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "{name}");
        let losers = outcomes
            .iter()
            .filter(|o| **o == Err(ConsentRefusal::AlreadyDecided));
        assert_eq!(losers.count(), 19, "{name}");
        let decided = store.consent("c-1").await.unwrap();
        assert!(
            matches!(
                decided.status,
                ConsentStatus::Approved | ConsentStatus::Denied
            ),
            "{name}"
        );
        assert_eq!(decided.decided_at, Some(NOW), "{name}");
    }
}

#[tokio::test]
async fn another_user_cannot_decide_a_consent() {
    for (name, store) in support::stores().await {
        store
            .create_consent(&consent("c-1", NOW + 600))
            .await
            .unwrap();
        for approve in [true, false] {
            assert_eq!(
                store.decide_consent("c-1", "u-2", approve, NOW).await,
                Ok(Err(ConsentRefusal::OtherUser)),
                "{name}"
            );
        }
        let untouched = store.consent("c-1").await.unwrap();
        assert_eq!(
            (untouched.status, untouched.decided_at),
            (ConsentStatus::Pending, None),
            "{name}"
        );
        assert_eq!(
            store.decide_consent("c-1", "u-1", true, NOW).await,
            Ok(Ok(())),
            "{name}"
        );
        assert_eq!(
            store.decide_consent("c-1", "u-2", true, NOW).await,
            Ok(Err(ConsentRefusal::OtherUser)),
            "{name}: still another user's, even once decided"
        );
    }
}

#[tokio::test]
async fn an_expired_consent_cannot_be_decided() {
    for (name, store) in support::stores().await {
        let c1 = consent("c-1", NOW + 600);
        store.create_consent(&c1).await.unwrap();
        assert_eq!(c1.status_at(NOW + 600), ConsentStatus::Expired, "{name}");
        for now in [NOW + 600, NOW + 10_000] {
            assert_eq!(
                store.decide_consent("c-1", "u-1", true, now).await,
                Ok(Err(ConsentRefusal::Expired)),
                "{name}"
            );
        }
        let untouched = store.consent("c-1").await.unwrap();
        assert_eq!(
            (untouched.status, untouched.decided_at),
            (ConsentStatus::Pending, None),
            "{name}"
        );
        assert_eq!(
            store.decide_consent("c-1", "u-1", true, NOW + 599).await,
            Ok(Ok(())),
            "{name}: one second before the end is still in time"
        );
    }
}

#[tokio::test]
async fn a_mandate_takes_the_next_status_index_and_is_found_by_id_and_hash() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store.create_status_list("sl-1", 16).await.unwrap();
        store
            .create_consent(&consent("c-1", NOW + 600))
            .await
            .unwrap();
        store
            .decide_consent("c-1", "u-1", true, NOW)
            .await
            .unwrap()
            .unwrap();

        let first = NewMandate {
            consent_id: Some("c-1".into()),
            ..mandate("m-1", "sl-1")
        };
        assert_eq!(store.allocate_mandate(&first).await, Ok(0), "{name}");
        assert_eq!(
            store.allocate_mandate(&mandate("m-2", "sl-1")).await,
            Ok(1),
            "{name}"
        );

        let found = store.mandate("m-1").await.unwrap();
        assert_eq!(found.status_index, 0, "{name}");
        assert_eq!(
            (found.hash.as_str(), found.consent_id.as_deref()),
            ("hash-m-1", Some("c-1")),
            "{name}"
        );
        assert_eq!(
            (found.grant_id.as_deref(), found.exp, found.revoked_at),
            (Some("g-1"), NOW + 86_400, None),
            "{name}"
        );
        assert_eq!(
            store.mandate_by_hash("hash-m-2").await.unwrap().id,
            "m-2",
            "{name}"
        );
        assert_eq!(
            store.mandate("m-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.mandate_by_hash("hash-m-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );

        let list = store.status_list("sl-1").await.unwrap();
        assert_eq!(
            (list.id.as_str(), list.size, list.next_index),
            ("sl-1", 16, 2),
            "{name}"
        );
        assert_eq!(
            store.status_list("sl-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_delegation_state_reads_each_named_record_or_none() {
    use ap2_mandate::store::records::{ConsentState, GrantState, GrantStatus, MandateState};
    for (name, store) in support::stores().await {
        seed(&store).await;
        store.create_status_list("sl-1", 16).await.unwrap();
        store
            .create_consent(&consent("c-1", NOW + 600))
            .await
            .unwrap();
        store
            .allocate_mandate(&mandate("m-1", "sl-1"))
            .await
            .unwrap();
        store.revoke_mandate("m-1", NOW + 5).await.unwrap();

        let all = store
            .delegation_state(Some("g-1"), Some("c-1"), "hash-m-1")
            .await
            .unwrap();
        let grant = GrantState {
            status: GrantStatus::Active,
            expires_at: NOW + 3600,
            user_id: "u-1".into(),
            agent_id: "a-1".into(),
        };
        assert_eq!(all.grant.as_ref(), Some(&grant), "{name}");
        let pending = ConsentState {
            status: ConsentStatus::Pending,
            expires_at: NOW + 600,
            user_id: "u-1".into(),
            agent_id: "a-1".into(),
        };
        assert_eq!(all.consent.as_ref(), Some(&pending), "{name}");
        assert_eq!(pending.status_at(NOW), ConsentStatus::Pending, "{name}");
        assert_eq!(
            pending.status_at(NOW + 600),
            ConsentStatus::Expired,
            "{name}"
        );
        assert_eq!(
            all.mandate,
            Some(MandateState {
                user_id: "u-1".into(),
                agent_id: "a-1".into(),
                revoked_at: Some(NOW + 5),
            }),
            "{name}"
        );

        // Not named, or named but unknown: none, and the others are still read.
        let some = store
            .delegation_state(None, Some("c-9"), "hash-m-1")
            .await
            .unwrap();
        assert_eq!((some.grant, some.consent), (None, None), "{name}");
        assert!(some.mandate.is_some(), "{name}");
        let none = store
            .delegation_state(Some("g-9"), None, "hash-m-9")
            .await
            .unwrap();
        assert_eq!(
            (none.grant, none.consent, none.mandate),
            (None, None, None),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_refused_mandate_takes_no_status_index() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store
            .create_grant(&grant("g-other", "u-1", "a-1"))
            .await
            .unwrap();
        store.revoke_grant("g-other", NOW).await.unwrap();
        store.create_status_list("sl-1", 16).await.unwrap();
        store
            .create_consent(&consent("c-pending", NOW + 600))
            .await
            .unwrap();
        store
            .allocate_mandate(&mandate("m-1", "sl-1"))
            .await
            .unwrap();

        let same_hash = NewMandate {
            hash: "hash-m-1".into(),
            ..mandate("m-2", "sl-1")
        };
        let taken = store.allocate_mandate(&same_hash).await;
        assert_eq!(
            taken,
            Err(RecordError::Store(StoreError::AlreadyExists)),
            "{name}"
        );
        let cases = [
            (
                NewMandate {
                    grant_id: Some("g-other".into()),
                    ..mandate("m-2", "sl-1")
                },
                RecordError::GrantNotActive,
            ),
            (
                NewMandate {
                    consent_id: Some("c-pending".into()),
                    ..mandate("m-2", "sl-1")
                },
                RecordError::ConsentNotApproved,
            ),
            (
                NewMandate {
                    consent_id: Some("c-9".into()),
                    ..mandate("m-2", "sl-1")
                },
                RecordError::ConsentNotApproved,
            ),
            (
                NewMandate {
                    hash: String::new(),
                    ..mandate("m-2", "sl-1")
                },
                RecordError::Invalid("mandate.hash"),
            ),
            (
                NewMandate {
                    exp: 0,
                    ..mandate("m-2", "sl-1")
                },
                RecordError::Invalid("mandate.exp"),
            ),
            (
                mandate("m-2", "sl-9"),
                RecordError::Store(StoreError::NotFound),
            ),
        ];
        for (m, error) in cases {
            assert_eq!(
                store.allocate_mandate(&m).await,
                Err(error.clone()),
                "{name}: {error}"
            );
        }

        assert_eq!(
            store.mandate("m-2").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.allocate_mandate(&mandate("m-3", "sl-1")).await,
            Ok(1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_full_status_list_refuses_and_writes_nothing() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store.create_status_list("sl-1", 2).await.unwrap();
        assert_eq!(
            store.allocate_mandate(&mandate("m-1", "sl-1")).await,
            Ok(0),
            "{name}"
        );
        assert_eq!(
            store.allocate_mandate(&mandate("m-2", "sl-1")).await,
            Ok(1),
            "{name}"
        );
        assert_eq!(
            store.allocate_mandate(&mandate("m-3", "sl-1")).await,
            Err(RecordError::StatusListFull),
            "{name}"
        );
        assert_eq!(
            store.mandate("m-3").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.status_list("sl-1").await.unwrap().next_index,
            2,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_or_invalid_status_list_is_refused() {
    for (name, store) in support::stores().await {
        store.create_status_list("sl-1", 8).await.unwrap();
        let taken = store.create_status_list("sl-1", 16).await;
        assert_eq!(
            taken,
            Err(RecordError::Store(StoreError::AlreadyExists)),
            "{name}"
        );
        for size in [0, -1, (1 << 24) + 1] {
            assert_eq!(
                store.create_status_list("sl-2", size).await,
                Err(RecordError::Invalid("status_list.size")),
                "{name}: {size}"
            );
        }
        assert_eq!(
            store.create_status_list("", 8).await,
            Err(RecordError::Invalid("status_list.id")),
            "{name}"
        );
        assert_eq!(
            store.status_list("sl-2").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(store.status_list("sl-1").await.unwrap().size, 8, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_indexes_are_unique_under_fifty_concurrent_allocations() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store.create_status_list("sl-1", 64).await.unwrap();
        let racers: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .allocate_mandate(&mandate(&format!("m-{i}"), "sl-1"))
                        .await
                })
            })
            .collect();
        let mut indexes = Vec::new();
        for racer in racers {
            indexes.push(racer.await.unwrap().unwrap());
        }

        indexes.sort_unstable();
        assert_eq!(indexes, (0..50).collect::<Vec<i64>>(), "{name}");
        assert_eq!(
            store.status_list("sl-1").await.unwrap().next_index,
            50,
            "{name}"
        );
    }
}

#[tokio::test]
async fn revoked_mandates_set_their_status_indexes() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store
            .create_agent(&agent("a-2", vec![key("k-2")]))
            .await
            .unwrap();
        store
            .create_grant(&grant("g-2", "u-1", "a-1"))
            .await
            .unwrap();
        store
            .create_grant(&grant("g-3", "u-1", "a-2"))
            .await
            .unwrap();
        store.create_status_list("sl-1", 16).await.unwrap();
        store.create_status_list("sl-2", 16).await.unwrap();
        let of = |id: &str, grant_id: &str, agent_id: &str| NewMandate {
            grant_id: Some(grant_id.into()),
            agent_id: agent_id.into(),
            ..mandate(id, "sl-1")
        };
        for m in [
            of("m-0", "g-1", "a-1"),
            of("m-1", "g-1", "a-1"),
            of("m-2", "g-2", "a-1"),
            of("m-3", "g-3", "a-2"),
            of("m-4", "g-3", "a-2"),
        ] {
            store.allocate_mandate(&m).await.unwrap();
        }
        let other_list = NewMandate {
            grant_id: None,
            ..mandate("m-other-list", "sl-2")
        };
        store.allocate_mandate(&other_list).await.unwrap();
        assert_eq!(
            store.revoked_indexes("sl-1").await,
            Ok(Vec::new()),
            "{name}"
        );

        assert_eq!(store.revoke_mandate("m-4", NOW).await, Ok(true), "{name}");
        assert_eq!(
            store.revoke_mandate("m-4", NOW + 1).await,
            Ok(false),
            "{name}"
        );
        assert_eq!(
            store.mandate("m-4").await.unwrap().revoked_at,
            Some(NOW),
            "{name}"
        );
        assert_eq!(
            store.revoke_mandate("m-9", NOW).await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(store.revoked_indexes("sl-1").await, Ok(vec![4]), "{name}");

        assert_eq!(
            store.revoke_mandates_of_grant("g-1", NOW).await,
            Ok(2),
            "{name}"
        );
        assert_eq!(
            store.revoke_mandates_of_grant("g-1", NOW).await,
            Ok(0),
            "{name}"
        );
        assert_eq!(
            store.revoked_indexes("sl-1").await,
            Ok(vec![0, 1, 4]),
            "{name}"
        );

        assert_eq!(
            store.revoke_mandates_of_agent("a-2", NOW).await,
            Ok(1),
            "{name}: m-4 was revoked already"
        );
        assert_eq!(
            store.revoked_indexes("sl-1").await,
            Ok(vec![0, 1, 3, 4]),
            "{name}"
        );
        assert_eq!(
            store.revoked_indexes("sl-2").await,
            Ok(Vec::new()),
            "{name}"
        );
        assert_eq!(
            store.revoke_mandates_of_agent("a-1", NOW).await,
            Ok(2),
            "{name}: m-2 and sl-2's"
        );
        assert_eq!(
            store.revoked_indexes("sl-1").await,
            Ok(vec![0, 1, 2, 3, 4]),
            "{name}"
        );
        assert_eq!(store.revoked_indexes("sl-2").await, Ok(vec![0]), "{name}");
        assert_eq!(
            store.revoked_indexes("sl-9").await,
            Ok(Vec::new()),
            "{name}"
        );
    }
}
