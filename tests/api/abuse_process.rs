//! The edge under abuse (issue 9 §1) against the real binary in a child process: memory stays
//! bounded under thousands of abusive connections, a low open-file limit does not take health
//! checks off the air, and SIGTERM ends even with stalled connections.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::abuse::{guard, read_until_closed, RawResponse};
use crate::process::Service;

/// Lets this test process hold thousands of sockets: soft open-file limit up to the hard one.
fn raise_own_open_file_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|n| n >= needed),
        "this test needs {needed} open files, the limit is {now:?}"
    );
}

async fn connect(addr: (&str, u16)) -> TcpStream {
    guard("connect", TcpStream::connect(addr))
        .await
        .expect("connect")
}

/// Holds up to `n` connections that send nothing; stops early when a connect is not
/// completed within 3 s, past the first SYN retries (the backlog is full: nothing is accepted).
async fn hold_idle(service: &Service, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(service.addr())).await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("connect: {e}"),
            Err(_) => break,
        }
    }
    held
}

const MIB: u64 = 1024 * 1024;
/// The Deployment's memory limit before issue 9 (the issue measured 418 MB against it).
const LIMIT_BYTES: u64 = 128 * MIB;

#[tokio::test]
async fn two_thousand_abusive_connections_leave_memory_bounded_and_health_answering() {
    const HEADS: usize = 1000;
    const BODIES: usize = 1000;
    const MAX_HEADER: u64 = 16 * 1024;
    const INFLIGHT: u64 = 256;
    const BODY: u64 = 64 * 1024;
    raise_own_open_file_limit((HEADS + BODIES + 256) as u64);
    let service = Service::start(
        "",
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "3000"),
            ("HTTP_BODY_READ_TIMEOUT_MS", "3000"),
            ("HTTP_MAX_CONNECTIONS", "4096"),
            ("HTTP_MAX_HEADER_BYTES", &MAX_HEADER.to_string()),
            ("PROXY_MAX_INFLIGHT", &INFLIGHT.to_string()),
            ("PROXY_MAX_BODY_BYTES", &BODY.to_string()),
        ],
    )
    .await;
    let idle = service.memory("VmRSS");

    let addr = service.addr();
    let mut abuse = tokio::task::JoinSet::new();
    // 1000 heads of 400 KB that never end.
    for _ in 0..HEADS {
        abuse.spawn(async move {
            let mut stream = connect(addr).await;
            let chunk = [b'a'; 8192];
            let mut ok = stream
                .write_all(b"POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ")
                .await
                .is_ok();
            for _ in 0..50 {
                ok = ok && stream.write_all(&chunk).await.is_ok();
            }
            read_until_closed(&mut stream).await
        });
    }
    // 1000 bodies of 64 KB under a made-up signature, stalled before their last bytes.
    let fake_signature = "ab".repeat(32);
    for _ in 0..BODIES {
        let head = format!(
            "POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             x-centrifugo-proxy-signature: {fake_signature}\r\ncontent-length: {BODY}\r\n\r\n"
        );
        abuse.spawn(async move {
            let mut stream = connect(addr).await;
            let body = vec![b' '; usize::try_from(BODY).expect("small") - 100];
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            read_until_closed(&mut stream).await
        });
    }

    // Health answers throughout, on new connections.
    let mut peak_rss = 0;
    let mut health_checks = 0;
    let mut answers = Vec::new();
    let waited = Instant::now();
    while !abuse.is_empty() {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "abusive connections still open after 120 s"
        );
        peak_rss = peak_rss.max(service.memory("VmRSS"));
        assert_eq!(service.health().await, Some(200), "health during the abuse");
        health_checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Some(done) = abuse.try_join_next() {
            answers.push(done.expect("abuse task"));
        }
    }
    // The kernel's high-water mark, and the samples (which it may round below).
    let high_water = service.memory("VmHWM").max(peak_rss);
    assert_eq!(service.health().await, Some(200), "health after the abuse");

    // What the abusers saw: refusals, and never more 408s than there are in-flight slots
    // (a body is read only while holding one).
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for answer in answers.iter().filter(|a| !a.is_empty()) {
        let response = RawResponse::parse(answer);
        assert!(
            [408, 429, 431].contains(&response.status),
            "{} {}",
            response.status,
            response.body
        );
        *seen.entry(response.status).or_default() += 1;
    }
    let timed_out = seen.get(&408).copied().unwrap_or_default() as u64;
    assert!(timed_out <= INFLIGHT, "{timed_out} bodies buffered at once");

    // The bound: heads held at once x the head limit, plus buffered bodies, over the idle
    // process; doubled for allocator slack and per-connection state.
    let connections = (HEADS + BODIES) as u64;
    let derived = idle + 2 * (connections * MAX_HEADER + INFLIGHT * BODY);
    println!(
        "RSS idle {:.1} MiB; peak sampled {:.1} MiB; high-water {:.1} MiB = {:.2} of the {} MiB limit, {:.2} of the derived bound {:.1} MiB; {health_checks} health checks; answers by status {seen:?}",
        idle as f64 / MIB as f64,
        peak_rss as f64 / MIB as f64,
        high_water as f64 / MIB as f64,
        high_water as f64 / LIMIT_BYTES as f64,
        LIMIT_BYTES / MIB,
        high_water as f64 / derived as f64,
        derived as f64 / MIB as f64,
    );
    assert!(
        high_water < derived.min(LIMIT_BYTES),
        "high-water {high_water} bytes"
    );
    assert!(health_checks >= 1);
}

#[tokio::test]
async fn a_low_open_file_limit_does_not_stop_health_checks() {
    raise_own_open_file_limit(1024);
    let service = Service::start(
        "ulimit -Sn 256 -Hn 256",
        &[
            ("HTTP_MAX_CONNECTIONS", "128"),
            ("PROXY_MAX_INFLIGHT", "16"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    // Far more idle sockets than the child has descriptors.
    let held = hold_idle(&service, 600).await;
    assert_eq!(held.len(), 600, "the child stopped accepting");
    for _ in 0..5 {
        assert_eq!(service.health().await, Some(200), "{}", service.log());
    }
    assert!(
        service
            .metric("realtime_http_connections_evicted_total{transport=\"http\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        service.metric("realtime_http_accept_errors_total").await,
        0.0
    );
    assert!(service.metric("realtime_http_connections").await <= 128.0);
}

#[tokio::test]
async fn past_the_open_file_limit_accept_errors_are_counted_and_logged() {
    raise_own_open_file_limit(1024);
    // A cap that does not fit under the limit: accept itself runs out of descriptors.
    let service = Service::start(
        "ulimit -Sn 256 -Hn 256",
        &[
            ("HTTP_MAX_CONNECTIONS", "1000"),
            ("PROXY_MAX_INFLIGHT", "16"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let held = hold_idle(&service, 400).await;
    assert!(held.len() > 256, "only {} connections held", held.len());
    // Give the child's accept loop the time to hit the limit (it does not stop on it).
    let started = Instant::now();
    while !service.log().contains("accepting a connection failed") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no accept-error WARN:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    // Recovers once the sockets go.
    let started = Instant::now();
    while service.health().await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(20), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(service.metric("realtime_http_accept_errors_total").await >= 1.0);
    let log = service.log();
    assert!(
        log.contains("does not fit under the open-file limit"),
        "no startup WARN:\n{log}"
    );
}

#[tokio::test]
async fn sigterm_with_stalled_connections_exits_0_after_drain_and_timeout() {
    const DRAIN_MS: u64 = 500;
    const TIMEOUT_MS: u64 = 1000;
    let mut service = Service::start(
        "",
        &[
            ("SHUTDOWN_DRAIN_DELAY_MS", &DRAIN_MS.to_string()),
            ("SHUTDOWN_TIMEOUT_MS", &TIMEOUT_MS.to_string()),
            // Only the shutdown timeout can end these connections.
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
            ("HTTP_BODY_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut stream = connect(service.addr()).await;
        stream
            .write_all(b"POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            .await
            .expect("write");
        stalled.push(stream);
    }
    let mut body = connect(service.addr()).await;
    body.write_all(
        format!(
            "POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             x-centrifugo-proxy-signature: {}\r\ncontent-length: 1000\r\n\r\n{{\"client\":",
            "cd".repeat(32)
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    stalled.push(body);
    // All six are open on the server's side (the metrics request is the seventh).
    let started = Instant::now();
    loop {
        let open = service.metric("realtime_http_connections").await;
        if open >= 7.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{open} open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signalled = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(service.pid().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let within = Duration::from_millis(DRAIN_MS + TIMEOUT_MS) + Duration::from_secs(10);
    assert_eq!(
        service.exit_code(within).await,
        Some(0),
        "{}",
        service.log()
    );
    // The stalled connections held it until the timeout; it did not end by itself earlier.
    assert!(signalled.elapsed() >= Duration::from_millis(DRAIN_MS + TIMEOUT_MS));
    let log = service.log();
    assert!(
        log.contains("6 connections were still busy after SHUTDOWN_TIMEOUT_MS and were cut"),
        "{log}"
    );
    for mut stream in stalled {
        read_until_closed(&mut stream).await;
    }
}
