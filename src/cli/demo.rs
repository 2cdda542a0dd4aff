//! `ap2-mandate demo`: the whole story on a throwaway instance, told step by step.
//!
//! Everything runs for real: a temporary SQLite store, the three roles served over HTTP on an
//! ephemeral loopback port, an agent with its own key talking to them with DPoP-bound tokens, a
//! person signing in through the same forms a browser would post, a merchant signing its
//! checkout. Every step checks what it expects; the exit status is 0 only when all did.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use ap2_mandate::agent::{close_checkout, close_payment, request_token, AgentClient};
use ap2_mandate::http::{router, system_clock, AppState};
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::{random_token, TokenService, TokenServiceConfig};
use ap2_mandate::jose::{sign_compact, KeySet, SigningKey};
use ap2_mandate::store::{AuditLog as _, MasterKey, Store, StoreConfig};
use ap2_mandate::verifier::{EvidenceRule, IssuerProfile, VerifierConfig, VerifierService};
use ap2_mandate::wallet::{WalletConfig, WalletService};
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print one JSON document with every step instead of the story.
    #[arg(long)]
    json: bool,
}

/// Where the agent sends the person after sign-in; the demo reads the code from the redirect
/// instead of listening there.
const REDIRECT: &str = "http://127.0.0.1:8765/callback";
use ap2_mandate::identity::grants::token_types::ACCESS_TOKEN as ACCESS_TOKEN_TYPE;
use ap2_mandate::identity::grants::TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE;
const STEPS: usize = 16;

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = TempDir::new()?;
    let mut story = Story::new(args.json);
    let outcome = runtime.block_on(async {
        let instance = Instance::start(&dir.0).await?;
        let result = tell(&mut story, &instance).await;
        instance.stop().await;
        result
    });
    if let Err(e) = outcome {
        story.failed(&format!("{e:#}"));
    }
    Ok(story.finish())
}

/// The instance under demonstration: every role on one loopback port.
struct Instance {
    base: String,
    admin: String,
    service: Arc<TokenService>,
    merchant: SigningKey,
    wallet_aud: String,
    verifier_aud: String,
    server: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Instance {
    async fn start(dir: &std::path::Path) -> anyhow::Result<Instance> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on a loopback port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let store = Store::open(&StoreConfig::sqlite(&dir.join("ap2.db")))
            .await
            .map_err(|e| anyhow!("cannot open the store: {e}"))?;
        let master = MasterKey::load_or_create(&dir.join("master.key"))
            .map_err(|e| anyhow!("master key: {e}"))?;
        let service = Arc::new(
            TokenService::new(
                store,
                Arc::new(master),
                TokenServiceConfig::new(base.clone()),
                Vec::new(),
            )
            .map_err(|e| anyhow!(e))?,
        );
        let admin = random_token(32)?;
        let merchant = SigningKey::generate(Some("example-shop-2026".into()))?;
        let mut merchants = KeySet::new();
        merchants.insert(merchant.public().clone())?;

        let mut wallet_config = WalletConfig::new(&base);
        wallet_config.merchants = Some(merchants.clone().into());
        let wallet = WalletService::new(wallet_config, service.clone())
            .await
            .map_err(|e| anyhow!("wallet: {e}"))?;
        let own = super::serve::own_wallet_keys(&service).await?;
        let issuers = vec![IssuerProfile {
            name: "this instance's wallet".into(),
            keys: own.into(),
            evidence: EvidenceRule::Required,
        }];
        let verifier_aud = format!("{base}/verifier");
        let config = VerifierConfig::new(verifier_aud.clone(), issuers, merchants.into());
        let verifier =
            VerifierService::new(config, service.clone()).map_err(|e| anyhow!("verifier: {e}"))?;
        let wallet_aud = wallet.config().audience.clone();
        let state = AppState::new(service.clone(), &admin, system_clock())
            .with_wallet(Arc::new(wallet))
            .with_verifier(Arc::new(verifier));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Instance {
            base,
            admin,
            service,
            merchant,
            wallet_aud,
            verifier_aud,
            server,
            stop,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.service.store().close().await;
    }
}

/// The whole story; an `Err` is a step that could not even be attempted.
async fn tell(story: &mut Story, at: &Instance) -> anyhow::Result<()> {
    let web = Web::new(&at.base)?;
    story.intro(&format!(
        "A throwaway instance runs the token service, the wallet and the verifier at {} \
         (SQLite in a temporary directory).",
        at.base
    ));

    // 1. The operator registers the agent; it holds its own key, never the person's.
    story.step("The operator registers the agent \"shopper\" with its own P-256 key");
    let shopper = SigningKey::generate(Some("shopper-1".into()))?;
    let shopper_id = register(&web, at, "shopper", &shopper).await?;
    story.fact(&format!(
        "agent {shopper_id}, key thumbprint {}",
        shopper.public().thumbprint()
    ));

    // 2. A person, and her delegation through the authorization code flow with PKCE.
    story.step("Alice signs in and lets the shopper act for her (authorization code + PKCE)");
    let password = random_token(12)?;
    let alice = at
        .service
        .create_user("alice", &Password::new(&password), now())
        .await
        .map_err(|e| anyhow!("creating alice: {}", e.reason()))?;
    let broad = delegated(&web, at, &shopper_id, &shopper, &password).await?;
    let claims = unverified_claims(&broad)?;
    story.fact(&format!(
        "alice is {}; the shopper now holds a token for her: scope \"{}\", bound to its key \
         (cnf.jkt {})",
        alice.id,
        claims["scope"].as_str().unwrap_or(""),
        claims["cnf"]["jkt"].as_str().unwrap_or("")
    ));
    story.check(claims["sub"] == alice.id.as_str(), "the token names alice");

    // 3. Narrower tokens, one per resource.
    story.step("The shopper exchanges it for two narrower tokens: one for the wallet, one for the verifier");
    let wallet_token = exchanged(
        at,
        &shopper_id,
        &shopper,
        &broad,
        &at.wallet_aud,
        WALLET_SCOPE,
    )
    .await?;
    let verifier_token = exchanged(
        at,
        &shopper_id,
        &shopper,
        &broad,
        &at.verifier_aud,
        PRESENT_SCOPE,
    )
    .await?;
    for t in [&wallet_token, &verifier_token] {
        let c = unverified_claims(t)?;
        story.fact(&format!(
            "aud {}  scope \"{}\"  sub {}",
            c["aud"].as_str().unwrap_or(""),
            c["scope"].as_str().unwrap_or(""),
            c["sub"].as_str().unwrap_or("")
        ));
    }
    let to_wallet = AgentClient::new(&at.base, &at.base, copy(&shopper)?, &wallet_token);
    let to_verifier = AgentClient::new(&at.base, &at.base, copy(&shopper)?, &verifier_token);

    // 4. The proposal.
    story.step("The shopper asks the wallet for mandates: one boot from Example Shop, up to 150.00 USD a payment, 300.00 USD in all");
    let proposal = json!({"mode": "open",
        "checkout": {"constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Hiking boot"}], "quantity": 1}]},
            {"type": "checkout.allowed_merchants", "allowed": [shop()]}]},
        "payment": {"constraints": [
            {"type": "payment.amount_range", "currency": "USD", "min": 1, "max": 15000},
            {"type": "payment.allowed_payees", "allowed": [shop()]},
            {"type": "payment.budget", "max": 300, "currency": "USD"}]},
        "cnf": {"jwk": shopper.public().to_value()}});
    let created = to_wallet.request_mandates(&proposal).await?;
    let request_id = text(&created, "id")?;
    story.fact(&format!(
        "request {request_id} is {}; alice is sent to {}",
        created["status"].as_str().unwrap_or("?"),
        created["consent_url"].as_str().unwrap_or("?")
    ));

    // 5. Consent.
    story.step("Alice reads the consent page and approves");
    let consent_path = format!("/consent/{request_id}");
    let (session, review) = web.sign_in(&consent_path, "alice", &password).await?;
    for line in page_text(&review.body) {
        story.quote(&line);
    }
    let decided = web
        .post_form(
            &consent_path,
            Some(&format!("ap2_session={session}")),
            &[
                ("action", "approve"),
                ("csrf", &hidden(&review.body, "csrf")?),
            ],
        )
        .await?;
    story.check(decided.status == 200, "the wallet accepted her approval");
    let fetched = to_wallet
        .wait_for_decision(&request_id, std::time::Duration::from_secs(5))
        .await?;
    story.check(fetched["status"] == "approved", "the request is approved");
    let open_checkout = text(&fetched, "checkout_mandate")?;
    let open_payment = text(&fetched, "payment_mandate")?;
    let payment_mandate_id = text(&fetched, "payment_mandate_id")?;
    let root = ap2_mandate::danger::insecure_decode_chain(&open_payment)?;
    let root = &root[0].payload;
    story.fact(&format!(
        "two mandates signed by the wallet, bound to the shopper's key; the payment mandate says \
         sub {}, delegation {}, status-list index {}",
        root["sub"].as_str().unwrap_or("?"),
        root["delegation"],
        root["status"]["status_list"]["idx"]
    ));

    // 6. The merchant's checkout.
    story.step("Example Shop signs a checkout: one hiking boot, 129.00 USD");
    let checkout = checkout_jwt(&at.merchant, "chk_1001", 12900)?;
    story.fact(&format!(
        "checkout JWT of {} bytes, signed with the shop's key {}",
        checkout.len(),
        at.merchant.kid().unwrap_or("")
    ));

    // 7. Close and present the checkout.
    story.step("The shopper gets a challenge, closes the checkout mandate and presents it");
    let (nonce, aud) = to_verifier.challenge().await?;
    story.fact(&format!("challenge for aud {aud}, valid once"));
    let order = close_checkout(&open_checkout, &shopper, &checkout, &aud, &nonce, now())?;
    let decision = to_verifier.present_checkout(&order, &checkout).await?;
    expect_success(story, &decision, "order_id");

    // 8. Close and present the payment.
    story.step("The shopper closes the payment mandate for the same checkout and presents it");
    let (nonce, aud) = to_verifier.challenge().await?;
    let payment = close_payment(
        &open_payment,
        &shopper,
        &checkout,
        &card(),
        &aud,
        &nonce,
        now(),
    )?;
    let decision = to_verifier
        .present_payment(&payment, &checkout, Some(&order))
        .await?;
    expect_success(story, &decision, "payment_id");
    if let Some(receipt) = decision["receipt"].as_str() {
        let (header, claims) = ap2_mandate::danger::insecure_decode_jwt(receipt)?;
        story.fact(&format!(
            "receipt signed by {} (kid {}):",
            claims.get("iss").and_then(Value::as_str).unwrap_or("?"),
            header.get("kid").and_then(Value::as_str).unwrap_or("?")
        ));
        story.quote(&serde_json::to_string_pretty(&claims)?);
    }

    // 9. The same bytes again.
    story.step("An attacker replays the very same presentation");
    let decision = to_verifier
        .present_payment(&payment, &checkout, Some(&order))
        .await?;
    expect_refusal(story, &decision, "invalid_credential", "nonce_used");

    // 10. The same order, freshly closed.
    story.step("The shopper closes the same checkout again under a fresh challenge");
    let decision = pay(
        &to_verifier,
        &shopper,
        &open_checkout,
        &open_payment,
        &checkout,
    )
    .await?;
    expect_refusal(story, &decision, "invalid_mandate", "replayed");

    // 11. Over the cap alice approved.
    story.step("Example Shop asks 180.00 USD, above the 150.00 USD alice allowed per payment");
    let pricey = checkout_jwt(&at.merchant, "chk_1002", 18000)?;
    let decision = pay(
        &to_verifier,
        &shopper,
        &open_checkout,
        &open_payment,
        &pricey,
    )
    .await?;
    expect_refusal(story, &decision, "invalid_mandate", "amount_out_of_range");

    // 12. Another agent with a stolen chain.
    story.step("A second agent, with its own token for alice, presents the shopper's mandate");
    let other = SigningKey::generate(Some("other-1".into()))?;
    let other_id = register(&web, at, "other-agent", &other).await?;
    let other_broad = delegated(&web, at, &other_id, &other, &password).await?;
    let other_token = exchanged(
        at,
        &other_id,
        &other,
        &other_broad,
        &at.verifier_aud,
        PRESENT_SCOPE,
    )
    .await?;
    let thief = AgentClient::new(&at.base, &at.base, copy(&other)?, &other_token);
    // The shopper closed a payment under its own challenge; the thief lifted it before it was
    // presented, and cannot sign anything for the shopper's key.
    let stolen_checkout = checkout_jwt(&at.merchant, "chk_1003", 4900)?;
    let (nonce, aud) = to_verifier.challenge().await?;
    let lifted = close_payment(
        &open_payment,
        &shopper,
        &stolen_checkout,
        &card(),
        &aud,
        &nonce,
        now(),
    )?;
    let order = close_checkout(
        &open_checkout,
        &shopper,
        &stolen_checkout,
        &aud,
        &nonce,
        now(),
    )?;
    let decision = thief
        .present_payment(&lifted, &stolen_checkout, Some(&order))
        .await?;
    expect_refusal(story, &decision, "invalid_credential", "agent_key_mismatch");

    // 13. Revocation by the person herself.
    story.step("Alice signs in to her mandates page and revokes the payment mandate");
    let (session, list) = web.sign_in("/mandates", "alice", &password).await?;
    story.check(
        list.body.contains(&payment_mandate_id),
        "her page lists the payment mandate",
    );
    let revoked = web
        .post_form(
            "/mandates",
            Some(&format!("ap2_session={session}")),
            &[
                ("action", "revoke"),
                ("csrf", &hidden(&list.body, "csrf")?),
                ("mandate", &payment_mandate_id),
            ],
        )
        .await?;
    story.check(revoked.status == 200, "the wallet revoked it");
    for line in page_text(&revoked.body)
        .iter()
        .filter(|l| l.contains("revoked"))
    {
        story.quote(line);
    }

    // 14. Refused from then on.
    story.step("The shopper tries to pay for a new checkout with the revoked mandate");
    let after = checkout_jwt(&at.merchant, "chk_1004", 2900)?;
    let decision = pay(
        &to_verifier,
        &shopper,
        &open_checkout,
        &open_payment,
        &after,
    )
    .await?;
    expect_refusal(story, &decision, "invalid_credential", "mandate_revoked");

    // 15. What the auditor sees.
    story.step("The audit log records every decision: who, for whom, under what authority");
    let records = at.service.store().tail(200).await?;
    for r in records.iter().filter(|r| {
        r.record.action.starts_with("mandate.")
            || r.record.action.starts_with("payment")
            || r.record.action.starts_with("checkout")
    }) {
        let a = &r.record;
        story.quote(&format!(
            "#{:<3} {:<16} {:<8} {}",
            r.seq,
            a.action,
            a.outcome,
            [
                ("reason", &a.reason),
                ("agent", &a.agent_id),
                ("for", &a.user_id),
                ("grant", &a.grant_id),
                ("amount", &a.amount),
            ]
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
        ));
    }

    // 16. The chain is whole.
    story.step("ap2-mandate audit verify walks the hash chain");
    match at.service.store().verify().await? {
        Ok(count) => story.ok(&format!("audit chain intact: {count} records")),
        Err(broken) => story.failed(&format!(
            "audit chain broken at record {}: {}",
            broken.seq, broken.why
        )),
    }
    Ok(())
}

/// One payment attempt: a fresh challenge, the checkout and the payment closed under it.
async fn pay(
    client: &AgentClient,
    key: &SigningKey,
    open_checkout: &str,
    open_payment: &str,
    checkout: &str,
) -> anyhow::Result<Value> {
    let (nonce, aud) = client.challenge().await?;
    let order = close_checkout(open_checkout, key, checkout, &aud, &nonce, now())?;
    let payment = close_payment(open_payment, key, checkout, &card(), &aud, &nonce, now())?;
    Ok(client
        .present_payment(&payment, checkout, Some(&order))
        .await?)
}

fn expect_success(story: &mut Story, decision: &Value, id: &str) {
    if decision["status"] == "Success" {
        story.ok(&format!(
            "Success: {id} {}",
            decision[id].as_str().unwrap_or("?")
        ));
    } else {
        story.failed(&format!("expected Success, got {decision}"));
    }
}

fn expect_refusal(story: &mut Story, decision: &Value, code: &str, reason: &str) {
    let reasons: Vec<&str> = decision["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if decision["status"] == "Error" && decision["error"] == code && reasons.contains(&reason) {
        story.ok(&format!(
            "refused: {code} ({}), reason {}",
            decision["error_description"].as_str().unwrap_or(""),
            reasons.join(", ")
        ));
    } else {
        story.failed(&format!(
            "expected the refusal {code}/{reason}, got {decision}"
        ));
    }
}

/// `POST /v1/agents` as the operator.
async fn register(
    web: &Web,
    at: &Instance,
    name: &str,
    key: &SigningKey,
) -> anyhow::Result<String> {
    let body = json!({"name": name, "owner": "ops@agents.example",
        "jwks": {"keys": [key.public().to_value()]},
        "scopes": ["mandates:request", "payments:present"],
        "audiences": [at.wallet_aud, at.verifier_aud],
        "max_delegation_depth": 0, "redirect_uris": [REDIRECT]});
    let res = web
        .send(
            web.http
                .post(web.url("/v1/agents"))
                .bearer_auth(&at.admin)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await?;
    if res.status != 201 {
        bail!("registering {name}: {} {}", res.status, res.body);
    }
    text(&res.json()?, "id")
}

/// The person signs in on the authorization page and approves the agent: the code and the
/// PKCE verifier.
async fn delegate(
    web: &Web,
    agent_id: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let verifier = random_token(32)?;
    let challenge = challenge_s256(&verifier);
    let state = random_token(8)?;
    let params = [
        ("response_type", "code"),
        ("client_id", agent_id),
        ("redirect_uri", REDIRECT),
        ("scope", "mandates:request payments:present"),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let query = serde_urlencoded::to_string(params)?;
    let page = web.get(&format!("/oauth2/authorize?{query}"), None).await?;
    let csrf_cookie = page.cookie("ap2_csrf")?;
    let mut form = params.to_vec();
    let csrf = hidden(&page.body, "csrf")?;
    form.extend([
        ("action", "signin"),
        ("csrf", &csrf),
        ("username", username),
        ("password", password),
    ]);
    let approve = web
        .post_form(
            "/oauth2/authorize",
            Some(&format!("ap2_csrf={csrf_cookie}")),
            &form,
        )
        .await?;
    if approve.status != 200 {
        bail!("sign-in refused: {} {}", approve.status, approve.body);
    }
    let session = approve.cookie("ap2_session")?;
    let csrf = hidden(&approve.body, "csrf")?;
    let mut form = params.to_vec();
    form.extend([("action", "approve"), ("csrf", &csrf)]);
    let done = web
        .post_form(
            "/oauth2/authorize",
            Some(&format!("ap2_session={session}")),
            &form,
        )
        .await?;
    let location = done
        .header("location")
        .ok_or_else(|| anyhow!("approval did not redirect: {} {}", done.status, done.body))?;
    let query = location.split_once('?').map_or("", |(_, q)| q);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)?;
    let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("state").as_deref() != Some(state.as_str()) {
        bail!("the redirect carries another state");
    }
    let code = get("code").ok_or_else(|| anyhow!("the redirect carries no code"))?;
    Ok((code, verifier))
}

const WALLET_SCOPE: &str = "mandates:request";
const PRESENT_SCOPE: &str = "payments:present";

/// Alice delegates to the agent in her browser; the agent redeems the code: its broad token.
async fn delegated(
    web: &Web,
    at: &Instance,
    agent_id: &str,
    key: &SigningKey,
    password: &str,
) -> anyhow::Result<String> {
    let (code, pkce) = delegate(web, agent_id, "alice", password).await?;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", pkce.as_str()),
    ];
    token(at, agent_id, key, &params).await
}

/// The agent exchanges `broad` for a token for `resource` with `scope` alone.
async fn exchanged(
    at: &Instance,
    agent_id: &str,
    key: &SigningKey,
    broad: &str,
    resource: &str,
    scope: &str,
) -> anyhow::Result<String> {
    let params = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", broad),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("resource", resource),
        ("scope", scope),
    ];
    token(at, agent_id, key, &params).await
}

/// A token from the token service for `client_id`, proving `key`.
async fn token(
    at: &Instance,
    client_id: &str,
    key: &SigningKey,
    params: &[(&str, &str)],
) -> anyhow::Result<String> {
    let http = ap2_mandate::outbound::client(None, None).map_err(|e| anyhow!(e))?;
    let answer = request_token(&http, &at.base, &at.base, client_id, key, params).await?;
    text(&answer, "access_token")
}

fn checkout_jwt(merchant: &SigningKey, id: &str, amount: u64) -> anyhow::Result<String> {
    let body = json!({"id": id, "merchant": shop(), "status": "ready_for_complete",
        "line_items": [{"id": "li_1", "item": {"id": "sku_boot", "title": "Hiking boot", "price": amount},
            "quantity": 1, "totals": [{"type": "total", "amount": amount}]}],
        "currency": "USD", "totals": [{"type": "total", "amount": amount}], "links": []});
    Ok(sign_compact(
        merchant,
        Some("JWT"),
        false,
        body.to_string().as_bytes(),
    )?)
}

fn shop() -> Value {
    json!({"id": "mer_example_shop", "name": "Example Shop"})
}

fn card() -> Value {
    json!({"id": "pi_card_1", "type": "card", "description": "Visa ending 1111"})
}

fn copy(key: &SigningKey) -> anyhow::Result<SigningKey> {
    let jwk: Value = serde_json::from_str(&key.to_private_jwk()?)?;
    Ok(SigningKey::from_jwk(&jwk)?)
}

fn text(value: &Value, member: &str) -> anyhow::Result<String> {
    value[member]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the answer has no {member}: {value}"))
}

/// A token's claims, read for display only (the server verified it).
fn unverified_claims(jwt: &str) -> anyhow::Result<Value> {
    let (_, claims) = ap2_mandate::danger::insecure_decode_jwt(jwt)?;
    Ok(Value::Object(claims))
}

fn now() -> i64 {
    (system_clock())()
}

/// The value of a hidden form input on a page.
fn hidden(page: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .ok_or_else(|| anyhow!("the page has no {name} field"))?
        + marker.len();
    let end = page[start..]
        .find('"')
        .ok_or_else(|| anyhow!("the {name} field is cut short"))?;
    Ok(page[start..start + end].to_owned())
}

/// The readable text of one of our pages: the body, one line per block, without the forms.
fn page_text(html: &str) -> Vec<String> {
    let body = html.split_once("<body>").map_or(html, |(_, b)| b);
    let body = body.split("<form").next().unwrap_or(body);
    let mut out = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    for c in body.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/');
                if ["p", "li", "h1", "h2", "ul", "br", "main", "div"]
                    .iter()
                    .any(|t| name.split_whitespace().next() == Some(*t))
                {
                    out.push('\n');
                }
                if name.starts_with("li") && !tag.starts_with('/') {
                    out.push_str("• ");
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A person's browser, as far as the demo needs one: no redirects followed, cookies by hand.
struct Web {
    http: reqwest::Client,
    base: String,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn cookie(&self, name: &str) -> anyhow::Result<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&format!("{name}="))
                    .and_then(|r| r.split(';').next())
                    .map(str::to_owned)
            })
            .ok_or_else(|| anyhow!("the page set no {name} cookie ({})", self.status))
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

impl Web {
    fn new(base: &str) -> anyhow::Result<Web> {
        let http = ap2_mandate::outbound::client(None, None).map_err(|e| anyhow!(e))?;
        Ok(Web {
            http,
            base: base.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Page> {
        let res = request.send().await?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await?;
        Ok(Page {
            status,
            headers,
            body,
        })
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> anyhow::Result<Page> {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }

    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Page> {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form)?);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }

    /// Signs in on a page with a sign-in form: the session cookie and the page that follows.
    async fn sign_in(
        &self,
        path: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(String, Page)> {
        let form_page = self.get(path, None).await?;
        let csrf_cookie = form_page.cookie("ap2_consent_csrf")?;
        let csrf = hidden(&form_page.body, "csrf")?;
        let next = self
            .post_form(
                path,
                Some(&format!("ap2_consent_csrf={csrf_cookie}")),
                &[
                    ("action", "signin"),
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await?;
        if next.status != 200 {
            bail!("sign-in at {path} refused: {} {}", next.status, next.body);
        }
        Ok((next.cookie("ap2_session")?, next))
    }
}

/// One line of the story on standard output; a closed pipe (`| head`) ends the printing, not
/// the demo.
macro_rules! emit {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The narration: numbered steps with their facts, in colour on a terminal, plain in a pipe or
/// with `NO_COLOR`, or one JSON document.
struct Story {
    json: bool,
    color: bool,
    step: usize,
    steps: Vec<Value>,
    failures: usize,
}

impl Story {
    fn new(json: bool) -> Story {
        let color = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Story {
            json,
            color,
            step: 0,
            steps: Vec::new(),
            failures: 0,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        match self.color {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_owned(),
        }
    }

    fn intro(&mut self, text: &str) {
        if !self.json {
            emit!("{}\n{text}", self.paint("1", "ap2-mandate demo"));
        }
    }

    fn step(&mut self, title: &str) {
        self.step += 1;
        self.steps
            .push(json!({"step": self.step, "title": title, "ok": true, "facts": []}));
        if !self.json {
            let counter = format!("[{:>2}/{STEPS}]", self.step);
            emit!(
                "\n{} {}",
                self.paint("36", &counter),
                self.paint("1", title)
            );
        }
    }

    fn record(&mut self, kind: &str, text: &str) {
        if let Some(step) = self.steps.last_mut() {
            if let Some(facts) = step["facts"].as_array_mut() {
                facts.push(json!({kind: text}));
            }
        }
    }

    fn fact(&mut self, text: &str) {
        self.record("fact", text);
        if !self.json {
            emit!("        {text}");
        }
    }

    fn quote(&mut self, text: &str) {
        self.record("quote", text);
        if !self.json {
            for line in text.lines() {
                emit!("        {} {line}", self.paint("2", "│"));
            }
        }
    }

    fn ok(&mut self, text: &str) {
        self.record("ok", text);
        if !self.json {
            emit!("        {} {text}", self.paint("32", "✔"));
        }
    }

    fn failed(&mut self, text: &str) {
        self.failures += 1;
        self.record("failed", text);
        if let Some(step) = self.steps.last_mut() {
            step["ok"] = false.into();
        }
        if !self.json {
            emit!("        {} {text}", self.paint("31", "✘ unexpected:"));
        }
    }

    fn check(&mut self, held: bool, what: &str) {
        match held {
            true => self.ok(what),
            false => self.failed(&format!("not so: {what}")),
        }
    }

    fn finish(self) -> ExitCode {
        let complete = self.step == STEPS && self.failures == 0;
        if self.json {
            emit!(
                "{:#}",
                json!({"ok": complete, "steps": self.steps, "failures": self.failures})
            );
        } else if complete {
            emit!(
                "\n{}",
                self.paint("32;1", "Every step behaved as expected.")
            );
        } else {
            emit!(
                "\n{}",
                self.paint(
                    "31;1",
                    &format!(
                        "{} of {STEPS} steps did not behave as expected ({} unexpected outcomes).",
                        self.steps.iter().filter(|s| s["ok"] == false).count()
                            + (STEPS - self.step),
                        self.failures
                    )
                )
            );
        }
        match complete {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        }
    }
}

/// A directory removed when the demo ends, whatever happened.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("ap2-demo-{}", random_token(8)?));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
