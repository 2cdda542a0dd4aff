//! A token service under test: the router driven in-process (`oneshot`) or served on loopback
//! and called over real HTTP, with a clock the test moves, and agents that sign their own
//! assertions and DPoP proofs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use ap2_mandate::http::guard::LimitsConfig;
use ap2_mandate::http::{router, AppState, Clock};
use ap2_mandate::identity::assertion::{make_assertion, JWT_BEARER};
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::external::ExternalIssuerConfig;
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::{TokenService, TokenServiceConfig};
use ap2_mandate::jose::SigningKey;
use ap2_mandate::store::{MasterKey, Store};
use ap2_mandate::verifier::VerifierService;
use ap2_mandate::wallet::WalletService;
use axum::body::Body;
use axum::http::{HeaderMap, Request};
use serde_json::{json, Value};
use tower::ServiceExt as _;

pub const PASSWORD: &str = "correct horse battery staple";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

enum Transport {
    Oneshot(axum::Router),
    Http(reqwest::Client, tokio::task::JoinHandle<()>),
}

/// An answer: status, headers, body text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// The OAuth `error` code of a refusal.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// The roles served beside the token service.
#[derive(Default)]
pub struct Roles {
    pub verifier: Option<Arc<VerifierService>>,
    pub wallet: Option<Arc<WalletService>>,
}

impl Roles {
    fn apply(self, mut state: AppState) -> AppState {
        if let Some(v) = self.verifier {
            state = state.with_verifier(v);
        }
        if let Some(w) = self.wallet {
            state = state.with_wallet(w);
        }
        state
    }
}

/// An agent with its registered key.
pub struct TestAgent {
    pub id: String,
    pub key: SigningKey,
}

pub struct Harness {
    pub service: Arc<TokenService>,
    pub state: AppState,
    pub clock: Arc<AtomicI64>,
    pub admin: String,
    pub issuer: String,
    transport: Transport,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Transport::Http(_, handle) = &self.transport {
            handle.abort();
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Harness {
    /// The router driven in-process.
    pub async fn oneshot(store: Store) -> Harness {
        Self::oneshot_with(store, Vec::new()).await
    }

    /// The router driven in-process, trusting these external issuers.
    pub async fn oneshot_with(store: Store, external: Vec<ExternalIssuerConfig>) -> Harness {
        let (service, state, clock) = build(store, "http://127.0.0.1:8080".into(), external);
        let transport = Transport::Oneshot(router(state.clone()));
        Harness {
            service,
            state,
            clock,
            admin: ADMIN.into(),
            issuer: "http://127.0.0.1:8080".into(),
            transport,
        }
    }

    /// The router driven in-process as if served at `issuer` (for instances that share the
    /// store and the master key), with the verifier role `verifier` makes.
    pub async fn oneshot_at<F, Fut>(
        store: Store,
        issuer: &str,
        limits: Option<LimitsConfig>,
        roles: F,
    ) -> Harness
    where
        F: FnOnce(String, Arc<TokenService>) -> Fut,
        Fut: std::future::Future<Output = Roles>,
    {
        let (service, mut state, clock) = build(store, issuer.into(), Vec::new());
        if let Some(limits) = limits {
            state = state.with_limits(limits);
        }
        state = roles(issuer.to_owned(), service.clone()).await.apply(state);
        let transport = Transport::Oneshot(router(state.clone()));
        Harness {
            service,
            state,
            clock,
            admin: ADMIN.into(),
            issuer: issuer.into(),
            transport,
        }
    }

    /// Served on a loopback port and called over HTTP.
    pub async fn loopback(store: Store) -> Harness {
        Self::loopback_with(store, None, |_, _| async { Roles::default() }).await
    }

    /// Served on a loopback port, with the roles `roles` makes from the issuer URL and the
    /// token service.
    pub async fn loopback_with<F, Fut>(
        store: Store,
        limits: Option<LimitsConfig>,
        roles: F,
    ) -> Harness
    where
        F: FnOnce(String, Arc<TokenService>) -> Fut,
        Fut: std::future::Future<Output = Roles>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let (service, mut state, clock) = build(store, issuer.clone(), Vec::new());
        if let Some(limits) = limits {
            state = state.with_limits(limits);
        }
        state = roles(issuer.clone(), service.clone()).await.apply(state);
        let app = router(state.clone());
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let client = ap2_mandate::outbound::client(None, None).unwrap();
        Harness {
            service,
            state,
            clock,
            admin: ADMIN.into(),
            issuer,
            transport: Transport::Http(client, handle),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }

    /// One request.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&str, String)>,
    ) -> Resp {
        match &self.transport {
            Transport::Oneshot(app) => {
                let mut req = Request::builder().method(method).uri(path);
                for (name, value) in headers {
                    req = req.header(*name, value);
                }
                let req = match body {
                    Some((ctype, body)) => req.header("content-type", ctype).body(Body::from(body)),
                    None => req.body(Body::empty()),
                }
                .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                Resp {
                    status,
                    headers,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                }
            }
            Transport::Http(client, _) => {
                let url = format!("{}{path}", self.issuer);
                let mut req = client.request(method.parse().unwrap(), url);
                for (name, value) in headers {
                    req = req.header(*name, value);
                }
                if let Some((ctype, body)) = body {
                    req = req.header("content-type", ctype).body(body);
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                Resp {
                    status,
                    headers,
                    body: res.text().await.unwrap(),
                }
            }
        }
    }

    /// A form POST.
    pub async fn post_form(
        &self,
        path: &str,
        headers: &[(&str, String)],
        form: &[(&str, &str)],
    ) -> Resp {
        let body = serde_urlencoded::to_string(form).unwrap();
        self.call(
            "POST",
            path,
            headers,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    }

    /// Registers an agent over the admin API.
    pub async fn register(
        &self,
        name: &str,
        scopes: &[&str],
        depth: i64,
        audiences: &[&str],
    ) -> TestAgent {
        let key = SigningKey::generate(Some(format!("{name}-key"))).unwrap();
        let body = json!({
            "name": name,
            "owner": "ops@example.com",
            "jwks": {"keys": [key.public().to_value()]},
            "scopes": scopes,
            "audiences": audiences,
            "max_delegation_depth": depth,
        });
        let res = self.admin_json("POST", "/v1/agents", &body).await;
        assert_eq!(res.status, 201, "{}", res.body);
        TestAgent {
            id: res.json()["id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    pub async fn admin_json(&self, method: &str, path: &str, body: &Value) -> Resp {
        let auth = [("authorization", format!("Bearer {}", self.admin))];
        self.call(
            method,
            path,
            &auth,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    /// Creates a user.
    pub async fn user(&self, username: &str) -> String {
        self.service
            .create_user(username, &Password::new(PASSWORD), self.now())
            .await
            .unwrap()
            .id
    }

    /// The human signs in and approves: returns the code and the PKCE verifier.
    pub async fn authorize(
        &self,
        agent: &TestAgent,
        username: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> (String, String) {
        let verifier = format!("verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz", agent.id);
        let challenge = challenge_s256(&verifier);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &agent.id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "st-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        let query = serde_urlencoded::to_string(&params).unwrap();
        let page = self
            .call("GET", &format!("/oauth2/authorize?{query}"), &[], None)
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf_cookie = cookie(&page, "ap2_csrf");
        let csrf = hidden(&page.body, "csrf");

        let mut form = params.clone();
        form.extend([
            ("action", "signin"),
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", PASSWORD),
        ]);
        let consent = self
            .post_form(
                "/oauth2/authorize",
                &[("cookie", format!("ap2_csrf={csrf_cookie}"))],
                &form,
            )
            .await;
        assert_eq!(consent.status, 200, "{}", consent.body);
        let session = cookie(&consent, "ap2_session");
        let csrf = hidden(&consent.body, "csrf");

        let mut form = params.clone();
        form.extend([("action", "approve"), ("csrf", csrf.as_str())]);
        let done = self
            .post_form(
                "/oauth2/authorize",
                &[("cookie", format!("ap2_session={session}"))],
                &form,
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        let location = done.header("location").unwrap();
        let query = location.split_once('?').unwrap().1;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("st-1"));
        assert_eq!(get("iss").as_deref(), Some(self.issuer.as_str()));
        (get("code").expect("a code"), verifier)
    }

    /// A token request by `agent` with its own DPoP key and a valid nonce.
    pub async fn token(&self, agent: &TestAgent, params: &[(&str, &str)]) -> Resp {
        self.token_with(agent, &agent.key, params).await
    }

    /// A token request by `agent`, proving possession of `dpop_key`.
    pub async fn token_with(
        &self,
        agent: &TestAgent,
        dpop_key: &SigningKey,
        params: &[(&str, &str)],
    ) -> Resp {
        let now = self.now();
        let nonce = self.service.dpop_nonce(now);
        let htu = format!("{}/oauth2/token", self.issuer);
        let proof = make_proof(dpop_key, "POST", &htu, now, None, Some(&nonce)).unwrap();
        let assertion = make_assertion(&agent.key, &agent.id, &self.issuer, now).unwrap();
        let mut form = vec![
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        form.extend_from_slice(params);
        self.post_form("/oauth2/token", &[("dpop", proof)], &form)
            .await
    }

    /// Redeems a code: the access token.
    pub async fn redeem(&self, agent: &TestAgent, code: &str, verifier: &str) -> String {
        let res = self
            .token(
                agent,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", verifier),
                ],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        res.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// An actor token: an assertion by the sub-agent's key.
    pub fn actor_token(&self, agent: &TestAgent) -> String {
        make_assertion(&agent.key, &agent.id, &self.issuer, self.now()).unwrap()
    }

    /// `holder` exchanges `subject` for `actor` (with an actor token) with extra parameters.
    pub async fn exchange(
        &self,
        holder: &TestAgent,
        subject: &str,
        actor: Option<&TestAgent>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let actor_token = actor.map(|a| self.actor_token(a));
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(t) = &actor_token {
            form.push(("actor_token", t));
            form.push(("actor_token_type", JWT_TYPE));
        }
        form.extend_from_slice(extra);
        self.token(holder, &form).await
    }

    /// `GET /v1/whoami` with the token and a proof by `key`.
    pub async fn whoami(&self, token: &str, key: &SigningKey) -> Resp {
        let htu = format!("{}/v1/whoami", self.issuer);
        let proof = make_proof(key, "GET", &htu, self.now(), Some(token), None).unwrap();
        self.call(
            "GET",
            "/v1/whoami",
            &[("authorization", format!("DPoP {token}")), ("dpop", proof)],
            None,
        )
        .await
    }

    /// How many tokens the store holds.
    pub async fn token_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(self.service.store().pool())
            .await
            .unwrap()
    }
}

pub const REDIRECT: &str = "http://127.0.0.1:9999/callback";
const ADMIN: &str = "admin-token-for-tests";

/// The master key every test instance seals its signing keys with.
pub const MASTER_KEY: [u8; 32] = [7u8; 32];

fn build(
    store: Store,
    issuer: String,
    external: Vec<ExternalIssuerConfig>,
) -> (Arc<TokenService>, AppState, Arc<AtomicI64>) {
    let master = Arc::new(MasterKey::from_bytes(&MASTER_KEY).unwrap());
    let service = Arc::new(
        TokenService::new(store, master, TokenServiceConfig::new(issuer), external).unwrap(),
    );
    let clock = Arc::new(AtomicI64::new(now_secs()));
    let reader = clock.clone();
    let clock_fn: Clock = Arc::new(move || reader.load(Ordering::SeqCst));
    let state = AppState::new(service.clone(), ADMIN, clock_fn);
    (service, state, clock)
}

/// The value of a hidden input on a page.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} on the page"))
        + marker.len();
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].to_owned()
}

/// The value a response sets for a cookie.
pub fn cookie(res: &Resp, name: &str) -> String {
    res.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// A copy of a signing key (the same key pair).
pub fn clone_key(key: &SigningKey) -> SigningKey {
    SigningKey::from_jwk(&serde_json::from_str::<Value>(&key.to_private_jwk().unwrap()).unwrap())
        .unwrap()
}
