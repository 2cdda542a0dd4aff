//! `ap2-mandate merchant …`: play the merchant for tests and walkthroughs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use ap2_mandate::jose::{sha256_b64, sign_compact, SigningKey};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct MerchantArgs {
    #[command(subcommand)]
    command: MerchantCommand,
}

#[derive(Debug, Subcommand)]
enum MerchantCommand {
    /// Sign a checkout (a JSON file: `id`, `merchant`, `line_items`, `currency`, `totals`, as
    /// AP2 defines it) with the merchant's key; prints the checkout JWT.
    ///
    /// Example: ap2-mandate merchant sign --key shop.jwk --checkout checkout.json > checkout.jwt
    Sign {
        /// The merchant's private key (a JWK file, e.g. from `ap2-mandate keys new`).
        #[arg(long)]
        key: PathBuf,
        /// The checkout content.
        #[arg(long)]
        checkout: PathBuf,
        /// Print `{"checkout_jwt", "checkout_hash"}` instead of the bare JWT.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: MerchantArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MerchantCommand::Sign {
            key,
            checkout,
            json,
        } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let jwk: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JWK", key.display()))?;
            let key = SigningKey::from_jwk(&jwk).map_err(|e| anyhow!("{}: {e}", key.display()))?;
            let body = std::fs::read(&checkout)
                .with_context(|| format!("cannot read {}", checkout.display()))?;
            let content = ap2_mandate::json::parse(&body, 64 * 1024).map_err(|e| {
                anyhow!(
                    "{} is not strict JSON ({e}); fix it and run again",
                    checkout.display()
                )
            })?;
            for member in ["id", "merchant", "currency", "totals"] {
                if content.get(member).is_none() {
                    return Err(anyhow!(
                        "{} has no `{member}`: a checkout names its id, merchant, currency and totals",
                        checkout.display()
                    ));
                }
            }
            let jwt = sign_compact(&key, Some("JWT"), false, content.to_string().as_bytes())?;
            match json {
                true => say!(
                    "{}",
                    json!({"checkout_jwt": jwt, "checkout_hash": sha256_b64(jwt.as_bytes())})
                ),
                false => say!("{jwt}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
