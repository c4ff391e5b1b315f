//! Issue 8 in one real service process: the `file` ledger across restarts (and a torn last
//! line), the live pool (kubelet-style `..data` swaps, revocation by an emptied Secret, an
//! unreadable path, SIGHUP, `sha256:` lines, a directory of several files), the live channel
//! policy, and the minting snippet of docs/fallback-pool.md run by bash.

use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{eventually, TempDir};
use crate::process::Service;
use crate::proxies_support::{meta, on_channel};

const QUICK_OUTAGE: [(&str, &str); 2] = [
    ("IDENTITY_VALIDATE_DEADLINE_MS", "50"),
    ("FALLBACK_DEGRADED_WINDOW_MS", "50"),
];

/// One process over the pool at `pool`, degraded.
async fn degraded(pool: &Path, env: &[(&str, &str)]) -> Service {
    let pool = pool.display().to_string();
    let mut all: Vec<(&str, &str)> = QUICK_OUTAGE.to_vec();
    all.push(("FALLBACK_TICKETS_PATH", &pool));
    all.extend_from_slice(env);
    let service = Service::start("", &all).await;
    service.degrade("opener").await;
    service
}

async fn pool_health(s: &Service) -> Value {
    s.health_json().await["fallback_pool"].clone()
}

/// Polls until `/health` `fallback_pool` satisfies `check`.
async fn wait_for_pool(s: &Service, what: &str, check: impl Fn(&Value) -> bool) {
    eventually(what, async || check(&pool_health(s).await)).await;
}

#[tokio::test]
async fn the_file_ledger_refuses_a_ticket_after_a_restart_and_tolerates_a_torn_last_line() {
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    std::fs::write(&pool, "file-1\nfile-2\nfile-3\n").unwrap();
    let ledger = dir.0.join("consumed");
    let ledger_path = ledger.display().to_string();
    let env = [
        ("FALLBACK_LEDGER", "file"),
        ("FALLBACK_LEDGER_PATH", ledger_path.as_str()),
    ];
    let mut s = degraded(&pool, &env).await;
    assert_eq!(pool_health(&s).await["ledger"], json!("file"));
    assert_eq!(s.connect("file-1").await, 200);
    assert_eq!(s.connect("file-1").await, 503);

    s.restart().await;
    s.degrade("opener-2").await;
    assert_eq!(
        s.connect("file-1").await,
        503,
        "consumed before the restart"
    );
    assert_eq!(pool_health(&s).await["size"], json!(2));

    // A crash mid-append leaves half a line.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap();
    file.write_all(b"3fa9c0e1d2").unwrap();
    drop(file);
    s.restart().await;
    assert!(
        s.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("torn")),
        "{}",
        s.log()
    );
    s.degrade("opener-3").await;
    assert_eq!(s.connect("file-1").await, 503);
    assert_eq!(s.connect("file-2").await, 200);
    // The claim written after the torn tail is whole: it survives one more restart.
    s.restart().await;
    s.degrade("opener-4").await;
    assert_eq!(s.connect("file-2").await, 503);
    assert_eq!(s.connect("file-3").await, 200);
}

/// A Secret volume laid out the way the kubelet does it: `..<timestamp>/` directories holding
/// the files, a `..data` symlink to the current one (swapped by renaming a new symlink over
/// it, which is atomic), and each file a symlink through `..data`.
struct SecretVolume {
    root: PathBuf,
    version: usize,
    current: Option<PathBuf>,
}

impl SecretVolume {
    fn new(root: PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&root).unwrap();
        let mut volume = Self {
            root,
            version: 0,
            current: None,
        };
        volume.publish(files);
        volume
    }

    fn publish(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let name = format!("..2026_11_28_08_00_{:02}.{}", self.version, self.version);
        let data = self.root.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (file, text) in files {
            std::fs::write(data.join(file), text).unwrap();
        }
        self.swap_data_to(&name);
        for (file, _) in files {
            let link = self.root.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{file}"), link).unwrap();
            }
        }
        if let Some(old) = self.current.replace(data) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    /// Points `..data` at `target` (relative to the volume) through a rename.
    fn swap_data_to(&self, target: &str) {
        let tmp = self.root.join("..data_tmp");
        symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }
}

#[tokio::test]
async fn a_kubelet_data_swap_adds_and_removes_tickets_an_empty_secret_revokes_all_and_an_unreadable_one_keeps_the_last_set(
) {
    let dir = TempDir::new();
    let mut volume = SecretVolume::new(dir.0.join("pool"), &[("tickets", "swap-a\nswap-b\n")]);
    let s = degraded(&volume.root, &[("FALLBACK_RELOAD_INTERVAL_S", "1")]).await;
    let first = pool_health(&s).await;
    assert_eq!(first["size"], json!(2), "{first}");
    assert_eq!(first["reload_error"], Value::Null, "{first}");
    assert_eq!(s.connect("swap-a").await, 200);

    volume.publish(&[("tickets", "swap-a\nswap-c\nswap-d\n")]);
    wait_for_pool(&s, "the swap was loaded", |p| {
        p["generation"] != first["generation"]
    })
    .await;
    assert_eq!(s.connect("swap-b").await, 503, "removed");
    assert_eq!(s.connect("swap-a").await, 503, "still consumed");
    assert_eq!(s.connect("swap-c").await, 200, "added");
    assert!(
        s.metric("realtime_fallback_reloads_total{result=\"changed\"}")
            .await
            >= 1.0
    );

    // `..data` now points at nothing: the last good set stays and the error shows.
    let before = pool_health(&s).await;
    volume.swap_data_to("..2026_11_28_gone");
    wait_for_pool(&s, "the reload error shows", |p| {
        !p["reload_error"].is_null()
    })
    .await;
    let broken = pool_health(&s).await;
    assert_eq!(broken["generation"], before["generation"], "{broken}");
    assert!(
        s.metric("realtime_fallback_reloads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    assert_eq!(s.connect("swap-d").await, 200, "the last good set serves");

    // Emptying the Secret revokes every ticket.
    volume.publish(&[("tickets", "")]);
    wait_for_pool(&s, "the empty set was loaded", |p| {
        p["size"] == json!(0) && p["reload_error"].is_null()
    })
    .await;
    assert_eq!(pool_health(&s).await["status"], json!("empty"));
    assert_eq!(s.connect("swap-c").await, 503);
}

#[tokio::test]
async fn sighup_reloads_at_once_with_the_interval_off() {
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    std::fs::write(&pool, "hup-a\n").unwrap();
    let s = degraded(&pool, &[("FALLBACK_RELOAD_INTERVAL_S", "0")]).await;
    let before = pool_health(&s).await;
    let tmp = dir.0.join("pool.tmp");
    std::fs::write(&tmp, "hup-b\nhup-c\n").unwrap();
    std::fs::rename(&tmp, &pool).unwrap();
    s.hup();
    wait_for_pool(&s, "SIGHUP reloaded", |p| {
        p["generation"] != before["generation"]
    })
    .await;
    assert_eq!(pool_health(&s).await["size"], json!(2));
    assert_eq!(s.connect("hup-a").await, 503);
    assert_eq!(s.connect("hup-b").await, 200);
}

fn digest_line(ticket: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(ticket.as_bytes())))
}

#[tokio::test]
async fn digest_lines_match_their_tickets_and_a_directory_is_the_union_of_its_files() {
    let dir = TempDir::new();
    let pool = dir.0.join("projected");
    std::fs::create_dir(&pool).unwrap();
    std::fs::write(
        pool.join("digests"),
        format!("{}\n{}\n", digest_line("dig-1"), digest_line("dig-2")),
    )
    .unwrap();
    std::fs::write(pool.join("plain"), "plain-1\n").unwrap();
    std::fs::write(pool.join(".hidden"), "hidden-1\n").unwrap();
    let s = degraded(&pool, &[]).await;
    assert_eq!(pool_health(&s).await["size"], json!(3));
    assert_eq!(s.connect("dig-1").await, 200);
    assert_eq!(s.connect("dig-1").await, 503);
    assert_eq!(
        s.connect(&digest_line("dig-2")).await,
        503,
        "a digest is no ticket"
    );
    assert_eq!(s.connect("dig-2").await, 200);
    assert_eq!(s.connect("plain-1").await, 200);
    assert_eq!(s.connect("hidden-1").await, 503, "dot files are skipped");
}

const POLICY_V1: &str = r#"
[namespaces.games]
owner = "user"
subscribe = true
publish = false
"#;

const POLICY_V2: &str = r#"
[namespaces.arcade]
owner = "user"
subscribe = true
publish = false
"#;

async fn may_subscribe(s: &Service, channel: &str) -> bool {
    let m = meta("u-live", "fam-live", "free");
    let (status, answer) = s
        .post_signed("subscribe", &on_channel("u-live", Some(&m), channel))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer.get("result").is_some()
}

async fn policy_health(s: &Service) -> Value {
    s.health_json().await["channel_policy"].clone()
}

#[tokio::test]
async fn an_invalid_policy_edit_keeps_the_last_good_policy_and_a_valid_one_takes_effect() {
    let dir = TempDir::new();
    let path = dir.0.join("policy.toml");
    std::fs::write(&path, POLICY_V1).unwrap();
    let path_text = path.display().to_string();
    let s = Service::start(
        "",
        &[
            ("CHANNEL_POLICY_PATH", path_text.as_str()),
            ("FALLBACK_RELOAD_INTERVAL_S", "1"),
        ],
    )
    .await;
    assert!(may_subscribe(&s, "games:u-live").await);
    assert!(!may_subscribe(&s, "arcade:u-live").await);

    std::fs::write(&path, "[namespaces.games]\nowner = 7\n").unwrap();
    eventually("the policy error shows", async || {
        !policy_health(&s).await["reload_error"].is_null()
    })
    .await;
    assert!(
        s.metric("realtime_channel_policy_reloads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    assert!(
        may_subscribe(&s, "games:u-live").await,
        "the last good policy"
    );

    std::fs::write(&path, POLICY_V2).unwrap();
    eventually("the valid policy applies", async || {
        may_subscribe(&s, "arcade:u-live").await
    })
    .await;
    assert!(!may_subscribe(&s, "games:u-live").await);
    assert_eq!(policy_health(&s).await["reload_error"], Value::Null);
}

/// The fenced block of docs/fallback-pool.md that starts with `# mint a pool`.
fn minting_snippet() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/fallback-pool.md"
    ))
    .unwrap();
    let start = doc
        .find("```bash\n# mint a pool")
        .expect("docs/fallback-pool.md has a ```bash block starting with `# mint a pool`");
    let body = &doc[start + "```bash\n".len()..];
    body[..body.find("```").expect("closed block")].to_owned()
}

#[tokio::test]
async fn the_documented_minting_snippet_makes_a_pool_the_service_loads() {
    let dir = TempDir::new();
    let status = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &minting_snippet()])
        .current_dir(&dir.0)
        .env("N", "50")
        .status()
        .expect("bash runs");
    assert!(status.success());
    let tickets = std::fs::read_to_string(dir.0.join("tickets.txt")).unwrap();
    let tickets: Vec<&str> = tickets.lines().collect();
    assert_eq!(tickets.len(), 50);
    assert!(tickets.iter().all(|t| t.len() == 32));
    let digests = std::fs::read_to_string(dir.0.join("tickets.sha256")).unwrap();
    assert!(!tickets.iter().any(|t| digests.contains(t)));

    let s = degraded(&dir.0.join("tickets.sha256"), &[]).await;
    assert_eq!(pool_health(&s).await["size"], json!(50));
    assert_eq!(s.connect(tickets[0]).await, 200);
    assert_eq!(s.connect(tickets[0]).await, 503);
    assert_eq!(s.connect(tickets[49]).await, 200);
}
