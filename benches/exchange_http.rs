//! Token exchanges per second over real HTTP on loopback: the service in-process on
//! `127.0.0.1:0`, over SQLite (a temporary file) and PostgreSQL (when `AP2_BENCH_POSTGRES_URL`
//! is set; a schema of its own, dropped afterwards).
//!
//! Run: `AP2_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench exchange_http`.
//! `AP2_BENCH_SECONDS` (default 10) sets each timed window, `AP2_BENCH_CONCURRENCY` (default 8)
//! the number of concurrent client tasks.
//!
//! Each request is what a top agent sends to hand its token to a sub-agent: grant type
//! token-exchange, its own access token as subject, an actor token signed by the sub-agent, a
//! `private_key_jwt` client assertion and a DPoP proof with the server nonce, both by the top
//! agent. The server checks the proof, the assertion, the subject token and its standing, the
//! actor token, records three single-use `jti`s, signs and records a new token, and appends an
//! audit record. Every answer must be 200.
//!
//! The clients sign three ES256 tokens per request on the same cores as the server, so two
//! modes are timed: `live` signs each request when sending it (the cost is printed apart), and
//! `pre-signed` signs every request before the window opens (all with one `iat` and one nonce,
//! so that window is at most 30 s), which leaves the cores to the server.

mod support;

use support::{env_number, now_secs};

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ap2_mandate::http::{router, system_clock, AppState};
use ap2_mandate::identity::admin::AgentRegistration;
use ap2_mandate::identity::assertion::{make_assertion, JWT_BEARER};
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::grants::AuthorizationParams;
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::{TokenService, TokenServiceConfig};
use ap2_mandate::jose::SigningKey;
use ap2_mandate::store::{MasterKey, Store, StoreConfig};
use serde_json::{json, Value};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const REDIRECT: &str = "http://127.0.0.1:9999/callback";
const FORM: &str = "application/x-www-form-urlencoded";
/// Longest pre-signed window: the nonce holds at least 60 s, proofs and assertions longer.
const MAX_PRESIGNED_WINDOW: u64 = 30;
/// Longest time spent signing requests ahead of the pre-signed window.
const MAX_PRESIGN_SECONDS: f64 = 12.0;

/// An agent with its registered key.
struct Agent {
    id: String,
    key: SigningKey,
}

/// One exchange request, ready to send.
struct Signed {
    body: String,
    proof: String,
}

/// The served token service, a top agent holding a token, and its sub-agent.
struct Server {
    issuer: String,
    token_url: String,
    service: Arc<TokenService>,
    client: reqwest::Client,
    top: Agent,
    sub: Agent,
    user_id: String,
    handle: tokio::task::JoinHandle<()>,
}

/// What one answer was.
struct Answer {
    status: u16,
    body: String,
    nonce: Option<String>,
}

impl Server {
    async fn start(store: Store, concurrency: usize) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let issuer = format!("http://{}", listener.local_addr().expect("local address"));
        let master = Arc::new(MasterKey::from_bytes(&[7u8; 32]).expect("master key"));
        let service = Arc::new(
            TokenService::new(store, master, TokenServiceConfig::new(&issuer), vec![])
                .expect("token service"),
        );
        let state = AppState::new(service.clone(), "bench-admin-token", system_clock());
        let app = router(state);
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        ap2_mandate::outbound::install_crypto();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .expect("HTTP client");

        let now = now_secs();
        let scopes = ["mandates:request", "payments:present"];
        let top = register(&service, "top", &scopes, 2, now).await;
        let sub = register(&service, "sub", &scopes, 1, now).await;
        let user = service
            .create_user("alice", &Password::new("correct horse battery staple"), now)
            .await
            .expect("create the user");
        Server {
            token_url: format!("{issuer}/oauth2/token"),
            issuer,
            service,
            client,
            top,
            sub,
            user_id: user.id,
            handle,
        }
    }

    /// A fresh access token for the top agent, bound to its key: the human's approval
    /// in-process, the code redeemed over HTTP.
    async fn subject_token(&self) -> String {
        let now = now_secs();
        let verifier = format!(
            "bench-verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz",
            now
        );
        let params = AuthorizationParams {
            response_type: Some("code".into()),
            client_id: Some(self.top.id.clone()),
            redirect_uri: Some(REDIRECT.into()),
            scope: Some("mandates:request payments:present".into()),
            state: Some("st".into()),
            code_challenge: Some(challenge_s256(&verifier)),
            code_challenge_method: Some("S256".into()),
            ..AuthorizationParams::default()
        };
        let (request, _) = self
            .service
            .authorization_request(&params)
            .await
            .unwrap_or_else(|e| panic!("authorization request refused: {e:?}"));
        let code = self
            .service
            .approve(&self.user_id, &request, now)
            .await
            .expect("approve");
        let assertion =
            make_assertion(&self.top.key, &self.top.id, &self.issuer, now).expect("assertion");
        let nonce = self.service.dpop_nonce(now);
        let proof = make_proof(
            &self.top.key,
            "POST",
            &self.token_url,
            now,
            None,
            Some(&nonce),
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
        let answer = self.send(&Signed { body, proof }).await;
        assert_eq!(answer.status, 200, "code redemption: {}", answer.body);
        let value: Value = serde_json::from_str(&answer.body).expect("JSON answer");
        value["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Signs one exchange of `subject` for the sub-agent: client assertion, actor token, proof.
    fn sign(&self, subject: &str, now: i64, nonce: &str) -> Signed {
        let assertion =
            make_assertion(&self.top.key, &self.top.id, &self.issuer, now).expect("assertion");
        let actor =
            make_assertion(&self.sub.key, &self.sub.id, &self.issuer, now).expect("actor token");
        let proof = make_proof(
            &self.top.key,
            "POST",
            &self.token_url,
            now,
            None,
            Some(nonce),
        )
        .expect("proof");
        let body = serde_urlencoded::to_string([
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("actor_token", actor.as_str()),
            ("actor_token_type", JWT_TYPE),
            ("scope", "payments:present"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ])
        .expect("form");
        Signed { body, proof }
    }

    async fn send(&self, signed: &Signed) -> Answer {
        let res = self
            .client
            .post(&self.token_url)
            .header("content-type", FORM)
            .header("dpop", &signed.proof)
            .body(signed.body.clone())
            .send()
            .await
            .expect("send the request");
        let status = res.status().as_u16();
        let nonce = res
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.text().await.expect("read the answer");
        Answer {
            status,
            body,
            nonce,
        }
    }

    /// Stops serving; returns the store for cleaning up.
    async fn stop(self) -> Store {
        drop(self.client);
        self.handle.abort();
        let _ = self.handle.await;
        self.service.store().clone()
    }
}

async fn register(
    service: &TokenService,
    name: &str,
    scopes: &[&str],
    depth: i64,
    now: i64,
) -> Agent {
    let key = SigningKey::generate(Some(format!("{name}-key"))).expect("agent key");
    let registration = AgentRegistration {
        name: name.into(),
        owner: "ops@example.com".into(),
        jwks: json!({"keys": [key.public().to_value()]}),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        audiences: vec![],
        max_delegation_depth: depth,
        federated_credentials: vec![],
        redirect_uris: vec![],
    };
    let agent = service
        .register_agent(&registration, now)
        .await
        .expect("register the agent");
    Agent { id: agent.id, key }
}

/// What one client task saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    signing: Duration,
    signed: u32,
}

impl Tally {
    fn record(&mut self, answer: &Answer, latency: Duration) {
        self.latencies.push(latency);
        if answer.status != 200 {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{}: {}", answer.status, answer.body));
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.signing += other.signing;
        self.signed += other.signed;
    }
}

/// One timed window's figures.
struct Row {
    backend: &'static str,
    mode: &'static str,
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    errors: usize,
    first_error: Option<String>,
    signing: Option<Duration>,
}

impl Row {
    fn new(backend: &'static str, mode: &'static str, mut tally: Tally, elapsed: Duration) -> Row {
        tally.latencies.sort_unstable();
        let pick = |q: f64| {
            let n = tally.latencies.len();
            match n {
                0 => Duration::ZERO,
                _ => tally.latencies[((n - 1) as f64 * q).round() as usize],
            }
        };
        Row {
            backend,
            mode,
            requests: tally.latencies.len(),
            elapsed,
            p50: pick(0.50),
            p99: pick(0.99),
            errors: tally.errors,
            first_error: tally.first_error,
            signing: (tally.signed > 0).then(|| tally.signing / tally.signed),
        }
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` tasks, each signing a request as it sends it, for `seconds`.
async fn live(
    server: &Arc<Server>,
    backend: &'static str,
    seconds: u64,
    concurrency: usize,
) -> Row {
    let subject = Arc::new(server.subject_token().await);
    let first_nonce = server.service.dpop_nonce(now_secs());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let server = server.clone();
        let subject = subject.clone();
        let mut nonce = first_nonce.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                let signed = server.sign(&subject, now_secs(), &nonce);
                tally.signing += t.elapsed();
                tally.signed += 1;
                let t = Instant::now();
                let answer = server.send(&signed).await;
                tally.record(&answer, t.elapsed());
                if let Some(fresh) = answer.nonce {
                    nonce = fresh;
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("client task"));
    }
    Row::new(backend, "live", tally, start.elapsed())
}

/// Signs `count` requests up front (on every core), then `concurrency` tasks send them for at
/// most `seconds`.
async fn presigned(
    server: &Arc<Server>,
    backend: &'static str,
    seconds: u64,
    concurrency: usize,
    count: usize,
) -> Row {
    let subject = server.subject_token().await;
    let now = now_secs();
    let nonce = server.service.dpop_nonce(now);
    let signing = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signed: Vec<Signed> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = count / threads + usize::from(t < count % threads);
                let (server, subject, nonce) = (&**server, &subject, &nonce);
                scope.spawn(move || {
                    (0..share)
                        .map(|_| server.sign(subject, now, nonce))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("signing thread"))
            .collect()
    });
    let signing = signing.elapsed();
    assert!(
        signing.as_secs_f64() + seconds as f64 <= 55.0,
        "signing ahead took {signing:?}: the nonce would not last the window"
    );

    let signed = Arc::new(signed);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (server, signed, next) = (server.clone(), signed.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let Some(request) = signed.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let t = Instant::now();
                let answer = server.send(request).await;
                tally.record(&answer, t.elapsed());
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    let mode = match tally.latencies.len() == count {
        true => "pre-signed (all sent)",
        false => "pre-signed",
    };
    Row::new(backend, mode, tally, elapsed)
}

/// The three signatures of one request, on an otherwise idle client (the server is idle).
fn quiet_signing(server: &Server) -> Duration {
    let now = now_secs();
    let nonce = server.service.dpop_nonce(now);
    let rounds = 300;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(server.sign("subject-token-placeholder", now, &nonce));
    }
    start.elapsed() / rounds
}

/// One backend to measure, and what to remove afterwards.
struct Backend {
    label: &'static str,
    config: StoreConfig,
    file: Option<PathBuf>,
}

fn backends() -> Vec<Backend> {
    let path = std::env::temp_dir().join(format!("ap2_bench_exchange_{}.db", std::process::id()));
    let mut out = vec![Backend {
        label: "sqlite",
        config: StoreConfig::sqlite(&path),
        file: Some(path),
    }];
    match std::env::var("AP2_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .subsec_nanos();
            let mut config = StoreConfig::new(url);
            config.schema = Some(format!("bench_exchange_{}_{nanos}", std::process::id()));
            out.push(Backend {
                label: "postgres",
                config,
                file: None,
            });
        }
        _ => eprintln!("AP2_BENCH_POSTGRES_URL is not set: PostgreSQL skipped"),
    }
    out
}

impl Backend {
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

fn print_table(rows: &[Row], concurrency: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!();
    println!("token exchange over HTTP, {concurrency} concurrent clients");
    println!(
        "{:<9} {:<22} {:>9} {:>8} {:>9} {:>8} {:>8} {:>7} {:>12}",
        "backend",
        "mode",
        "requests",
        "seconds",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "sign 3 µs"
    );
    for r in rows {
        let signing = r
            .signing
            .map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e6));
        println!(
            "{:<9} {:<22} {:>9} {:>8.1} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>12}",
            r.backend,
            r.mode,
            r.requests,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ms(r.p50),
            ms(r.p99),
            r.errors,
            signing
        );
    }
}

fn main() {
    let seconds = env_number("AP2_BENCH_SECONDS", 10).max(1);
    let concurrency = env_number("AP2_BENCH_CONCURRENCY", 8).max(1) as usize;
    let window = seconds.min(MAX_PRESIGNED_WINDOW);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut rows = Vec::new();
    let mut quiet = Vec::new();
    for backend in backends() {
        rt.block_on(async {
            let store = Store::open(&backend.config).await.expect("open the store");
            let server = Arc::new(Server::start(store, concurrency).await);
            let signing = quiet_signing(&server);
            quiet.push((backend.label, signing));

            let live = live(&server, backend.label, seconds, concurrency).await;
            // Enough pre-signed requests for the window at several times the live rate, as
            // many as the signing budget allows.
            let wanted = (live.rate() * 4.0 * window as f64) as usize;
            let affordable = (MAX_PRESIGN_SECONDS * 2.0 / signing.as_secs_f64()) as usize;
            let count = wanted.clamp(200, affordable.max(200));
            rows.push(live);
            let row = presigned(&server, backend.label, window, concurrency, count).await;
            rows.push(row);

            let server = Arc::try_unwrap(server).ok().expect("client tasks done");
            let store = server.stop().await;
            backend.clean_up(store).await;
        });
    }

    print_table(&rows, concurrency);
    for (label, signing) in &quiet {
        println!(
            "client signing, idle server ({label}): assertion + actor token + DPoP proof = {:.0} µs",
            signing.as_secs_f64() * 1e6
        );
    }
    println!(
        "(sign 3 µs: the same, averaged over the live run, while the server shares the cores)"
    );
    for r in &rows {
        assert_eq!(
            r.errors,
            0,
            "{} {}: {} answers were not 200; first: {}",
            r.backend,
            r.mode,
            r.errors,
            r.first_error.as_deref().unwrap_or("")
        );
    }
}
