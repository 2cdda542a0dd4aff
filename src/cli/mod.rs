//! Command-line interface: argument parsing and dispatch.

/// Prints one line of a command's output. A reader that went away (`| head`) ends the command
/// as a closed pipe ends other Unix tools, with status 141, instead of a panic; any other
/// failure to write is an error worth stopping on.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            panic!("cannot write to standard output: {e}");
        }
    }};
}

mod act;
mod audit;
pub mod config;
mod conformance;
mod demo;
mod inspect;
mod merchant;
mod serve;
mod verify;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// AP2 payment mandates for AI agents: issue after consent, verify before money moves.
#[derive(Debug, Parser)]
#[command(name = "ap2-mandate", version, about)]
pub struct Cli {
    /// A TOML file of options (keys are the long option names); flags and `AP2_…` variables
    /// win over it.
    #[arg(long, global = true, env = "AP2_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a mandate chain hop by hop and explain it, WITHOUT verifying anything.
    ///
    /// Example: ap2-mandate inspect fixtures/ap2-v0.2/cases/valid_hnp_payment.json
    Inspect {
        /// The chain itself, a file holding it (or a vector case JSON with a `chain`), or `-`.
        input: String,
    },
    /// Verify a chain offline against trusted keys, the checkout, the challenge and the time.
    ///
    /// Example: ap2-mandate verify --kind payment --chain chain.txt --issuer-jwks wallet.json
    /// --merchant-jwks merchants.json --checkout-jwt checkout.jwt --aud https://cp.example
    /// --nonce n-123 --checkout-chain checkout-chain.txt
    Verify(Box<verify::VerifyArgs>),
    /// Run a directory of AP2 vectors (manifest.json, keys.json, cases/) and compare verdicts.
    ///
    /// Example: ap2-mandate conformance ../shared/vectors/ap2-v0.2
    Conformance {
        /// The vector directory.
        dir: PathBuf,
    },
    /// Check or read the hash-chained audit log.
    ///
    /// Example: ap2-mandate audit verify      (or: ap2-mandate audit tail -n 20)
    Audit(audit::AuditArgs),
    /// Serve the token service, the wallet and the verifier over HTTP (all three by default).
    ///
    /// With no flags: 127.0.0.1:8080, SQLite, keys and an admin token under ./ap2-data/.
    /// Every option is also an `AP2_…` variable and a key of the `--config` file.
    ///
    /// Example: ap2-mandate serve --trust-merchant shop.jwks.json --roles wallet,verifier
    Serve(Box<serve::ServeArgs>),
    /// Manage users who delegate to agents.
    ///
    /// Example: echo 'correct horse battery staple' | ap2-mandate user add alice
    User(serve::UserArgs),
    /// Manage the agent registry.
    ///
    /// Example: ap2-mandate agent add --name shopper --owner ops@example.com --jwks agent.jwks.json
    /// --scope mandates:request --scope payments:present
    Agent(serve::AgentArgs),
    /// Make key pairs for agents and merchants; rotate this instance's signing keys.
    ///
    /// Example: ap2-mandate keys new --out agent.jwk      (or: ap2-mandate keys rotate)
    Keys(serve::KeysArgs),
    /// Play the agent: sign in a person, exchange tokens, make DPoP proofs, request mandates,
    /// get a challenge, close a mandate, present it.
    ///
    /// Example: ap2-mandate act challenge --url http://127.0.0.1:8080 --key agent.jwk --token
    /// verifier.token
    Act(act::ActArgs),
    /// Run the whole story on a throwaway instance and tell it step by step.
    ///
    /// An agent registers, a person delegates and consents, a merchant signs a checkout, the
    /// agent pays; then a replay, an amount over the cap, another agent and a revoked mandate
    /// are refused, and the audit chain is checked. Exit status 0 only when every step behaved
    /// as expected.
    ///
    /// Example: ap2-mandate demo            (NO_COLOR=1 or a pipe for plain text; --json for tools)
    Demo(demo::DemoArgs),
    /// Play the merchant: sign a checkout with the merchant's own key.
    ///
    /// Example: ap2-mandate merchant sign --key shop.jwk --checkout checkout.json
    Merchant(merchant::MerchantArgs),
    /// Print a shell completion script.
    ///
    /// Example: ap2-mandate completions bash > /etc/bash_completion.d/ap2-mandate
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Runs one command; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { input } => inspect::run(&read_input(&input)?),
        Command::Verify(args) => verify::run(*args),
        Command::Conformance { dir } => conformance::run(&dir),
        Command::Audit(args) => audit::run(args),
        Command::Serve(args) => serve::serve(*args),
        Command::User(args) => serve::user(args),
        Command::Agent(args) => serve::agent(args),
        Command::Keys(args) => serve::keys(args),
        Command::Act(args) => act::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Merchant(args) => merchant::run(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "ap2-mandate", &mut script);
            use std::io::Write as _;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
                Err(e) => Err(e.into()),
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// Reads a chain-like argument: `-` is standard input, an existing file is read, anything else
/// is the value itself. A JSON file with a `chain` member (a vector case) yields that member.
pub(crate) fn read_input(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_owned()
    };
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).context("input looks like JSON but does not parse")?;
        if let Some(chain) = value.get("chain").and_then(|c| c.as_str()) {
            return Ok(chain.to_owned());
        }
    }
    Ok(text.to_owned())
}
