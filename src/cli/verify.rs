//! `ap2-mandate verify`: one offline decision, printed with its AP2 error code.

use std::process::ExitCode;

use anyhow::Context as _;
use ap2_mandate::jose::KeySet;
use ap2_mandate::mandate::{CheckoutJwt, PaymentBindings, Policy, Trust, Usage, Verifier};
use ap2_mandate::sdjwt::{Challenge, UnverifiedChain};
use clap::{Args, ValueEnum};

use super::read_input;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A checkout mandate chain (merchant role).
    Checkout,
    /// A payment mandate chain (credential provider / processor role).
    Payment,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// checkout or payment.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The chain, a file holding it, or `-` for standard input.
    #[arg(long)]
    chain: String,
    /// JWKS file of the issuers (wallets) trusted to sign root mandates.
    #[arg(long)]
    issuer_jwks: String,
    /// JWKS file of the merchants trusted to sign checkout JWTs.
    #[arg(long)]
    merchant_jwks: String,
    /// The merchant's checkout JWT being approved or paid (value or file).
    #[arg(long)]
    checkout_jwt: String,
    /// This verifier's audience (omit with --nonce for an issuer-signed closed mandate).
    #[arg(long, requires = "nonce")]
    aud: Option<String>,
    /// The nonce this verifier issued (it may start with `-`).
    #[arg(long, requires = "aud", allow_hyphen_values = true)]
    nonce: Option<String>,
    /// For payments: the order's checkout chain (its open checkout hash binds payment.reference).
    #[arg(long)]
    checkout_chain: Option<String>,
    /// For payments: the checkout chain's audience, when --checkout-chain is given.
    #[arg(long)]
    checkout_aud: Option<String>,
    /// For payments: the checkout chain's nonce, when --checkout-chain is given.
    #[arg(long, allow_hyphen_values = true)]
    checkout_nonce: Option<String>,
    /// Earlier accepted total under this open mandate, in minor units.
    #[arg(long, default_value_t = 0)]
    spent: u64,
    /// Earlier accepted uses under this open mandate.
    #[arg(long, default_value_t = 0)]
    uses: u64,
    /// When the last use was accepted (Unix seconds).
    #[arg(long)]
    last_use: Option<i64>,
    /// Verify as of this instant (Unix seconds); default: now.
    #[arg(long)]
    now: Option<i64>,
}

pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = Trust {
        issuers: jwks(&a.issuer_jwks)?,
        merchants: jwks(&a.merchant_jwks)?,
    };
    let policy = Policy::default();
    let verifier = Verifier {
        policy: &policy,
        trust: &trust,
    };
    let now = match a.now {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .try_into()?,
    };
    let chain_text = read_input(&a.chain)?;
    let checkout_text = read_input(&a.checkout_jwt)?;
    let challenge = a
        .aud
        .as_deref()
        .zip(a.nonce.as_deref())
        .map(|(aud, nonce)| Challenge { aud, nonce });

    let decision =
        CheckoutJwt::verify(&checkout_text, &trust.merchants, now).and_then(|checkout| {
            let chain = UnverifiedChain::parse(&chain_text)?;
            match a.kind {
                Kind::Checkout => verifier
                    .checkout(&chain, &checkout, challenge.as_ref(), now)
                    .map(|_| ()),
                Kind::Payment => {
                    let open = open_checkout_hash(&a, &verifier, &checkout, now)?;
                    let bindings = PaymentBindings {
                        checkout: &checkout,
                        open_checkout_hash: open.as_deref(),
                    };
                    let usage = Usage {
                        total_minor: a.spent,
                        uses: a.uses,
                        last_use: a.last_use,
                    };
                    verifier
                        .payment(&chain, &bindings, &usage, challenge.as_ref(), now)
                        .map(|_| ())
                }
            }
        });
    match decision {
        Ok(()) => {
            say!("Success: the mandate approves this {}.", kind_word(a.kind));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("Error: {} ({})", e.code().as_str(), e.reason());
            say!("{}", e.code().description());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn open_checkout_hash(
    a: &VerifyArgs,
    verifier: &Verifier<'_>,
    checkout: &CheckoutJwt,
    now: i64,
) -> Result<Option<String>, ap2_mandate::mandate::Error> {
    let Some(arg) = &a.checkout_chain else {
        return Ok(None);
    };
    let text =
        read_input(arg).map_err(|_| ap2_mandate::mandate::Error::Malformed("checkout chain"))?;
    let chain = UnverifiedChain::parse(&text)?;
    let challenge = a
        .checkout_aud
        .as_deref()
        .zip(a.checkout_nonce.as_deref())
        .map(|(aud, nonce)| Challenge { aud, nonce });
    let verified = verifier.checkout(&chain, checkout, challenge.as_ref(), now)?;
    Ok((!verified.open().is_empty()).then(|| verified.chain().root().segment_hash()))
}

fn jwks(path: &str) -> anyhow::Result<KeySet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading JWKS {path}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    KeySet::from_jwks(&value)
        .with_context(|| format!("{path} is not a JWKS of P-256 public keys with unique kids"))
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Checkout => "checkout",
        Kind::Payment => "payment",
    }
}
