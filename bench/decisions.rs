//! Micro-benchmark of the local decisions: channel policy (subscribe, publish), the
//! request signature (HMAC-SHA256) and the fallback pool's lookup among a million tickets. Std only (no criterion): `Instant` loops with a warm-up,
//! `std::hint::black_box` around inputs and results.
//!
//! ```text
//! cargo bench --bench decisions
//! ```
//!
//! Each case runs for a warm-up, then in batches sized to take ~20 ms; the figure reported
//! is the median batch (ns per operation), with the fastest batch beside it. Every case is
//! also given as a ratio to one HMAC verification of a 300-byte body, the check the service
//! runs on every proxy request anyway: ratios carry over between machines, absolute
//! nanoseconds don't (the README's figures come from a small shared machine).
//!
//! Output: a table, then one `BENCH case=... ns_per_op=... ops_per_s=... vs_hmac_verify=...`
//! line per case.

use std::hint::black_box;
use std::time::{Duration, Instant};

use realtime_service::config::Config;
use realtime_service::fallback::set::TicketSet;
use realtime_service::fallback::TicketDigest;
use realtime_service::meta::{ConnectionMeta, ParentalState, SubscriptionTier};
use realtime_service::policy::{ChannelPolicy, DenyReason, PublishDecision, SubscribeDecision};
use realtime_service::transport::http::auth::{sign, ProxyAuth};

const WARMUP: Duration = Duration::from_millis(150);
const BATCH_TARGET: Duration = Duration::from_millis(20);
const BATCHES: usize = 25;

const SECRET: &str = "bench-secret-0123456789abcdef";
/// Tickets in the pool of the lookup cases, and distinct lookups cycled through.
const POOL_TICKETS: u32 = 1_000_000;
const LOOKUPS: u32 = 1 << 16;

struct Measured {
    name: &'static str,
    median_ns: f64,
    min_ns: f64,
}

/// Runs `op` repeatedly: a warm-up, a batch size calibrated to `BATCH_TARGET`, then
/// `BATCHES` timed batches. Returns ns/op (median and fastest batch).
fn measure(name: &'static str, mut op: impl FnMut()) -> Measured {
    let warm_until = Instant::now() + WARMUP;
    let mut warm_ops: u64 = 0;
    let warm_start = Instant::now();
    while Instant::now() < warm_until {
        for _ in 0..64 {
            op();
        }
        warm_ops += 64;
    }
    let per_op = warm_start.elapsed().as_secs_f64() / warm_ops.max(1) as f64;
    let batch = ((BATCH_TARGET.as_secs_f64() / per_op.max(1e-10)) as u64).max(1);

    let mut samples: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Measured {
        name,
        median_ns: samples[samples.len() / 2],
        min_ns: samples[0],
    }
}

fn meta(user: &str, family: &str, tier: SubscriptionTier, locks: ParentalState) -> ConnectionMeta {
    ConnectionMeta {
        user: user.to_owned(),
        family_id: family.to_owned(),
        subscription_tier: tier,
        is_admin: false,
        parental_state: locks,
        degraded: false,
        fallback_path: None,
    }
}

/// A JSON object of exactly `len` bytes (a chat message shape, padded in one string field).
fn json_object(len: usize) -> Vec<u8> {
    let head = r#"{"type":"message","room":"room-7","sent_at":1767225600123,"text":""#;
    let tail = r#""}"#;
    let pad = len.saturating_sub(head.len() + tail.len());
    let text: String = "hello from the benchmark "
        .chars()
        .cycle()
        .take(pad)
        .collect();
    format!("{head}{text}{tail}").into_bytes()
}

/// A 300-byte Centrifugo subscribe request body (what the signature covers).
fn request_body(len: usize) -> Vec<u8> {
    let head = r#"{"client":"9f0c4d1e-3b7a-4c2d-8e6f-1a2b3c4d5e6f","transport":"websocket","protocol":"json","encoding":"json","user":"u-1","channel":"chat:fam-1:room-7","meta":{"user":"u-1","family_id":"fam-1","subscription_tier":"family","is_admin":false,"degraded":false},"data":{"x":""#;
    let tail = r#""}}"#;
    let pad = len.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

fn main() {
    let policy = ChannelPolicy::builtin();
    let member = meta(
        "u-1",
        "fam-1",
        SubscriptionTier::Family,
        ParentalState::default(),
    );
    let chat_locked = meta(
        "u-1",
        "fam-1",
        SubscriptionTier::Family,
        ParentalState {
            feature_lock_chat: true,
            ..ParentalState::default()
        },
    );
    let payload = json_object(200);
    assert_eq!(payload.len(), 200);
    let body = request_body(300);
    assert_eq!(body.len(), 300);

    let auth = ProxyAuth::new(
        &Config::from_pairs([
            ("CENTRIFUGO_PROXY_AUTH", "hmac"),
            ("CENTRIFUGO_PROXY_SECRET", SECRET),
        ])
        .expect("benchmark settings are valid")
        .auth,
    );
    let mut signature = [0u8; 32];
    hex::decode_to_slice(sign(SECRET.as_bytes(), &body), &mut signature)
        .expect("sign returns 64 hex digits");
    let meta_json = serde_json::to_string(&member).expect("meta serialises");

    // The benchmark must measure the intended branch: check each decision once first.
    assert!(matches!(
        policy.check_subscribe(&member, "chat:fam-1:room-7"),
        SubscribeDecision::Allow { ttl: Some(_) }
    ));
    assert!(matches!(
        policy.check_subscribe(&member, "flowcoach:u-1"),
        SubscribeDecision::Allow { .. }
    ));
    assert_eq!(
        policy.check_subscribe(&member, "chat:fam-2:room-7"),
        SubscribeDecision::Deny(DenyReason::NotOwner)
    );
    assert!(matches!(
        policy.check_subscribe(&chat_locked, "chat:fam-1:room-7"),
        SubscribeDecision::Deny(DenyReason::Locked(_))
    ));
    assert_eq!(
        policy.check_subscribe(&member, "games:lobby"),
        SubscribeDecision::Deny(DenyReason::UnknownNamespace)
    );
    assert_eq!(
        policy.check_publish(&member, "chat:fam-1:room-7", &payload),
        PublishDecision::Allow
    );
    assert_eq!(
        policy.check_publish(&member, "notifications:u-1", &payload),
        PublishDecision::Deny(DenyReason::NotAllowed)
    );
    assert_eq!(auth.verify_body(Some(&signature), &body), Ok(()));

    // The pool lookup of a degraded connect: a million tickets (32 MB, past the caches), looked
    // up in an order unrelated to the sort, half of them present. The bisection over the same
    // sorted digests is the lookup the set used before its outward search.
    let pool: Vec<[u8; 32]> = (0..POOL_TICKETS)
        .map(|i: u32| *TicketDigest::of(&i.to_le_bytes()).as_bytes())
        .collect();
    let set = TicketSet::from_digests(pool.clone());
    let mut sorted = pool;
    sorted.sort_unstable();
    let lookups: Vec<TicketDigest> = (0..LOOKUPS)
        .map(|i: u32| {
            TicketDigest::of(&(i.wrapping_mul(2_654_435_761) % (2 * POOL_TICKETS)).to_le_bytes())
        })
        .collect();
    assert_eq!(
        lookups.iter().filter(|d| set.contains(d)).count(),
        lookups
            .iter()
            .filter(|d| sorted.binary_search(d.as_bytes()).is_ok())
            .count()
    );
    let mut next = 0usize;
    let mut next_bisect = 0usize;

    let mut cases = vec![
        measure("hmac_verify_300B", || {
            let _ = black_box(auth.verify_body(Some(black_box(&signature)), black_box(&body)));
        }),
        measure("hmac_sign_hex_300B", || {
            black_box(sign(black_box(SECRET.as_bytes()), black_box(&body)));
        }),
        measure("subscribe_allow_chat", || {
            let _ = black_box(
                policy.check_subscribe(black_box(&member), black_box("chat:fam-1:room-7")),
            );
        }),
        measure("subscribe_allow_flowcoach_tier", || {
            let _ =
                black_box(policy.check_subscribe(black_box(&member), black_box("flowcoach:u-1")));
        }),
        measure("subscribe_deny_not_owner", || {
            let _ = black_box(
                policy.check_subscribe(black_box(&member), black_box("chat:fam-2:room-7")),
            );
        }),
        measure("subscribe_deny_locked", || {
            let _ = black_box(
                policy.check_subscribe(black_box(&chat_locked), black_box("chat:fam-1:room-7")),
            );
        }),
        measure("subscribe_deny_unknown_ns", || {
            let _ = black_box(policy.check_subscribe(black_box(&member), black_box("games:lobby")));
        }),
        measure("publish_allow_200B_object", || {
            let _ = black_box(policy.check_publish(
                black_box(&member),
                black_box("chat:fam-1:room-7"),
                black_box(&payload),
            ));
        }),
        measure("publish_deny_not_allowed", || {
            let _ = black_box(policy.check_publish(
                black_box(&member),
                black_box("notifications:u-1"),
                black_box(&payload),
            ));
        }),
        measure("meta_json_parse", || {
            let _ = black_box(serde_json::from_str::<ConnectionMeta>(black_box(
                &meta_json,
            )));
        }),
    ];
    cases.push(measure("pool_lookup_1M_interpolated", || {
        next = (next + 1) % lookups.len();
        black_box(set.contains(black_box(&lookups[next])));
    }));
    cases.push(measure("pool_lookup_1M_bisection", || {
        next_bisect = (next_bisect + 1) % lookups.len();
        black_box(
            sorted
                .binary_search(black_box(lookups[next_bisect].as_bytes()))
                .is_ok(),
        );
    }));

    let verify_ns = cases[0].median_ns;
    println!(
        "decision micro-benchmark (median of {BATCHES} batches of ~{} ms; single thread)",
        BATCH_TARGET.as_millis()
    );
    println!(
        "{:<32} {:>10} {:>10} {:>14} {:>14}",
        "case", "ns/op", "min ns/op", "ops/s", "x hmac_verify"
    );
    for c in &cases {
        println!(
            "{:<32} {:>10.1} {:>10.1} {:>14.0} {:>14.3}",
            c.name,
            c.median_ns,
            c.min_ns,
            1e9 / c.median_ns,
            c.median_ns / verify_ns
        );
    }
    for c in &cases {
        println!(
            "BENCH case={} ns_per_op={:.1} min_ns_per_op={:.1} ops_per_s={:.0} vs_hmac_verify={:.3}",
            c.name,
            c.median_ns,
            c.min_ns,
            1e9 / c.median_ns,
            c.median_ns / verify_ns
        );
    }
}
