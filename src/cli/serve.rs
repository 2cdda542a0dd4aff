//! `ap2-mandate serve`, and the commands that manage users, agents and keys in the same store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use ap2_mandate::http::guard::LimitsConfig;
use ap2_mandate::http::{load_or_create_admin_token, router, system_clock, AppState};
use ap2_mandate::identity::admin::AgentRegistration;
use ap2_mandate::identity::external::ExternalIssuerConfig;
use ap2_mandate::identity::password::Password;
use ap2_mandate::identity::{TokenService, TokenServiceConfig};
use ap2_mandate::jose::KeySet;
use ap2_mandate::jwks::{self, TrustedKeys};
use ap2_mandate::money::{Amount, Currency};
use ap2_mandate::store::records::{FederatedCredential, IdentityRecords as _, UserStatus};
use ap2_mandate::store::{KeyVault as _, MasterKey, Store, StoreConfig};
use ap2_mandate::verifier::{EvidenceRule, IssuerProfile, VerifierConfig, VerifierService};
use ap2_mandate::wallet::{WalletConfig, WalletService, MANDATE_KEY_PURPOSE};
use clap::{Args, Subcommand};
use serde_json::json;

/// Where the state lives: shared by `serve`, `user`, `agent` and `keys`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the embedded database, the master key and the admin token.
    #[arg(long, global = true, env = "AP2_DATA_DIR", default_value = "ap2-data")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…` (default: `ap2.db` in the data directory).
    #[arg(long, global = true, env = "AP2_DATABASE_URL")]
    database_url: Option<String>,
    /// PostgreSQL schema, when the store lives in one.
    #[arg(long, global = true, env = "AP2_DATABASE_SCHEMA")]
    schema: Option<String>,
    /// Our issuer identifier: the public base URL (default `http://` + the bind address).
    #[arg(long, global = true, env = "AP2_ISSUER")]
    issuer: Option<String>,
    /// A JSON file listing trusted external issuers (`issuer`, `profile`, `audience`, `jwks_file`).
    #[arg(long, global = true, env = "AP2_EXTERNAL_ISSUERS")]
    external_issuers: Option<PathBuf>,
}

/// A role this instance plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServedRole {
    /// The token service: sign-in, agent registry, on-behalf-of tokens.
    Token,
    /// The wallet: mandate requests, the consent page, revocation, status lists.
    Wallet,
    /// The checkout verifier: challenges, presentations, the A2A endpoint.
    Verifier,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on. Behind a TLS-terminating proxy, also set --issuer to the public
    /// https URL.
    #[arg(
        long,
        visible_alias = "bind",
        env = "AP2_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: String,
    /// The roles to run, comma-separated.
    #[arg(
        long,
        env = "AP2_ROLES",
        value_delimiter = ',',
        default_value = "token,wallet,verifier"
    )]
    roles: Vec<ServedRole>,
    /// Access token lifetime, seconds.
    #[arg(long, env = "AP2_TOKEN_LIFETIME", default_value_t = 300)]
    token_lifetime: i64,
    /// Upper bound for the access token lifetime, seconds (at most 3600).
    #[arg(long, env = "AP2_MAX_TOKEN_LIFETIME", default_value_t = 900)]
    max_token_lifetime: i64,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "AP2_LOG", default_value = "info")]
    log: tracing::Level,
    /// Most requests in flight at once; more are refused with 503 and Retry-After.
    #[arg(long, env = "AP2_MAX_IN_FLIGHT", default_value_t = 1024)]
    max_in_flight: usize,
    /// Longest a request may take, seconds.
    #[arg(long, env = "AP2_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// Sustained challenges and presentations per agent per second (429 beyond).
    #[arg(long, env = "AP2_AGENT_RATE", default_value_t = 50.0)]
    agent_rate: f64,
    /// Burst of challenges and presentations per agent above the sustained rate.
    #[arg(long, env = "AP2_AGENT_BURST", default_value_t = 100.0)]
    agent_burst: f64,
    #[command(flatten)]
    verifier: VerifierArgs,
}

/// The verifier's trust: this instance's wallet always, other mandate issuers and the merchants
/// whose checkouts it accepts as named here (with none, every presentation is refused).
#[derive(Debug, Args)]
pub struct VerifierArgs {
    /// The JWKS of another wallet whose mandates must carry delegation evidence: a file, or an
    /// https URL fetched at start-up and every --jwks-refresh seconds (repeatable; this
    /// instance's own wallet is always trusted).
    #[arg(
        long = "trust-issuer",
        env = "AP2_TRUST_ISSUERS",
        value_delimiter = ','
    )]
    trust_issuers: Vec<String>,
    /// The JWKS (file or https URL) of an issuer whose mandates carry no delegation evidence (as
    /// Google's reference SDK makes them); they bind the agent by `cnf` alone (repeatable).
    #[arg(
        long = "trust-issuer-cnf-only",
        env = "AP2_TRUST_ISSUERS_CNF_ONLY",
        value_delimiter = ','
    )]
    trust_issuers_cnf_only: Vec<String>,
    /// The JWKS (file or https URL) of merchant keys that sign checkout JWTs (repeatable).
    #[arg(
        long = "trust-merchant",
        env = "AP2_TRUST_MERCHANTS",
        value_delimiter = ','
    )]
    trust_merchants: Vec<String>,
    /// How often JWKS given by URL are fetched again, seconds (30 to 86400). A key id not yet
    /// known is fetched early (at most once per 30 seconds per URL); a URL that cannot be
    /// fetched keeps its keys for two periods, then none.
    #[arg(long, env = "AP2_JWKS_REFRESH", default_value_t = 300)]
    jwks_refresh: i64,
    /// The verifier's audience (default: the issuer URL + `/verifier`).
    #[arg(long, env = "AP2_VERIFIER_AUDIENCE")]
    verifier_audience: Option<String>,
    /// Accept only these currencies (ISO 4217 codes; repeatable).
    #[arg(
        long = "allowed-currency",
        env = "AP2_ALLOWED_CURRENCIES",
        value_delimiter = ','
    )]
    allowed_currencies: Vec<String>,
    /// The largest single payment, as `AMOUNT CODE` (for example `500.00 USD`; repeatable).
    #[arg(long = "max-payment", env = "AP2_MAX_PAYMENTS", value_delimiter = ',')]
    max_payments: Vec<String>,
    /// Longest a remote wallet's status list is cached, seconds (0 to 3600; its own `ttl` may
    /// say less): how long a revocation elsewhere can take to be seen.
    #[arg(long, env = "AP2_STATUS_CACHE", default_value_t = 60)]
    status_cache: i64,
    /// A PEM file of certificates the verifier trusts for HTTPS besides the public roots (a
    /// private CA in front of a remote wallet's status lists or JWKS).
    #[arg(long, env = "AP2_TLS_CA_FILE", value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input (first line).
    ///
    /// Example: echo 'correct horse battery' | ap2-mandate user add alice
    Add { username: String },
    /// List users.
    ///
    /// Example: ap2-mandate user list --data-dir ap2-data
    List,
    /// Disable a user: no more sign-in, and its tokens stop being issued.
    ///
    /// Example: ap2-mandate user disable alice
    Disable { username: String },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register an agent with its public keys.
    ///
    /// Example: ap2-mandate agent add --name shopper --owner ops@example.com --jwks agent.jwks.json
    /// --scope mandates:request --scope payments:present
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: String,
        /// A JWKS file with the agent's public P-256 keys.
        #[arg(long)]
        jwks: PathBuf,
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long = "audience")]
        audiences: Vec<String>,
        #[arg(long, default_value_t = 0)]
        max_depth: i64,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A federated credential as `issuer|subject|audience` (repeatable).
        #[arg(long = "federated")]
        federated: Vec<String>,
    },
    /// List agents.
    ///
    /// Example: ap2-mandate agent list
    List,
    /// Show one agent.
    ///
    /// Example: ap2-mandate agent show agt_3kYt…
    Show { id: String },
    /// Disable an agent: its grants, every token naming it and every mandate it holds are
    /// revoked at once.
    ///
    /// Example: ap2-mandate agent disable agt_3kYt…
    Disable { id: String },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a P-256 key pair for an agent or a merchant: the private JWK (owner-only) at
    /// --out, its public JWKS beside it (`NAME.jwks.json`). Touches no store.
    ///
    /// Example: ap2-mandate keys new --out shop.jwk --kid shop-2026
    New {
        /// Where to write the private JWK.
        #[arg(long)]
        out: PathBuf,
        /// The key id (default: its RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Start signing tokens with a new key; the old one verifies for `--overlap` seconds.
    ///
    /// Example: ap2-mandate keys rotate --overlap 3600
    Rotate {
        #[arg(long, default_value_t = 3600)]
        overlap: i64,
    },
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runs = |role| args.roles.contains(&role);
    check_options(&args)?;
    // Logs go to standard error; the banner to standard output.
    tracing_subscriber::fmt()
        .with_max_level(args.log)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let issuer = args
            .store
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen));
        let mut config = TokenServiceConfig::new(issuer);
        config.token_lifetime = args.token_lifetime;
        config.max_token_lifetime = args.max_token_lifetime;
        let service = open_service(&args.store, config).await?;
        let admin_file = args.store.data_dir.join("admin-token");
        let admin = load_or_create_admin_token(&admin_file)
            .with_context(|| format!("admin token file {}", admin_file.display()))?;
        // The signing key of tokens and receipts exists from the first start, sealed.
        service
            .signing_key(now())
            .await
            .map_err(|e| anyhow!("signing key: {}", e.reason()))?;
        let sweeper = service
            .store()
            .spawn_sweeper(std::time::Duration::from_secs(60));
        let service = Arc::new(service);
        let limits = LimitsConfig {
            max_in_flight: args.max_in_flight,
            timeout: std::time::Duration::from_secs(args.request_timeout),
            agent_rate: args.agent_rate,
            agent_burst: args.agent_burst,
            ..LimitsConfig::default()
        };
        let mut state = AppState::new(service.clone(), &admin, system_clock())
            .with_limits(limits)
            .with_token_role(runs(ServedRole::Token));
        let issuer = service.config().issuer.clone();
        let mut banner = Banner::new(&issuer);
        let key_sources = KeySources::new(&args.verifier)?;
        let merchants = key_sources.keys("--trust-merchant", &args.verifier.trust_merchants)?;
        fetch_at_start("--trust-merchant", &merchants).await?;
        let mut refreshed = vec![merchants.clone()];
        if runs(ServedRole::Token) {
            banner.role(
                "token service",
                "/oauth2/authorize  /oauth2/token  /v1/agents (admin)",
                format!("issuer {issuer}"),
            );
        }
        if runs(ServedRole::Wallet) {
            // The wallet signs human-present (closed) mandates only over checkouts of the
            // merchants the verifier trusts.
            let mut wallet_config = WalletConfig::new(&issuer);
            wallet_config.merchants = (!merchants.is_empty()).then(|| merchants.clone());
            let wallet = WalletService::new(wallet_config, service.clone())
                .await
                .map_err(|e| anyhow!("wallet: {e}"))?;
            banner.role(
                "wallet",
                "/v1/mandate-requests  /consent/{id}  /mandates",
                format!("audience {}", wallet.config().audience),
            );
            state = state.with_wallet(Arc::new(wallet));
        }
        if runs(ServedRole::Verifier) {
            let own_keys = own_wallet_keys(&service).await?;
            let verifier = verifier_service(
                &args.verifier,
                &key_sources,
                &issuer,
                own_keys,
                merchants.clone(),
                service.clone(),
            )?;
            for profile in &verifier.config().issuers {
                fetch_at_start(&profile.name, &profile.keys).await?;
                refreshed.push(profile.keys.clone());
            }
            banner.role(
                "verifier",
                "/v1/challenges  /v1/payments/verify  /v1/checkouts/verify  /a2a",
                format!("audience {}", verifier.config().audience),
            );
            let trusted = merchants.current(now()).0.len();
            let urls: Vec<&str> = merchants.urls().collect();
            banner.note(match (trusted, urls.is_empty()) {
                (0, true) => "trusts no merchant yet: every presentation is refused until you \
                      pass --trust-merchant FILE (make one with `ap2-mandate keys new`) or URL"
                    .to_owned(),
                (n, true) => {
                    format!("trusts {n} merchant checkout key(s) and this instance's wallet")
                }
                (n, false) => format!(
                    "trusts {n} merchant checkout key(s) (some from {}) and this instance's wallet",
                    urls.join(", ")
                ),
            });
            state = state.with_verifier(Arc::new(verifier));
        }
        refreshed.retain(|keys| keys.urls().next().is_some());
        let refresher = (!refreshed.is_empty()).then(|| tokio::spawn(refresh_keys(refreshed)));
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| {
                format!(
                    "--listen {}: cannot listen there; pick a free address such as 127.0.0.1:8081",
                    args.listen
                )
            })?;
        let address = listener.local_addr()?;
        let stop = shutdown_signal()?;
        banner.print(&address.to_string(), &args.store, &admin_file);
        tracing::info!(%address, "serving");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(stop)
            .await?;
        tracing::info!("stopped: every request in flight was answered");
        sweeper.abort();
        if let Some(refresher) = refresher {
            refresher.abort();
        }
        service.store().close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Refuses options that cannot work, naming the option and the fix, before anything starts.
fn check_options(args: &ServeArgs) -> anyhow::Result<()> {
    if args.roles.is_empty() {
        bail!("--roles needs at least one of token, wallet, verifier");
    }
    let verifier_options = !(args.verifier.trust_issuers.is_empty()
        && args.verifier.trust_issuers_cnf_only.is_empty()
        && args.verifier.trust_merchants.is_empty());
    if verifier_options && !args.roles.contains(&ServedRole::Verifier) {
        bail!("--trust-issuer and --trust-merchant configure the verifier; add verifier to --roles or drop them");
    }
    if !(args.agent_rate.is_finite() && args.agent_rate > 0.0) {
        bail!("--agent-rate must be a number above 0 (requests per second), for example 50");
    }
    if !(args.agent_burst.is_finite() && args.agent_burst >= 1.0) {
        bail!("--agent-burst must be at least 1, for example 100");
    }
    if args.request_timeout == 0 {
        bail!("--request-timeout must be at least 1 second, for example 30");
    }
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1, for example 1024");
    }
    Ok(())
}

/// The start-up screen: what runs where, where the state and the secrets live (paths only),
/// and how to sign in.
struct Banner {
    issuer: String,
    roles: Vec<(String, String, String)>,
    notes: Vec<String>,
}

impl Banner {
    fn new(issuer: &str) -> Banner {
        Banner {
            issuer: issuer.to_owned(),
            roles: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn role(&mut self, name: &str, routes: &str, detail: String) {
        self.roles
            .push((name.to_owned(), routes.to_owned(), detail));
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    fn print(&self, address: &str, store: &StoreArgs, admin_file: &std::path::Path) {
        let database = match &store.database_url {
            Some(url) if url.starts_with("postgres") => {
                "PostgreSQL (from --database-url)".to_owned()
            }
            Some(url) => url.clone(),
            None => format!("SQLite {}", store.data_dir.join("ap2.db").display()),
        };
        let mut out = format!(
            "ap2-mandate {} listening on {address}, public URL {}\n",
            env!("CARGO_PKG_VERSION"),
            self.issuer
        );
        for (name, routes, detail) in &self.roles {
            out.push_str(&format!("  {name:<14} {routes}\n  {:<14} {detail}\n", ""));
        }
        for note in &self.notes {
            out.push_str(&format!("  {:<14} {note}\n", ""));
        }
        out.push_str(&format!(
            "  {:<14} {database}\n  {:<14} {} (send as `Authorization: Bearer …`)\n  {:<14} {}\n",
            "store",
            "admin token",
            admin_file.display(),
            "master key",
            match std::env::var_os("AP2_MASTER_KEY") {
                Some(_) => "from AP2_MASTER_KEY".to_owned(),
                None => store.data_dir.join("master.key").display().to_string(),
            }
        ));
        out.push_str(&format!(
            "  {:<14} add a person with `ap2-mandate user add NAME`; they sign in at {}/mandates\n  \
             {:<14} {}/openapi.json  {}/.well-known/agent-card.json  {}/metrics\n\
             Stop with Ctrl-C: requests in flight are answered first.",
            "sign in", self.issuer, "docs", self.issuer, self.issuer, self.issuer
        ));
        say!("{out}");
    }
}

pub fn user(args: UserArgs) -> anyhow::Result<ExitCode> {
    with_service(&args.store, |service| async move {
        let now = now();
        match args.command {
            UserCommand::Add { username } => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let password = Password::new(line.trim_end_matches(['\r', '\n']));
                let user = service
                    .create_user(&username, &password, now)
                    .await
                    .map_err(|e| anyhow!("{}", e.reason()))?;
                say!("{}", json!({"id": user.id, "username": user.username}));
            }
            UserCommand::List => {
                for user in service.store().users().await? {
                    say!(
                        "{}",
                        json!({"id": user.id, "username": user.username, "status": user.status})
                    );
                }
            }
            UserCommand::Disable { username } => {
                let user = service.store().user_by_username(&username).await?;
                service
                    .store()
                    .set_user_status(&user.id, UserStatus::Disabled)
                    .await?;
                say!("{}", json!({"id": user.id, "status": "disabled"}));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    with_service(&args.store, |service| async move {
        let now = now();
        match args.command {
            AgentCommand::Add {
                name,
                owner,
                jwks,
                scopes,
                audiences,
                max_depth,
                redirect_uris,
                federated,
            } => {
                let jwks: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&jwks)?)?;
                let federated_credentials = federated
                    .iter()
                    .map(|f| match f.split('|').collect::<Vec<_>>()[..] {
                        [issuer, subject, audience] => Ok(FederatedCredential {
                            issuer: issuer.into(),
                            subject: subject.into(),
                            audience: audience.into(),
                        }),
                        _ => Err(anyhow!("--federated takes issuer|subject|audience")),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let body = AgentRegistration {
                    name,
                    owner,
                    jwks,
                    scopes,
                    audiences,
                    max_delegation_depth: max_depth,
                    federated_credentials,
                    redirect_uris,
                };
                let agent = service
                    .register_agent(&body, now)
                    .await
                    .map_err(|e| anyhow!("{}", e.reason()))?;
                say!("{}", ap2_mandate::http::agent_json(&agent));
            }
            AgentCommand::List => {
                for agent in service.store().agents().await? {
                    say!(
                        "{}",
                        json!({"id": agent.id, "name": agent.name, "owner": agent.owner, "status": agent.status})
                    );
                }
            }
            AgentCommand::Show { id } => {
                say!(
                    "{:#}",
                    ap2_mandate::http::agent_json(&service.store().agent(&id).await?)
                );
            }
            AgentCommand::Disable { id } => {
                let revoked = service
                    .disable_agent(&id, now)
                    .await
                    .map_err(|e| anyhow!("{}", e.reason()))?;
                say!(
                    "{}",
                    json!({"id": id, "status": "disabled", "revoked_grants": revoked.grants, "revoked_tokens": revoked.tokens, "revoked_mandates": revoked.mandates})
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    if let KeysCommand::New { out, kid } = &args.command {
        return new_key(out, kid.clone());
    }
    with_service(&args.store, |service| async move {
        match args.command {
            KeysCommand::New { .. } => unreachable!("handled without a store above"),
            KeysCommand::Rotate { overlap } => {
                service
                    .rotate_keys(now(), overlap)
                    .await
                    .map_err(|e| anyhow!("{}", e.reason()))?;
                say!("{}", json!({"rotated": "tokens", "overlap": overlap}));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn new_key(out: &std::path::Path, kid: Option<String>) -> anyhow::Result<ExitCode> {
    let key = ap2_mandate::jose::SigningKey::generate(kid)?;
    let key = match key.kid() {
        Some(_) => key,
        None => {
            let kid = key.public().thumbprint();
            let mut jwk: serde_json::Value = serde_json::from_str(&key.to_private_jwk()?)?;
            jwk["kid"] = kid.into();
            ap2_mandate::jose::SigningKey::from_jwk(&jwk)?
        }
    };
    let public_path = out.with_extension("jwks.json");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    let private = key.to_private_jwk()?;
    options
        .open(out)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| {
            format!(
                "--out {}: cannot create it (an existing key is never overwritten)",
                out.display()
            )
        })?;
    let public = json!({"keys": [key.public().to_value()]});
    std::fs::write(&public_path, format!("{public:#}\n"))
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    say!(
        "{}",
        json!({"private_jwk": out.display().to_string(), "public_jwks": public_path.display().to_string(),
            "kid": key.kid(), "thumbprint": key.public().thumbprint()})
    );
    Ok(ExitCode::SUCCESS)
}

fn with_service<F, Fut>(args: &StoreArgs, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Arc<TokenService>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let issuer = args
            .issuer
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let service = Arc::new(open_service(args, TokenServiceConfig::new(issuer)).await?);
        let code = f(service.clone()).await;
        service.store().close().await;
        code
    })
}

async fn open_service(
    args: &StoreArgs,
    config: TokenServiceConfig,
) -> anyhow::Result<TokenService> {
    if !args.data_dir.exists() {
        std::fs::create_dir_all(&args.data_dir).with_context(|| {
            format!(
                "--data-dir {}: cannot create it; choose a writable directory",
                args.data_dir.display()
            )
        })?;
        // The database holds password hashes and sealed keys: the owner's alone.
        #[cfg(unix)]
        std::fs::set_permissions(
            &args.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
    }
    let url = args.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            args.data_dir.join("ap2.db").display()
        )
    });
    let mut store_config = StoreConfig::new(url);
    store_config.schema = args.schema.clone();
    let store = Store::open(&store_config)
        .await
        .map_err(|e| anyhow!("cannot open the store: {e}"))?;
    let master = MasterKey::load_or_create(&args.data_dir.join("master.key"))
        .map_err(|e| anyhow!("master key: {e}"))?;
    let external: Vec<ExternalIssuerConfig> = match &args.external_issuers {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{} is not a list of external issuers", path.display()))?,
        None => Vec::new(),
    };
    TokenService::new(store, Arc::new(master), config, external).map_err(|e| anyhow!(e))
}

/// The verifier role from its options.
fn verifier_service(
    args: &VerifierArgs,
    sources: &KeySources,
    issuer: &str,
    own_wallet: KeySet,
    merchants: TrustedKeys,
    tokens: Arc<TokenService>,
) -> anyhow::Result<VerifierService> {
    // This instance's own wallet is trusted like any wallet: its mandates carry evidence.
    let mut issuers = vec![IssuerProfile {
        name: "this instance's wallet".into(),
        keys: own_wallet.into(),
        evidence: EvidenceRule::Required,
    }];
    for (option, paths, evidence) in [
        (
            "--trust-issuer",
            &args.trust_issuers,
            EvidenceRule::Required,
        ),
        (
            "--trust-issuer-cnf-only",
            &args.trust_issuers_cnf_only,
            EvidenceRule::CnfOnly,
        ),
    ] {
        for source in paths {
            issuers.push(IssuerProfile {
                name: format!("{option} {source}"),
                keys: sources.keys(option, std::slice::from_ref(source))?,
                evidence,
            });
        }
    }
    let audience = args
        .verifier_audience
        .clone()
        .unwrap_or_else(|| format!("{issuer}/verifier"));
    let mut config = VerifierConfig::new(audience, issuers, merchants);
    if !args.allowed_currencies.is_empty() {
        let currencies = args
            .allowed_currencies
            .iter()
            .map(|c| {
                Currency::from_code(c)
                    .map_err(|_| anyhow!("--allowed-currency `{c}` is not an ISO 4217 code"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        config.allowed_currencies = Some(currencies);
    }
    for cap in &args.max_payments {
        let parsed = cap
            .split_once(' ')
            .and_then(|(amount, code)| {
                let currency = Currency::from_code(code).ok()?;
                Amount::parse_major(amount, currency).ok()
            })
            .ok_or_else(|| anyhow!("--max-payment `{cap}` must read like `500.00 USD`"))?;
        config.max_payment.push(parsed);
    }
    if !(0..=3600).contains(&args.status_cache) {
        bail!("--status-cache must be 0 to 3600 seconds, for example 60");
    }
    config.status_cache = args.status_cache;
    config.tls_roots = sources.tls_roots.clone();
    VerifierService::new(config, tokens).map_err(|e| anyhow!("verifier configuration: {e}"))
}

/// How trusted keys are had: JWKS files are read at once; JWKS URLs are fetched with one client
/// (the extra CA roots of `--tls-ca-file`, a short timeout, no redirects).
struct KeySources {
    tls_roots: Option<Vec<u8>>,
    refresh: i64,
    http: reqwest::Client,
}

impl KeySources {
    fn new(args: &VerifierArgs) -> anyhow::Result<Self> {
        let tls_roots = match &args.tls_ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow!(
                    "--tls-ca-file {}: cannot read it ({e}); give a PEM file of CA certificates",
                    path.display()
                )
            })?),
        };
        let http = ap2_mandate::outbound::client(tls_roots.as_deref(), Some(jwks::FETCH_TIMEOUT))
            .map_err(|e| anyhow!("--tls-ca-file: {e}"))?;
        if !jwks::REFRESH_RANGE.contains(&args.jwks_refresh) {
            bail!("--jwks-refresh must be 30 to 86400 seconds, for example 300");
        }
        Ok(KeySources {
            tls_roots,
            refresh: args.jwks_refresh,
            http,
        })
    }

    /// The keys of `sources` given to `option`: each a JWKS file or an `https://` URL (`http://`
    /// on loopback only). URLs are fetched later, by [`fetch_at_start`].
    fn keys(&self, option: &str, sources: &[String]) -> anyhow::Result<TrustedKeys> {
        let mut fixed = KeySet::new();
        let mut urls = Vec::new();
        for source in sources {
            if source.starts_with("https://") || source.starts_with("http://") {
                urls.push(source.clone());
                continue;
            }
            for key in read_jwks(option, std::path::Path::new(source))?.keys() {
                fixed
                    .insert(key.clone())
                    .map_err(|e| anyhow!("{option} {source}: {e}"))?;
            }
        }
        if urls.is_empty() {
            return Ok(fixed.into());
        }
        TrustedKeys::with_urls(fixed, urls, self.refresh, self.http.clone())
            .map_err(|e| anyhow!("{option}: {e}"))
    }
}

/// Fetches every JWKS URL of `keys` once; refuses to start when one cannot be used, naming
/// `name` (the option and its value) and the URL.
async fn fetch_at_start(name: &str, keys: &TrustedKeys) -> anyhow::Result<()> {
    for report in keys.refresh(now(), true).await {
        match report.outcome {
            Ok(0) => bail!(
                "{name}: the JWKS at {} holds no P-256 key; give the URL of a JWKS with the \
                 ES256 keys to trust",
                report.url
            ),
            Ok(n) => tracing::info!(url = %report.url, keys = n, "JWKS fetched"),
            Err(reason) => bail!(
                "{name}: the JWKS at {} cannot be used: {reason}; give a reachable JWKS URL \
                 or a file",
                report.url
            ),
        }
    }
    Ok(())
}

/// Fetches each JWKS URL again when its refresh period has passed, until the server stops.
async fn refresh_keys(sources: Vec<TrustedKeys>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for keys in &sources {
            keys.refresh(now(), false).await;
        }
    }
}

/// The public keys of a JWKS file given to `option`; every failure names the option, the file
/// and what to give instead.
fn read_jwks(option: &str, path: &std::path::Path) -> anyhow::Result<KeySet> {
    let fix = "give a JWKS file of public P-256 keys (`ap2-mandate keys new` makes one)";
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{option} {}: cannot read it ({e}); {fix}", path.display()))?;
    let value = ap2_mandate::json::parse(text.as_bytes(), 1 << 20)
        .map_err(|e| anyhow!("{option} {}: not strict JSON ({e}); {fix}", path.display()))?;
    KeySet::from_jwks(&value)
        .map_err(|e| anyhow!("{option} {}: not a P-256 JWKS ({e}); {fix}", path.display()))
}

/// The keys this instance's wallet signs mandates with: made on first start; every unretired
/// one is trusted (two instances starting together may each make one).
pub(crate) async fn own_wallet_keys(service: &TokenService) -> anyhow::Result<KeySet> {
    service
        .purpose_key(MANDATE_KEY_PURPOSE, now())
        .await
        .map_err(|e| anyhow!("wallet signing key: {}", e.reason()))?;
    let mut own_keys = KeySet::new();
    let prefix = format!("{MANDATE_KEY_PURPOSE}-");
    for key in service.store().verification_keys(now()).await? {
        if key.kid().is_some_and(|kid| kid.starts_with(&prefix)) {
            own_keys
                .insert(key)
                .map_err(|e| anyhow!("the wallet's keys: {e}"))?;
        }
    }
    Ok(own_keys)
}

fn now() -> i64 {
    (system_clock())()
}

/// Listens for Ctrl-C and SIGTERM from this moment (so a stop sent as soon as the banner says
/// how is never missed), returning a future that completes at the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
