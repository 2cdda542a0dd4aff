//! The A2A binding over real HTTP on loopback: the agent card, `SendMessage` (A2A 1.0) and
//! `message/send` (0.3) carrying AP2 mandates in data parts, answered with a signed receipt.
//!
//! The interoperability test drives it with the `a2a-sdk` Python client (from the virtual
//! environment `.ci/run` creates; `AP2_A2A_PYTHON` is its interpreter). Without it that test
//! says so and passes, unless `AP2_REQUIRE_A2A=1` (as in CI). The protocol edges are checked
//! from Rust with raw JSON-RPC.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::jose::{HeaderPolicy, KeySet, TypRule, UnverifiedJws};
use serde_json::{json, Value};
use support::oauth::Resp;
use support::verifier::{world, Actor, World};

/// The data parts of a payment presentation, as the AP2 samples name them.
fn parts(body: &Value) -> Vec<Value> {
    vec![
        json!({"ap2.mandates.PaymentMandateSdJwt": body["payment_mandate"]}),
        json!({"ap2.mandates.CheckoutMandateSdJwt": body["checkout_mandate"]}),
        json!({"checkout_jwt": body["checkout_jwt"]}),
    ]
}

fn dpop_headers(w: &World, a: &Actor) -> Value {
    let htu = format!("{}/a2a", w.h.issuer);
    let proof = make_proof(&a.agent.key, "POST", &htu, w.h.now(), Some(&a.token), None).unwrap();
    json!({"Authorization": format!("DPoP {}", a.token), "DPoP": proof})
}

/// A JSON-RPC request sent by hand, with the agent's token and a fresh proof.
async fn rpc(w: &World, a: &Actor, version: Option<&str>, request: &Value) -> Resp {
    let auth = dpop_headers(w, a);
    let mut headers = vec![
        (
            "authorization",
            auth["Authorization"].as_str().unwrap().to_owned(),
        ),
        ("dpop", auth["DPoP"].as_str().unwrap().to_owned()),
    ];
    if let Some(v) = version {
        headers.push(("a2a-version", v.to_owned()));
    }
    w.h.call(
        "POST",
        "/a2a",
        &headers,
        Some(("application/json", request.to_string())),
    )
    .await
}

/// A 1.0 `SendMessage` request with these data parts.
fn send(message_id: &str, data: Vec<Value>) -> Value {
    let parts: Vec<Value> = data.into_iter().map(|d| json!({"data": d})).collect();
    json!({"jsonrpc": "2.0", "id": "rq-1", "method": "SendMessage",
        "params": {"message": {"messageId": message_id, "role": "ROLE_USER", "parts": parts}}})
}

/// 0.3 data parts.
fn kind_data(data: Vec<Value>) -> Vec<Value> {
    data.into_iter()
        .map(|d| json!({"kind": "data", "data": d}))
        .collect()
}

/// The receipt's claims, verified with the instance's published keys.
async fn receipt_claims(w: &World, receipt: &str) -> Value {
    let jwks =
        w.h.call("GET", "/.well-known/jwks.json", &[], None)
            .await
            .json();
    let keys = KeySet::from_jwks(&jwks).unwrap();
    let jws = UnverifiedJws::parse(
        receipt,
        &HeaderPolicy::trusted_key(TypRule::OneOf(&["JWT"])),
    )
    .unwrap();
    Value::Object(keys.verify(jws).unwrap().into_claims())
}

async fn setup() -> (World, Actor, String, String) {
    let w = world(support::sqlite_store().await).await;
    let alice = w.actor("shopper", "alice").await;
    let (open_checkout, open_payment) = w.open_pair(&alice);
    (w, alice, open_checkout, open_payment)
}

/// Runs tests/interop/a2a_present.py with the sdk: its parsed output.
fn sdk_send(python: &std::ffi::OsStr, base: &str, headers: Value, parts: Vec<Value>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/a2a_present.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the a2a-sdk client");
    let input = json!({"base_url": base, "headers": headers, "data_parts": parts});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a2a-sdk client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_a2a_sdk_client_gets_a_receipt_and_then_a_refusal_for_the_replay() {
    let Some(python) = std::env::var_os("AP2_A2A_PYTHON") else {
        assert!(
            std::env::var("AP2_REQUIRE_A2A").as_deref() != Ok("1"),
            "AP2_REQUIRE_A2A=1 but AP2_A2A_PYTHON is not set"
        );
        eprintln!("SKIPPED: set AP2_A2A_PYTHON to a Python with tests/interop/requirements.txt");
        return;
    };
    let (w, alice, open_checkout, open_payment) = setup().await;
    let body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_a2a_1", 12900)
        .await;
    let base = w.h.issuer.clone();

    let first = {
        let (python, base, headers) = (python.clone(), base.clone(), dpop_headers(&w, &alice));
        let parts = parts(&body);
        tokio::task::spawn_blocking(move || sdk_send(&python, &base, headers, parts))
            .await
            .unwrap()
    };
    // The card the sdk resolved: our JSON-RPC endpoint, protocol 1.0, the AP2 extension.
    let card = &first["card"];
    let interfaces = card["supportedInterfaces"].as_array().unwrap();
    assert!(interfaces.iter().any(|i| i["url"] == format!("{base}/a2a")
        && i["protocolBinding"] == "JSONRPC"
        && i["protocolVersion"] == "1.0"));
    assert_eq!(
        card["capabilities"]["extensions"][0]["uri"],
        "https://github.com/google-agentic-commerce/ap2/v1"
    );
    assert_eq!(first["kind"], "message", "{first}");
    let data = &first["data_parts"][0];
    assert_eq!(data["verification"]["status"], "Success", "{first}");
    let receipt = data["ap2.PaymentReceipt"].as_str().expect("a receipt JWT");
    let claims = receipt_claims(&w, receipt).await;
    assert_eq!(claims["status"], "Success");
    assert_eq!(claims["payment_id"], data["verification"]["payment_id"]);
    assert_eq!(claims["reference"], data["verification"]["reference"]);

    // The very same presentation again, in a new message with a fresh proof: refused.
    let again = {
        let (python, headers) = (python.clone(), dpop_headers(&w, &alice));
        let parts = parts(&body);
        tokio::task::spawn_blocking(move || sdk_send(&python, &base, headers, parts))
            .await
            .unwrap()
    };
    assert_eq!(again["kind"], "message", "{again}");
    let data = &again["data_parts"][0];
    assert_eq!(data["verification"]["status"], "Error", "{again}");
    assert_eq!(data["verification"]["error"], "invalid_credential");
    assert_eq!(data["verification"]["reasons"], json!(["nonce_used"]));
    let refused = receipt_claims(&w, data["ap2.PaymentReceipt"].as_str().unwrap()).await;
    assert_eq!(refused["status"], "Error");

    // The same order closed again under a fresh challenge: the spend itself is a replay.
    let nonce = w.challenge(&alice).await;
    let jwt = body["checkout_jwt"].as_str().unwrap();
    let mut replay = body.clone();
    replay["payment_mandate"] = w
        .close_payment(&open_payment, &alice.agent.key, jwt, 12900, &nonce)
        .into();
    let python = python.clone();
    let (base, headers) = (w.h.issuer.clone(), dpop_headers(&w, &alice));
    let third =
        tokio::task::spawn_blocking(move || sdk_send(&python, &base, headers, parts(&replay)))
            .await
            .unwrap();
    assert_eq!(
        third["data_parts"][0]["verification"]["reasons"],
        json!(["replayed"]),
        "{third}"
    );
}

#[tokio::test]
async fn json_rpc_edges_answer_with_their_codes() {
    let (w, alice, open_checkout, open_payment) = setup().await;
    let body = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_a2a_2", 4900)
        .await;
    let error_code = |res: &Resp| {
        assert_eq!(res.status, 200, "{}", res.body);
        res.json()["error"]["code"].as_i64().unwrap_or(0)
    };

    // No token: refused by the transport, before anything is read.
    let res =
        w.h.call(
            "POST",
            "/a2a",
            &[("a2a-version", "1.0".to_owned())],
            Some(("application/json", send("m-0", parts(&body)).to_string())),
        )
        .await;
    assert_eq!(res.status, 401, "{}", res.body);
    assert!(res.header("www-authenticate").unwrap().starts_with("DPoP"));

    // Protocol errors, each with its code; none decides anything.
    let res = rpc(
        &w,
        &alice,
        Some("1.0"),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}),
    )
    .await;
    assert_eq!(error_code(&res), -32601);
    let res = rpc(&w, &alice, None, &send("m-1", parts(&body))).await;
    assert_eq!(
        error_code(&res),
        -32009,
        "SendMessage without A2A-Version 1.0"
    );
    let res = rpc(&w, &alice, Some("2.0"), &send("m-1", parts(&body))).await;
    assert_eq!(error_code(&res), -32009);
    let res = rpc(
        &w,
        &alice,
        Some("1.0"),
        &json!({"id": 1, "method": "SendMessage"}),
    )
    .await;
    assert_eq!(error_code(&res), -32600);
    let mut extra = parts(&body);
    extra[0]["ap2.mandates.Surprise"] = "x".into();
    let res = rpc(&w, &alice, Some("1.0"), &send("m-1", extra)).await;
    assert_eq!(
        error_code(&res),
        -32602,
        "an unknown member beside a mandate"
    );
    let res = rpc(&w, &alice, Some("1.0"), &send("two words", parts(&body))).await;
    assert_eq!(
        error_code(&res),
        -32602,
        "a message id that cannot be a key"
    );
    let mut twice = parts(&body);
    twice.push(json!({"checkout_jwt": body["checkout_jwt"]}));
    let res = rpc(&w, &alice, Some("1.0"), &send("m-1", twice)).await;
    assert_eq!(error_code(&res), -32602, "a member given twice");
    let mut numeric = parts(&body);
    numeric[2] = json!({"checkout_jwt": 5});
    let res = rpc(&w, &alice, Some("1.0"), &send("m-1", numeric)).await;
    assert_eq!(error_code(&res), -32602);
    let mut talk = send("m-1", vec![]);
    talk["params"]["message"]["parts"] = json!([{"text": "hello"}, {"data": {"note": 1}}]);
    let res = rpc(&w, &alice, Some("1.0"), &talk).await;
    assert_eq!(error_code(&res), -32602, "no mandate at all");
    let bad =
        w.h.call(
            "POST",
            "/a2a",
            &[("authorization", "x".into())],
            Some((
                "application/json",
                "{\"jsonrpc\":\"2.0\",\"jsonrpc\":\"2.0\"}".into(),
            )),
        )
        .await;
    assert_eq!(
        error_code(&bad),
        -32700,
        "duplicate members are not strict JSON"
    );

    // The 0.3 dialect: message/send with `kind` parts, answered in kind. Accepted, once.
    let v03 = json!({"jsonrpc": "2.0", "id": 7, "method": "message/send",
        "params": {"message": {"kind": "message", "messageId": "m-2", "role": "user", "contextId": "ctx-9",
            "parts": kind_data(parts(&body))}}});
    let res = rpc(&w, &alice, Some("0.3"), &v03).await;
    let answer = res.json();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["kind"], "message", "{}", res.body);
    assert_eq!(answer["result"]["role"], "agent");
    assert_eq!(answer["result"]["contextId"], "ctx-9");
    let data = &answer["result"]["parts"][0]["data"];
    assert_eq!(answer["result"]["parts"][0]["kind"], "data");
    assert_eq!(data["verification"]["status"], "Success", "{}", res.body);

    // The same message again (same id, a new JSON-RPC id and proof): the first answer.
    let mut retry = v03.clone();
    retry["id"] = 8.into();
    let res = rpc(&w, &alice, Some("0.3"), &retry).await;
    let again = res.json();
    assert_eq!(again["id"], 8);
    assert_eq!(
        again["result"]["parts"][0]["data"], *data,
        "the first decision, unchanged"
    );
    // The id reused for other mandates: refused, nothing decided.
    let other = w
        .fresh_payment(&alice, &open_checkout, &open_payment, "chk_a2a_3", 3900)
        .await;
    let mut reused = v03.clone();
    reused["params"]["message"]["parts"] = json!(kind_data(parts(&other)));
    let res = rpc(&w, &alice, Some("0.3"), &reused).await;
    assert_eq!(error_code(&res), -32602);
    // The other order, in its own message, is still payable: the refusal spent nothing.
    let res = rpc(&w, &alice, Some("1.0"), &send("m-3", parts(&other))).await;
    let answer = res.json();
    assert_eq!(
        answer["result"]["message"]["parts"][0]["data"]["verification"]["status"], "Success",
        "{}",
        res.body
    );
    assert_eq!(answer["result"]["message"]["role"], "ROLE_AGENT");

    // A checkout alone goes to the merchant role and comes back as a checkout receipt.
    let jwt = w.checkout("chk_a2a_4", 2900, "USD");
    let nonce = w.challenge(&alice).await;
    let closed = ap2_mandate::agent::close_checkout(
        &open_checkout,
        &alice.agent.key,
        &jwt,
        &w.aud,
        &nonce,
        w.h.now(),
    )
    .unwrap();
    let res = rpc(
        &w,
        &alice,
        Some("1.0"),
        &send(
            "m-4",
            vec![json!({"ap2.mandates.CheckoutMandateSdJwt": closed, "checkout_jwt": jwt})],
        ),
    )
    .await;
    let data = &res.json()["result"]["message"]["parts"][0]["data"];
    assert_eq!(data["verification"]["status"], "Success", "{}", res.body);
    assert!(data["verification"]["order_id"].as_str().is_some());
    let claims = receipt_claims(&w, data["ap2.CheckoutReceipt"].as_str().unwrap()).await;
    assert_eq!(claims["order_id"], data["verification"]["order_id"]);
}
