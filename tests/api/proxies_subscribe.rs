//! `POST /centrifugo/subscribe` against the built-in policy, with identity contexts from real
//! connects: allowed (with `expire_at` where the namespace sets one), owner, locks, tier,
//! admin, unknown namespaces, untrusted contexts and degraded connections.

use std::time::Duration;

use realtime_service::identity::proto::SubscriptionTier;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::proxies_support::{
    allowed, connect_any, expire_at, meta, on_channel, open_outage, permission_denied, with, Locks,
    Who,
};

async fn subscribe(app: &TestApp, user: &str, meta: &Value, channel: &str) -> Value {
    let response = app
        .post_signed("subscribe", &on_channel(user, Some(meta), channel))
        .await;
    assert_eq!(response.status, 200, "{channel}: {}", response.text);
    response.json()
}

#[track_caller]
fn expect(channel: &str, got: Value, want: &Value) {
    assert_eq!(&got, want, "subscribe to {channel:?}");
}

#[tokio::test]
async fn owners_are_allowed_with_expiry_where_the_namespace_sets_one() {
    let app = spawn_app().await;
    let m = Who::new("u-sub1", "fam-sub1")
        .tier(SubscriptionTier::Pro)
        .connect(&app, "sub-allowed-1")
        .await;
    let now = app.clock.unix_seconds();
    for channel in [
        "chat:fam-sub1",
        "chat:fam-sub1:room-7",
        "chat:fam-sub1:room:7",
        "diary:u-sub1",
        "diary:u-sub1:2024",
        "flowcoach:u-sub1",
    ] {
        let got = subscribe(&app, "u-sub1", &m, channel).await;
        expect(channel, got, &expire_at(now + 900));
    }
    for channel in [
        "family:fam-sub1",
        "notifications:u-sub1",
        "broadcast:news",
        "broadcast:",
    ] {
        let got = subscribe(&app, "u-sub1", &m, channel).await;
        expect(channel, got, &allowed());
    }
    // expire_at follows the service's clock.
    app.clock.advance(Duration::from_secs(42));
    let got = subscribe(&app, "u-sub1", &m, "chat:fam-sub1").await;
    expect("chat after 42 s", got, &expire_at(now + 42 + 900));
}

#[tokio::test]
async fn other_owners_channels_are_denied() {
    let app = spawn_app().await;
    let m = Who::new("u-sub2", "fam-sub2")
        .tier(SubscriptionTier::Family)
        .connect(&app, "sub-owner-1")
        .await;
    for channel in [
        // family-owned: compared with the family, first segment only, exactly
        "family:fam-other",
        "family:u-sub2",
        "chat:fam-other",
        "chat:fam-other:fam-sub2",
        "chat:fam-sub2x",
        "chat:fam-sub",
        "chat:",
        "chat::fam-sub2",
        // user-owned: compared with the user
        "diary:u-other",
        "diary:fam-sub2",
        "diary:u-sub2x",
        "flowcoach:u-other",
        "notifications:u-other",
        "notifications:",
    ] {
        let got = subscribe(&app, "u-sub2", &m, channel).await;
        expect(channel, got, &permission_denied());
    }
}

#[tokio::test]
async fn each_parental_lock_closes_its_namespaces() {
    let app = spawn_app().await;
    let now = app.clock.unix_seconds();
    let ttl = expire_at(now + 900);
    let open = allowed();
    let denied = permission_denied();
    // (lock, user, ticket, expected answer per channel)
    let cases: [(&str, Locks, [&Value; 6]); 4] = [
        (
            "feature_lock_chat",
            Locks {
                chat: true,
                ..Locks::default()
            },
            [&denied, &ttl, &ttl, &open, &open, &open],
        ),
        (
            "feature_lock_diary",
            Locks {
                diary: true,
                ..Locks::default()
            },
            [&ttl, &denied, &ttl, &open, &open, &open],
        ),
        (
            "feature_lock_flowcoach",
            Locks {
                flowcoach: true,
                ..Locks::default()
            },
            [&ttl, &ttl, &denied, &open, &open, &open],
        ),
        (
            "screen_time_lock",
            Locks {
                screen_time: true,
                ..Locks::default()
            },
            [&denied, &denied, &denied, &open, &open, &open],
        ),
    ];
    let channels = [
        "chat:fam-lock",
        "diary:u-lock",
        "flowcoach:u-lock",
        "family:fam-lock",
        "notifications:u-lock",
        "broadcast:news",
    ];
    for (lock, locks, answers) in cases {
        let m = Who::new("u-lock", "fam-lock")
            .tier(SubscriptionTier::Pro)
            .locks(locks)
            .connect(&app, &format!("sub-lock-{lock}"))
            .await;
        assert_eq!(m["parental_state"][lock], json!(true), "{m}");
        for (channel, want) in channels.iter().zip(answers) {
            let got = subscribe(&app, "u-lock", &m, channel).await;
            assert_eq!(&got, want, "{lock} on {channel}");
        }
    }
    // Every lock at once still leaves the unlocked namespaces open.
    let all = Who::new("u-lock", "fam-lock")
        .tier(SubscriptionTier::Pro)
        .locks(Locks {
            screen_time: true,
            chat: true,
            diary: true,
            flowcoach: true,
        })
        .connect(&app, "sub-lock-all")
        .await;
    for (channel, want) in channels
        .iter()
        .zip([&denied, &denied, &denied, &open, &open, &open])
    {
        let got = subscribe(&app, "u-lock", &all, channel).await;
        assert_eq!(&got, want, "all locks on {channel}");
    }
}

#[tokio::test]
async fn flowcoach_needs_pro_or_family() {
    let app = spawn_app().await;
    let now = app.clock.unix_seconds();
    for (tier, want) in [
        (SubscriptionTier::Unspecified, permission_denied()),
        (SubscriptionTier::Free, permission_denied()),
        (SubscriptionTier::Pro, expire_at(now + 900)),
        (SubscriptionTier::Family, expire_at(now + 900)),
    ] {
        let m = Who::new("u-tier", "fam-tier")
            .tier(tier)
            .connect(&app, &format!("sub-tier-{}", tier.as_str_name()))
            .await;
        let got = subscribe(&app, "u-tier", &m, "flowcoach:u-tier").await;
        assert_eq!(got, want, "{tier:?}");
        // No tier floor elsewhere.
        let got = subscribe(&app, "u-tier", &m, "diary:u-tier").await;
        assert_eq!(got, expire_at(now + 900), "{tier:?} on diary");
    }
}

#[tokio::test]
async fn admin_namespace_is_for_admins_only() {
    let app = spawn_app().await;
    let user = Who::new("u-adm1", "fam-adm")
        .connect(&app, "sub-admin-user")
        .await;
    let admin = Who::new("u-adm2", "fam-adm")
        .admin()
        .connect(&app, "sub-admin-admin")
        .await;
    for channel in ["admin:ops", "admin:", "admin:ops:alerts"] {
        let got = subscribe(&app, "u-adm1", &user, channel).await;
        expect(channel, got, &permission_denied());
        let got = subscribe(&app, "u-adm2", &admin, channel).await;
        expect(channel, got, &allowed());
    }
    // Being admin does not make one the owner of other people's channels.
    let got = subscribe(&app, "u-adm2", &admin, "diary:u-adm1").await;
    expect("diary of another user", got, &permission_denied());
}

#[tokio::test]
async fn unknown_namespaces_and_channels_without_namespace_are_denied() {
    let app = spawn_app().await;
    let admin = Who::new("u-unk", "fam-unk")
        .admin()
        .tier(SubscriptionTier::Family)
        .connect(&app, "sub-unknown-1")
        .await;
    for channel in [
        "games:u-unk",
        "u-unk",
        "chat",
        "broadcast",
        "",
        ":u-unk",
        ":",
        "Chat:fam-unk",
        "$chat:fam-unk",
        "chat#u-unk",
    ] {
        let got = subscribe(&app, "u-unk", &admin, channel).await;
        expect(channel, got, &permission_denied());
    }
    // No channel field at all.
    app.post_signed(
        "subscribe",
        &crate::proxies_support::request("u-unk", Some(&admin), json!({})),
    )
    .await
    .assert(200, permission_denied());
}

#[tokio::test]
async fn untrusted_identity_context_is_denied() {
    let app = spawn_app().await;
    let good = Who::new("u-sub3", "fam-sub3")
        .connect(&app, "sub-ctx-1")
        .await;
    let cases = [
        (
            "missing meta",
            on_channel("u-sub3", None, "family:fam-sub3"),
        ),
        (
            "user mismatch",
            on_channel("u-other", Some(&good), "family:fam-sub3"),
        ),
        (
            "not our meta",
            on_channel("u-sub3", Some(&json!({"x":1})), "family:fam-sub3"),
        ),
        (
            "meta a string",
            on_channel("u-sub3", Some(&json!("u-sub3")), "family:fam-sub3"),
        ),
        (
            "anonymous",
            on_channel("", Some(&meta("", "fam-sub3", "free")), "broadcast:news"),
        ),
    ];
    for (case, body) in cases {
        let response = app.post_signed("subscribe", &body).await;
        assert_eq!(
            (response.status, response.json()),
            (200, permission_denied()),
            "{case}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn degraded_connections_reach_only_broadcast() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-sub-1"]);
    })
    .await;
    // By hand: every owner field matches and nothing is locked, so only `degraded` denies.
    let degraded = with(
        &with(&meta("u-deg", "fam-deg", "family"), "is_admin", json!(true)),
        "degraded",
        json!(true),
    );
    for channel in [
        "family:fam-deg",
        "chat:fam-deg",
        "diary:u-deg",
        "flowcoach:u-deg",
        "notifications:u-deg",
        "admin:ops",
        "games:x",
    ] {
        let got = subscribe(&app, "u-deg", &degraded, channel).await;
        expect(channel, got, &permission_denied());
    }
    let got = subscribe(&app, "u-deg", &degraded, "broadcast:news").await;
    expect("broadcast", got, &allowed());

    // A real pool connection during an outage.
    open_outage(&app, "sub-pool-down").await;
    let (user, pool_meta) = connect_any(&app, "pool-sub-1").await;
    assert_eq!(pool_meta["degraded"], json!(true), "{pool_meta}");
    for channel in [
        "family:".to_owned(),
        format!("diary:{user}"),
        format!("notifications:{user}"),
        "chat:".to_owned(),
    ] {
        let got = subscribe(&app, &user, &pool_meta, &channel).await;
        expect(&channel, got, &permission_denied());
    }
    let got = subscribe(&app, &user, &pool_meta, "broadcast:status").await;
    expect("broadcast", got, &allowed());
}
