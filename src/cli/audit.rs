//! `ap2-mandate audit verify|tail`: check and read the hash-chained audit log.

use std::process::ExitCode;

use ap2_mandate::calendar::format_utc;
use ap2_mandate::store::{AuditLog as _, Store, StoreConfig};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// `sqlite://PATH` or `postgres://…` (default: the embedded store under ./ap2-data).
    #[arg(
        long,
        global = true,
        env = "AP2_DATABASE_URL",
        default_value = "sqlite://ap2-data/ap2.db?mode=rwc"
    )]
    database_url: String,
    /// PostgreSQL schema, when the store lives in one.
    #[arg(long, global = true, env = "AP2_DATABASE_SCHEMA")]
    schema: Option<String>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the whole chain; name the first record that does not fit.
    ///
    /// Example: ap2-mandate audit verify --database-url sqlite://ap2-data/ap2.db
    Verify,
    /// Print the most recent records readably.
    ///
    /// Example: ap2-mandate audit tail -n 20
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut config = StoreConfig::new(&args.database_url);
        config.schema = args.schema.clone();
        if let Some(dir) = sqlite_dir(&args.database_url) {
            std::fs::create_dir_all(dir)?;
        }
        let store = Store::open(&config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;
        let code = match args.command {
            AuditCommand::Verify => verify(&store).await?,
            AuditCommand::Tail { lines } => tail(&store, lines).await?,
        };
        store.close().await;
        Ok(code)
    })
}

async fn verify(store: &Store) -> anyhow::Result<ExitCode> {
    match store.verify().await? {
        Ok(count) => {
            println!("audit chain intact: {count} records");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            println!(
                "audit chain BROKEN at record {}: {}",
                broken.seq, broken.why
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn tail(store: &Store, lines: i64) -> anyhow::Result<ExitCode> {
    for r in store.tail(lines).await? {
        let a = &r.record;
        let mut line = format!(
            "#{:<6} {} {:<18} {:<8}",
            r.seq,
            format_utc(a.at),
            a.action,
            a.outcome
        );
        for (label, value) in [
            ("reason", &a.reason),
            ("agent", &a.agent_id),
            ("user", &a.user_id),
            ("grant", &a.grant_id),
            ("mandate", &a.mandate_hash),
            ("merchant", &a.merchant),
            ("amount", &a.amount),
        ] {
            if let Some(v) = value {
                line.push_str(&format!(" {label}={v}"));
            }
        }
        line.push_str(&format!(" run={}", a.correlation_id));
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory of an SQLite URL's file, so a first run can create it.
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
}
