//! The pool facade over real files, real ledgers and a real Redis.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::OnUnavailable;
use super::ledger::{FileLedger, MemoryLedger, RedisLedger};
use super::*;
use crate::redis_client::testing::{self, OwnRedis};

fn metrics() -> FallbackMetrics {
    FallbackMetrics::new(&prometheus::Registry::new())
}

fn memory_pool(path: &Path, low_watermark: usize) -> TicketPool {
    TicketPool::new(
        Some(path.to_path_buf()),
        low_watermark,
        Ledger::Memory(MemoryLedger::default()),
        metrics(),
        Clock::manual(),
    )
}

/// A ticket file in a fresh temporary directory (kept alive by the returned guard).
fn tickets_file(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tickets");
    std::fs::write(&file, content).expect("write");
    (dir, file)
}

fn d(ticket: &str) -> TicketDigest {
    TicketDigest::of(ticket.as_bytes())
}

/// A kubelet-style Secret volume: `..<version>/` directories, a `..data` symlink to the
/// current one, and one `key -> ..data/key` symlink per key.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: usize,
}

impl SecretVolume {
    fn new(files: &[(&str, &str)]) -> Self {
        let mut v = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            version: 0,
        };
        v.publish(files);
        for (key, _) in files {
            symlink(format!("..data/{key}"), v.path().join(key)).expect("key symlink");
        }
        v
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What kubelet does on an update: write a new version directory, then replace the
    /// `..data` symlink atomically (rename over it), then remove the old directory.
    fn publish(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let version_dir = self.path().join(&name);
        std::fs::create_dir(&version_dir).expect("version dir");
        for (key, content) in files {
            std::fs::write(version_dir.join(key), content).expect("write key");
        }
        let tmp = self.path().join("..data_tmp");
        symlink(&name, &tmp).expect("tmp symlink");
        std::fs::rename(&tmp, self.path().join("..data")).expect("swap ..data");
        if self.version > 1 {
            let old = self.path().join(format!("..v{}", self.version - 1));
            std::fs::remove_dir_all(old).expect("remove old version");
        }
    }
}

#[tokio::test]
async fn take_is_not_in_pool_then_taken_then_reused() {
    let (_dir, file) = tickets_file("t1\nt2\nt3\n");
    let pool = memory_pool(&file, 0);
    assert_eq!(pool.size(), 3);
    assert_eq!(pool.take(&d("nope")).await, Take::NotInPool);
    assert_eq!(pool.take(&d("t1")).await, Take::Taken { remaining: 2 });
    assert_eq!(pool.take(&d("t1")).await, Take::Reused);
    assert_eq!(pool.size(), 2);
    let snap = pool.snapshot();
    assert_eq!(
        (snap.status, snap.ledger, snap.ledger_reachable),
        ("loaded", "memory", true)
    );
    assert_eq!(snap.generation.as_deref().map(str::len), Some(12));
    assert!(snap.last_reload.is_some());
    assert_eq!(snap.reload_error, None);
}

#[tokio::test]
async fn a_disabled_pool_has_nothing_and_reports_so() {
    let pool = TicketPool::new(
        None,
        10,
        Ledger::Memory(MemoryLedger::default()),
        metrics(),
        Clock::manual(),
    );
    assert_eq!(pool.take(&d("t")).await, Take::NotInPool);
    assert_eq!(pool.reload().await, ReloadResult::Unchanged);
    let snap = pool.snapshot();
    assert_eq!((snap.status, snap.size), ("disabled", 0));
    assert_eq!((snap.generation, snap.last_reload), (None, None));
    let json = serde_json::to_value(pool.snapshot()).expect("json");
    assert_eq!(json["reload_error"], serde_json::Value::Null);
    assert_eq!(json["ledger"], "memory");
}

#[tokio::test]
async fn a_kubelet_swap_rotates_the_set_and_consumed_tickets_stay_consumed() {
    let mut volume = SecretVolume::new(&[("a", "old-1\nold-2\n"), ("b", "shared\n")]);
    let pool = memory_pool(volume.path(), 0);
    assert_eq!(pool.size(), 3);
    assert!(matches!(pool.take(&d("shared")).await, Take::Taken { .. }));
    let first = pool.snapshot().generation;

    assert_eq!(pool.reload().await, ReloadResult::Unchanged);
    volume.publish(&[
        ("a", "new-1\n"),
        (
            "b",
            &format!(
                "shared\nsha256:{}\n",
                hex::encode(d("by-digest").as_bytes())
            ),
        ),
    ]);
    assert_eq!(pool.reload().await, ReloadResult::Changed);
    assert_ne!(pool.snapshot().generation, first);
    assert_eq!(pool.size(), 2, "new-1 and by-digest; shared was consumed");
    assert_eq!(pool.take(&d("old-1")).await, Take::NotInPool, "removed");
    assert_eq!(
        pool.take(&d("shared")).await,
        Take::Reused,
        "consumed before the rotation"
    );
    assert!(matches!(pool.take(&d("new-1")).await, Take::Taken { .. }));
    assert_eq!(
        pool.take(&d("by-digest")).await,
        Take::Taken { remaining: 0 }
    );

    // The old tickets come back in a later version: the consumed one stays consumed.
    volume.publish(&[("a", "shared\nold-1\n"), ("b", "")]);
    assert_eq!(pool.reload().await, ReloadResult::Changed);
    assert_eq!(pool.take(&d("shared")).await, Take::Reused);
    assert_eq!(pool.take(&d("old-1")).await, Take::Taken { remaining: 0 });
}

#[tokio::test]
async fn an_emptied_secret_revokes_everything() {
    let (_dir, file) = tickets_file("t1\nt2\n");
    let pool = memory_pool(&file, 0);
    std::fs::write(&file, "\n").expect("empty it");
    assert_eq!(pool.reload().await, ReloadResult::Changed);
    assert_eq!(pool.take(&d("t1")).await, Take::NotInPool);
    let snap = pool.snapshot();
    assert_eq!((snap.status, snap.size), ("empty", 0));
}

#[tokio::test]
async fn an_unreadable_or_missing_path_keeps_the_last_set_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tickets = dir.path().join("tickets");
    std::fs::create_dir(&tickets).expect("mkdir");
    std::fs::write(tickets.join("one"), "t1\nt2\n").expect("write");
    let pool = memory_pool(&tickets, 0);
    let generation = pool.snapshot().generation;

    symlink("/nonexistent/target", tickets.join("broken")).expect("dangling link");
    assert_eq!(pool.reload().await, ReloadResult::Error);
    let snap = pool.snapshot();
    assert_eq!(snap.status, "loaded");
    assert_eq!(snap.generation, generation);
    assert_eq!(
        snap.reload_error.as_deref(),
        Some("unreadable: broken: entity not found")
    );
    assert!(matches!(pool.take(&d("t1")).await, Take::Taken { .. }));

    std::fs::remove_dir_all(&tickets).expect("remove");
    assert_eq!(pool.reload().await, ReloadResult::Error);
    assert_eq!(
        pool.snapshot().reload_error.as_deref(),
        Some("missing: not found")
    );
    assert_eq!(pool.take(&d("t2")).await, Take::Taken { remaining: 0 });

    std::fs::create_dir(&tickets).expect("mkdir");
    std::fs::write(tickets.join("one"), "t3\n").expect("write");
    assert_eq!(pool.reload().await, ReloadResult::Changed);
    assert_eq!(pool.snapshot().reload_error, None);
    assert_eq!(pool.size(), 1);
}

#[tokio::test]
async fn a_pool_missing_at_start_loads_once_the_path_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tickets");
    let pool = memory_pool(&file, 0);
    assert_eq!(pool.snapshot().status, "missing");
    assert_eq!(pool.reload().await, ReloadResult::Error);
    assert_eq!(pool.snapshot().status, "missing");
    std::fs::write(&file, "t\n").expect("write");
    assert_eq!(pool.reload().await, ReloadResult::Changed);
    assert_eq!((pool.snapshot().status, pool.size()), ("loaded", 1));
}

#[tokio::test]
async fn the_reload_task_picks_up_a_swap_on_trigger_and_stops() {
    let mut volume = SecretVolume::new(&[("tickets", "v1\n")]);
    let pool = memory_pool(volume.path(), 0);
    let m = metrics();
    let stop = CancellationToken::new();
    let (handle, task) = reload::spawn(None, vec![Arc::new(pool.clone())], m.clone(), stop.clone());
    volume.publish(&[("tickets", "v2\n")]);
    handle.reload_now().await;
    assert!(matches!(pool.take(&d("v2")).await, Take::Taken { .. }));
    assert_eq!(pool.take(&d("v1")).await, Take::NotInPool);
    assert_eq!(m.pool_reloads.with_label_values(&["changed"]).get(), 1);
    stop.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn the_file_ledger_keeps_tickets_consumed_across_a_restart() {
    let (dir, tickets) = tickets_file("t1\nt2\n");
    let ledger_path = dir.path().join("ledger");
    let start = || {
        let m = metrics();
        let ledger = Ledger::File(FileLedger::open(&ledger_path, m.clone()).expect("ledger"));
        TicketPool::new(Some(tickets.clone()), 0, ledger, m, Clock::manual())
    };
    let pool = start();
    assert_eq!(pool.take(&d("t1")).await, Take::Taken { remaining: 1 });
    drop(pool);
    let restarted = start();
    assert_eq!(restarted.size(), 1, "the ledger file counts at startup");
    assert_eq!(restarted.take(&d("t1")).await, Take::Reused);
    assert_eq!(restarted.snapshot().ledger, "file");
}

fn redis_pool(url: &str, prefix: &str, tickets: &Path, on: OnUnavailable) -> TicketPool {
    redis_pool_with(url, prefix, tickets, on, metrics())
}

fn redis_pool_with(
    url: &str,
    prefix: &str,
    tickets: &Path,
    on: OnUnavailable,
    m: FallbackMetrics,
) -> TicketPool {
    let ledger = Ledger::Redis(RedisLedger::new(
        testing::client(url, prefix),
        Duration::from_secs(86_400),
        on,
        m.clone(),
    ));
    TicketPool::new(Some(tickets.to_path_buf()), 0, ledger, m, Clock::manual())
}

#[tokio::test]
async fn redis_size_follows_every_replica_after_a_reload_tick() {
    let (_dir, tickets) = tickets_file("t1\nt2\nt3\n");
    let prefix = testing::unique_prefix("pool-size");
    let a = redis_pool(
        &testing::shared_url(),
        &prefix,
        &tickets,
        OnUnavailable::Deny,
    );
    let b = redis_pool(
        &testing::shared_url(),
        &prefix,
        &tickets,
        OnUnavailable::Deny,
    );
    assert_eq!(a.take(&d("t1")).await, Take::Taken { remaining: 2 });
    assert_eq!(b.size(), 3, "b has not counted yet");
    assert_eq!(b.reload().await, ReloadResult::Unchanged);
    assert_eq!(b.size(), 2);
    assert_eq!(b.take(&d("t1")).await, Take::Reused);
    let snap = b.snapshot();
    assert_eq!((snap.ledger, snap.ledger_reachable), ("redis", true));
}

#[tokio::test]
async fn redis_down_with_deny_answers_ledger_unavailable() {
    let (_dir, tickets) = tickets_file("t1\n");
    let mut own = OwnRedis::start();
    let pool = redis_pool(
        &own.url(),
        &testing::unique_prefix("deny"),
        &tickets,
        OnUnavailable::Deny,
    );
    own.stop();
    assert_eq!(pool.take(&d("t1")).await, Take::LedgerUnavailable);
    assert_eq!(
        pool.take(&d("other")).await,
        Take::NotInPool,
        "no ledger call"
    );
    assert!(!pool.snapshot().ledger_reachable);
    assert_eq!(pool.size(), 1, "nothing consumed");
}

#[tokio::test]
async fn redis_down_with_local_accepts_once_per_process_and_backfills() {
    let (_dir, tickets) = tickets_file("t1\n");
    let mut own = OwnRedis::start();
    let prefix = testing::unique_prefix("local");
    let (ma, mb) = (metrics(), metrics());
    let a = redis_pool_with(
        &own.url(),
        &prefix,
        &tickets,
        OnUnavailable::Local,
        ma.clone(),
    );
    let b = redis_pool_with(
        &own.url(),
        &prefix,
        &tickets,
        OnUnavailable::Local,
        mb.clone(),
    );
    own.stop();
    for replica in [&a, &b] {
        assert_eq!(replica.take(&d("t1")).await, Take::Taken { remaining: 0 });
        assert_eq!(replica.take(&d("t1")).await, Take::Reused);
    }
    own.restart();
    let stop = CancellationToken::new();
    let (Ledger::Redis(la), Ledger::Redis(lb)) = (a.ledger(), b.ledger()) else {
        panic!("redis ledgers");
    };
    let tasks = [
        la.spawn_backfill(stop.clone()),
        lb.spawn_backfill(stop.clone()),
    ];
    let mut rounds = 0;
    while la.pending() + lb.pending() > 0 {
        assert!(rounds < 1500, "backfill never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
        rounds += 1;
    }
    stop.cancel();
    for t in tasks {
        t.await.expect("stops");
    }
    // Both replicas accepted it during the partition: whichever wrote second counts it.
    assert_eq!(ma.ledger_conflicts.get() + mb.ledger_conflicts.get(), 1);
    assert_eq!(
        ma.ledger_local_claims.get() + mb.ledger_local_claims.get(),
        2
    );
    let c = redis_pool(&own.url(), &prefix, &tickets, OnUnavailable::Local);
    assert_eq!(c.take(&d("t1")).await, Take::Reused, "in Redis now");
}
