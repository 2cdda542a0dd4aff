//! Trusted external issuers: a Microsoft Entra-shaped user-delegated agent token (actor in
//! `azp` with `xms_act_fct`, parent in `xms_par_app_azp`, no `act`) is exchanged here for one of
//! our tokens with a proper `sub`/`act`; an agent authenticates with a federated assertion; keys
//! rotate by replacing the JWKS file. The Entra-shaped tokens are signed by a test key
//! configured as that issuer.

mod support;

use ap2_mandate::identity::assertion::JWT_BEARER;
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::external::{ExternalIssuerConfig, Profile};
use ap2_mandate::jose::{sign_compact, SigningKey};
use serde_json::{json, Value};
use support::oauth::{Harness, Resp, TestAgent, JWT_TYPE, TOKEN_EXCHANGE};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const AGENT_APP: &str = "8c1e8d6e-0d8b-4a3b-9d6f-agent-identity";
const BLUEPRINT_APP: &str = "4b5a0c2e-4e0f-4f4e-8a7a-agent-blueprint";
const AUDIENCE: &str = "api://ap2-mandate";

fn issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

struct Entra {
    key: SigningKey,
    jwks_file: std::path::PathBuf,
}

impl Entra {
    fn new() -> Entra {
        let jwks_file =
            std::env::temp_dir().join(format!("{}.jwks.json", support::unique("entra")));
        let entra = Entra {
            key: SigningKey::generate(Some("entra-k1".into())).unwrap(),
            jwks_file,
        };
        entra.publish(&[&entra.key]);
        entra
    }

    fn publish(&self, keys: &[&SigningKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.public().to_value()).collect();
        std::fs::write(&self.jwks_file, json!({ "keys": keys }).to_string()).unwrap();
    }

    fn config(&self) -> ExternalIssuerConfig {
        ExternalIssuerConfig {
            issuer: issuer(),
            profile: Profile::Entra,
            audience: AUDIENCE.into(),
            jwks_file: self.jwks_file.clone(),
        }
    }

    /// A user-delegated agent token as Entra shapes it, with `patch` applied.
    fn token(&self, key: &SigningKey, now: i64, patch: Value) -> String {
        let mut claims = json!({
            "aud": AUDIENCE,
            "iss": issuer(),
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 3600,
            "tid": TENANT,
            "oid": "00000000-0000-0000-aaaa-user-object-id",
            "sub": "pairwise-subject-of-the-user",
            "azp": AGENT_APP,
            "azpacr": "2",
            "scp": "payments:present mandates:request",
            "xms_act_fct": "3 11",
            "xms_par_app_azp": BLUEPRINT_APP,
            "ver": "2.0",
        });
        for (name, value) in patch.as_object().unwrap() {
            match value {
                Value::Null => {
                    claims.as_object_mut().unwrap().remove(name);
                }
                v => claims[name] = v.clone(),
            }
        }
        sign_compact(key, Some("JWT"), false, claims.to_string().as_bytes()).unwrap()
    }
}

async fn setup() -> (Harness, Entra, TestAgent) {
    let entra = Entra::new();
    let (_, store) = support::stores().await.remove(0);
    let h = Harness::oneshot_with(store, vec![entra.config()]).await;
    let key = SigningKey::generate(Some("agent-key".into())).unwrap();
    let body = json!({
        "name": "Entra shopping agent",
        "owner": "ops@contoso.example",
        "jwks": {"keys": [key.public().to_value()]},
        "scopes": ["payments:present"],
        "audiences": ["https://wallet.example"],
        "max_delegation_depth": 1,
        "federated_credentials": [{"issuer": issuer(), "subject": AGENT_APP, "audience": AUDIENCE}],
    });
    let res = h.admin_json("POST", "/v1/agents", &body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let agent = TestAgent {
        id: res.json()["id"].as_str().unwrap().to_owned(),
        key,
    };
    (h, entra, agent)
}

async fn exchange(h: &Harness, agent: &TestAgent, subject: &str, extra: &[(&str, &str)]) -> Resp {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", JWT_TYPE),
    ];
    form.extend_from_slice(extra);
    h.token(agent, &form).await
}

#[tokio::test]
async fn an_entra_agent_token_is_exchanged_for_one_with_sub_and_act() {
    let (h, entra, agent) = setup().await;
    let subject = entra.token(&entra.key, h.now(), json!({}));
    let res = exchange(
        &h,
        &agent,
        &subject,
        &[("audience", "https://wallet.example")],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // Granted = the token's scp ∩ what the agent may hold, said in the answer.
    assert_eq!(res.json()["scope"], "payments:present");
    let token = res.json()["access_token"].as_str().unwrap().to_owned();
    let claims = h
        .service
        .verify_token(&token, h.now(), false)
        .await
        .unwrap();
    assert_eq!(
        claims.sub,
        format!("entra:{TENANT}:00000000-0000-0000-aaaa-user-object-id")
    );
    assert_eq!(
        claims.actors,
        vec![agent.id.clone(), format!("{}#{BLUEPRINT_APP}", issuer())]
    );
    assert_eq!(claims.aud, "https://wallet.example");
    assert_eq!(claims.jkt, agent.key.public().thumbprint());
    assert!(claims.exp <= h.now() + 300);
    assert_eq!(claims.grant_id, None);

    // Disabling the agent revokes the exchanged token too.
    h.admin_json(
        "POST",
        &format!("/v1/agents/{}/disable", agent.id),
        &json!({}),
    )
    .await;
    let standing = h.service.standing(&claims.jti).await.unwrap();
    assert_eq!(standing, ap2_mandate::store::records::Standing::Revoked);
}

#[tokio::test]
async fn entra_tokens_that_break_a_rule_are_refused() {
    let (h, entra, agent) = setup().await;
    let now = h.now();
    let stranger = SigningKey::generate(Some("entra-k1".into())).unwrap();
    let unknown_kid = SigningKey::generate(Some("entra-k9".into())).unwrap();
    let cases = [
        entra.token(&entra.key, now, json!({"xms_act_fct": null})),
        entra.token(&entra.key, now, json!({"azp": "someone-else"})),
        entra.token(&entra.key, now, json!({"aud": "api://other"})),
        entra.token(&entra.key, now, json!({"exp": now - 3600})),
        entra.token(&entra.key, now, json!({"nbf": now + 3600})),
        entra.token(&entra.key, now, json!({"oid": null})),
        entra.token(
            &entra.key,
            now,
            json!({"iss": "https://login.microsoftonline.com/other/v2.0"}),
        ),
        entra.token(&stranger, now, json!({})),
        entra.token(&unknown_kid, now, json!({})),
    ];
    let before = h.token_count().await;
    for subject in cases {
        let res = exchange(&h, &agent, &subject, &[]).await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert_eq!(res.error(), "invalid_request", "{}", res.body);
    }
    // Asking for more than the Entra token carries is refused, not trimmed.
    let subject = entra.token(&entra.key, now, json!({"scp": "mandates:request"}));
    assert_eq!(
        exchange(&h, &agent, &subject, &[("scope", "payments:present")])
            .await
            .error(),
        "invalid_scope"
    );
    assert_eq!(h.token_count().await, before);
}

#[tokio::test]
async fn entra_keys_rotate_by_replacing_the_jwks_file() {
    let (h, entra, agent) = setup().await;
    let next = SigningKey::generate(Some("entra-k2".into())).unwrap();
    let subject = entra.token(&next, h.now(), json!({}));
    assert_eq!(exchange(&h, &agent, &subject, &[]).await.status, 400);
    std::thread::sleep(std::time::Duration::from_millis(20));
    entra.publish(&[&next]);
    let subject = entra.token(&next, h.now(), json!({}));
    assert_eq!(exchange(&h, &agent, &subject, &[]).await.status, 200);
    // The retired key no longer verifies.
    let old = entra.token(&entra.key, h.now(), json!({}));
    assert_eq!(exchange(&h, &agent, &old, &[]).await.status, 400);
}

#[tokio::test]
async fn an_agent_authenticates_with_a_federated_assertion_instead_of_its_key() {
    let (h, entra, agent) = setup().await;
    let now = h.now();
    let subject = entra.token(&entra.key, now, json!({}));
    let post = |assertion: String| {
        let subject = subject.clone();
        let hr = &h;
        let agent_id = agent.id.clone();
        let key = &agent.key;
        async move {
            let nonce = hr.service.dpop_nonce(now);
            let proof = make_proof(
                key,
                "POST",
                &format!("{}/oauth2/token", hr.issuer),
                now,
                None,
                Some(&nonce),
            )
            .unwrap();
            let form = [
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", JWT_TYPE),
                ("client_id", agent_id.as_str()),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ];
            hr.post_form("/oauth2/token", &[("dpop", proof)], &form)
                .await
        }
    };
    let workload = |sub: &str, aud: &str, jti: &str| {
        let claims = json!({"iss": issuer(), "sub": sub, "aud": aud, "jti": jti, "iat": now, "exp": now + 600});
        sign_compact(
            &entra.key,
            Some("JWT"),
            false,
            claims.to_string().as_bytes(),
        )
        .unwrap()
    };
    let res = post(workload(AGENT_APP, AUDIENCE, "w1")).await;
    assert_eq!(res.status, 200, "{}", res.body);
    // Replayed, another subject, another audience: refused.
    assert_eq!(
        post(workload(AGENT_APP, AUDIENCE, "w1")).await.error(),
        "invalid_client"
    );
    assert_eq!(
        post(workload("another-app", AUDIENCE, "w2")).await.error(),
        "invalid_client"
    );
    assert_eq!(
        post(workload(AGENT_APP, "api://other", "w3")).await.error(),
        "invalid_client"
    );
}
