//! `ap2-mandate act …`: play the agent against a wallet and a verifier, with the agent's own key
//! and an access token the token service issued to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use ap2_mandate::agent::{close_checkout, close_payment, AgentClient};
use ap2_mandate::jose::SigningKey;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ActArgs {
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

#[derive(Debug, Subcommand)]
enum ActCommand {
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
        /// The verifier's challenge.
        #[arg(long)]
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
        match args.command {
            ActCommand::Request { conn, body, wait } => {
                let client = client(&conn)?;
                let proposal: Value = serde_json::from_str(&read(&body)?)
                    .with_context(|| format!("{} is not JSON", body.display()))?;
                let created = client.request_mandates(&proposal).await?;
                println!("{created}");
                if wait > 0 {
                    let id = created["id"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no request id"))?;
                    let state = client
                        .wait_for_decision(id, Duration::from_secs(wait))
                        .await?;
                    println!("{state}");
                }
                Ok(ExitCode::SUCCESS)
            }
            ActCommand::Challenge { conn } => {
                let (nonce, aud) = client(&conn)?.challenge().await?;
                println!("{}", serde_json::json!({"nonce": nonce, "aud": aud}));
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
                println!("{chain}");
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
                println!("{decision}");
                Ok(match decision["status"] == "Success" {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                })
            }
        }
    })
}

fn client(conn: &Connection) -> anyhow::Result<AgentClient> {
    let key = load_key(&conn.key)?;
    let token = read(&conn.token)?;
    let issuer = conn.issuer.as_deref().unwrap_or(&conn.url);
    Ok(AgentClient::new(&conn.url, issuer, key, &token))
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
