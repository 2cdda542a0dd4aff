//! Every rule of the token service has a test that would catch its absence: a refusal with the
//! standard code, a fixed description, and no state changed.

mod support;

use ap2_mandate::identity::assertion::{make_assertion, JWT_BEARER};
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::token::AccessTokenClaims;
use ap2_mandate::jose::{sign_compact, SigningKey};
use ap2_mandate::store::records::IdentityRecords as _;
use serde_json::json;
use support::oauth::{
    Harness, Resp, TestAgent, ACCESS_TOKEN_TYPE, JWT_TYPE, REDIRECT, TOKEN_EXCHANGE,
};

const SCOPES: &[&str] = &["mandates:request", "payments:present"];

async fn harness() -> Harness {
    let (_, store) = support::stores().await.remove(0);
    Harness::oneshot(store).await
}

/// A harness, a top agent (depth 1) and a sub-agent, and a token for the top agent.
async fn setup() -> (Harness, TestAgent, TestAgent, String) {
    let h = harness().await;
    let top = h
        .register("top", SCOPES, 1, &["https://wallet.example"])
        .await;
    let sub = h.register("sub", &["payments:present"], 0, &[]).await;
    h.user("alice").await;
    let details = r#"[{"type":"payment","max_amount":{"currency":"USD","value":50000},"merchants":["m1","m2"]}]"#;
    let (code, verifier) = h
        .authorize(
            &top,
            "alice",
            "mandates:request payments:present",
            &[("authorization_details", details)],
        )
        .await;
    let token = h.redeem(&top, &code, &verifier).await;
    (h, top, sub, token)
}

fn refused(res: &Resp, status: u16, code: &str) {
    assert_eq!(res.status, status, "{}", res.body);
    assert_eq!(res.error(), code, "{}", res.body);
    let description = res.json()["error_description"].as_str().unwrap().to_owned();
    assert!(
        !description.is_empty() && !description.contains("eyJ"),
        "{description}"
    );
}

// ---- the token endpoint: DPoP -------------------------------------------------------------

#[tokio::test]
async fn a_token_request_without_dpop_is_refused() {
    let (h, top, _, _) = setup().await;
    let assertion = make_assertion(&top.key, &top.id, &h.issuer, h.now()).unwrap();
    let res = h
        .post_form(
            "/oauth2/token",
            &[],
            &[
                ("grant_type", "authorization_code"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
                ("code", "x"),
                ("redirect_uri", REDIRECT),
                ("code_verifier", "x"),
            ],
        )
        .await;
    refused(&res, 400, "invalid_dpop_proof");
    assert!(res.header("dpop-nonce").is_some());
}

#[tokio::test]
async fn a_proof_without_a_server_nonce_is_told_to_use_one() {
    let (h, top, _, token) = setup().await;
    let proof = make_proof(
        &top.key,
        "POST",
        &format!("{}/oauth2/token", h.issuer),
        h.now(),
        None,
        None,
    )
    .unwrap();
    let assertion = make_assertion(&top.key, &top.id, &h.issuer, h.now()).unwrap();
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ];
    let res = h
        .post_form("/oauth2/token", &[("dpop", proof)], &form)
        .await;
    refused(&res, 400, "use_dpop_nonce");
    let nonce = res.header("dpop-nonce").unwrap();
    // The same assertion still works with a nonce: nothing was spent by the first attempt.
    let proof = make_proof(
        &top.key,
        "POST",
        &format!("{}/oauth2/token", h.issuer),
        h.now(),
        None,
        Some(&nonce),
    )
    .unwrap();
    let res = h
        .post_form("/oauth2/token", &[("dpop", proof)], &form)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // A nonce from an old window is refused.
    h.advance(600);
    let proof = make_proof(
        &top.key,
        "POST",
        &format!("{}/oauth2/token", h.issuer),
        h.now(),
        None,
        Some(&nonce),
    )
    .unwrap();
    let res = h
        .post_form("/oauth2/token", &[("dpop", proof)], &form)
        .await;
    refused(&res, 400, "use_dpop_nonce");
}

#[tokio::test]
async fn mismatched_replayed_stale_or_wrong_type_proofs_are_refused() {
    let (h, top, _, token) = setup().await;
    let nonce = h.service.dpop_nonce(h.now());
    let htu = format!("{}/oauth2/token", h.issuer);
    let cases = [
        make_proof(&top.key, "GET", &htu, h.now(), None, Some(&nonce)).unwrap(),
        make_proof(
            &top.key,
            "POST",
            "http://127.0.0.1:8080/oauth2/authorize",
            h.now(),
            None,
            Some(&nonce),
        )
        .unwrap(),
        make_proof(&top.key, "POST", &htu, h.now() - 600, None, Some(&nonce)).unwrap(),
        make_proof(&top.key, "POST", &htu, h.now() + 600, None, Some(&nonce)).unwrap(),
        make_proof(&top.key, "POST", &htu, h.now(), Some(&token), Some(&nonce)).unwrap(),
        // An access token is not a proof.
        token.clone(),
        sign_compact(
            &top.key,
            Some("dpop+jwt"),
            false,
            br#"{"jti":"a","htm":"POST"}"#,
        )
        .unwrap(),
    ];
    for proof in cases {
        let assertion = make_assertion(&top.key, &top.id, &h.issuer, h.now()).unwrap();
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let res = h
            .post_form("/oauth2/token", &[("dpop", proof)], &form)
            .await;
        refused(&res, 400, "invalid_dpop_proof");
    }

    // A replayed proof.
    let proof = make_proof(&top.key, "POST", &htu, h.now(), None, Some(&nonce)).unwrap();
    for expected in [200, 400] {
        let assertion = make_assertion(&top.key, &top.id, &h.issuer, h.now()).unwrap();
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let res = h
            .post_form("/oauth2/token", &[("dpop", proof.clone())], &form)
            .await;
        assert_eq!(res.status, expected, "{}", res.body);
    }
}

// ---- the token endpoint: client authentication --------------------------------------------

#[tokio::test]
async fn client_assertions_that_break_a_rule_are_refused() {
    let (h, top, sub, token) = setup().await;
    let now = h.now();
    let stranger = SigningKey::generate(Some("top-key".into())).unwrap();
    let claims = |aud: &str, exp: i64| {
        json!({"iss": top.id, "sub": top.id, "aud": aud, "jti": format!("j{exp}{aud}"), "iat": now, "exp": exp}).to_string()
    };
    let cases: Vec<String> = vec![
        // aud the token endpoint instead of the issuer (7523bis).
        sign_compact(
            &top.key,
            Some("JWT"),
            false,
            claims(&format!("{}/oauth2/token", h.issuer), now + 60).as_bytes(),
        )
        .unwrap(),
        // aud as an array.
        sign_compact(
            &top.key,
            Some("JWT"),
            false,
            json!({"iss": top.id, "sub": top.id, "aud": [h.issuer], "jti": "j2", "exp": now + 60})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
        // expired, and too long-lived.
        sign_compact(
            &top.key,
            Some("JWT"),
            false,
            claims(&h.issuer, now - 120).as_bytes(),
        )
        .unwrap(),
        sign_compact(
            &top.key,
            Some("JWT"),
            false,
            claims(&h.issuer, now + 3600).as_bytes(),
        )
        .unwrap(),
        // signed by a key that is not registered, under the registered kid.
        sign_compact(
            &stranger,
            Some("JWT"),
            false,
            claims(&h.issuer, now + 60).as_bytes(),
        )
        .unwrap(),
        // the sub-agent's key claiming to be the top agent.
        sign_compact(
            &sub.key,
            Some("JWT"),
            false,
            claims(&h.issuer, now + 60).as_bytes(),
        )
        .unwrap(),
        // no jti.
        sign_compact(
            &top.key,
            Some("JWT"),
            false,
            json!({"iss": top.id, "sub": top.id, "aud": h.issuer, "exp": now + 60})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    ];
    for assertion in cases {
        let nonce = h.service.dpop_nonce(now);
        let proof = make_proof(
            &top.key,
            "POST",
            &format!("{}/oauth2/token", h.issuer),
            now,
            None,
            Some(&nonce),
        )
        .unwrap();
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let res = h
            .post_form("/oauth2/token", &[("dpop", proof)], &form)
            .await;
        refused(&res, 401, "invalid_client");
    }

    // A replayed assertion.
    let assertion = make_assertion(&top.key, &top.id, &h.issuer, now).unwrap();
    for expected in [200, 401] {
        let nonce = h.service.dpop_nonce(now);
        let proof = make_proof(
            &top.key,
            "POST",
            &format!("{}/oauth2/token", h.issuer),
            now,
            None,
            Some(&nonce),
        )
        .unwrap();
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        let res = h
            .post_form("/oauth2/token", &[("dpop", proof)], &form)
            .await;
        assert_eq!(res.status, expected, "{}", res.body);
    }

    // A client secret is not a way in.
    let nonce = h.service.dpop_nonce(now);
    let proof = make_proof(
        &top.key,
        "POST",
        &format!("{}/oauth2/token", h.issuer),
        now,
        None,
        Some(&nonce),
    )
    .unwrap();
    let res = h
        .post_form(
            "/oauth2/token",
            &[("dpop", proof)],
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("client_id", &top.id),
                ("client_secret", "guess"),
                ("subject_token", &token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        )
        .await;
    refused(&res, 401, "invalid_client");
}

#[tokio::test]
async fn malformed_token_requests_are_refused() {
    let (h, top, _, token) = setup().await;
    let res = h
        .token(&top, &[("grant_type", "password"), ("username", "alice")])
        .await;
    refused(&res, 400, "unsupported_grant_type");
    let res = h
        .token(
            &top,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        )
        .await;
    refused(&res, 400, "invalid_request");
    let res = h
        .call(
            "POST",
            "/oauth2/token",
            &[],
            Some(("application/json", "{}".into())),
        )
        .await;
    refused(&res, 400, "invalid_request");
}

// ---- the authorization code ---------------------------------------------------------------

#[tokio::test]
async fn a_code_redeems_once_and_a_second_use_revokes_its_grant() {
    let h = harness().await;
    let top = h.register("top", SCOPES, 1, &[]).await;
    h.user("alice").await;
    let (code, verifier) = h.authorize(&top, "alice", "mandates:request", &[]).await;
    let token = h.redeem(&top, &code, &verifier).await;
    assert_eq!(h.whoami(&token, &top.key).await.status, 200);

    let res = h
        .token(
            &top,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");
    // RFC 6749 §10.5: what the code produced is revoked.
    refused(&h.whoami(&token, &top.key).await, 401, "invalid_token");
}

#[tokio::test]
async fn a_code_with_the_wrong_verifier_redirect_client_key_or_time_is_refused() {
    let h = harness().await;
    let top = h.register("top", SCOPES, 1, &[]).await;
    let other = h.register("other", SCOPES, 1, &[]).await;
    h.user("alice").await;
    let before = h.token_count().await;

    let (code, verifier) = h.authorize(&top, "alice", "mandates:request", &[]).await;
    let res = h
        .token(
            &top,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &format!("{verifier}x")),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");

    let (code, verifier) = h.authorize(&top, "alice", "mandates:request", &[]).await;
    let res = h
        .token(
            &top,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9999/other"),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");

    let (code, verifier) = h.authorize(&top, "alice", "mandates:request", &[]).await;
    let res = h
        .token(
            &other,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");

    let bound = SigningKey::generate(None).unwrap();
    let jkt = bound.public().thumbprint();
    let (code, verifier) = h
        .authorize(&top, "alice", "mandates:request", &[("dpop_jkt", &jkt)])
        .await;
    let res = h
        .token(
            &top,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");

    let (code, verifier) = h.authorize(&top, "alice", "mandates:request", &[]).await;
    h.advance(120);
    let res = h
        .token(
            &top,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    refused(&res, 400, "invalid_grant");

    assert_eq!(
        h.token_count().await,
        before,
        "a refused redemption issues nothing"
    );
}

#[tokio::test]
async fn authorization_requests_that_cannot_be_trusted_are_not_redirected() {
    let h = harness().await;
    let top = h.register("top", SCOPES, 1, &[]).await;
    let bad = [
        format!("response_type=code&client_id={}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&scope=mandates%3Arequest&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", top.id),
        "response_type=code&client_id=nobody&redirect_uri=http%3A%2F%2F127.0.0.1%3A9999%2Fcb".to_owned(),
    ];
    for query in bad {
        let res = h
            .call("GET", &format!("/oauth2/authorize?{query}"), &[], None)
            .await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(res.header("location").is_none());
    }
    // A plain PKCE method or an unknown scope goes back to the client as an error.
    for query in [
        format!("response_type=code&client_id={}&redirect_uri={}&scope=mandates%3Arequest&code_challenge=abc&code_challenge_method=plain&state=s", top.id, REDIRECT),
        format!("response_type=code&client_id={}&redirect_uri={}&scope=admin&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=s", top.id, REDIRECT),
    ] {
        let res = h.call("GET", &format!("/oauth2/authorize?{query}"), &[], None).await;
        assert_eq!(res.status, 303, "{}", res.body);
        let location = res.header("location").unwrap();
        assert!(location.starts_with(REDIRECT) && location.contains("error=") && location.contains("state=s"), "{location}");
    }
}

#[tokio::test]
async fn sign_in_needs_the_form_token_and_is_rate_limited() {
    let h = harness().await;
    let top = h.register("top", SCOPES, 1, &[]).await;
    h.user("alice").await;
    let query = format!("response_type=code&client_id={}&redirect_uri={}&scope=mandates%3Arequest&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", top.id, REDIRECT);
    let page = h
        .call("GET", &format!("/oauth2/authorize?{query}"), &[], None)
        .await;
    let cookie = support::oauth::cookie(&page, "ap2_csrf");
    let csrf = support::oauth::hidden(&page.body, "csrf");
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
    let sign_in = |csrf: String, password: &'static str| {
        let mut form: Vec<(String, String)> = params.clone();
        form.extend([
            ("action".into(), "signin".into()),
            ("csrf".into(), csrf),
            ("username".into(), "alice".into()),
            ("password".into(), password.into()),
        ]);
        serde_urlencoded::to_string(form).unwrap()
    };
    let hr = &h;
    let post = move |body: String, cookie: String| async move {
        hr.call(
            "POST",
            "/oauth2/authorize",
            &[("cookie", format!("ap2_csrf={cookie}"))],
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    };
    // Without the matching form token: forbidden, whatever the password.
    assert_eq!(
        post(
            sign_in("forged".into(), support::oauth::PASSWORD),
            cookie.clone()
        )
        .await
        .status,
        403
    );
    for _ in 0..5 {
        assert_eq!(
            post(sign_in(csrf.clone(), "wrong password!"), cookie.clone())
                .await
                .status,
            401
        );
    }
    // Locked for the window, even with the right password.
    assert_eq!(
        post(
            sign_in(csrf.clone(), support::oauth::PASSWORD),
            cookie.clone()
        )
        .await
        .status,
        429
    );
    h.advance(301);
    assert_eq!(
        post(
            sign_in(csrf.clone(), support::oauth::PASSWORD),
            cookie.clone()
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn approving_needs_the_session_form_token() {
    let h = harness().await;
    let top = h.register("top", SCOPES, 1, &[]).await;
    h.user("alice").await;
    // A full sign-in to get a session, then a forged approval without its form token.
    let query = format!("response_type=code&client_id={}&redirect_uri={}&scope=mandates%3Arequest&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", top.id, REDIRECT);
    let page = h
        .call("GET", &format!("/oauth2/authorize?{query}"), &[], None)
        .await;
    let cookie = support::oauth::cookie(&page, "ap2_csrf");
    let csrf = support::oauth::hidden(&page.body, "csrf");
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
    form.extend([
        ("action".into(), "signin".into()),
        ("csrf".into(), csrf),
        ("username".into(), "alice".into()),
        ("password".into(), support::oauth::PASSWORD.into()),
    ]);
    let consent = h
        .call(
            "POST",
            "/oauth2/authorize",
            &[("cookie", format!("ap2_csrf={cookie}"))],
            Some((
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(&form).unwrap(),
            )),
        )
        .await;
    assert!(consent.body.contains(&top.id) && consent.body.contains("ops@example.com"));
    let session = support::oauth::cookie(&consent, "ap2_session");
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
    form.extend([
        ("action".into(), "approve".into()),
        ("csrf".into(), "forged".into()),
    ]);
    let res = h
        .call(
            "POST",
            "/oauth2/authorize",
            &[("cookie", format!("ap2_session={session}"))],
            Some((
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(&form).unwrap(),
            )),
        )
        .await;
    assert_eq!(res.status, 403);
}

// ---- token exchange -----------------------------------------------------------------------

#[tokio::test]
async fn widening_requests_of_every_kind_are_refused_and_issue_nothing() {
    let (h, top, sub, token) = setup().await;
    let before = h.token_count().await;
    let wider_amount =
        r#"[{"type":"payment","max_amount":{"currency":"USD","value":50001},"merchants":["m1"]}]"#;
    let more_merchants = r#"[{"type":"payment","max_amount":{"currency":"USD","value":100},"merchants":["m1","m3"]}]"#;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("scope", "admin")], "invalid_scope"),
        // The sub-agent may not hold mandates:request, whatever the subject holds.
        (vec![("scope", "mandates:request")], "invalid_scope"),
        (
            vec![("audience", "https://elsewhere.example")],
            "invalid_target",
        ),
        (
            vec![
                ("resource", "https://wallet.example"),
                ("audience", "https://other.example"),
            ],
            "invalid_target",
        ),
        (
            vec![("authorization_details", wider_amount)],
            "invalid_authorization_details",
        ),
        (
            vec![("authorization_details", more_merchants)],
            "invalid_authorization_details",
        ),
        (
            vec![("authorization_details", r#"[{"type":"other"}]"#)],
            "invalid_authorization_details",
        ),
        (
            vec![(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )],
            "invalid_request",
        ),
    ];
    for (extra, code) in cases {
        let res = h.exchange(&top, &token, Some(&sub), &extra).await;
        refused(&res, 400, code);
    }
    assert_eq!(h.token_count().await, before);

    // Narrower details are granted and carried.
    let narrower =
        r#"[{"type":"payment","max_amount":{"currency":"USD","value":100},"merchants":["m1"]}]"#;
    let res = h
        .exchange(
            &top,
            &token,
            Some(&sub),
            &[("authorization_details", narrower)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.json()["authorization_details"][0]["max_amount"]["value"],
        100
    );
    assert_eq!(res.json()["scope"], "payments:present");
}

#[tokio::test]
async fn a_new_token_never_outlives_its_subject() {
    let (h, top, sub, token) = setup().await;
    h.advance(200);
    let res = h.exchange(&top, &token, Some(&sub), &[]).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.json()["expires_in"].as_i64().unwrap() <= 100);
    h.advance(101);
    refused(
        &h.exchange(&top, &token, Some(&sub), &[]).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn only_the_holder_with_its_key_may_exchange_a_subject_token() {
    let (h, top, sub, token) = setup().await;
    // The sub-agent presents the top agent's token as its own.
    refused(
        &h.exchange(&sub, &token, None, &[]).await,
        400,
        "invalid_request",
    );
    // The right client, but its DPoP proof is by another key.
    let other = SigningKey::generate(None).unwrap();
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    refused(
        &h.token_with(&top, &other, &form).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn subject_tokens_of_the_wrong_type_or_issuer_are_refused() {
    let (h, top, sub, token) = setup().await;
    for kind in [
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
    ] {
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", kind),
        ];
        refused(&h.token(&top, &form).await, 400, "invalid_request");
    }
    // An ID-token-shaped JWT signed by an unknown issuer.
    let stranger = SigningKey::generate(Some("k".into())).unwrap();
    let id_token = sign_compact(
        &stranger,
        Some("JWT"),
        false,
        json!({"iss": "https://idp.example", "sub": "u", "aud": top.id, "exp": h.now() + 60})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", id_token.as_str()),
        ("subject_token_type", JWT_TYPE),
    ];
    refused(&h.token(&top, &form).await, 400, "invalid_request");
    // Our token, re-signed by another key under our kid, with a forged act chain.
    let mut forged = h
        .service
        .verify_token(&token, h.now(), false)
        .await
        .unwrap();
    forged.actors = vec![top.id.clone(), sub.id.clone()];
    forged.jti = "forged".into();
    let kid = h
        .service
        .signing_key(h.now())
        .await
        .unwrap()
        .kid()
        .unwrap()
        .to_owned();
    let resigned = forged
        .sign(&SigningKey::generate(Some(kid)).unwrap())
        .unwrap();
    refused(
        &h.exchange(&top, &resigned, Some(&sub), &[]).await,
        400,
        "invalid_request",
    );
    refused(&h.whoami(&resigned, &top.key).await, 401, "invalid_token");
}

#[tokio::test]
async fn act_chains_only_append_within_depth() {
    let (h, top, sub, token) = setup().await;
    let leaf = h.register("leaf", &["payments:present"], 0, &[]).await;
    // The top agent names itself as the new actor.
    refused(
        &h.exchange(&top, &token, Some(&top), &[]).await,
        400,
        "invalid_request",
    );
    // Top (depth 1) → sub is allowed; sub → leaf would put top two hops up.
    let res = h.exchange(&top, &token, Some(&sub), &[]).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let second = res.json()["access_token"].as_str().unwrap().to_owned();
    refused(
        &h.exchange(&sub, &second, Some(&leaf), &[]).await,
        400,
        "invalid_request",
    );
    // A sub-agent naming the top agent again (a loop).
    refused(
        &h.exchange(&sub, &second, Some(&top), &[]).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn actor_tokens_are_single_use_and_signed_by_the_actor() {
    let (h, top, sub, token) = setup().await;
    let actor_token = h.actor_token(&sub);
    let form = |t: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), TOKEN_EXCHANGE.into()),
            ("subject_token".into(), token.clone()),
            ("subject_token_type".into(), ACCESS_TOKEN_TYPE.into()),
            ("actor_token".into(), t.into()),
            ("actor_token_type".into(), JWT_TYPE.into()),
        ]
    };
    let as_refs = |f: &Vec<(String, String)>| {
        f.iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect::<Vec<_>>()
    };
    let first = as_refs(&form(&actor_token));
    let first: Vec<(&str, &str)> = first
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(h.token(&top, &first).await.status, 200);
    refused(&h.token(&top, &first).await, 400, "invalid_request");

    // An actor token for the sub-agent signed by the top agent's key.
    let forged = make_assertion(&top.key, &sub.id, &h.issuer, h.now()).unwrap();
    let forged = as_refs(&form(&forged));
    let forged: Vec<(&str, &str)> = forged
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    refused(&h.token(&top, &forged).await, 400, "invalid_request");
}

#[tokio::test]
async fn may_act_on_the_subject_is_honoured() {
    let (h, top, sub, token) = setup().await;
    let other = h.register("other", &["payments:present"], 0, &[]).await;
    // A subject token of ours that names who may act for it.
    let mut claims: AccessTokenClaims = h
        .service
        .verify_token(&token, h.now(), false)
        .await
        .unwrap();
    claims.may_act = Some(sub.id.clone());
    claims.jti = "with-may-act".into();
    let key = h.service.signing_key(h.now()).await.unwrap();
    let with_may_act = claims.sign(&key).unwrap();
    h.service
        .store()
        .record_token(&ap2_mandate::store::records::TokenRecord {
            jti: claims.jti.clone(),
            grant_id: claims.grant_id.clone(),
            agent_id: top.id.clone(),
            user_id: claims.sub.clone(),
            delegated_by: vec![],
            external_subject: false,
            status: ap2_mandate::store::records::TokenStatus::Active,
            exp: claims.exp,
        })
        .await
        .unwrap();
    refused(
        &h.exchange(&top, &with_may_act, Some(&other), &[]).await,
        400,
        "invalid_request",
    );
    assert_eq!(
        h.exchange(&top, &with_may_act, Some(&sub), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoked_tokens_grants_and_disabled_agents_cannot_be_exchanged() {
    let (h, top, sub, token) = setup().await;
    let claims = h
        .service
        .verify_token(&token, h.now(), false)
        .await
        .unwrap();
    h.service
        .store()
        .revoke_grant(claims.grant_id.as_deref().unwrap(), h.now())
        .await
        .unwrap();
    refused(
        &h.exchange(&top, &token, Some(&sub), &[]).await,
        400,
        "invalid_request",
    );

    let (h, top, sub, token) = setup().await;
    let jti = h
        .service
        .verify_token(&token, h.now(), false)
        .await
        .unwrap()
        .jti;
    assert!(h.service.store().revoke_token(&jti).await.unwrap());
    refused(
        &h.exchange(&top, &token, Some(&sub), &[]).await,
        400,
        "invalid_request",
    );

    let (h, top, sub, token) = setup().await;
    h.admin_json(
        "POST",
        &format!("/v1/agents/{}/disable", sub.id),
        &json!({}),
    )
    .await;
    refused(
        &h.exchange(&top, &token, Some(&sub), &[]).await,
        400,
        "invalid_request",
    );
}

// ---- protected resources ------------------------------------------------------------------

#[tokio::test]
async fn resource_requests_need_dpop_with_the_bound_key_and_matching_ath() {
    let (h, top, sub, token) = setup().await;
    let htu = format!("{}/v1/whoami", h.issuer);
    let bearer = h
        .call(
            "GET",
            "/v1/whoami",
            &[("authorization", format!("Bearer {token}"))],
            None,
        )
        .await;
    refused(&bearer, 401, "invalid_token");
    let none = h.call("GET", "/v1/whoami", &[], None).await;
    refused(&none, 401, "invalid_token");

    let wrong_ath =
        make_proof(&top.key, "GET", &htu, h.now(), Some("another token"), None).unwrap();
    let res = h
        .call(
            "GET",
            "/v1/whoami",
            &[
                ("authorization", format!("DPoP {token}")),
                ("dpop", wrong_ath),
            ],
            None,
        )
        .await;
    refused(&res, 401, "invalid_dpop_proof");
    assert!(res
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_dpop_proof"));
    refused(&h.whoami(&token, &sub.key).await, 401, "invalid_dpop_proof");

    // A token for another audience is not accepted here.
    let res = h
        .exchange(
            &top,
            &token,
            None,
            &[("audience", "https://wallet.example")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let wallet_token = res.json()["access_token"].as_str().unwrap().to_owned();
    refused(
        &h.whoami(&wallet_token, &top.key).await,
        401,
        "invalid_token",
    );

    // A replayed resource proof.
    let proof = make_proof(&top.key, "GET", &htu, h.now(), Some(&token), None).unwrap();
    let auth = [("authorization", format!("DPoP {token}")), ("dpop", proof)];
    assert_eq!(h.call("GET", "/v1/whoami", &auth, None).await.status, 200);
    refused(
        &h.call("GET", "/v1/whoami", &auth, None).await,
        401,
        "invalid_dpop_proof",
    );

    // Expired.
    h.advance(400);
    refused(&h.whoami(&token, &top.key).await, 401, "invalid_token");
}

// ---- revocation, introspection, registry --------------------------------------------------

#[tokio::test]
async fn revocation_and_introspection_answer_the_owner_and_the_admin_only() {
    let (h, top, sub, token) = setup().await;
    let client_form = |agent: &TestAgent| {
        let assertion = make_assertion(&agent.key, &agent.id, &h.issuer, h.now()).unwrap();
        vec![
            ("client_assertion_type".to_owned(), JWT_BEARER.to_owned()),
            ("client_assertion".to_owned(), assertion),
            ("token".to_owned(), token.clone()),
        ]
    };
    let hr = &h;
    let post = move |path: &'static str, form: Vec<(String, String)>| async move {
        hr.call(
            "POST",
            path,
            &[],
            Some((
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(form).unwrap(),
            )),
        )
        .await
    };
    let mine = post("/oauth2/introspect", client_form(&top)).await;
    assert_eq!(mine.json()["active"], true, "{}", mine.body);
    assert_eq!(mine.json()["act"]["sub"], top.id.as_str());
    let theirs = post("/oauth2/introspect", client_form(&sub)).await;
    assert_eq!(theirs.json(), json!({"active": false}));

    refused(
        &post("/oauth2/revoke", client_form(&sub)).await,
        400,
        "unauthorized_client",
    );
    assert_eq!(h.whoami(&token, &top.key).await.status, 200);
    assert_eq!(post("/oauth2/revoke", client_form(&top)).await.status, 200);
    refused(&h.whoami(&token, &top.key).await, 401, "invalid_token");

    let admin = h
        .call(
            "POST",
            "/oauth2/introspect",
            &[("authorization", format!("Bearer {}", h.admin))],
            Some((
                "application/x-www-form-urlencoded",
                format!("token={token}"),
            )),
        )
        .await;
    assert_eq!(admin.json(), json!({"active": false}));
    // An unknown token revokes without error (RFC 7009 §2.2).
    let res = h
        .call(
            "POST",
            "/oauth2/revoke",
            &[("authorization", format!("Bearer {}", h.admin))],
            Some(("application/x-www-form-urlencoded", "token=garbage".into())),
        )
        .await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn registrations_with_bad_or_duplicate_keys_are_refused_and_store_nothing() {
    let h = harness().await;
    let key = SigningKey::generate(Some("k1".into())).unwrap();
    let private: serde_json::Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    let mut no_kid = key.public().to_value();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut off_curve = key.public().to_value();
    off_curve["y"] = off_curve["x"].clone();
    let body = |keys: serde_json::Value| json!({"name": "a", "owner": "o", "jwks": {"keys": keys}, "scopes": ["payments:present"]});
    let cases = [
        body(json!([private])),
        body(json!([no_kid])),
        body(json!([off_curve])),
        body(json!([])),
        body(json!([key.public().to_value(), key.public().to_value()])),
        body(json!([{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}])),
        json!({"name": "a", "owner": "o", "jwks": {"keys": [key.public().to_value()]}, "scopes": ["payments:present"], "admin": true}),
        json!({"name": "a", "owner": "o", "jwks": {"keys": [key.public().to_value()]}, "scopes": ["bad scope"]}),
    ];
    for case in cases {
        let res = h.admin_json("POST", "/v1/agents", &case).await;
        refused(&res, 400, "invalid_request");
    }
    assert!(h.service.store().agents().await.unwrap().is_empty());

    let ok = h
        .admin_json(
            "POST",
            "/v1/agents",
            &body(json!([key.public().to_value()])),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    // The same key again, for another agent.
    refused(
        &h.admin_json(
            "POST",
            "/v1/agents",
            &body(json!([key.public().to_value()])),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_eq!(h.service.store().agents().await.unwrap().len(), 1);

    // Without the admin token.
    let res = h
        .call(
            "POST",
            "/v1/agents",
            &[("authorization", "Bearer wrong".into())],
            Some(("application/json", body(json!([])).to_string())),
        )
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(h.call("GET", "/v1/agents", &[], None).await.status, 401);
}
