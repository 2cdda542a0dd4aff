//! `ap2-mandate act …`: play the agent against a wallet and a verifier, with the agent's own key
//! and an access token the token service issued to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use ap2_mandate::agent::{close_checkout, close_payment, request_token, AgentClient};
use ap2_mandate::identity::dpop::make_proof;
use ap2_mandate::identity::pkce::challenge_s256;
use ap2_mandate::identity::random_token;
use ap2_mandate::jose::SigningKey;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ActArgs {
    /// A PEM file of certificates to trust for HTTPS besides the public roots (a private CA).
    #[arg(long, global = true, env = "AP2_TLS_CA_FILE", value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ActCommand,
}

/// Where the agent talks to and as whom.
#[derive(Debug, Args)]
struct Connection {
    /// The instance's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Its issuer URL, the base of DPoP `htu` (default: --url).
    #[arg(long)]
    issuer: Option<String>,
    /// The agent's private key (a JWK file); its public half is the token's DPoP key.
    #[arg(long)]
    key: PathBuf,
    /// A file holding the agent's access token for this resource.
    #[arg(long)]
    token: PathBuf,
}

/// The agent as a client of the token service.
#[derive(Debug, Args)]
struct TokenClient {
    /// The token service's base URL.
    #[arg(long)]
    url: String,
    /// Its issuer URL, if not --url.
    #[arg(long)]
    issuer: Option<String>,
    /// The agent's id in the registry.
    #[arg(long)]
    client_id: String,
    /// The agent's private key (a JWK file).
    #[arg(long)]
    key: PathBuf,
}

impl TokenClient {
    /// A token response for these parameters.
    async fn request(
        &self,
        http: &reqwest::Client,
        params: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let key = load_key(&self.key)?;
        let issuer = self.issuer.as_deref().unwrap_or(&self.url);
        Ok(request_token(http, &self.url, issuer, &self.client_id, &key, params).await?)
    }
}

#[derive(Debug, Subcommand)]
enum ActCommand {
    /// Ask a person to delegate: print the sign-in URL, wait for their browser to come back to
    /// a loopback redirect, redeem the code (PKCE, DPoP, private_key_jwt) and save the token.
    ///
    /// Example: ap2-mandate act sign-in --url http://127.0.0.1:8080 --client-id agt_… --key
    /// agent.jwk --scope "mandates:request payments:present" --out broad.token
    SignIn {
        #[command(flatten)]
        client: TokenClient,
        /// The scope to ask for, space-separated.
        #[arg(long)]
        scope: String,
        /// The resource the token is for (default: the token service itself).
        #[arg(long)]
        resource: Option<String>,
        /// Where to write the access token (created with owner-only permissions).
        #[arg(long)]
        out: PathBuf,
        /// The loopback port to receive the browser on (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Seconds to wait for the person.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// Exchange a token for a narrower one for one resource (RFC 8693), bound to the same key.
    ///
    /// Example: ap2-mandate act exchange --url http://127.0.0.1:8080 --client-id agt_… --key
    /// agent.jwk --token broad.token --resource http://127.0.0.1:8080/verifier --scope
    /// payments:present --out verifier.token
    Exchange {
        #[command(flatten)]
        client: TokenClient,
        /// The token to exchange (a file).
        #[arg(long)]
        token: PathBuf,
        /// The resource the new token is for.
        #[arg(long)]
        resource: String,
        /// The narrower scope.
        #[arg(long)]
        scope: Option<String>,
        /// Where to write the new token (created with owner-only permissions).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a DPoP proof (RFC 9449) for one request, to send with curl.
    ///
    /// Example: curl -H "Authorization: DPoP $(cat verifier.token)" -H "DPoP: $(ap2-mandate act
    /// dpop --key agent.jwk --token verifier.token --url http://127.0.0.1:8080/v1/challenges)"
    /// -X POST http://127.0.0.1:8080/v1/challenges
    Dpop {
        /// The agent's private key (a JWK file).
        #[arg(long)]
        key: PathBuf,
        /// The full URL of the request (the proof's `htu`).
        #[arg(long)]
        url: String,
        /// The request's method.
        #[arg(long, default_value = "POST")]
        method: String,
        /// The access token the request carries (a file), bound by `ath`.
        #[arg(long)]
        token: Option<PathBuf>,
        /// A nonce the server asked for (`DPoP-Nonce`).
        #[arg(long, allow_hyphen_values = true)]
        nonce: Option<String>,
    },
    /// Propose mandates to the wallet (a JSON file), and optionally wait for the decision.
    ///
    /// Example: ap2-mandate act request --url http://127.0.0.1:8080 --key agent.jwk
    /// --token wallet.token --body proposal.json --wait 300
    Request {
        #[command(flatten)]
        conn: Connection,
        /// The proposal (DESIGN §5 `POST /v1/mandate-requests`).
        #[arg(long)]
        body: PathBuf,
        /// Seconds to wait for the person's decision (0: do not wait).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Ask the verifier for a challenge; prints `{"nonce", "aud"}`.
    ///
    /// Example: ap2-mandate act challenge --url http://127.0.0.1:8080 --key agent.jwk --token
    /// verifier.token
    Challenge {
        #[command(flatten)]
        conn: Connection,
    },
    /// Close an open mandate for a merchant's checkout under a challenge; prints the chain.
    ///
    /// Example: ap2-mandate act close --kind payment --mandate open-payment.sdjwt --key agent.jwk
    /// --checkout-jwt checkout.jwt --aud http://127.0.0.1:8080/verifier --nonce N
    /// --instrument '{"id": "pi_1", "type": "card"}'
    Close {
        /// `payment` or `checkout`.
        #[arg(long)]
        kind: String,
        /// The open mandate as issued (a file).
        #[arg(long)]
        mandate: PathBuf,
        /// The agent's private key (a JWK file): the key the mandate delegates to.
        #[arg(long)]
        key: PathBuf,
        /// The merchant's checkout JWT (a file).
        #[arg(long)]
        checkout_jwt: PathBuf,
        /// The verifier's audience.
        #[arg(long)]
        aud: String,
        /// The verifier's challenge (base64url: it may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        nonce: String,
        /// The payment instrument (JSON), for payments.
        #[arg(long)]
        instrument: Option<String>,
        /// Withhold the disclosure of the allowed entry with this id (repeatable): the
        /// verifier sees only the entries it needs.
        #[arg(long = "withhold")]
        withhold: Vec<String>,
    },
    /// Present a closed chain to the verifier; prints its decision (exit 1 on a refusal).
    ///
    /// Example: ap2-mandate act present --url http://127.0.0.1:8080 --key agent.jwk --token
    /// verifier.token --kind payment --chain payment.chain --checkout-jwt checkout.jwt
    /// --order-chain order.chain
    Present {
        #[command(flatten)]
        conn: Connection,
        /// `payment` or `checkout`.
        #[arg(long)]
        kind: String,
        /// The closed chain (a file).
        #[arg(long)]
        chain: PathBuf,
        /// The merchant's checkout JWT (a file).
        #[arg(long)]
        checkout_jwt: PathBuf,
        /// For a payment: the order's checkout chain (a file).
        #[arg(long)]
        order_chain: Option<PathBuf>,
    },
}

pub fn run(args: ActArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let roots = args
            .tls_ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("--tls-ca-file {}: cannot read it", path.display()))
            })
            .transpose()?;
        let http = ap2_mandate::outbound::client(roots.as_deref(), None)
            .map_err(|e| anyhow!("--tls-ca-file: {e}; give a PEM file of CA certificates"))?;
        let client = |conn: &Connection| client(conn, &http);
        match args.command {
            ActCommand::Request { conn, body, wait } => {
                let client = client(&conn)?;
                let proposal: Value = serde_json::from_str(&read(&body)?)
                    .with_context(|| format!("{} is not JSON", body.display()))?;
                let created = client.request_mandates(&proposal).await?;
                say!("{created}");
                if wait > 0 {
                    let id = created["id"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no request id"))?;
                    let state = client
                        .wait_for_decision(id, Duration::from_secs(wait))
                        .await?;
                    say!("{state}");
                }
                Ok(ExitCode::SUCCESS)
            }
            ActCommand::SignIn {
                client,
                scope,
                resource,
                out,
                port,
                wait,
            } => {
                // A key that cannot sign is found out before the person signs in for nothing.
                load_key(&client.key)?;
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .context("cannot listen on loopback for the browser's return")?;
                let redirect = format!("http://{}/callback", listener.local_addr()?);
                let verifier = random_token(32)?;
                let state = random_token(12)?;
                let mut params = vec![
                    ("response_type", "code".to_owned()),
                    ("client_id", client.client_id.clone()),
                    ("redirect_uri", redirect.clone()),
                    ("scope", scope),
                    ("state", state.clone()),
                    ("code_challenge", challenge_s256(&verifier)),
                    ("code_challenge_method", "S256".to_owned()),
                ];
                if let Some(r) = resource {
                    params.push(("resource", r));
                }
                let query = serde_urlencoded::to_string(&params)?;
                let authorize = format!(
                    "{}/oauth2/authorize?{query}",
                    client.url.trim_end_matches('/')
                );
                eprintln!("Open this in the person's browser to sign in and approve:");
                eprintln!("{authorize}");
                open_browser(&authorize);
                let code = tokio::time::timeout(
                    Duration::from_secs(wait),
                    receive_code(&listener, &state),
                )
                .await
                .map_err(|_| {
                    anyhow!("no answer from the browser in {wait} seconds; run again")
                })??;
                let answer = client
                    .request(
                        &http,
                        &[
                            ("grant_type", "authorization_code"),
                            ("code", &code),
                            ("redirect_uri", &redirect),
                            ("code_verifier", &verifier),
                        ],
                    )
                    .await?;
                save_token(&answer, &out)
            }
            ActCommand::Exchange {
                client,
                token,
                resource,
                scope,
                out,
            } => {
                let subject = read(&token)?;
                let mut params = vec![
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", subject.as_str()),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("resource", resource.as_str()),
                ];
                if let Some(scope) = &scope {
                    params.push(("scope", scope));
                }
                let answer = client.request(&http, &params).await?;
                save_token(&answer, &out)
            }
            ActCommand::Dpop {
                key,
                url,
                method,
                token,
                nonce,
            } => {
                let key = load_key(&key)?;
                let token = token.map(|t| read(&t)).transpose()?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs() as i64;
                let proof = make_proof(
                    &key,
                    &method.to_ascii_uppercase(),
                    &url,
                    now,
                    token.as_deref(),
                    nonce.as_deref(),
                )?;
                say!("{proof}");
                Ok(ExitCode::SUCCESS)
            }
            ActCommand::Challenge { conn } => {
                let (nonce, aud) = client(&conn)?.challenge().await?;
                say!("{}", serde_json::json!({"nonce": nonce, "aud": aud}));
                Ok(ExitCode::SUCCESS)
            }
            ActCommand::Close {
                kind,
                mandate,
                key,
                checkout_jwt,
                aud,
                nonce,
                instrument,
                withhold,
            } => {
                let key = load_key(&key)?;
                let open = ap2_mandate::agent::withhold(&read(&mandate)?, &withhold)?;
                let jwt = read(&checkout_jwt)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs() as i64;
                let chain = match kind.as_str() {
                    "checkout" => close_checkout(&open, &key, &jwt, &aud, &nonce, now)?,
                    "payment" => {
                        let instrument: Value = serde_json::from_str(
                            instrument
                                .as_deref()
                                .ok_or_else(|| anyhow!("--instrument is required for payments"))?,
                        )
                        .context("--instrument is not JSON")?;
                        close_payment(&open, &key, &jwt, &instrument, &aud, &nonce, now)?
                    }
                    _ => return Err(anyhow!("--kind is payment or checkout")),
                };
                say!("{chain}");
                Ok(ExitCode::SUCCESS)
            }
            ActCommand::Present {
                conn,
                kind,
                chain,
                checkout_jwt,
                order_chain,
            } => {
                let client = client(&conn)?;
                let chain = read(&chain)?;
                let jwt = read(&checkout_jwt)?;
                let decision = match kind.as_str() {
                    "payment" => {
                        let order = order_chain.map(|p| read(&p)).transpose()?;
                        client
                            .present_payment(&chain, &jwt, order.as_deref())
                            .await?
                    }
                    "checkout" => client.present_checkout(&chain, &jwt).await?,
                    _ => return Err(anyhow!("--kind is payment or checkout")),
                };
                say!("{decision}");
                Ok(match decision["status"] == "Success" {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                })
            }
        }
    })
}

use ap2_mandate::identity::grants::token_types::ACCESS_TOKEN as ACCESS_TOKEN_TYPE;
use ap2_mandate::identity::grants::TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE;

/// Waits for the browser's redirect on `listener`: the code, once `state` matches.
async fn receive_code(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = stream.read(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]);
        let target = request
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (page, outcome) = match (get("state"), get("code"), get("error")) {
            (Some(s), Some(code), None) if s == state => (
                "You can close this window: the agent received your approval.",
                Ok(code),
            ),
            (Some(s), _, Some(error)) if s == state => (
                "The agent was not approved. You can close this window.",
                Err(anyhow!("the person did not approve ({error})")),
            ),
            _ => (
                "This answer does not belong to the sign-in the agent started.",
                Err(anyhow!(
                    "a redirect with another state arrived; it was ignored"
                )),
            ),
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        match outcome {
            Ok(code) => return Ok(code),
            Err(e) if get("state").as_deref() == Some(state) => return Err(e),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Opens `url` with the command in `BROWSER`, if one is set (the URL is appended, or replaces
/// `%s`); the URL is printed either way.
fn open_browser(url: &str) {
    let Ok(command) = std::env::var("BROWSER") else {
        return;
    };
    let mut words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    match words.iter_mut().find(|w| w.contains("%s")) {
        Some(w) => *w = w.replace("%s", url),
        None => words.push(url.to_owned()),
    }
    if let Some((program, args)) = words.split_first() {
        if let Err(e) = std::process::Command::new(program).args(args).spawn() {
            eprintln!("cannot start the browser ({program}): {e}; open the URL by hand");
        }
    }
}

/// Writes the access token to `out` (owner-only) and prints what it grants.
fn save_token(answer: &Value, out: &PathBuf) -> anyhow::Result<ExitCode> {
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the token service answered without a token: {answer}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options
        .open(out)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("cannot write {}", out.display()))?;
    let (_, claims) = ap2_mandate::danger::insecure_decode_jwt(token)?;
    say!(
        "{}",
        serde_json::json!({"token_file": out.display().to_string(), "aud": claims.get("aud"),
            "scope": claims.get("scope"), "sub": claims.get("sub"), "exp": claims.get("exp")})
    );
    Ok(ExitCode::SUCCESS)
}

fn client(conn: &Connection, http: &reqwest::Client) -> anyhow::Result<AgentClient> {
    let key = load_key(&conn.key)?;
    let token = read(&conn.token)?;
    let issuer = conn.issuer.as_deref().unwrap_or(&conn.url);
    Ok(AgentClient::new(&conn.url, issuer, key, &token).with_http(http.clone()))
}

fn load_key(path: &PathBuf) -> anyhow::Result<SigningKey> {
    let jwk: Value = serde_json::from_str(&read(path)?)
        .with_context(|| format!("{} is not a JWK", path.display()))?;
    SigningKey::from_jwk(&jwk).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}
