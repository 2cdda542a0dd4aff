//! What a protected resource pays to accept one request: one access token plus one DPoP proof,
//! next to one bare ES256 verification on the same backend (aws-lc-rs), measured in the same run.
//!
//! Run: `cargo bench --bench tokens -- --warm-up-time 2 --measurement-time 5`.
//!
//! Groups:
//! - `es256_verify_bare`: one signature over an access token's signing input, pre-parsed key;
//! - `access_token_verify`: `token::verify` (header, signature with our key set, claims, times);
//! - `dpop_proof_check`: `check_proof` with `ath` (header, embedded key, signature, claims);
//! - `access_token_plus_dpop`: both, and the key binding (`cnf.jkt` equals the proof's key);
//! - `resource_request_full`: `TokenService::authenticate_resource` over SQLite (and PostgreSQL
//!   when `AP2_BENCH_POSTGRES_URL` is set): the two checks above, plus the proof's single-use
//!   `jti` insert and the token's standing query, sent together. Each iteration presents a
//!   fresh proof, signed before its timing starts; `now` stays fixed so every proof stays fresh.
//!
//! After criterion, an interleaved measurement prints the token-plus-proof cost in units of
//! bare verifications (two signatures are checked, so 2.0 would be signatures alone).

mod support;

use support::now_secs;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ap2_mandate::identity::admin::AgentRegistration;
use ap2_mandate::identity::dpop::{check_proof, make_proof, ProofCheck};
use ap2_mandate::identity::grants::{AuthorizationParams, CodeRedemption};
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::token::{self, AccessTokenClaims, AccessTokenPolicy};
use ap2_mandate::identity::{TokenService, TokenServiceConfig};
use ap2_mandate::jose::{b64, KeySet, SigningKey};
use ap2_mandate::store::{MasterKey, Store, StoreConfig};
use criterion::{BatchSize, Criterion};
use serde_json::json;
use tokio::runtime::Runtime;

const ISSUER: &str = "http://127.0.0.1:8080";
const RESOURCE_PATH: &str = "/v1/whoami";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";
const SKEW: i64 = 60;
const MAX_AGE: i64 = 120;

/// An access token as the service issues it, the agent key it is bound to, and a proof.
struct Stateless {
    token: String,
    keys: KeySet,
    proof: String,
    htu: String,
    now: i64,
    /// The token's signing input and signature, for the bare verification.
    input: String,
    signature: [u8; 64],
}

impl Stateless {
    fn new() -> Stateless {
        let now = now_secs();
        let token_key = SigningKey::generate(Some("tokens-1".into())).expect("token key");
        let agent = SigningKey::generate(Some("agent-key".into())).expect("agent key");
        let claims = AccessTokenClaims {
            iss: ISSUER.into(),
            sub: "usr_0123456789abcdef".into(),
            aud: ISSUER.into(),
            client_id: "agt_0123456789abcdef".into(),
            actors: vec!["agt_0123456789abcdef".into()],
            scope: vec!["mandates:request".into(), "payments:present".into()],
            authorization_details: None,
            jkt: agent.public().thumbprint(),
            jti: "jti-0123456789abcdefghij".into(),
            iat: now,
            exp: now + 300,
            grant_id: Some("grt_0123456789abcdefghij".into()),
            may_act: None,
        };
        let token = claims.sign(&token_key).expect("sign the token");
        let mut keys = KeySet::new();
        keys.insert(token_key.public().clone()).expect("key set");
        let htu = format!("{ISSUER}{RESOURCE_PATH}");
        let proof = make_proof(&agent, "GET", &htu, now, Some(&token), None).expect("proof");
        let (input, sig) = token.rsplit_once('.').expect("compact JWS");
        let signature = b64::decode_array::<64>(sig).expect("64-byte signature");
        Stateless {
            input: input.to_owned(),
            signature,
            token,
            keys,
            proof,
            htu,
            now,
        }
    }

    fn bare_verify(&self) {
        self.keys
            .get("tokens-1")
            .expect("token key")
            .verify(black_box(self.input.as_bytes()), black_box(&self.signature))
            .expect("valid signature");
    }

    fn verify_token(&self) -> AccessTokenClaims {
        let policy = AccessTokenPolicy {
            issuer: ISSUER,
            skew: SKEW,
        };
        token::verify(black_box(&self.token), &self.keys, &policy, self.now, false)
            .expect("token verifies")
    }

    fn check_proof(&self) -> String {
        let check = ProofCheck {
            htm: "GET",
            htu: &self.htu,
            access_token: Some(&self.token),
            now: self.now,
            max_age: MAX_AGE,
            skew: SKEW,
        };
        check_proof(black_box(&self.proof), &check)
            .expect("proof passes")
            .jkt
    }

    fn token_and_proof(&self) {
        let claims = self.verify_token();
        let jkt = self.check_proof();
        assert_eq!(claims.jkt, jkt, "proof by the bound key");
        black_box(claims);
    }
}

/// A token service over a real store, with a token it issued and the agent key it is bound to.
struct Service {
    service: Arc<TokenService>,
    token: String,
    agent: SigningKey,
    htu: String,
    now: i64,
    label: &'static str,
    config: StoreConfig,
    file: Option<PathBuf>,
}

impl Service {
    async fn open(label: &'static str, config: StoreConfig, file: Option<PathBuf>) -> Service {
        let now = now_secs();
        let store = Store::open(&config).await.expect("open the store");
        let master = Arc::new(MasterKey::from_bytes(&[7u8; 32]).expect("master key"));
        let service = TokenService::new(store, master, TokenServiceConfig::new(ISSUER), vec![])
            .expect("token service");
        let agent = SigningKey::generate(Some("agent-key".into())).expect("agent key");
        let registration = AgentRegistration {
            name: "bench agent".into(),
            owner: "ops@example.com".into(),
            jwks: json!({"keys": [agent.public().to_value()]}),
            scopes: vec!["mandates:request".into(), "payments:present".into()],
            audiences: vec![],
            max_delegation_depth: 1,
            federated_credentials: vec![],
            redirect_uris: vec![],
        };
        let registered = service
            .register_agent(&registration, now)
            .await
            .expect("register the agent");
        let user = service
            .create_user("alice", &Password::new("correct horse battery staple"), now)
            .await
            .expect("create the user");

        // Approval and code redemption in-process: the token is issued exactly as over HTTP.
        let verifier = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
        let params = AuthorizationParams {
            response_type: Some("code".into()),
            client_id: Some(registered.id.clone()),
            redirect_uri: Some(REDIRECT.into()),
            scope: Some("mandates:request payments:present".into()),
            state: Some("st".into()),
            code_challenge: Some(challenge_s256(verifier)),
            code_challenge_method: Some("S256".into()),
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
        let proof = make_proof(
            &agent,
            "POST",
            &format!("{ISSUER}/oauth2/token"),
            now,
            None,
            None,
        )
        .expect("proof");
        let checked = service
            .check_dpop(Some(&proof), "POST", "/oauth2/token", None, false, now)
            .await
            .expect("token endpoint proof");
        let redemption = CodeRedemption {
            code,
            redirect_uri: REDIRECT.into(),
            code_verifier: verifier.into(),
            resource: None,
        };
        let issued = service
            .redeem_code(&redemption, &registered, &checked, now)
            .await
            .expect("redeem the code");
        Service {
            service: Arc::new(service),
            token: issued.access_token,
            agent,
            htu: format!("{ISSUER}{RESOURCE_PATH}"),
            now,
            label,
            config,
            file,
        }
    }

    fn fresh_proof(&self) -> String {
        make_proof(
            &self.agent,
            "GET",
            &self.htu,
            self.now,
            Some(&self.token),
            None,
        )
        .expect("proof")
    }

    async fn authenticate(&self, proof: String) {
        let authorization = format!("DPoP {}", self.token);
        let claims = self
            .service
            .authenticate_resource(
                Some(&authorization),
                Some(&proof),
                "GET",
                RESOURCE_PATH,
                ISSUER,
                None,
                self.now,
            )
            .await
            .expect("the request is accepted");
        black_box(claims);
    }

    async fn clean_up(self) {
        let store = self.service.store();
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

/// The stores to measure the full resource check on.
fn stores() -> Vec<(&'static str, StoreConfig, Option<PathBuf>)> {
    let path = std::env::temp_dir().join(format!("ap2_bench_tokens_{}.db", std::process::id()));
    let mut out = vec![("sqlite", StoreConfig::sqlite(&path), Some(path))];
    match std::env::var("AP2_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let mut config = StoreConfig::new(url);
            config.schema = Some(format!("bench_tokens_{}", std::process::id()));
            out.push(("postgres", config, None));
        }
        _ => eprintln!("AP2_BENCH_POSTGRES_URL is not set: resource_request_full on SQLite only"),
    }
    out
}

fn stateless(c: &mut Criterion, s: &Stateless) {
    c.benchmark_group("es256_verify_bare")
        .bench_function("aws-lc-rs, pre-parsed key", |b| b.iter(|| s.bare_verify()));
    c.benchmark_group("access_token_verify")
        .bench_function("at+jwt (1 signature)", |b| b.iter(|| s.verify_token()));
    c.benchmark_group("dpop_proof_check")
        .bench_function("dpop+jwt with ath (1 signature)", |b| {
            b.iter(|| s.check_proof())
        });
    c.benchmark_group("access_token_plus_dpop")
        .bench_function("token + proof + binding (2 signatures)", |b| {
            b.iter(|| s.token_and_proof())
        });
}

fn full(c: &mut Criterion, rt: &Runtime, service: &Service) {
    let mut group = c.benchmark_group("resource_request_full");
    group.bench_function(service.label, |b| {
        b.iter_batched(
            || service.fresh_proof(),
            |proof| rt.block_on(service.authenticate(proof)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The token-plus-proof check and the bare verification interleaved in blocks, so that a
/// drifting clock speed on a shared machine affects both alike.
fn interleaved_ratio(s: &Stateless) {
    let (blocks, per_block) = (40, 200);
    let (mut both, mut bare) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..blocks {
        let t = Instant::now();
        for _ in 0..per_block {
            s.token_and_proof();
        }
        both += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_block {
            s.bare_verify();
        }
        bare += t.elapsed();
    }
    let n = (blocks * per_block) as u32;
    println!(
        "interleaved: access token + DPoP proof {:?}, bare ES256 {:?}, ratio {:.2} bare verifications",
        both / n,
        bare / n,
        both.as_secs_f64() / bare.as_secs_f64()
    );
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let s = Stateless::new();
    s.token_and_proof();
    stateless(&mut criterion, &s);

    for (label, config, file) in stores() {
        let service = rt.block_on(Service::open(label, config, file));
        rt.block_on(service.authenticate(service.fresh_proof()));
        full(&mut criterion, &rt, &service);
        rt.block_on(service.clean_up());
    }

    interleaved_ratio(&s);
    criterion.final_summary();
}
