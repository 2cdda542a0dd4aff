//! Identity records on SQLite and (when configured) PostgreSQL: users, agents and their keys,
//! grants and tokens, what disabling an agent or revoking a grant takes with it, and how records
//! serialize.

mod support;

use ap2_mandate::store::records::{
    Agent, AgentKey, AgentStatus, ConsentStatus, Grant, GrantStatus, IdentityRecords, NewMandate,
    RecordError, Revoked, TokenRecord, TokenStatus, User, UserStatus, WalletRecords,
};
use ap2_mandate::store::StoreError;
use serde_json::json;
use support::records::{agent, grant, key, key_named, mandate, refused_as, seed, user, NOW};

fn token(jti: &str, grant_id: Option<&str>, agent_id: &str) -> TokenRecord {
    TokenRecord {
        jti: jti.into(),
        grant_id: grant_id.map(String::from),
        agent_id: agent_id.into(),
        user_id: "u-1".into(),
        delegated_by: vec![],
        external_subject: false,
        status: TokenStatus::Active,
        exp: NOW + 300,
    }
}

#[tokio::test]
async fn a_user_is_stored_found_and_disabled() {
    for (name, store) in support::stores().await {
        let u1 = user("u-1");
        store.create_user(&u1).await.unwrap();
        assert_eq!(store.user("u-1").await.unwrap(), u1, "{name}");
        assert_eq!(
            store.user_by_username("u-1@example.com").await.unwrap(),
            u1,
            "{name}"
        );

        store
            .set_user_status("u-1", UserStatus::Disabled)
            .await
            .unwrap();
        assert_eq!(
            store.user("u-1").await.unwrap().status,
            UserStatus::Disabled,
            "{name}"
        );
        assert_eq!(
            store.set_user_status("u-9", UserStatus::Active).await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(store.user("u-9").await, Err(StoreError::NotFound), "{name}");
        assert_eq!(
            store.user_by_username("nobody").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_or_invalid_user_is_refused_and_nothing_is_written() {
    for (name, store) in support::stores().await {
        store.create_user(&user("u-1")).await.unwrap();
        let same_id = User {
            username: "other@example.com".into(),
            ..user("u-1")
        };
        let same_name = User {
            id: "u-2".into(),
            ..user("u-1")
        };
        let no_name = User {
            username: String::new(),
            ..user("u-3")
        };
        let control = User {
            username: "a\nb".into(),
            ..user("u-4")
        };

        let taken = StoreError::AlreadyExists;
        assert!(
            refused_as(store.create_user(&same_id).await, taken.clone()),
            "{name}"
        );
        assert!(
            refused_as(store.create_user(&same_name).await, taken),
            "{name}"
        );
        assert_eq!(
            store.create_user(&no_name).await,
            Err(RecordError::Invalid("user.username")),
            "{name}"
        );
        assert_eq!(
            store.create_user(&control).await,
            Err(RecordError::Invalid("user.username")),
            "{name}"
        );
        assert_eq!(
            store.user_by_username("other@example.com").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        for id in ["u-2", "u-3", "u-4"] {
            assert_eq!(
                store.user(id).await,
                Err(StoreError::NotFound),
                "{name}: {id}"
            );
        }
    }
}

#[tokio::test]
async fn an_agent_is_stored_with_its_keys_and_found_by_thumbprint() {
    for (name, store) in support::stores().await {
        let a1 = agent("a-1", vec![key("k-1"), key("k-2")]);
        let a2 = Agent {
            federated_credentials: Vec::new(),
            created_at: NOW + 1,
            ..agent("a-2", vec![key("k-1")])
        };
        let a3 = Agent {
            created_at: NOW + 2,
            ..agent("a-3", Vec::new())
        };
        for a in [&a1, &a2, &a3] {
            store.create_agent(a).await.unwrap();
        }

        assert_eq!(store.agent("a-1").await.unwrap(), a1, "{name}");
        assert_eq!(
            store.agents().await.unwrap(),
            vec![a1.clone(), a2.clone(), a3],
            "{name}"
        );
        assert_eq!(
            store
                .agent_by_key_thumbprint(&a1.keys[1].jkt)
                .await
                .unwrap(),
            a1,
            "{name}"
        );
        assert_eq!(
            store
                .agent_by_key_thumbprint(&a2.keys[0].jkt)
                .await
                .unwrap(),
            a2,
            "{name}"
        );
        assert_eq!(
            store.agent_by_key_thumbprint("unknown").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.agent("a-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_agent_or_key_is_refused_and_nothing_is_written() {
    for (name, store) in support::stores().await {
        let a1 = agent("a-1", vec![key("k-1")]);
        store.create_agent(&a1).await.unwrap();

        let fresh = key("k-2");
        let same_id = agent("a-1", vec![fresh.clone()]);
        let shared_key = agent("a-2", vec![fresh.clone(), a1.keys[0].clone()]);
        let twice = key_named("k-3", None);
        let same_key_twice = agent(
            "a-3",
            vec![
                twice.clone(),
                AgentKey {
                    kid: "k-4".into(),
                    ..twice.clone()
                },
            ],
        );
        for (what, a) in [
            ("id", &same_id),
            ("key", &shared_key),
            ("own key", &same_key_twice),
        ] {
            assert!(
                refused_as(store.create_agent(a).await, StoreError::AlreadyExists),
                "{name}: {what}"
            );
        }

        assert_eq!(store.agents().await.unwrap(), vec![a1], "{name}");
        for jkt in [&fresh.jkt, &twice.jkt] {
            assert_eq!(
                store.agent_by_key_thumbprint(jkt).await,
                Err(StoreError::NotFound),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn an_invalid_agent_is_refused_and_nothing_is_written() {
    for (name, store) in support::stores().await {
        let good = key("k-1");
        let other = key("k-2");
        let cases = [
            (
                agent(
                    "a-1",
                    vec![AgentKey {
                        jkt: other.jkt.clone(),
                        ..good.clone()
                    }],
                ),
                RecordError::ThumbprintMismatch,
            ),
            (
                agent(
                    "a-1",
                    vec![AgentKey {
                        kid: "k-9".into(),
                        ..good.clone()
                    }],
                ),
                RecordError::Invalid("agent.keys.kid"),
            ),
            (
                agent(
                    "a-1",
                    vec![AgentKey {
                        jwk: r#"{"kty":"oct","k":"c2VjcmV0"}"#.into(),
                        ..good.clone()
                    }],
                ),
                RecordError::Invalid("agent.keys.jwk"),
            ),
            (
                agent(
                    "a-1",
                    vec![
                        good.clone(),
                        AgentKey {
                            kid: "k-1".into(),
                            ..other.clone()
                        },
                    ],
                ),
                RecordError::Invalid("agent.keys.kid"),
            ),
            (
                Agent {
                    federated_credentials: Vec::new(),
                    ..agent("a-1", Vec::new())
                },
                RecordError::Invalid("agent.keys"),
            ),
            (
                Agent {
                    scopes: vec!["two words".into()],
                    ..agent("a-1", vec![good.clone()])
                },
                RecordError::Invalid("agent.scopes"),
            ),
            (
                Agent {
                    max_delegation_depth: -1,
                    ..agent("a-1", vec![good.clone()])
                },
                RecordError::Invalid("agent.max_delegation_depth"),
            ),
            (
                Agent {
                    status: AgentStatus::Disabled,
                    ..agent("a-1", vec![good.clone()])
                },
                RecordError::Invalid("agent.status"),
            ),
            (
                Agent {
                    name: String::new(),
                    ..agent("a-1", vec![good.clone()])
                },
                RecordError::Invalid("agent.name"),
            ),
        ];
        for (a, error) in cases {
            assert_eq!(
                store.create_agent(&a).await,
                Err(error.clone()),
                "{name}: {error}"
            );
        }

        assert_eq!(store.agents().await.unwrap(), Vec::new(), "{name}");
        assert_eq!(
            store.agent_by_key_thumbprint(&good.jkt).await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn disabling_an_agent_revokes_its_grants_and_tokens() {
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
        for t in [
            token("t-1", Some("g-1"), "a-1"),
            token("t-2", Some("g-2"), "a-1"),
            token("t-3", None, "a-1"),
            token("t-4", Some("g-3"), "a-2"),
        ] {
            store.record_token(&t).await.unwrap();
        }
        store.revoke_token("t-2").await.unwrap();

        let revoked = store.disable_agent("a-1", NOW + 5).await.unwrap();
        assert_eq!(
            revoked,
            Revoked {
                grants: 2,
                tokens: 2,
                mandates: 0
            },
            "{name}"
        );
        let a1 = store.agent("a-1").await.unwrap();
        assert_eq!(
            (a1.status, a1.disabled_at),
            (AgentStatus::Disabled, Some(NOW + 5)),
            "{name}"
        );
        for id in ["g-1", "g-2"] {
            let g = store.grant(id).await.unwrap();
            assert_eq!(
                (g.status, g.revoked_at),
                (GrantStatus::Revoked, Some(NOW + 5)),
                "{name}"
            );
        }
        for jti in ["t-1", "t-2", "t-3"] {
            assert_eq!(
                store.token_status(jti).await,
                Ok(TokenStatus::Revoked),
                "{name}: {jti}"
            );
        }

        // The other agent keeps what it holds.
        assert_eq!(
            store.grant("g-3").await.unwrap().status,
            GrantStatus::Active,
            "{name}"
        );
        assert_eq!(
            store.token_status("t-4").await,
            Ok(TokenStatus::Active),
            "{name}"
        );
        assert_eq!(
            store.agent("a-2").await.unwrap().status,
            AgentStatus::Active,
            "{name}"
        );

        // Again: nothing left to revoke, and the first disablement time stays.
        assert_eq!(
            store.disable_agent("a-1", NOW + 9).await,
            Ok(Revoked::default()),
            "{name}"
        );
        assert_eq!(
            store.agent("a-1").await.unwrap().disabled_at,
            Some(NOW + 5),
            "{name}"
        );
        assert_eq!(
            store.disable_agent("a-9", NOW).await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_disabled_agent_gets_no_grant_token_or_mandate() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store.create_status_list("sl-1", 8).await.unwrap();
        store.disable_agent("a-1", NOW).await.unwrap();

        assert_eq!(
            store.create_grant(&grant("g-2", "u-1", "a-1")).await,
            Err(RecordError::AgentNotActive),
            "{name}"
        );
        assert_eq!(
            store.record_token(&token("t-1", None, "a-1")).await,
            Err(RecordError::AgentNotActive),
            "{name}"
        );
        let m = NewMandate {
            grant_id: None,
            ..mandate("m-1", "sl-1")
        };
        assert_eq!(
            store.allocate_mandate(&m).await,
            Err(RecordError::AgentNotActive),
            "{name}"
        );

        assert_eq!(
            store.grant("g-2").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.token_status("t-1").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.status_list("sl-1").await.unwrap().next_index,
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_grant_is_stored_and_refused_when_invalid() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        assert_eq!(
            store.grant("g-1").await.unwrap(),
            grant("g-1", "u-1", "a-1"),
            "{name}"
        );
        let plain = Grant {
            authorization_details: None,
            scope: vec!["mandates:request".into(), "payments:present".into()],
            ..grant("g-2", "u-1", "a-1")
        };
        store.create_grant(&plain).await.unwrap();
        assert_eq!(store.grant("g-2").await.unwrap(), plain, "{name}");

        let taken = store.create_grant(&grant("g-1", "u-1", "a-1")).await;
        assert!(refused_as(taken, StoreError::AlreadyExists), "{name}");
        let cases = [
            (
                Grant {
                    scope: Vec::new(),
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.scope"),
            ),
            (
                Grant {
                    scope: vec!["a\"b".into()],
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.scope"),
            ),
            (
                Grant {
                    authorization_details: Some(json!({"type": "x"})),
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.authorization_details"),
            ),
            (
                Grant {
                    authorization_details: Some(json!([{"max": 1}])),
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.authorization_details"),
            ),
            (
                Grant {
                    expires_at: NOW,
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.expires_at"),
            ),
            (
                Grant {
                    status: GrantStatus::Revoked,
                    ..grant("g-3", "u-1", "a-1")
                },
                RecordError::Invalid("grant.status"),
            ),
            (grant("g-3", "u-9", "a-1"), RecordError::UserNotActive),
            (grant("g-3", "u-1", "a-9"), RecordError::AgentNotActive),
        ];
        for (g, error) in cases {
            assert_eq!(
                store.create_grant(&g).await,
                Err(error.clone()),
                "{name}: {error}"
            );
        }
        assert_eq!(
            store.grant("g-3").await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.grant("g-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[tokio::test]
async fn revoking_a_grant_revokes_its_tokens_only() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store
            .create_grant(&grant("g-2", "u-1", "a-1"))
            .await
            .unwrap();
        store
            .record_token(&token("t-1", Some("g-1"), "a-1"))
            .await
            .unwrap();
        store
            .record_token(&token("t-2", Some("g-1"), "a-1"))
            .await
            .unwrap();
        store
            .record_token(&token("t-3", Some("g-2"), "a-1"))
            .await
            .unwrap();

        assert_eq!(
            store.revoke_grant("g-1", NOW + 1).await,
            Ok(Revoked {
                grants: 1,
                tokens: 2,
                mandates: 0
            }),
            "{name}"
        );
        let g1 = store.grant("g-1").await.unwrap();
        assert_eq!(
            (g1.status, g1.revoked_at),
            (GrantStatus::Revoked, Some(NOW + 1)),
            "{name}"
        );
        assert_eq!(
            store.token_status("t-1").await,
            Ok(TokenStatus::Revoked),
            "{name}"
        );
        assert_eq!(
            store.token_status("t-2").await,
            Ok(TokenStatus::Revoked),
            "{name}"
        );
        assert_eq!(
            store.token_status("t-3").await,
            Ok(TokenStatus::Active),
            "{name}"
        );
        assert_eq!(
            store.grant("g-2").await.unwrap().status,
            GrantStatus::Active,
            "{name}"
        );

        assert_eq!(
            store.revoke_grant("g-1", NOW + 2).await,
            Ok(Revoked::default()),
            "{name}"
        );
        assert_eq!(
            store.grant("g-1").await.unwrap().revoked_at,
            Some(NOW + 1),
            "{name}"
        );
        assert_eq!(
            store.revoke_grant("g-9", NOW).await,
            Err(StoreError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.record_token(&token("t-4", Some("g-1"), "a-1")).await,
            Err(RecordError::GrantNotActive),
            "{name}: no new token under a revoked grant"
        );
    }
}

#[tokio::test]
async fn a_token_is_recorded_checked_and_revoked_once() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        store
            .create_agent(&agent("a-2", vec![key("k-2")]))
            .await
            .unwrap();
        store
            .record_token(&token("t-1", Some("g-1"), "a-1"))
            .await
            .unwrap();
        assert_eq!(
            store.token_status("t-1").await,
            Ok(TokenStatus::Active),
            "{name}"
        );

        let again = store.record_token(&token("t-1", None, "a-1")).await;
        assert!(refused_as(again, StoreError::AlreadyExists), "{name}");
        let cases = [
            (
                token("t-2", Some("g-1"), "a-2"),
                RecordError::GrantNotActive,
            ),
            (
                token("t-2", Some("g-9"), "a-1"),
                RecordError::GrantNotActive,
            ),
            (
                TokenRecord {
                    user_id: "u-9".into(),
                    ..token("t-2", None, "a-1")
                },
                RecordError::UserNotActive,
            ),
            (
                TokenRecord {
                    exp: 0,
                    ..token("t-2", None, "a-1")
                },
                RecordError::Invalid("token.exp"),
            ),
            (
                TokenRecord {
                    jti: String::new(),
                    ..token("t-2", None, "a-1")
                },
                RecordError::Invalid("token.jti"),
            ),
            (
                TokenRecord {
                    status: TokenStatus::Revoked,
                    ..token("t-2", None, "a-1")
                },
                RecordError::Invalid("token.status"),
            ),
        ];
        for (t, error) in cases {
            assert_eq!(
                store.record_token(&t).await,
                Err(error.clone()),
                "{name}: {error}"
            );
        }
        assert_eq!(
            store.token_status("t-2").await,
            Err(StoreError::NotFound),
            "{name}"
        );

        assert_eq!(store.revoke_token("t-1").await, Ok(true), "{name}");
        assert_eq!(store.revoke_token("t-1").await, Ok(false), "{name}");
        assert_eq!(
            store.token_status("t-1").await,
            Ok(TokenStatus::Revoked),
            "{name}"
        );
        assert_eq!(
            store.revoke_token("t-9").await,
            Err(StoreError::NotFound),
            "{name}"
        );
    }
}

#[test]
fn a_password_hash_is_redacted_in_debug_output() {
    let u = user("u-1");
    let shown = format!("{u:?}");
    assert!(!shown.contains("argon2id"), "{shown}");
    assert!(shown.contains("PasswordHash(..)"), "{shown}");
}

#[test]
fn records_serialize_with_lowercase_statuses() {
    let value = serde_json::to_value(agent("a-1", Vec::new())).unwrap();
    assert_eq!(value["status"], "active");
    let back: Agent = serde_json::from_value(value).unwrap();
    assert_eq!(back, agent("a-1", Vec::new()));
    assert_eq!(
        serde_json::to_value(ConsentStatus::Expired).unwrap(),
        "expired"
    );
    assert_eq!(ConsentStatus::Denied.as_str(), "denied");
    assert_eq!(
        serde_json::to_value(user("u-1")).unwrap()["password_hash"],
        user("u-1").password_hash.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_token_issued_during_a_disablement_stays_active() {
    for (name, store) in support::stores().await {
        seed(&store).await;
        let issuers: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .record_token(&token(&format!("t-{i}"), Some("g-1"), "a-1"))
                        .await
                })
            })
            .collect();
        let disabler = {
            let store = store.clone();
            tokio::spawn(async move { store.disable_agent("a-1", NOW).await })
        };
        let mut recorded = Vec::new();
        for (i, issuer) in issuers.into_iter().enumerate() {
            match issuer.await.unwrap() {
                Ok(()) => recorded.push(format!("t-{i}")),
                Err(e) => assert_eq!(e, RecordError::AgentNotActive, "{name}"),
            }
        }
        let revoked = disabler.await.unwrap().unwrap();

        // Every token recorded before the disablement was revoked by it; none came after.
        assert_eq!(revoked.tokens, recorded.len() as u64, "{name}");
        for jti in &recorded {
            assert_eq!(
                store.token_status(jti).await,
                Ok(TokenStatus::Revoked),
                "{name}: {jti}"
            );
        }
    }
}

#[tokio::test]
async fn a_proof_is_recorded_once_and_its_token_standing_read_in_the_same_call() {
    use ap2_mandate::store::records::{OAuthRecords as _, Standing};
    use ap2_mandate::store::DecisionLedger as _;
    for (name, store) in support::stores().await {
        seed(&store).await;
        store
            .record_token(&token("t-1", Some("g-1"), "a-1"))
            .await
            .unwrap();
        let at = NOW + 60;
        assert_eq!(
            store
                .remember_proof_with_standing("dpop", "k:p-1", at, "t-1")
                .await,
            Ok((true, Standing::Active)),
            "{name}"
        );
        assert_eq!(
            store
                .remember_proof_with_standing("dpop", "k:p-1", at, "t-1")
                .await,
            Ok((false, Standing::Active)),
            "{name}: the same proof again"
        );
        assert_eq!(
            store.remember_jti("dpop", "k:p-1", at).await,
            Ok(false),
            "{name}: recorded where every single-use id is"
        );
        assert_eq!(
            store
                .remember_proof_with_standing("other", "k:p-1", at, "t-1")
                .await,
            Ok((true, Standing::Active)),
            "{name}: another scope"
        );
        assert_eq!(
            store
                .remember_proof_with_standing("dpop", "k:p-2", at, "t-9")
                .await,
            Ok((true, Standing::Unknown)),
            "{name}: a token never recorded"
        );
        store.revoke_token("t-1").await.unwrap();
        assert_eq!(
            store
                .remember_proof_with_standing("dpop", "k:p-3", at, "t-1")
                .await,
            Ok((true, Standing::Revoked)),
            "{name}"
        );
        assert_eq!(
            store.token_standing("t-1").await,
            Ok(Standing::Revoked),
            "{name}"
        );
    }
}
