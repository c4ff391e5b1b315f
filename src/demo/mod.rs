//! `realtime-service demo`: the whole service on loopback against an in-process stand-in
//! identity-service (`identity`) and a small fallback pool, with a generated secret, printing signed
//! `curl` commands to try. Press Enter to take the fake identity-service down (and again to
//! bring it back) to watch the outage window open the fallback pool.

pub mod identity;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use identity::{DemoTickets, IdentityServer};

use crate::app::{shutdown_signal, Application};
use crate::config::Settings;
use crate::identity::proto;
use crate::transport::http::auth::{sign, SIGNATURE_HEADER};

const WINDOW_MS: u64 = 2000;
const POOL_TICKETS: &[&str] = &["demo-pool-1", "demo-pool-2", "demo-pool-3"];

pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let tickets = DemoTickets::new([
        (
            "demo-ticket-ok",
            identity::success(
                "demo-user",
                "demo-family",
                proto::SubscriptionTier::Pro,
                false,
            ),
        ),
        (
            "demo-ticket-degraded",
            identity::success(
                "demo-user",
                "demo-family",
                proto::SubscriptionTier::Free,
                true,
            ),
        ),
    ]);
    let fake =
        IdentityServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(tickets)).await?;

    let dir = std::env::temp_dir().join(format!("realtime-service-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool_path = dir.join("tickets");
    std::fs::write(&pool_path, POOL_TICKETS.join("\n") + "\n")?;

    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for the demo secret: {e}"))?;
    let secret = hex::encode(secret);
    let port = std::env::var("LISTEN_PORT").unwrap_or_else(|_| "9730".into());
    let settings = Settings::from_pairs([
        ("LISTEN_HOST", "127.0.0.1".to_owned()),
        ("LISTEN_PORT", port),
        ("CENTRIFUGO_PROXY_AUTH", "hmac".into()),
        ("CENTRIFUGO_PROXY_SECRET", secret.clone()),
        ("IDENTITY_VALIDATE_GRPC_ADDRESS", fake.address()),
        ("IDENTITY_VALIDATE_DEADLINE_MS", "1000".into()),
        ("IDENTITY_PROBE_INTERVAL_MS", "500".into()),
        ("FALLBACK_TICKETS_PATH", pool_path.display().to_string()),
        ("FALLBACK_DEGRADED_WINDOW_MS", WINDOW_MS.to_string()),
        ("FALLBACK_LOW_WATERMARK", "0".into()),
        ("SHUTDOWN_DRAIN_DELAY_MS", "0".into()),
    ])?;
    let app = Application::build(&settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());

    let curl = |ticket: &str| {
        let body = format!(
            r#"{{"client":"demo-client","transport":"websocket","protocol":"json","encoding":"json","data":{{"token":"{ticket}"}}}}"#
        );
        let signature = sign(secret.as_bytes(), body.as_bytes());
        format!(
            "curl -sS -w ' -> HTTP %{{http_code}}\\n' -X POST {base}/centrifugo/connect -H 'Content-Type: application/json' -H '{SIGNATURE_HEADER}: {signature}' --data '{body}'"
        )
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nrealtime-service demo on {base} (fake identity-service on {}, secret {secret})\n",
        fake.address()
    )?;
    writeln!(out, "# Accepted: identity-service validates the ticket")?;
    writeln!(out, "{}\n", curl("demo-ticket-ok"))?;
    writeln!(out, "# Rejected: identity-service does not know the ticket (4401, the SDK retries with a fresh one)")?;
    writeln!(out, "{}\n", curl("demo-ticket-unknown"))?;
    writeln!(out, "# Degraded: identity-service answered from its own fallback (degraded: true in meta and info)")?;
    writeln!(out, "{}\n", curl("demo-ticket-degraded"))?;
    writeln!(out, "# Degraded from this service's fallback pool: press Enter here to take identity-service down,")?;
    writeln!(
        out,
        "# wait {} s (the outage window), then (each pool ticket works once):",
        WINDOW_MS / 1000
    )?;
    writeln!(out, "{}\n", curl(POOL_TICKETS[0]))?;
    writeln!(
        out,
        "# State: curl -sS {base}/health ; metrics: curl -sS {base}/metrics"
    )?;
    writeln!(out, "# Ctrl-C stops the demo.\n")?;
    drop(out);

    let toggler = tokio::spawn(async move {
        let mut down = false;
        loop {
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|n| n > 0)
            })
            .await;
            if !matches!(line, Ok(Ok(true))) {
                // No terminal (stdin closed): nothing to toggle, keep the fake as it is.
                std::future::pending::<()>().await;
            }
            down = !down;
            if down {
                fake.stop();
                println!("identity-service is DOWN: pool tickets are accepted {} s after the first failed call", WINDOW_MS / 1000);
            } else if let Err(e) = fake.restart().await {
                println!("could not restart the fake identity-service: {e}");
            } else {
                println!("identity-service is UP again");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let result = app.run_until(shutdown_signal()).await;
    toggler.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result?)
}
