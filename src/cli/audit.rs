//! `ap2-mandate audit verify|tail`: check and read the hash-chained audit log.

use std::process::ExitCode;

use ap2_mandate::calendar::format_utc;
use ap2_mandate::store::{AuditLog as _, Store, StoreConfig};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data directory of the embedded store (as for `serve`).
    #[arg(long, global = true, env = "AP2_DATA_DIR", default_value = "ap2-data")]
    data_dir: std::path::PathBuf,
    /// `sqlite://PATH` or `postgres://…` (default: `ap2.db` in the data directory).
    #[arg(long, global = true, env = "AP2_DATABASE_URL")]
    database_url: Option<String>,
    /// Print JSON: `{"intact", "records"}` or `{"intact", "broken_at", "why"}` for verify, one
    /// record per line for tail.
    #[arg(long, global = true)]
    json: bool,
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
        let mut config = match &args.database_url {
            Some(url) => StoreConfig::new(url),
            None => StoreConfig::sqlite(&args.data_dir.join("ap2.db")),
        };
        config.schema = args.schema.clone();
        if let Some(dir) = sqlite_dir(&config.url) {
            std::fs::create_dir_all(dir)?;
        }
        let store = Store::open(&config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;
        let code = match args.command {
            AuditCommand::Verify => verify(&store, args.json).await?,
            AuditCommand::Tail { lines } => tail(&store, lines, args.json).await?,
        };
        store.close().await;
        Ok(code)
    })
}

async fn verify(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let result = store.verify().await?;
    let code = match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    };
    match (result, json) {
        (Ok(count), false) => say!("audit chain intact: {count} records"),
        (Ok(count), true) => say!("{}", serde_json::json!({"intact": true, "records": count})),
        (Err(broken), false) => say!(
            "audit chain BROKEN at record {}: {}",
            broken.seq,
            broken.why
        ),
        (Err(broken), true) => say!(
            "{}",
            serde_json::json!({"intact": false, "broken_at": broken.seq, "why": broken.why})
        ),
    }
    Ok(code)
}

async fn tail(store: &Store, lines: i64, json: bool) -> anyhow::Result<ExitCode> {
    for r in store.tail(lines).await? {
        if json {
            say!("{}", serde_json::json!({"seq": r.seq, "record": r.record}));
            continue;
        }
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
        say!("{line}");
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
