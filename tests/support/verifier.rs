//! A verifier under test: a trusted wallet (delegation evidence required), a trusted SDK-style
//! issuer (cnf only), a trusted merchant, and agents with their own keys and DPoP-bound tokens
//! for the verifier, which close mandates and present them.

#![allow(dead_code)]

use std::sync::Arc;

use ap2_mandate::http::guard::LimitsConfig;
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::token::AccessTokenClaims;
use ap2_mandate::identity::TokenService;
use ap2_mandate::jose::{sha256_b64, sign_compact, KeySet, SigningKey};
use ap2_mandate::jwks::TrustedKeys;
use ap2_mandate::mandate::build::{close, issue, join};
use ap2_mandate::money::{Amount, Currency};
use ap2_mandate::store::records::IdentityRecords as _;
use ap2_mandate::store::Store;
use ap2_mandate::verifier::{EvidenceRule, IssuerProfile, VerifierConfig, VerifierService};
use ap2_mandate::wallet::{WalletConfig, WalletService, MANDATE_KEY_PURPOSE};
use serde_json::{json, Map, Value};

use super::oauth::{cookie, hidden, Harness, Resp, Roles, TestAgent, PASSWORD};

pub const SHOP_AUD: &str = "https://shop.example/checkout";

/// A verifier with a trusted wallet (evidence required), a trusted SDK-style issuer (cnf only)
/// and a trusted merchant.
pub struct World {
    pub h: Harness,
    pub wallet: SigningKey,
    pub sdk_root: SigningKey,
    pub merchant: SigningKey,
    pub aud: String,
}

/// An agent, its human, and its token for the verifier.
pub struct Actor {
    pub agent: TestAgent,
    pub user: String,
    pub token: String,
    pub claims: AccessTokenClaims,
}

pub async fn world(store: Store) -> World {
    world_at(store, None).await
}

/// A world served on loopback whose verifier takes the SDK-style issuer's keys from `sdk` and
/// the merchant keys from `merchants` (for keys published at JWKS URLs), instead of the world's
/// own keys given directly.
pub async fn world_trusting(store: Store, sdk: TrustedKeys, merchants: TrustedKeys) -> World {
    world_with_trust(store, None, None, Some((sdk, merchants))).await
}

/// A world served on loopback with these request limits.
pub async fn world_limited(store: Store, limits: LimitsConfig) -> World {
    world_with(store, None, Some(limits)).await
}

/// A world served on loopback (`issuer` `None`) or driven in-process as if served at `issuer`
/// (for serve processes that share the store and the master key).
pub async fn world_at(store: Store, issuer: Option<&str>) -> World {
    world_with(store, issuer, None).await
}

async fn world_with(store: Store, issuer: Option<&str>, limits: Option<LimitsConfig>) -> World {
    world_with_trust(store, issuer, limits, None).await
}

async fn world_with_trust(
    store: Store,
    issuer: Option<&str>,
    limits: Option<LimitsConfig>,
    trusting: Option<(TrustedKeys, TrustedKeys)>,
) -> World {
    let wallet = SigningKey::generate(Some("wallet-1".into())).unwrap();
    let sdk_root = SigningKey::generate(Some("sdk-root-1".into())).unwrap();
    let merchant = SigningKey::generate(Some("shop-1".into())).unwrap();
    let keys = (
        wallet.public().clone(),
        sdk_root.public().clone(),
        merchant.public().clone(),
    );
    let make = move |issuer: String, tokens: Arc<TokenService>| async move {
        let set = |k| {
            let mut s = KeySet::new();
            s.insert(k).unwrap();
            s
        };
        let (sdk_keys, merchant_keys) = match trusting {
            Some(given) => given,
            None => (set(keys.1).into(), set(keys.2).into()),
        };
        let mut issuers = vec![
            IssuerProfile {
                name: "wallet".into(),
                keys: set(keys.0).into(),
                evidence: EvidenceRule::Required,
            },
            IssuerProfile {
                name: "sdk".into(),
                keys: sdk_keys,
                evidence: EvidenceRule::CnfOnly,
            },
        ];
        // This instance's own wallet, trusted like any other wallet.
        let mut wallet_config = WalletConfig::new(&issuer);
        wallet_config.merchants = Some(merchant_keys.clone());
        let wallet = WalletService::new(wallet_config, tokens.clone())
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let own = tokens.purpose_key(MANDATE_KEY_PURPOSE, now).await.unwrap();
        issuers.push(IssuerProfile {
            name: "own wallet".into(),
            keys: set(own.public().clone()).into(),
            evidence: EvidenceRule::Required,
        });
        let mut config = VerifierConfig::new(format!("{issuer}/verifier"), issuers, merchant_keys);
        config.allowed_currencies = Some(vec![usd(), Currency::from_code("JPY").unwrap()]);
        config.max_payment = vec![Amount::parse_major("450.00", usd()).unwrap()];
        Roles {
            verifier: Some(Arc::new(VerifierService::new(config, tokens).unwrap())),
            wallet: Some(Arc::new(wallet)),
        }
    };
    let h = match issuer {
        None => Harness::loopback_with(store, limits, make).await,
        // The in-process instance beside serve processes prepares load: it does not limit agents.
        Some(issuer) => {
            let unlimited = LimitsConfig {
                agent_rate: 1e9,
                agent_burst: 1e9,
                ..LimitsConfig::default()
            };
            Harness::oneshot_at(store, issuer, limits.or(Some(unlimited)), make).await
        }
    };
    let aud = format!("{}/verifier", h.issuer);
    World {
        h,
        wallet,
        sdk_root,
        merchant,
        aud,
    }
}

impl World {
    pub async fn actor(&self, name: &str, user: &str) -> Actor {
        let agent = self
            .h
            .register(name, &["payments:present"], 0, &[&self.aud])
            .await;
        if self.h.service.store().user_by_username(user).await.is_err() {
            self.h.user(user).await;
        }
        self.token_for(agent, user).await
    }

    pub async fn token_for(&self, agent: TestAgent, user: &str) -> Actor {
        let aud = self.aud.clone();
        self.token_with_scope(agent, user, "payments:present", &aud)
            .await
    }

    /// A token of `agent` for `user` with `scope`, for the resource `aud`.
    pub async fn token_with_scope(
        &self,
        agent: TestAgent,
        user: &str,
        scope: &str,
        aud: &str,
    ) -> Actor {
        let (code, verifier) = self
            .h
            .authorize(&agent, user, scope, &[("resource", aud)])
            .await;
        let token = self.h.redeem(&agent, &code, &verifier).await;
        let claims = self
            .h
            .service
            .verify_token(&token, self.h.now(), false)
            .await
            .unwrap();
        Actor {
            user: claims.sub.clone(),
            agent,
            token,
            claims,
        }
    }

    /// The merchant's checkout: one boot at `amount` minor units of `currency`.
    pub fn checkout(&self, id: &str, amount: u64, currency: &str) -> String {
        self.checkout_by(&self.merchant, id, amount, currency)
    }

    /// The same checkout signed with `key`.
    pub fn checkout_by(&self, key: &SigningKey, id: &str, amount: u64, currency: &str) -> String {
        let body = json!({"id": id, "merchant": merchant(), "status": "ready_for_complete",
            "line_items": [{"id": "li_1", "item": {"id": "sku_boot", "title": "Boot", "price": amount},
                "quantity": 1, "totals": [{"type": "total", "amount": amount}]}],
            "currency": currency, "totals": [{"type": "total", "amount": amount}], "links": []});
        sign_compact(key, Some("JWT"), false, body.to_string().as_bytes()).unwrap()
    }

    /// Root claims naming the human and the delegation behind a mandate.
    pub fn evidence(&self, a: &Actor) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("iss".into(), "https://wallet.example".into());
        claims.insert("sub".into(), a.user.clone().into());
        claims.insert(
            "delegation".into(),
            json!({"agent_id": a.agent.id, "grant_id": a.claims.grant_id}),
        );
        claims
    }

    pub fn open_checkout(
        &self,
        issuer: &SigningKey,
        claims: Map<String, Value>,
        agent: &TestAgent,
    ) -> String {
        let now = self.h.now();
        let mandate = json!({"vct": "mandate.checkout.open.1", "constraints": [
            {"type": "checkout.line_items", "items": [{"id": "r1", "acceptable_items": [{"id": "sku_boot", "title": "Boot"}], "quantity": 1}]},
            {"type": "checkout.allowed_merchants", "allowed": [merchant()]}],
            "cnf": {"jwk": agent.key.public().to_value()}, "iat": now - 60, "exp": now + 3600});
        issue(issuer, "dc+sd-jwt", claims, mandate).unwrap()
    }

    pub fn open_payment(
        &self,
        issuer: &SigningKey,
        claims: Map<String, Value>,
        agent: &TestAgent,
        open_checkout: &str,
        extra: Vec<Value>,
    ) -> String {
        let now = self.h.now();
        let mut constraints = vec![
            json!({"type": "payment.reference", "conditional_transaction_id": sha256_b64(open_checkout.as_bytes())}),
            json!({"type": "payment.amount_range", "currency": "USD", "min": 1, "max": 50000}),
            json!({"type": "payment.allowed_payees", "allowed": [merchant()]}),
        ];
        constraints.extend(extra);
        let mandate = json!({"vct": "mandate.payment.open.1", "constraints": constraints,
            "cnf": {"jwk": agent.key.public().to_value()}, "iat": now - 60, "exp": now + 3600});
        issue(issuer, "dc+sd-jwt", claims, mandate).unwrap()
    }

    /// The open checkout and payment mandates the trusted wallet issues to `a`, with evidence.
    pub fn open_pair(&self, a: &Actor) -> (String, String) {
        let open_checkout = self.open_checkout(&self.wallet, self.evidence(a), &a.agent);
        let open_payment = self.open_payment(
            &self.wallet,
            self.evidence(a),
            &a.agent,
            &open_checkout,
            vec![],
        );
        (open_checkout, open_payment)
    }

    /// The order's checkout chain, closed for the merchant (not for us).
    pub fn order(&self, open_checkout: &str, agent: &TestAgent, jwt: &str) -> String {
        let closed = json!({"vct": "mandate.checkout.1", "checkout_jwt": jwt,
            "checkout_hash": sha256_b64(jwt.as_bytes())});
        let closing = close(
            &agent.key,
            open_checkout,
            closed,
            SHOP_AUD,
            "n-order",
            self.h.now(),
        )
        .unwrap();
        join(&[open_checkout, &closing])
    }

    /// Closes an open payment mandate for `jwt` under the verifier's challenge `nonce`.
    pub fn close_payment(
        &self,
        open_payment: &str,
        key: &SigningKey,
        jwt: &str,
        amount: u64,
        nonce: &str,
    ) -> String {
        let closed = json!({"vct": "mandate.payment.1", "transaction_id": sha256_b64(jwt.as_bytes()),
            "payee": merchant(), "payment_amount": {"amount": amount, "currency": "USD"},
            "payment_instrument": {"id": "pi_card_1", "type": "card", "description": "Visa ****1111"}});
        let closing = close(key, open_payment, closed, &self.aud, nonce, self.h.now()).unwrap();
        join(&[open_payment, &closing])
    }

    /// `POST /v1/challenges` with the actor's token.
    pub async fn challenge(&self, a: &Actor) -> String {
        let res = self
            .h
            .call(
                "POST",
                "/v1/challenges",
                &self.auth(a, &a.agent.key, "/v1/challenges"),
                None,
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
        assert_eq!(res.json()["aud"], self.aud.as_str());
        res.json()["nonce"].as_str().unwrap().to_owned()
    }

    pub fn auth(&self, a: &Actor, key: &SigningKey, path: &str) -> Vec<(&'static str, String)> {
        let htu = format!("{}{path}", self.h.issuer);
        let proof = make_proof(key, "POST", &htu, self.h.now(), Some(&a.token), None).unwrap();
        vec![
            ("authorization", format!("DPoP {}", a.token)),
            ("dpop", proof),
        ]
    }

    pub async fn post(
        &self,
        a: &Actor,
        path: &str,
        body: &Value,
        extra: &[(&'static str, String)],
    ) -> Resp {
        let mut headers = self.auth(a, &a.agent.key, path);
        headers.extend_from_slice(extra);
        self.h
            .call(
                "POST",
                path,
                &headers,
                Some(("application/json", body.to_string())),
            )
            .await
    }

    pub async fn present(&self, a: &Actor, body: &Value) -> Resp {
        self.post(a, "/v1/payments/verify", body, &[]).await
    }

    /// A complete, valid payment presentation by `a` of a fresh order.
    pub async fn fresh_payment(
        &self,
        a: &Actor,
        open_checkout: &str,
        open_payment: &str,
        id: &str,
        amount: u64,
    ) -> Value {
        let jwt = self.checkout(id, amount, "USD");
        let nonce = self.challenge(a).await;
        json!({"payment_mandate": self.close_payment(open_payment, &a.agent.key, &jwt, amount, &nonce),
            "checkout_jwt": jwt, "checkout_mandate": self.order(open_checkout, &a.agent, &jwt)})
    }
}

fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

pub fn merchant() -> Value {
    json!({"id": "mer_shop_1", "name": "Example Shop"})
}

impl World {
    /// Writes the wallet's, the SDK issuer's and the merchant's public JWKS files into `dir`.
    pub fn write_jwks(&self, dir: &std::path::Path) -> [std::path::PathBuf; 3] {
        let write = |name: &str, key: &SigningKey| {
            let path = dir.join(name);
            let doc = json!({"keys": [key.public().to_value()]});
            std::fs::write(&path, doc.to_string()).unwrap();
            path
        };
        [
            write("wallet.jwks.json", &self.wallet),
            write("sdk.jwks.json", &self.sdk_root),
            write("merchant.jwks.json", &self.merchant),
        ]
    }
}

/// The ledger id of an open payment mandate: SHA-256 of its root's signed bytes.
pub fn ledger_id(open_payment: &str) -> String {
    ap2_mandate::wallet::root_hash(open_payment)
}

impl World {
    /// The wallet's audience on this instance.
    pub fn wallet_aud(&self) -> String {
        format!("{}/wallet", self.h.issuer)
    }

    /// A request to a protected route with the actor's token and a fresh proof.
    pub async fn call_as(&self, a: &Actor, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let htu = format!("{}{path}", self.h.issuer);
        let proof = make_proof(
            &a.agent.key,
            method,
            &htu,
            self.h.now(),
            Some(&a.token),
            None,
        )
        .unwrap();
        let headers = [
            ("authorization", format!("DPoP {}", a.token)),
            ("dpop", proof),
        ];
        self.h
            .call(
                method,
                path,
                &headers,
                body.map(|b| ("application/json", b.to_string())),
            )
            .await
    }
}

/// A person signs in on a page with a sign-in form at `path` (a consent page, the mandates
/// page); the session cookie and the next page.
pub async fn sign_in_at(w: &World, path: &str, username: &str) -> (String, Resp) {
    let page = w.h.call("GET", path, &[], None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf_cookie = cookie(&page, "ap2_consent_csrf");
    let csrf = hidden(&page.body, "csrf");
    let form = [
        ("action", "signin"),
        ("csrf", csrf.as_str()),
        ("username", username),
        ("password", PASSWORD),
    ];
    let next =
        w.h.post_form(
            path,
            &[("cookie", format!("ap2_consent_csrf={csrf_cookie}"))],
            &form,
        )
        .await;
    (cookie(&next, "ap2_session"), next)
}

/// The person approves or denies consent request `id` from the review page they were shown.
pub async fn decide(w: &World, id: &str, session: &str, review: &Resp, action: &str) -> Resp {
    let csrf = hidden(&review.body, "csrf");
    w.h.post_form(
        &format!("/consent/{id}"),
        &[("cookie", format!("ap2_session={session}"))],
        &[("action", action), ("csrf", csrf.as_str())],
    )
    .await
}
