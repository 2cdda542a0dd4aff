//! Outbound HTTP: the agent's calls to a wallet, a verifier or a token service, and the
//! verifier's fetches of remote status lists and JWKS.
//!
//! HTTPS runs on rustls over aws-lc-rs (the crypto the rest of the crate already uses) and
//! trusts the Mozilla root store, plus any certificates the operator adds for a private CA.
//! Plain `http` is for loopback; callers decide where it is allowed. Redirects are never
//! followed: a DPoP proof names one URL, and a status list is read from the URL it names.

use std::time::Duration;

/// Makes aws-lc-rs the process's TLS crypto provider, if none is yet. Every HTTP client of the
/// crate is built after this; a `reqwest` client built elsewhere in the process needs it too.
pub fn install_crypto() {
    // Already installed (by us, earlier) is as good: it is aws-lc-rs either way.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A client for outbound calls, trusting the public roots and the PEM certificates in
/// `extra_roots` (a private CA, say), with an overall `timeout` per request.
pub fn client(
    extra_roots: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, String> {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_roots {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| "the extra root certificates are not PEM".to_owned())?;
        if certificates.is_empty() {
            return Err("the extra root certificate file holds no certificate".into());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// GETs `url` asking for `accept`, and reads a successful answer's body of at most `max` bytes.
/// The error says why in a few words, without the URL (the caller names it once).
pub async fn get_bounded(
    http: &reqwest::Client,
    url: &str,
    accept: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let res = http
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .map_err(|e| format!("unreachable ({})", failure(&e)))?;
    if !res.status().is_success() {
        return Err(format!("answered HTTP {}", res.status().as_u16()));
    }
    if res.content_length().is_some_and(|n| n > max as u64) {
        return Err("the document is too large".into());
    }
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("the body could not be read ({})", failure(&e)))?;
    if body.len() > max {
        return Err("the document is too large".into());
    }
    Ok(body.to_vec())
}

/// What kind of failure a client error is, in a word or two.
fn failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "transfer failed"
    }
}
