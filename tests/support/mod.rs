//! Opening a fresh store on every backend this machine has: SQLite always, PostgreSQL when
//! `AP2_TEST_POSTGRES_URL` is set (each store in its own schema, so tests run in parallel).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use ap2_mandate::store::{Store, StoreConfig};
pub mod oauth;
pub mod records;
pub mod vectors;
pub mod verifier;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh SQLite file in the temporary directory.
pub fn sqlite_path() -> PathBuf {
    std::env::temp_dir().join(format!("{}.db", unique("ap2_store")))
}

/// The PostgreSQL URL, or `None` (and a note on stderr) when none is configured.
pub fn postgres_url() -> Option<String> {
    match std::env::var("AP2_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("AP2_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped");
            None
        }
    }
}

/// Configurations for a fresh store on each available backend, with a label.
pub fn configs() -> Vec<(&'static str, StoreConfig)> {
    let mut out = vec![("sqlite", StoreConfig::sqlite(&sqlite_path()))];
    if let Some(url) = postgres_url() {
        let mut config = StoreConfig::new(url);
        config.schema = Some(unique("t").to_lowercase());
        out.push(("postgres", config));
    }
    out
}

/// A fresh SQLite store.
pub async fn sqlite_store() -> Store {
    Store::open(&StoreConfig::sqlite(&sqlite_path()))
        .await
        .expect("open a SQLite store")
}

/// A fresh store on each available backend.
pub async fn stores() -> Vec<(&'static str, Store)> {
    let mut out = Vec::new();
    for (name, config) in configs() {
        out.push((
            name,
            Store::open(&config)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        ));
    }
    out
}
