//! SQLite WAL checkpoints off the request path.
//!
//! By default SQLite copies the write-ahead log back into the database file from inside
//! whichever commit crosses 1,000 pages, so one decision in a few hundred waits for that copy and
//! its syncs, and every request queued behind it waits too. The store's connection turns that
//! off (`wal_autocheckpoint = 0`). A task checkpoints `PASSIVE`ly every [`EVERY`] on a connection
//! of its own, copying what it can without waiting for anyone. Under sustained writes a passive
//! checkpoint never catches up with the log, so once the log holds [`RESTART_AT`] frames the task
//! queues a `RESTART` checkpoint on the store's own connection, taking its turn like a request:
//! little is left to copy by then, and the next commit starts the log again from the beginning.
//!
//! Durability does not depend on it: a commit is in the log before it is acknowledged, and the
//! log is replayed on open. If the task stops, the log grows until the store's last connection
//! closes, which checkpoints it.

use std::time::Duration;

use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _, Row as _};

use super::StoreError;

/// How often the log is checkpointed passively.
pub const EVERY: Duration = Duration::from_millis(200);
/// Log frames (pages) at which a checkpoint restarts the log: 32 MiB at 4 KiB pages.
pub const RESTART_AT: i64 = 8_192;

/// The checkpointing task; stopped when dropped (with the last clone of its store).
#[derive(Debug)]
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts checkpointing the SQLite database at `url`, whose store's connections are `pool`.
pub(crate) async fn spawn(
    url: &str,
    busy_timeout: Duration,
    pool: AnyPool,
) -> Result<Checkpointer, StoreError> {
    spawn_with(url, busy_timeout, pool, EVERY, RESTART_AT).await
}

async fn spawn_with(
    url: &str,
    busy_timeout: Duration,
    pool: AnyPool,
    every: Duration,
    restart_at: i64,
) -> Result<Checkpointer, StoreError> {
    let mut conn = AnyConnection::connect(url).await?;
    conn.execute(format!("PRAGMA busy_timeout = {}", busy_timeout.as_millis()).as_str())
        .await?;
    Ok(Checkpointer(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The log's size when a restart last completed: until a commit starts the log again,
        // another restart would find nothing to do.
        let mut restarted_at = None;
        while !pool.is_closed() {
            tick.tick().await;
            let passive = match checkpoint(&mut conn, "PASSIVE").await {
                Ok(passive) => passive,
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed; trying again shortly");
                    continue;
                }
            };
            if passive.frames < restart_at || restarted_at == Some(passive.frames) {
                continue;
            }
            let restart = match pool.acquire().await {
                Ok(mut turn) => checkpoint(&mut turn, "RESTART").await,
                Err(e) => Err(e),
            };
            match restart {
                Ok(done) if !done.busy => restarted_at = Some(done.frames),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, frames = passive.frames, "WAL restart checkpoint failed");
                }
            }
        }
    })))
}

/// What a checkpoint reports.
struct Checkpoint {
    /// It could not finish: a reader or writer was in the way.
    busy: bool,
    /// Frames in the log.
    frames: i64,
}

/// Runs one checkpoint in `mode`.
async fn checkpoint(conn: &mut AnyConnection, mode: &str) -> Result<Checkpoint, sqlx::Error> {
    let row = sqlx::query(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(Checkpoint {
        busy: row.try_get::<i64, _>(0)? != 0,
        frames: row.try_get(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under back-to-back writes the log never catches up by passive checkpoints alone; the
    /// restart keeps its file near the threshold instead of growing with every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_keeps_the_log_bounded_under_sustained_writes() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!(
            "ap2_checkpoint_{}_{}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // As the store's pool: one connection, commits never checkpoint.
        let writer = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .unwrap();
        writer.execute("CREATE TABLE t (v BLOB)").await.unwrap();
        let task = spawn_with(
            &url,
            Duration::from_secs(5),
            writer.clone(),
            Duration::from_millis(20),
            64,
        )
        .await
        .unwrap();
        // Back-to-back commits of about three frames each: some 9,000 frames in all.
        let blob = vec![7u8; 3000];
        for _ in 0..3_000 {
            sqlx::query("INSERT INTO t (v) VALUES ($1)")
                .bind(&blob)
                .execute(&writer)
                .await
                .unwrap();
        }
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let wal_frames = std::fs::metadata(&wal).unwrap().len() / 4_120;
        drop(task);
        writer.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        assert!(
            wal_frames < 1_500,
            "the log reached {wal_frames} frames of some 9,000 written"
        );
    }
}
