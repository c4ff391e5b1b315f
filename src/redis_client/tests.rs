//! Configuration parsing, redaction and the client against a real Redis.

use super::*;
use std::collections::HashMap;

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn no_url_means_no_redis_and_defaults_apply() {
    assert!(RedisConfig::from_lookup(&lookup(&[]))
        .expect("ok")
        .is_none());
    let c = RedisConfig::from_lookup(&lookup(&[("REDIS_URL", "redis://127.0.0.1:6379")]))
        .expect("ok")
        .expect("some");
    assert_eq!(c.key_prefix, "realtime:");
    assert_eq!(c.timeout, Duration::from_millis(100));
}

#[test]
fn errors_name_the_variable_and_never_the_url() {
    let err = RedisConfig::from_lookup(&lookup(&[("REDIS_URL", "http://u:hunter2@h")]))
        .expect_err("bad scheme")
        .to_string();
    assert!(err.starts_with("REDIS_URL:"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = RedisConfig::from_lookup(&lookup(&[
        ("REDIS_URL", "redis://h"),
        ("REDIS_TIMEOUT_MS", "0"),
    ]))
    .expect_err("zero timeout")
    .to_string();
    assert!(err.starts_with("REDIS_TIMEOUT_MS:"), "{err}");
}

#[test]
fn the_password_never_shows_in_debug_or_redacted_url() {
    let c = RedisConfig::from_lookup(&lookup(&[(
        "REDIS_URL",
        "rediss://app:s3cr@t-pw@redis.example:6380/2",
    )]))
    .expect("ok")
    .expect("some");
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cr"), "{debug}");
    assert!(!debug.contains("t-pw"), "{debug}");
    assert_eq!(c.redacted_url(), "rediss://app:***@redis.example:6380/2");
    assert_eq!(redact_url("redis://onlypw@h:1"), "redis://***@h:1");
    assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
}

#[tokio::test]
async fn a_lazy_client_builds_while_redis_is_down_and_answers_once_it_is_up() {
    let mut own = testing::OwnRedis::start();
    own.stop();
    let client = testing::client(&own.url(), &testing::unique_prefix("lazy"));
    assert!(client.ping().await.is_err());
    assert!(!client.reachable());
    own.restart();
    // The failed attempt scheduled a reconnect; a few pings may still see the old error.
    let mut answered = false;
    for _ in 0..100 {
        if client.ping().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "no answer after Redis came back");
    assert!(client.reachable());
}

#[tokio::test]
async fn the_password_file_is_used() {
    let own = testing::OwnRedis::start();
    let admin = testing::client(&own.url(), "x:");
    admin
        .call(|mut c| async move {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("pw-from-file")
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .expect("set requirepass");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "pw-from-file\n").expect("write");
    let mut config = testing::config(&own.url(), "x:");
    config.password_file = Some(file);
    let client = RedisClient::connect_lazy(&config).expect("client");
    client.ping().await.expect("authenticated ping");
    let anonymous = testing::client(&own.url(), "x:");
    assert!(anonymous.ping().await.is_err());
}
