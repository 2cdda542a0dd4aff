//! The A2A binding of the verifier: `POST /a2a` (JSON-RPC) and the agent card at
//! `GET /.well-known/agent-card.json`.
//!
//! A merchant agent or a shopping agent sends one message whose data parts carry AP2 mandates
//! as the AP2 samples name them (`ap2.mandates.PaymentMandateSdJwt`,
//! `ap2.mandates.CheckoutMandateSdJwt`) and the merchant's `checkout_jwt`; the answer is a
//! message with one data part holding the signed receipt (`ap2.PaymentReceipt` or
//! `ap2.CheckoutReceipt`) and the decision under `verification`, exactly as the HTTP routes
//! give it. Protocol 1.0 (`SendMessage`, `A2A-Version: 1.0`) and 0.3 (`message/send`) are
//! served.
//!
//! The agent authenticates as on every verifier route: `Authorization: DPoP` and a proof for
//! `POST /a2a`; a missing or bad token is refused at the HTTP level (`401`), as A2A leaves
//! authentication to the transport. The message id is the idempotency key: the same message
//! sent again gets the first answer, and an id reused for other mandates is refused.
//! Everything signed travels as a string, since A2A clients may rewrite JSON numbers and key
//! order in data parts.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::verify::{checked_key, decide, RequestError, VerifyError};
use super::AppState;
use crate::verifier::{Presentation, Role};

/// The path of the JSON-RPC endpoint; DPoP proofs name it.
pub const A2A_PATH: &str = "/a2a";

/// The AP2 extension, as the AP2 samples advertise it.
pub const AP2_EXTENSION: &str = "https://github.com/google-agentic-commerce/ap2/v1";

const PAYMENT_KEY: &str = "ap2.mandates.PaymentMandateSdJwt";
const CHECKOUT_KEY: &str = "ap2.mandates.CheckoutMandateSdJwt";
const CHECKOUT_JWT_KEY: &str = "checkout_jwt";

/// The protocol a request speaks, which fixes the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// A2A 1.0: `SendMessage`, ProtoJSON names (`ROLE_AGENT`), `result.message`.
    V1,
    /// A2A 0.3: `message/send`, `kind` members, the message as the result.
    V03,
}

/// A JSON-RPC refusal: the one mapping from what went wrong to its code and fixed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RpcError {
    Parse,
    InvalidRequest,
    MethodNotFound,
    InvalidParams(&'static str),
    VersionNotSupported,
    Busy,
}

impl RpcError {
    fn wire(self) -> (i64, &'static str) {
        match self {
            RpcError::Parse => (-32700, "the request is not strict JSON"),
            RpcError::InvalidRequest => (-32600, "the request is not a JSON-RPC 2.0 request"),
            RpcError::MethodNotFound => (-32601, "only SendMessage (or message/send) is served"),
            RpcError::InvalidParams(rule) => (-32602, rule),
            RpcError::VersionNotSupported => (-32009, "A2A-Version must be 1.0 or 0.3"),
            RpcError::Busy => (
                -32603,
                "another message with this id is being decided; retry shortly",
            ),
        }
    }
}

/// `GET /.well-known/agent-card.json`: who we are, where to send messages, what we accept.
pub async fn agent_card(State(state): State<AppState>) -> Response {
    if state.verifier.is_none() {
        return RequestError::NotServed.into_response();
    }
    let base = state.tokens.config().issuer.trim_end_matches('/');
    let card = json!({
        "name": "ap2-mandate verifier",
        "description": "Verifies AP2 v0.2 checkout and payment mandates (SD-JWT delegate \
            chains) before money moves, and answers with a signed receipt. Get a challenge \
            from POST /v1/challenges first; authenticate with a DPoP-bound token.",
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [
            {"url": format!("{base}{A2A_PATH}"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": format!("{base}{A2A_PATH}"), "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
        ],
        "capabilities": {
            "streaming": false,
            "pushNotifications": false,
            "extensions": [{
                "uri": AP2_EXTENSION,
                "description": "Supports the Agent Payments Protocol.",
                "required": true,
                "params": {"roles": ["merchant", "credentials-provider"]}
            }]
        },
        "securitySchemes": {"dpop": {"httpAuthSecurityScheme": {
            "scheme": "DPoP",
            "description": "An access token from this instance's token service, bound to the \
                agent's key (RFC 9449), with scope payments:present."
        }}},
        "securityRequirements": [{"schemes": {"dpop": {"list": []}}}],
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "skills": [
            {"id": "verify-checkout-mandate", "name": "Verify a checkout mandate",
             "description": "Data parts: ap2.mandates.CheckoutMandateSdJwt and checkout_jwt. \
                Answers with ap2.CheckoutReceipt.",
             "tags": ["ap2", "merchant"]},
            {"id": "verify-payment-mandate", "name": "Verify a payment mandate",
             "description": "Data parts: ap2.mandates.PaymentMandateSdJwt, checkout_jwt and \
                optionally the order's ap2.mandates.CheckoutMandateSdJwt. Answers with \
                ap2.PaymentReceipt.",
             "tags": ["ap2", "credentials-provider"]}
        ]
    });
    let mut response = axum::Json(card).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `POST /a2a`: one message with AP2 mandates in, one message with the receipt out.
pub async fn send_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.verifier.is_none() {
        return RequestError::NotServed.into_response();
    }
    if super::forms::media_type(&headers).as_deref() != Some("application/json") {
        return RequestError::MediaType.into_response();
    }
    let Ok(request) = crate::json::parse(&body, super::verify::VERIFY_MAX_BODY) else {
        return rpc_refusal(&Value::Null, RpcError::Parse);
    };
    // An id that is not a string, an integer or null cannot be echoed: the answer's is null.
    let id = request
        .get("id")
        .filter(|id| valid_id(id))
        .cloned()
        .unwrap_or(Value::Null);
    let (dialect, message) = match envelope(&headers, &request) {
        Ok(found) => found,
        Err(e) => return rpc_refusal(&id, e),
    };
    let (presentation, message_id) = match mandates(message) {
        Ok(found) => found,
        Err(e) => return rpc_refusal(&id, e),
    };
    // What an exact retry repeats: the mandates and the checkout, not the JSON-RPC id.
    let retried = [
        presentation.role.action(),
        presentation.chain,
        presentation.checkout_jwt,
        presentation.order_chain.unwrap_or(""),
    ]
    .join("\n");
    let Ok(key) = checked_key(message_id) else {
        return rpc_refusal(
            &id,
            RpcError::InvalidParams("messageId must be 1 to 255 visible ASCII characters"),
        );
    };
    match decide(
        &state,
        &headers,
        retried.as_bytes(),
        A2A_PATH,
        &presentation,
        Ok(Some(key)),
    )
    .await
    {
        Ok(answer) => reply(&id, dialect, message, presentation.role, &answer),
        Err(VerifyError::Request(RequestError::Malformed(rule))) => {
            rpc_refusal(&id, RpcError::InvalidParams(rule))
        }
        Err(VerifyError::Request(RequestError::IdempotencyReused)) => rpc_refusal(
            &id,
            RpcError::InvalidParams("this messageId was sent before with other mandates"),
        ),
        Err(VerifyError::Request(RequestError::IdempotencyInUse)) => {
            rpc_refusal(&id, RpcError::Busy)
        }
        // Authentication, rate limits and an unavailable store stay HTTP-level refusals.
        Err(other) => other.into_response(),
    }
}

/// The dialect and the message of a JSON-RPC 2.0 request.
fn envelope<'a>(headers: &HeaderMap, request: &'a Value) -> Result<(Dialect, &'a Value), RpcError> {
    let object = request.as_object().ok_or(RpcError::InvalidRequest)?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
        || object.get("id").is_some_and(|id| !valid_id(id))
    {
        return Err(RpcError::InvalidRequest);
    }
    let method = object
        .get("method")
        .and_then(Value::as_str)
        .ok_or(RpcError::InvalidRequest)?;
    let version = headers
        .get("a2a-version")
        .map(|v| v.to_str().unwrap_or("?"))
        .unwrap_or("");
    let speaks = |major_minor: &str| {
        version == major_minor || version.starts_with(&format!("{major_minor}."))
    };
    let dialect = match method {
        "SendMessage" if speaks("1.0") => Dialect::V1,
        "message/send" if version.is_empty() || speaks("0.3") => Dialect::V03,
        "SendMessage" | "message/send" => return Err(RpcError::VersionNotSupported),
        _ => return Err(RpcError::MethodNotFound),
    };
    let message = object
        .get("params")
        .and_then(|p| p.get("message"))
        .filter(|m| m.is_object())
        .ok_or(RpcError::InvalidParams("params.message is required"))?;
    Ok((dialect, message))
}

/// The data members we read.
enum Member {
    Payment,
    Checkout,
    CheckoutJwt,
}

fn ours(name: &str) -> Option<Member> {
    match name {
        PAYMENT_KEY => Some(Member::Payment),
        CHECKOUT_KEY => Some(Member::Checkout),
        CHECKOUT_JWT_KEY => Some(Member::CheckoutJwt),
        _ => None,
    }
}

/// A JSON-RPC id we echo: a string, an integer or null.
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64() || id.is_null()
}

/// The presentation the message's data parts carry, and the message id.
fn mandates(message: &Value) -> Result<(Presentation<'_>, &str), RpcError> {
    let message_id = message
        .get("messageId")
        .and_then(Value::as_str)
        .ok_or(RpcError::InvalidParams("message.messageId is required"))?;
    let parts = message
        .get("parts")
        .and_then(Value::as_array)
        .ok_or(RpcError::InvalidParams("message.parts is required"))?;
    let (mut payment, mut checkout, mut checkout_jwt) = (None, None, None);
    for part in parts {
        // 1.0 parts are `{"data": …}`; 0.3 parts add `"kind": "data"`. Text and file parts,
        // and data parts without any of our members, are the conversation around the mandates
        // and are not read.
        let Some(data) = part.get("data").and_then(Value::as_object) else {
            continue;
        };
        if !data.keys().any(|k| ours(k).is_some()) {
            continue;
        }
        for (name, value) in data {
            let slot = match ours(name) {
                Some(Member::Payment) => &mut payment,
                Some(Member::Checkout) => &mut checkout,
                Some(Member::CheckoutJwt) => &mut checkout_jwt,
                None => {
                    return Err(RpcError::InvalidParams(
                        "a data part with AP2 mandates carries an unknown member",
                    ))
                }
            };
            let text = value
                .as_str()
                .filter(|v| !v.is_empty())
                .ok_or(RpcError::InvalidParams(
                    "mandates and the checkout JWT are non-empty strings",
                ))?;
            if slot.replace(text).is_some() {
                return Err(RpcError::InvalidParams("a data member is given twice"));
            }
        }
    }
    let checkout_jwt = checkout_jwt.ok_or(RpcError::InvalidParams(
        "the message carries no checkout_jwt",
    ))?;
    let presentation = match (payment, checkout) {
        (Some(payment), order) => Presentation {
            role: Role::Payment,
            chain: payment,
            checkout_jwt,
            order_chain: order,
        },
        (None, Some(checkout)) => Presentation {
            role: Role::Checkout,
            chain: checkout,
            checkout_jwt,
            order_chain: None,
        },
        (None, None) => {
            return Err(RpcError::InvalidParams(
                "the message carries no AP2 mandate",
            ))
        }
    };
    Ok((presentation, message_id))
}

/// The decision as an A2A message: the receipt under its AP2 name, the decision beside it.
fn reply(id: &Value, dialect: Dialect, request: &Value, role: Role, answer: &str) -> Response {
    let Ok(Value::Object(mut decision)) = serde_json::from_str::<Value>(answer) else {
        return RequestError::Unavailable.into_response();
    };
    let receipt = decision.remove("receipt").unwrap_or(Value::Null);
    let receipt_key = match role {
        Role::Payment => "ap2.PaymentReceipt",
        Role::Checkout => "ap2.CheckoutReceipt",
    };
    let data = json!({receipt_key: receipt, "verification": decision});
    let reply_id = match crate::identity::random_token(16) {
        Ok(token) => format!("msg_{token}"),
        Err(_) => return RequestError::Unavailable.into_response(),
    };
    let mut message = match dialect {
        Dialect::V1 => {
            json!({"messageId": reply_id, "role": "ROLE_AGENT", "parts": [{"data": data}]})
        }
        Dialect::V03 => json!({"kind": "message", "messageId": reply_id, "role": "agent",
            "parts": [{"kind": "data", "data": data}]}),
    };
    for member in ["contextId", "taskId"] {
        if let Some(value) = request.get(member).filter(|v| v.is_string()) {
            message[member] = value.clone();
        }
    }
    let result = match dialect {
        Dialect::V1 => json!({"message": message}),
        Dialect::V03 => message,
    };
    rpc_response(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// A JSON-RPC error, with HTTP 200 as JSON-RPC over HTTP expects.
fn rpc_refusal(id: &Value, error: RpcError) -> Response {
    let (code, message) = error.wire();
    tracing::debug!(code, reason = message, "A2A request refused");
    rpc_response(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

fn rpc_response(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
