//! State that cannot be fooled: one store, two backends (SQLite by default, PostgreSQL for
//! several instances), with the same guarantees on both.
//!
//! Every single-use or spending decision is one conditional statement inside one transaction;
//! nothing is checked in one round trip and written in another. A verification decision
//! (nonce, redemption, ledger, idempotency, audit record) commits together or not at all
//! ([`decision`]). The audit log is hash-chained and append-only in the database itself
//! ([`audit`]). Signing keys are kept encrypted at rest ([`keys`]). Any database fault fails
//! closed as [`StoreError::Unavailable`]. SQL is shared by both backends (`$N` parameters);
//! only the migrations differ.

pub mod audit;
pub mod checkpoint;
pub mod decision;
pub mod keys;
pub mod records;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _};

pub use audit::{AuditLog, AuditRecord, ChainBreak};
pub use decision::{
    Begin, Committed, Decision, DecisionLedger, IdempotencyDone, LedgerTotals, NonceUse,
    Redemption, Refusal, Spend,
};
pub use keys::{KeyVault, MasterKey};
pub use sweep::SweepReport;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, WAL journal: the embedded default.
    Sqlite,
    /// A shared server: several instances may use one database.
    Postgres,
}

/// How hard SQLite works to keep a commit (PostgreSQL keeps its own `synchronous_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL: a commit survives a crash of our process; on power loss
    /// the commits since the log was last synced (at a background checkpoint, every 200 ms
    /// while there are new commits) may be lost.
    Normal,
    /// `synchronous=FULL`: every commit is on disk before it is acknowledged.
    Full,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// PostgreSQL schema to use (created if missing); `None` uses the server's default.
    pub schema: Option<String>,
    /// SQLite commit durability.
    pub durability: Durability,
    /// How long an operation may wait for a connection or a lock before failing closed.
    pub timeout: Duration,
    /// Most connections (SQLite always uses one writer).
    pub max_connections: u32,
}

impl StoreConfig {
    /// Defaults for `url`: NORMAL durability, 5 s timeout, 8 connections.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            schema: None,
            durability: Durability::Normal,
            timeout: Duration::from_secs(5),
            max_connections: 8,
        }
    }

    /// An SQLite store in the file `path`.
    pub fn sqlite(path: &std::path::Path) -> Self {
        Self::new(format!("sqlite://{}?mode=rwc", path.display()))
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, locked past the timeout, or failed: nothing was decided.
    #[error("store unavailable")]
    Unavailable,
    /// A row that must exist does not.
    #[error("not found")]
    NotFound,
    /// A row with this identity already exists.
    #[error("already exists")]
    AlreadyExists,
    /// Stored data does not have the shape we wrote (corruption or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The configuration cannot be used (bad URL, schema name, master key).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::AlreadyExists;
            }
        }
        if matches!(e, sqlx::Error::RowNotFound) {
            return StoreError::NotFound;
        }
        tracing_fault(&e);
        StoreError::Unavailable
    }
}

/// Our own fault: logged once here, by kind only (never with request data).
fn tracing_fault(e: &sqlx::Error) {
    tracing::error!(fault = fault_kind(e), "store operation failed");
}

fn fault_kind(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::PoolTimedOut => "pool timed out",
        sqlx::Error::PoolClosed => "pool closed",
        sqlx::Error::Io(_) => "i/o",
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Protocol(_) => "protocol",
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode",
        _ => "other",
    }
}

/// A query on either backend, with its parameters bound.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// SQLite: runs `query`, several statements separated by `;`, in one hand-off to the database
/// thread; returns each statement's count of changed rows and the last row it gave, in order.
pub(crate) async fn batch_answers<'c, 'q: 'c, E>(
    executor: E,
    query: AnyQuery<'q>,
) -> Result<Vec<(u64, Option<sqlx::any::AnyRow>)>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    use futures_util::TryStreamExt as _;
    let mut answers = Vec::new();
    let mut row = None;
    let mut stream = executor.fetch_many(query);
    // Each statement yields its rows, then its count.
    while let Some(item) = stream.try_next().await? {
        match item {
            sqlx::Either::Right(r) => row = Some(r),
            sqlx::Either::Left(done) => answers.push((done.rows_affected(), row.take())),
        }
    }
    Ok(answers)
}

/// The store: a connection pool and the backend it speaks to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: the task checkpointing the log, stopped with the last clone of the store.
    _checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl Store {
    /// Connects, configures the connection and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if config.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(
                "database URL must start with sqlite: or postgres://".into(),
            ));
        };
        let options: AnyConnectOptions = config
            .url
            .parse()
            .map_err(|_| StoreError::Config("database URL does not parse".into()))?;
        if backend == Backend::Sqlite && config.schema.is_some() {
            return Err(StoreError::Config(
                "a schema applies to PostgreSQL only".into(),
            ));
        }
        let setup = connection_setup(backend, config)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                config.max_connections
            })
            .acquire_timeout(config.timeout)
            .after_connect(move |conn, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(setup.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let mut store = Store {
            pool,
            backend,
            _checkpointer: None,
        };
        store.migrate(config.schema.as_deref()).await?;
        if backend == Backend::Sqlite {
            let checkpointer =
                checkpoint::spawn(&config.url, config.timeout, store.pool.clone()).await?;
            store._checkpointer = Some(Arc::new(checkpointer));
        }
        Ok(store)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool (for tests and benchmarks that need raw SQL).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies pending migrations. On PostgreSQL, instances starting together on one database
    /// take turns under an advisory lock (per schema), so the loser waits and finds them done.
    async fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let migrations: &[(i64, &str)] = match self.backend {
            Backend::Sqlite => &[
                (1, include_str!("migrations/sqlite/0001_init.sql")),
                (2, include_str!("migrations/sqlite/0002_oauth.sql")),
                (3, include_str!("migrations/sqlite/0003_wallet.sql")),
            ],
            Backend::Postgres => &[
                (1, include_str!("migrations/postgres/0001_init.sql")),
                (2, include_str!("migrations/postgres/0002_oauth.sql")),
                (3, include_str!("migrations/postgres/0003_wallet.sql")),
                (4, include_str!("migrations/postgres/0004_decide.sql")),
            ],
        };
        let mut conn = self.pool.acquire().await?;
        // The schema name was checked in `connection_setup`: lowercase letters, digits and `_`.
        let lock_key = format!(
            "hashtext('ap2-mandate migrations {}')",
            schema.unwrap_or("public")
        );
        if self.backend == Backend::Postgres {
            conn.execute(format!("SELECT pg_advisory_lock({lock_key})").as_str())
                .await?;
        }
        let applied = apply_migrations(&mut conn, self.backend, schema, migrations).await;
        if self.backend == Backend::Postgres {
            // Also released when the connection closes, should this fail.
            let _ = conn
                .execute(format!("SELECT pg_advisory_unlock({lock_key})").as_str())
                .await;
        }
        applied
    }
}

async fn apply_migrations(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    schema: Option<&str>,
    migrations: &[(i64, &str)],
) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    if let (Backend::Postgres, Some(schema)) = (backend, schema) {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await?;
    }
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .await?;
    for (version, sql) in migrations {
        let mut tx = conn.begin().await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        tx.execute(*sql).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(unix_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn connection_setup(backend: Backend, config: &StoreConfig) -> Result<String, StoreError> {
    let timeout_ms = config.timeout.as_millis();
    match backend {
        Backend::Sqlite => {
            let sync = match config.durability {
                Durability::Normal => "NORMAL",
                Durability::Full => "FULL",
            };
            Ok(format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = {timeout_ms}; \
                 PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;"
            ))
        }
        Backend::Postgres => {
            let mut setup = format!(
                "SET lock_timeout = {timeout_ms}; SET statement_timeout = {};",
                timeout_ms * 2
            );
            if let Some(schema) = &config.schema {
                if schema.is_empty()
                    || !schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(StoreError::Config(
                        "schema names are lowercase letters, digits and _".into(),
                    ));
                }
                setup.push_str(&format!(" SET search_path TO {schema};"));
            }
            Ok(setup)
        }
    }
}

/// The wall clock, for bookkeeping columns only (decisions take `now` from the caller).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
