//! The agent's side: an HTTP client for the wallet and the verifier that proves possession of
//! the agent's key on every call (DPoP), and the closing of open mandates.
//!
//! The client holds the agent's key and an access token the token service issued to it; it
//! never holds a user's key. Closing reads the merchant's checkout the agent was given (the
//! verifier checks the merchant's signature; the agent only copies the amount and payee it must
//! pay) and signs a closing hop for the verifier's challenge.

use std::time::Duration;

use serde_json::{json, Value};

use crate::identity::dpop::make_proof;
use crate::jose::{sha256_b64, SigningKey};
use crate::mandate::build::{close, join, present};

/// Now, in Unix seconds: the `iat` of proofs and assertions.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server could not be reached or answered unreadably.
    #[error("transport: {0}")]
    Transport(String),
    /// The server refused; its status and answer.
    #[error("refused with {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The answer body.
        body: String,
    },
    /// A mandate, checkout or key could not be used.
    #[error("{0}")]
    Invalid(&'static str),
}

/// An agent talking to one ap2-mandate instance.
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    issuer: String,
    key: SigningKey,
    token: String,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for the instance at `base` (whose issuer URL, the base of DPoP `htu`, is
    /// `issuer`), with the agent's DPoP key and its access token.
    pub fn new(base: &str, issuer: &str, key: SigningKey, token: &str) -> Self {
        AgentClient {
            http: crate::outbound::client(None, None).unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            issuer: issuer.trim_end_matches('/').to_owned(),
            key,
            token: token.to_owned(),
        }
    }

    /// The same client over another HTTP client (one that trusts a private CA, say).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// One call with `Authorization: DPoP` and a fresh proof; the JSON answer of a 2xx.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AgentError> {
        if !crate::identity::https_or_loopback(&self.base) {
            return Err(AgentError::Invalid(
                "the instance's URL must be https (plain http only on loopback)",
            ));
        }
        let now = unix_now();
        let proof = make_proof(
            &self.key,
            method,
            &format!("{}{path}", self.issuer),
            now,
            Some(&self.token),
            None,
        )
        .map_err(|_| AgentError::Invalid("cannot sign a DPoP proof with this key"))?;
        let method: reqwest::Method = method
            .parse()
            .map_err(|_| AgentError::Invalid("unknown HTTP method"))?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("DPoP {}", self.token))
            .header("dpop", proof);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req
            .send()
            .await
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        let status = res.status().as_u16();
        let text = res
            .text()
            .await
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(AgentError::Refused { status, body: text });
        }
        serde_json::from_str(&text).map_err(|e| AgentError::Transport(e.to_string()))
    }

    /// Proposes mandates to the wallet; the request's id and consent URL.
    pub async fn request_mandates(&self, proposal: &Value) -> Result<Value, AgentError> {
        self.call("POST", "/v1/mandate-requests", Some(proposal))
            .await
    }

    /// Polls a request until the person decides or `timeout` passes; its last state.
    pub async fn wait_for_decision(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let state = self
                .call("GET", &format!("/v1/mandate-requests/{id}"), None)
                .await?;
            if state["status"] != "pending" || std::time::Instant::now() >= deadline {
                return Ok(state);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A fresh challenge from the verifier: `(nonce, aud)`.
    pub async fn challenge(&self) -> Result<(String, String), AgentError> {
        let answer = self
            .call("POST", "/v1/challenges", Some(&json!({})))
            .await?;
        match (answer["nonce"].as_str(), answer["aud"].as_str()) {
            (Some(n), Some(a)) => Ok((n.to_owned(), a.to_owned())),
            _ => Err(AgentError::Transport(
                "a challenge without nonce or aud".into(),
            )),
        }
    }

    /// Presents a payment to the verifier; its decision.
    pub async fn present_payment(
        &self,
        chain: &str,
        checkout_jwt: &str,
        order_chain: Option<&str>,
    ) -> Result<Value, AgentError> {
        let mut body = json!({"payment_mandate": chain, "checkout_jwt": checkout_jwt});
        if let Some(order) = order_chain {
            body["checkout_mandate"] = order.into();
        }
        self.call("POST", "/v1/payments/verify", Some(&body)).await
    }

    /// Presents a checkout mandate to the verifier; its decision.
    pub async fn present_checkout(
        &self,
        chain: &str,
        checkout_jwt: &str,
    ) -> Result<Value, AgentError> {
        let body = json!({"checkout_mandate": chain, "checkout_jwt": checkout_jwt});
        self.call("POST", "/v1/checkouts/verify", Some(&body)).await
    }
}

/// Re-presents an issued mandate without the disclosures of the listed entries (allowed
/// merchants, payees, instruments, acceptable items: array elements whose `id` is listed), so a
/// verifier learns only what it needs. The mandate's own disclosure is always kept.
pub fn withhold(mandate: &str, ids: &[String]) -> Result<String, AgentError> {
    if ids.is_empty() {
        return Ok(mandate.to_owned());
    }
    present(mandate, |d| {
        let id = d.value().get("id").and_then(Value::as_str);
        d.name().is_some() || !id.is_some_and(|id| ids.iter().any(|w| w == id))
    })
    .map_err(|_| AgentError::Invalid("the mandate's disclosures cannot be read"))
}

/// Closes an open checkout mandate for `checkout_jwt` under the verifier's challenge.
pub fn close_checkout(
    open: &str,
    agent_key: &SigningKey,
    checkout_jwt: &str,
    aud: &str,
    nonce: &str,
    now: i64,
) -> Result<String, AgentError> {
    let closed = json!({"vct": "mandate.checkout.1", "checkout_jwt": checkout_jwt,
        "checkout_hash": sha256_b64(checkout_jwt.as_bytes())});
    let hop = close(agent_key, open, closed, aud, nonce, now)
        .map_err(|_| AgentError::Invalid("cannot sign the closing hop"))?;
    Ok(join(&[open, &hop]))
}

/// Closes an open payment mandate to pay `checkout_jwt` with `instrument` under the verifier's
/// challenge: the payee and the amount are the checkout's merchant and total.
pub fn close_payment(
    open: &str,
    agent_key: &SigningKey,
    checkout_jwt: &str,
    instrument: &Value,
    aud: &str,
    nonce: &str,
    now: i64,
) -> Result<String, AgentError> {
    // The agent reads the checkout it was handed only to copy what it must pay; the verifier
    // checks the merchant's signature and that the payment matches it.
    let (_, checkout) = crate::danger::insecure_decode_jwt(checkout_jwt)
        .map_err(|_| AgentError::Invalid("the checkout JWT cannot be read"))?;
    let payee = checkout
        .get("merchant")
        .cloned()
        .ok_or(AgentError::Invalid("the checkout names no merchant"))?;
    let total = checkout
        .get("totals")
        .and_then(Value::as_array)
        .and_then(|t| t.iter().find(|t| t["type"] == "total"))
        .and_then(|t| t["amount"].as_u64())
        .ok_or(AgentError::Invalid("the checkout has no total"))?;
    let currency = checkout
        .get("currency")
        .and_then(Value::as_str)
        .ok_or(AgentError::Invalid("the checkout has no currency"))?;
    let closed = json!({"vct": "mandate.payment.1",
        "transaction_id": sha256_b64(checkout_jwt.as_bytes()), "payee": payee,
        "payment_amount": {"amount": total, "currency": currency},
        "payment_instrument": instrument});
    let hop = close(agent_key, open, closed, aud, nonce, now)
        .map_err(|_| AgentError::Invalid("cannot sign the closing hop"))?;
    Ok(join(&[open, &hop]))
}

/// A token request to the token service at `base` (issuer `issuer`) as agent `client_id`:
/// `private_key_jwt` client authentication and a DPoP proof by `key`, retried once with the
/// server's DPoP nonce when it asks for one (RFC 9449 §8). The token response.
pub async fn request_token(
    http: &reqwest::Client,
    base: &str,
    issuer: &str,
    client_id: &str,
    key: &SigningKey,
    params: &[(&str, &str)],
) -> Result<Value, AgentError> {
    if !crate::identity::https_or_loopback(base) {
        return Err(AgentError::Invalid(
            "the token service's URL must be https (plain http only on loopback)",
        ));
    }
    let issuer = issuer.trim_end_matches('/');
    let url = format!("{}/oauth2/token", base.trim_end_matches('/'));
    let htu = format!("{issuer}/oauth2/token");
    let mut nonce: Option<String> = None;
    loop {
        let now = unix_now();
        let proof = make_proof(key, "POST", &htu, now, None, nonce.as_deref())
            .map_err(|_| AgentError::Invalid("cannot sign a DPoP proof with this key"))?;
        let assertion = crate::identity::assertion::make_assertion(key, client_id, issuer, now)
            .map_err(|_| AgentError::Invalid("cannot sign a client assertion with this key"))?;
        let mut form = vec![
            (
                "client_assertion_type",
                crate::identity::assertion::JWT_BEARER,
            ),
            ("client_assertion", assertion.as_str()),
        ];
        form.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&form)
            .map_err(|_| AgentError::Invalid("token request parameters cannot be encoded"))?;
        let res = http
            .post(&url)
            .header("dpop", proof)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        let status = res.status().as_u16();
        let asked = res
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res
            .text()
            .await
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        if status == 200 {
            return serde_json::from_str(&text).map_err(|e| AgentError::Transport(e.to_string()));
        }
        match asked {
            Some(n) if nonce.is_none() && text.contains("use_dpop_nonce") => nonce = Some(n),
            _ => return Err(AgentError::Refused { status, body: text }),
        }
    }
}
