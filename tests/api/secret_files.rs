//! The proxy secret from files, rotated without a restart: a Kubernetes Secret volume (files
//! behind a `..data` symlink that is swapped atomically) changes under the running service,
//! and both transports, HTTP with HMAC signatures and gRPC with the secret in metadata,
//! follow it.

use std::time::{Duration, Instant};

use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use serde_json::json;

use crate::fake_identity::Scripted;
use crate::helpers::{
    captured_logs, connect_body, grpc_connect_request, spawn_app_with, TempDir, TestApp,
};

const OLD: &str = "rotation-old-secret-5b1f0c";
const NEW: &str = "rotation-new-secret-a93e27";

/// A directory laid out the way the kubelet mounts a Secret: `current -> ..data/current`,
/// `..data -> ..<generation>`; an update writes a new generation and renames a fresh
/// `..data` symlink over the old one.
struct SecretVolume {
    dir: TempDir,
    generation: u32,
}

impl SecretVolume {
    fn new(current: &str, previous: &str) -> Self {
        let mut volume = Self {
            dir: TempDir::new(),
            generation: 0,
        };
        volume.update(current, previous);
        for key in ["current", "previous"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), volume.dir.0.join(key)).unwrap();
        }
        volume
    }

    fn update(&mut self, current: &str, previous: &str) {
        self.generation += 1;
        let generation = format!("..gen-{}", self.generation);
        let path = self.dir.0.join(&generation);
        std::fs::create_dir(&path).unwrap();
        // A Secret's values often end with a newline (`kubectl create secret --from-file`).
        std::fs::write(path.join("current"), format!("{current}\n")).unwrap();
        std::fs::write(path.join("previous"), previous).unwrap();
        let staged = self.dir.0.join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &staged).unwrap();
        std::fs::rename(&staged, self.dir.0.join("..data")).unwrap();
    }

    fn path(&self, key: &str) -> String {
        self.dir.0.join(key).display().to_string()
    }
}

async fn spawn_with_files(volume: &SecretVolume) -> TestApp {
    spawn_app_with(|c| {
        // Empty is unset: the secret comes only from the files.
        c.set("CENTRIFUGO_PROXY_SECRET", "")
            .set("CENTRIFUGO_PROXY_SECRET_FILE", volume.path("current"))
            .set(
                "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE",
                volume.path("previous"),
            );
    })
    .await
}

/// Connect over HTTP signed with `key`: true when accepted, false on 401.
async fn http_accepts(app: &TestApp, key: &str, ticket: &str) -> bool {
    app.identity.add_ticket(ticket, Scripted::success("u-rot"));
    let body = connect_body(ticket);
    let signature = sign(key.as_bytes(), body.as_bytes());
    let response = app
        .post_with_headers(
            "connect",
            body.as_bytes(),
            &[(SIGNATURE_HEADER, &signature)],
        )
        .await;
    match response.status {
        200 => true,
        401 => false,
        other => panic!("unexpected {other}: {}", response.text),
    }
}

/// Connect over gRPC with `key` in metadata: true when accepted, false on 4401.
async fn grpc_accepts(app: &TestApp, key: &str, ticket: &str) -> bool {
    app.identity.add_ticket(ticket, Scripted::success("u-rot"));
    let reply = app
        .grpc()
        .connect(grpc_connect_request(ticket, key))
        .await
        .unwrap()
        .into_inner();
    match (reply.result, reply.disconnect) {
        (Some(_), None) => true,
        (None, Some(d)) if d.code == 4401 => false,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Which of `keys` each transport accepts now.
async fn accepted(app: &TestApp, keys: &[&str], step: &str) -> Vec<(bool, bool)> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let ticket = format!("rot-{step}-{i}");
        out.push((
            http_accepts(app, key, &format!("{ticket}-http")).await,
            grpc_accepts(app, key, &format!("{ticket}-grpc")).await,
        ));
    }
    out
}

/// Waits until the reload counter for `result` reaches `count`: the watcher polls every few
/// seconds, so the test waits for its report rather than for a guessed time.
async fn wait_for_reloads(app: &TestApp, result: &str, count: f64) {
    let sample = format!(r#"realtime_proxy_secret_reloads_total{{result="{result}"}}"#);
    let give_up = Instant::now() + Duration::from_secs(30);
    while app.metric(&sample).await < count {
        assert!(
            Instant::now() < give_up,
            "no {result} reload number {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const BOTH: (bool, bool) = (true, true);
const NEITHER: (bool, bool) = (false, false);

#[tokio::test]
async fn a_rotation_through_the_files_needs_no_restart() {
    let mut volume = SecretVolume::new(OLD, "");
    let app = spawn_with_files(&volume).await;
    assert_eq!(accepted(&app, &[OLD, NEW], "start").await, [BOTH, NEITHER]);

    // 1. The new secret goes in as the previous one: both are accepted.
    volume.update(OLD, NEW);
    wait_for_reloads(&app, "applied", 1.0).await;
    assert_eq!(accepted(&app, &[OLD, NEW], "added").await, [BOTH, BOTH]);

    // 2. (Centrifugo rolls to the new secret.) The swap: the old one is still accepted
    //    while it is the previous secret.
    volume.update(NEW, OLD);
    wait_for_reloads(&app, "applied", 2.0).await;
    assert_eq!(accepted(&app, &[OLD, NEW], "swapped").await, [BOTH, BOTH]);

    // 3. The previous secret is emptied: the old one is refused from now on.
    volume.update(NEW, "");
    wait_for_reloads(&app, "applied", 3.0).await;
    assert_eq!(accepted(&app, &[OLD, NEW], "done").await, [NEITHER, BOTH]);
    assert_eq!(app.health().await["proxy_auth"], json!("hmac"));
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_secrets() {
    let mut volume = SecretVolume::new(OLD, "");
    let app = spawn_with_files(&volume).await;

    // Too short: refused, the running secrets stay, an ERROR says why.
    volume.update("short-secret", "");
    wait_for_reloads(&app, "rejected", 1.0).await;
    assert_eq!(
        accepted(&app, &[OLD, "short-secret"], "short").await,
        [BOTH, NEITHER]
    );
    // Unreadable (the key was removed from the Secret).
    std::fs::remove_file(
        volume
            .dir
            .0
            .join(format!("..gen-{}", volume.generation))
            .join("current"),
    )
    .unwrap();
    let rejected_so_far = app
        .metric(r#"realtime_proxy_secret_reloads_total{result="rejected"}"#)
        .await;
    wait_for_reloads(&app, "rejected", rejected_so_far + 1.0).await;
    assert_eq!(accepted(&app, &[OLD], "missing").await, [BOTH]);
    assert_eq!(
        app.metric(r#"realtime_proxy_secret_reloads_total{result="applied"}"#)
            .await,
        0.0
    );
    let logs = captured_logs();
    assert!(
        logs.contains("proxy secret files rejected")
            && logs.contains("CENTRIFUGO_PROXY_SECRET_FILE"),
        "an ERROR names the file's variable"
    );
    assert!(
        !logs.contains(OLD) && !logs.contains("short-secret"),
        "secrets stay out of the logs"
    );

    // Fixed: the next good content is applied.
    volume.update(NEW, "");
    wait_for_reloads(&app, "applied", 1.0).await;
    assert_eq!(accepted(&app, &[OLD, NEW], "fixed").await, [NEITHER, BOTH]);
}
