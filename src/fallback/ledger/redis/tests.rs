//! The Redis ledger against a real Redis: the shared one, or a test's own to stop.

use super::*;
use crate::redis_client::testing::{self, OwnRedis};
use tokio_util::sync::CancellationToken;

fn ledger(url: &str, prefix: &str, on: OnUnavailable, m: &FallbackMetrics) -> RedisLedger {
    RedisLedger::new(
        testing::client(url, prefix),
        Duration::from_secs(86_400),
        on,
        m.clone(),
    )
}

/// A replica on the shared Redis that denies while Redis is away.
fn shared(prefix: &str) -> RedisLedger {
    ledger(
        &testing::shared_url(),
        prefix,
        OnUnavailable::Deny,
        &metrics(),
    )
}

/// `count` tickets named `<tag><n>`, and the set of them.
fn numbered(tag: &str, count: usize) -> (Vec<TicketDigest>, TicketSet) {
    let tickets: Vec<TicketDigest> = (0..count)
        .map(|n| TicketDigest::of(format!("{tag}{n}").as_bytes()))
        .collect();
    let set = TicketSet::from_digests(tickets.iter().map(|d| *d.as_bytes()).collect());
    (tickets, set)
}

fn metrics() -> FallbackMetrics {
    FallbackMetrics::new(&prometheus::Registry::new())
}

/// Backfills until nothing is pending (the first calls after a restart may still meet
/// the dead connection); returns (written, conflicts).
async fn drain(ledger: &RedisLedger) -> (usize, usize) {
    let (mut written, mut conflicts) = (0, 0);
    for _ in 0..500 {
        let r = ledger.backfill_once().await;
        written += r.written;
        conflicts += r.conflicts;
        if r.pending == 0 {
            return (written, conflicts);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("backfill never drained");
}

#[tokio::test]
async fn keys_are_the_prefix_then_the_hex_digest() {
    let l = ledger(
        &testing::shared_url(),
        "pfx:",
        OnUnavailable::Deny,
        &metrics(),
    );
    let digest = TicketDigest::of(b"ticket");
    assert_eq!(
        l.key(&digest),
        format!("pfx:fallback:used:{}", hex::encode(digest.as_bytes()))
    );
}

#[tokio::test]
async fn local_claims_once_per_process_then_backfills_and_counts_a_conflict() {
    let mut own = OwnRedis::start();
    let prefix = testing::unique_prefix("partition");
    let (ma, mb) = (metrics(), metrics());
    let a = ledger(&own.url(), &prefix, OnUnavailable::Local, &ma);
    let b = ledger(&own.url(), &prefix, OnUnavailable::Local, &mb);
    let (shared, only_a) = (TicketDigest::of(b"shared"), TicketDigest::of(b"only-a"));
    own.stop();
    // Each replica accepts the ticket once; the second take in a replica is refused.
    for replica in [&a, &b] {
        assert_eq!(replica.claim(&shared).await.expect("local"), Claim::Won);
        assert_eq!(
            replica.claim(&shared).await.expect("local"),
            Claim::AlreadyClaimed
        );
    }
    assert_eq!(a.claim(&only_a).await.expect("local"), Claim::Won);
    assert_eq!(ma.ledger_local_claims.get(), 2);
    assert_eq!(a.pending(), 2);
    assert!(!a.reachable());
    assert_eq!(
        a.backfill_once().await.pending,
        2,
        "still down: nothing written"
    );

    own.restart();
    assert_eq!(drain(&a).await, (2, 0), "a was first");
    assert_eq!(drain(&b).await, (0, 1), "b claimed it too");
    assert_eq!(mb.ledger_conflicts.get(), 1);
    assert_eq!(ma.ledger_conflicts.get(), 0);
    // Both claims are in Redis now: a third replica refuses both tickets.
    let c = ledger(&own.url(), &prefix, OnUnavailable::Local, &metrics());
    assert_eq!(
        c.claim(&shared).await.expect("claim"),
        Claim::AlreadyClaimed
    );
    assert_eq!(
        c.claim(&only_a).await.expect("claim"),
        Claim::AlreadyClaimed
    );
    assert!(c.reachable());
}

#[tokio::test]
async fn the_backfill_task_writes_pending_claims_once_redis_answers() {
    let mut own = OwnRedis::start();
    let prefix = testing::unique_prefix("backfill-task");
    let a = ledger(&own.url(), &prefix, OnUnavailable::Local, &metrics());
    let stop = CancellationToken::new();
    let task = a.spawn_backfill(stop.clone());
    own.stop();
    let d = TicketDigest::of(b"t");
    assert_eq!(a.claim(&d).await.expect("local"), Claim::Won);
    own.restart();
    let mut waited = 0;
    while a.pending() > 0 {
        assert!(waited < 1500, "backfill never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let other = ledger(&own.url(), &prefix, OnUnavailable::Local, &metrics());
    assert_eq!(other.claim(&d).await.expect("claim"), Claim::AlreadyClaimed);
    stop.cancel();
    task.await.expect("task stops");
}

#[tokio::test]
async fn deny_fails_closed() {
    let mut own = OwnRedis::start();
    let m = metrics();
    let l = ledger(
        &own.url(),
        &testing::unique_prefix("deny"),
        OnUnavailable::Deny,
        &m,
    );
    own.stop();
    let d = TicketDigest::of(b"t");
    assert!(matches!(l.claim(&d).await, Err(LedgerError::Unavailable)));
    assert_eq!(l.pending(), 0);
    assert!(!l.known().contains(&d));
    assert_eq!(
        m.ledger_errors.with_label_values(&["redis", "claim"]).get(),
        1
    );
}

/// Redis slower than the timeout: `deny` answers "unavailable", and the claim, which lands
/// in Redis after that answer, does not consume the ticket: another replica (or the
/// client's retry) can still use it.
#[tokio::test]
async fn deny_never_burns_a_ticket_it_refused() {
    let own = OwnRedis::start();
    let proxy = testing::DelayProxy::start(own.port).await;
    let prefix = testing::unique_prefix("deny-slow");
    let mut config = testing::config(&proxy.url(), &prefix);
    config.timeout = Duration::from_millis(200);
    let m = metrics();
    let slow = RedisLedger::new(
        RedisClient::connect_lazy(&config).expect("client"),
        Duration::from_secs(86_400),
        OnUnavailable::Deny,
        m.clone(),
    );
    let stop = CancellationToken::new();
    let task = slow.spawn_backfill(stop.clone());
    let warm = TicketDigest::of(b"warm");
    assert_eq!(slow.claim(&warm).await.expect("claim"), Claim::Won);

    proxy.set_delay(Duration::from_millis(700));
    let refused: Vec<TicketDigest> = (0..5)
        .map(|n| TicketDigest::of(format!("slow-{n}").as_bytes()))
        .collect();
    // The first waits out the timeout (its claim is on its way); the breaker answers the
    // rest at once.
    for d in &refused {
        assert!(matches!(slow.claim(d).await, Err(LedgerError::Unavailable)));
    }
    // Long after the delayed claim reached Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let direct = ledger(&own.url(), &prefix, OnUnavailable::Deny, &metrics());
    for d in &refused {
        assert_eq!(direct.claim(d).await.expect("claim"), Claim::Won, "{d:?}");
    }
    assert_eq!(
        direct.claim(&warm).await.expect("claim"),
        Claim::AlreadyClaimed
    );
    // The release sent right behind the claim got no answer in time either; the task
    // repeats it once Redis answers promptly.
    proxy.set_delay(Duration::ZERO);
    wait_released(&slow).await;
    stop.cancel();
    task.await.expect("task stops");
}

/// The release and the claim may reach Redis in either order: a release first leaves a
/// mark that stops the claim from landing; a claim first is deleted by the release.
#[tokio::test]
async fn a_released_attempt_never_lands_in_either_order() {
    let own = OwnRedis::start();
    let l = ledger(
        &own.url(),
        &testing::unique_prefix("order"),
        OnUnavailable::Deny,
        &metrics(),
    );
    let (first, second) = (
        TicketDigest::of(b"release-first"),
        TicketDigest::of(b"claim-first"),
    );
    for (digest, release_first) in [(first, true), (second, false)] {
        let attempt = l.next_attempt();
        if release_first {
            l.release_later(&digest, attempt.clone());
            wait_released(&l).await;
            assert_eq!(l.run_claim(&digest, &attempt).await.expect("claim"), -1);
        } else {
            assert_eq!(l.run_claim(&digest, &attempt).await.expect("claim"), 1);
            l.release_later(&digest, attempt.clone());
            wait_released(&l).await;
        }
        let other = ledger(
            &own.url(),
            &l.inner.client.key(""),
            OnUnavailable::Deny,
            &metrics(),
        );
        assert_eq!(other.claim(&digest).await.expect("claim"), Claim::Won);
    }
}

async fn wait_released(l: &RedisLedger) {
    for _ in 0..250 {
        if l.releases_pending() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never released");
}

/// Ten thousand local claims are written back in one round (pipelined), and until they are,
/// claims are decided locally, so Redis never hands another replica a ticket claimed here.
#[tokio::test]
async fn ten_thousand_local_claims_are_written_back_in_one_round_before_redis_decides_again() {
    let mut own = OwnRedis::start();
    let prefix = testing::unique_prefix("write-back");
    let a = ledger(&own.url(), &prefix, OnUnavailable::Local, &metrics());
    let (tickets, _) = numbered("wb", 10_000);
    own.stop();
    for d in &tickets {
        assert_eq!(a.claim(d).await.expect("local"), Claim::Won);
    }
    own.restart();
    a.inner.client.until_available().await;
    // Redis answers, but claims stay local until the write-back: no Redis key for this one.
    let during = TicketDigest::of(b"during-write-back");
    assert_eq!(a.claim(&during).await.expect("local"), Claim::Won);
    let report = a.backfill_once().await;
    assert_eq!(
        (report.written, report.conflicts, report.pending),
        (10_001, 0, 0)
    );
    let b = ledger(&own.url(), &prefix, OnUnavailable::Local, &metrics());
    assert_eq!(
        b.claim(&during).await.expect("claim"),
        Claim::AlreadyClaimed
    );
    assert_eq!(
        b.claim(&tickets[9_999]).await.expect("claim"),
        Claim::AlreadyClaimed
    );
    // Nothing pending: Redis decides again.
    let after = TicketDigest::of(b"after-write-back");
    assert_eq!(a.claim(&after).await.expect("claim"), Claim::Won);
    assert_eq!(b.claim(&after).await.expect("claim"), Claim::AlreadyClaimed);
}

/// Redis restarted empty (no persistence): the next tick finds the generation marker gone,
/// counts the loss once, and writes back every claim the replica knows, so a fresh replica
/// still refuses them; only what no running replica knew is usable again.
#[tokio::test]
async fn a_redis_that_lost_the_ledger_is_detected_and_known_claims_are_reasserted() {
    let mut own = OwnRedis::start();
    let prefix = testing::unique_prefix("lost");
    let m = metrics();
    let a = ledger(&own.url(), &prefix, OnUnavailable::Deny, &m);
    let (tickets, set) = numbered("lost", 50);
    for d in &tickets[..20] {
        assert_eq!(a.claim(d).await.expect("claim"), Claim::Won);
    }
    assert_eq!(a.count_consumed(&set).await.expect("first tick"), 20);
    assert_eq!(a.data_losses(), 0);

    own.stop();
    own.restart();
    let mut ticked = false;
    for _ in 0..100 {
        if a.count_consumed(&set).await.is_ok() {
            ticked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ticked, "no tick after the restart");
    assert_eq!((a.data_losses(), m.ledger_data_losses.get()), (1, 1));
    let fresh = ledger(&own.url(), &prefix, OnUnavailable::Deny, &metrics());
    for d in &tickets[..20] {
        assert_eq!(fresh.claim(d).await.expect("claim"), Claim::AlreadyClaimed);
    }
    assert_eq!(fresh.claim(&tickets[20]).await.expect("claim"), Claim::Won);
    // Nothing lost since: the next tick counts nothing more.
    a.count_consumed(&set).await.expect("tick");
    assert_eq!(a.data_losses(), 1);
}

/// Each tick asks Redis whether it can lose marks: the test's Redis has no persistence; an
/// evicting policy and AOF switched on while the service runs show on the next tick.
#[tokio::test]
async fn an_evicting_or_unpersisted_redis_is_reported() {
    let own = OwnRedis::start();
    let m = metrics();
    let a = ledger(
        &own.url(),
        &testing::unique_prefix("risk"),
        OnUnavailable::Deny,
        &m,
    );
    let risk = |name: &str| m.ledger_redis_risk.with_label_values(&[name]).get();
    a.count_consumed(&TicketSet::default()).await.expect("tick");
    assert_eq!((risk("eviction"), risk("no_persistence")), (0, 1));
    let admin = testing::client(&own.url(), "x:");
    for (name, value) in [("maxmemory-policy", "volatile-lru"), ("appendonly", "yes")] {
        admin
            .call(|mut c| async move {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(name)
                    .arg(value)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .expect("config set");
    }
    a.count_consumed(&TicketSet::default()).await.expect("tick");
    assert_eq!((risk("eviction"), risk("no_persistence")), (1, 0));
}

/// `INFO` and `CONFIG` are optional: a user without them (a strict ACL, a managed Redis)
/// ticks without opening the breaker or counting a permission failure.
#[tokio::test]
async fn a_redis_refusing_info_and_config_is_not_a_failure() {
    let own = OwnRedis::start();
    let admin = testing::client(&own.url(), "x:");
    admin
        .call(|mut c| async move {
            redis::cmd("ACL")
                .arg(
                    &[
                        "SETUSER",
                        "ledger",
                        "on",
                        ">ledger-pw",
                        "~*",
                        "+@all",
                        "-info",
                        "-config",
                    ][..],
                )
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .expect("acl");
    let url = format!("redis://ledger:ledger-pw@127.0.0.1:{}", own.port);
    let m = metrics();
    let a = ledger(
        &url,
        &testing::unique_prefix("acl"),
        OnUnavailable::Deny,
        &m,
    );
    let (tickets, set) = numbered("acl", 3);
    assert_eq!(a.claim(&tickets[0]).await.expect("claim"), Claim::Won);
    assert_eq!(a.count_consumed(&set).await.expect("tick"), 1);
    assert_eq!(a.count_consumed(&set).await.expect("tick"), 1);
    let client = &a.inner.client;
    assert!(client.available());
    assert_eq!(
        client
            .metrics()
            .errors
            .with_label_values(&["permission"])
            .get(),
        0
    );
}

#[test]
fn picks_whichever_visits_fewer_keys() {
    assert_eq!(count_by(1_000_000, 5_000), CountBy::Scan);
    assert_eq!(count_by(600, 2_000_000), CountBy::Exists);
    assert_eq!(count_by(0, 0), CountBy::Exists);
    assert_eq!(count_by(10, 10), CountBy::Exists);
}

#[test]
fn a_glob_of_the_prefix_matches_only_itself() {
    assert_eq!(glob_escape("realtime:"), "realtime:");
    assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
}

/// Both ways of asking find the same tickets, and `SCAN` only this prefix's: the prefix
/// holds glob characters, and a neighbour's keys would match it unescaped.
#[tokio::test]
async fn scan_and_exists_find_the_same_tickets() {
    let prefix = format!("{}g*?[x]\\:", testing::unique_prefix("scan"));
    let neighbour = prefix.replace("g*?[x]\\:", "gABx:");
    let (a, other) = (shared(&prefix), shared(&neighbour));
    let (tickets, set) = numbered("s", 300);
    for d in tickets.iter().step_by(3) {
        assert_eq!(a.claim(d).await.expect("claim"), Claim::Won);
    }
    for d in tickets.iter().skip(1).step_by(3) {
        assert_eq!(other.claim(d).await.expect("claim"), Claim::Won);
    }
    // A mark of a ticket outside the set (rotated out) is not counted.
    a.claim(&TicketDigest::of(b"rotated-out"))
        .await
        .expect("claim");

    let by_scan = shared(&prefix);
    by_scan.find_by_scan(&set).await.expect("scan");
    assert_eq!(by_scan.known().count_in(&set), 100);
    assert_eq!(by_scan.known().len(), 100);
    let by_exists = shared(&prefix);
    by_exists.find_by_exists(&set).await.expect("exists");
    assert_eq!(by_exists.known().count_in(&set), 100);
    for d in tickets.iter().step_by(3) {
        assert!(by_scan.known().contains(d) && by_exists.known().contains(d));
    }
}

#[tokio::test]
async fn count_sees_other_replicas_claims() {
    let prefix = testing::unique_prefix("count");
    let (a, b) = (shared(&prefix), shared(&prefix));
    let (tickets, set) = numbered("t", 600);
    for d in tickets.iter().step_by(3) {
        assert_eq!(a.claim(d).await.expect("claim"), Claim::Won);
    }
    assert_eq!(b.count_consumed(&set).await.expect("count"), 200);
    assert_eq!(b.known().len(), 200);
    assert_eq!(a.count_consumed(&set).await.expect("count"), 200);
    assert_eq!(
        b.count_consumed(&TicketSet::default()).await.expect("ping"),
        0
    );
}
