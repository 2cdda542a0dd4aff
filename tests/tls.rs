//! Outbound HTTPS: the agent's client and the verifier's status-list fetches through a real TLS
//! terminator (rustls, with a certificate from a private CA made here), trusted only when that
//! CA is configured.

mod support;

use std::sync::Arc;

use ap2_mandate::agent::{AgentClient, AgentError};
use ap2_mandate::jose::{sign_compact, KeySet, SigningKey};
use ap2_mandate::verifier::status::{RemoteStatus, Standing, StatusRef};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use support::oauth::clone_key;
use support::verifier::world;

/// A private CA (its PEM) and a TLS terminator for `localhost` in front of `backend`: the port.
async fn tls_proxy(backend: std::net::SocketAddr) -> (String, u16) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA hangs up during the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (ca.pem(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_a_verifier_behind_tls_only_when_it_trusts_the_ca() {
    let w = world(support::sqlite_store().await).await;
    let alice = w.actor("shopper", "alice").await;
    let backend = w.h.issuer.strip_prefix("http://").unwrap().parse().unwrap();
    let (ca, port) = tls_proxy(backend).await;
    let base = format!("https://localhost:{port}");

    // Trusting the private CA: a real challenge over TLS (the proof names the verifier's own
    // URL, which the proxy forwards to).
    let http = ap2_mandate::outbound::client(Some(ca.as_bytes()), None).unwrap();
    let client = AgentClient::new(
        &base,
        &w.h.issuer,
        clone_key(&alice.agent.key),
        &alice.token,
    )
    .with_http(http);
    let (nonce, aud) = client.challenge().await.expect("a challenge over https");
    assert_eq!(aud, w.aud);
    assert!(nonce.len() >= 22);

    // The public roots alone do not know this CA: no connection, nothing sent.
    let untrusting = AgentClient::new(
        &base,
        &w.h.issuer,
        clone_key(&alice.agent.key),
        &alice.token,
    );
    match untrusting.challenge().await {
        Err(AgentError::Transport(_)) => {}
        other => panic!("an untrusted certificate was accepted: {other:?}"),
    }
    assert!(ap2_mandate::outbound::client(Some(b"not a certificate"), None).is_err());

    // Tokens never travel in clear text off the machine: plain http is for loopback only.
    let cleartext = AgentClient::new(
        "http://verifier.example",
        "http://verifier.example",
        clone_key(&alice.agent.key),
        &alice.token,
    );
    match cleartext.challenge().await {
        Err(AgentError::Invalid(why)) => assert!(why.contains("https"), "{why}"),
        other => panic!("a token was sent over plain http: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_list_behind_tls_is_read_only_when_the_ca_is_trusted() {
    let wallet = SigningKey::generate(Some("remote-wallet-1".into())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (ca, port) = tls_proxy(backend).await;
    let uri = format!("https://localhost:{port}/lists/1");
    let signer = Arc::new(clone_key(&wallet));
    let sub = uri.clone();
    let app = axum::Router::new().route(
        "/lists/1",
        axum::routing::get(move || {
            let (signer, sub) = (signer.clone(), sub.clone());
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                // Entry 1 revoked, entry 0 valid.
                let lst = ap2_mandate::jose::b64::encode(
                    miniz_oxide::deflate::compress_to_vec_zlib(&[0b10], 6),
                );
                let claims = json!({"sub": sub, "iat": now, "exp": now + 600, "ttl": 60,
                    "status_list": {"bits": 1, "lst": lst}});
                sign_compact(
                    &signer,
                    Some("statuslist+jwt"),
                    false,
                    claims.to_string().as_bytes(),
                )
                .unwrap()
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let mut keys = KeySet::new();
    keys.insert(wallet.public().clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let entry = |idx| StatusRef {
        uri: uri.clone(),
        idx,
    };

    let trusting = RemoteStatus::new(60, Some(ca.as_bytes())).unwrap();
    assert_eq!(
        trusting.standing(&entry(0), &keys, now).await,
        Standing::Valid
    );
    assert_eq!(
        trusting.standing(&entry(1), &keys, now).await,
        Standing::Revoked
    );
    let untrusting = RemoteStatus::new(60, None).unwrap();
    assert_eq!(
        untrusting.standing(&entry(0), &keys, now).await,
        Standing::Unknown
    );
}
