//! What is wrong with Redis, said so an operator can fix it: every command the service uses
//! is tried once (`check-config` and startup), and a failure names its reason and the
//! variable to fix. Authentication and permission failures are misconfigurations (startup
//! exits 2); unreachable, timeout and TLS failures may be an outage, and the service starts.

use std::fmt;

use redis::aio::ConnectionManager;

use super::{CallError, Failure, RedisClient};

/// A script that runs every command the ledger's and the limiter's scripts run, on one key
/// of the service's own that it deletes again.
const CHECK_SCRIPT: &str = r"
redis.call('TIME')
redis.call('SET', KEYS[1], '1', 'PX', 10000)
redis.call('EXISTS', KEYS[1])
redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
return 1
";

/// Why the check failed: the reason, the command that showed it, and the library's text
/// (which never holds the password).
#[derive(Debug, Clone)]
pub struct CheckFailure {
    pub reason: Failure,
    pub command: &'static str,
    detail: String,
    /// The variable an operator fixes for this reason.
    variable: &'static str,
}

impl CheckFailure {
    /// The variable to fix.
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The message after `<variable>: `.
    pub fn message(&self) -> String {
        let what = match self.reason {
            Failure::Unreachable => "Redis is unreachable",
            Failure::Timeout => "Redis did not answer within REDIS_TIMEOUT_MS",
            Failure::Auth => "Redis refused the authentication (wrong password or user)",
            Failure::Permission => "the Redis user lacks a permission the service needs",
            Failure::Tls => "the TLS connection to Redis failed",
            Failure::Server => "Redis answered with an error",
        };
        format!("{what}: {} failed ({})", self.command, self.detail)
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message())
    }
}

/// Which variables the client was built with: the one to name depends on them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Variables {
    pub password_file: bool,
    pub tls_ca: bool,
    pub tls_client: bool,
}

impl Variables {
    fn for_reason(self, reason: Failure) -> &'static str {
        match reason {
            Failure::Auth if self.password_file => "REDIS_PASSWORD_FILE",
            Failure::Tls if self.tls_ca => "REDIS_TLS_CA_PATH",
            Failure::Tls if self.tls_client => "REDIS_TLS_CERT_PATH",
            _ => "REDIS_URL",
        }
    }
}

/// Builds one command on the check key.
type BuildCmd = fn(&str) -> redis::Cmd;

impl RedisClient {
    /// Tries every command the service uses, in the order a failure is most telling (a
    /// refused connection or password shows on the first), bypassing the breaker.
    pub async fn check(&self, vars: Variables) -> Result<(), CheckFailure> {
        let check_key = self.key("check-config");
        let key = check_key.as_str();
        let script = redis::Script::new(CHECK_SCRIPT);
        let script = &script;
        let fail = |command: &'static str| {
            move |e: CallError| {
                let reason = e.reason().unwrap_or(Failure::Unreachable);
                CheckFailure {
                    reason,
                    command,
                    detail: e.to_string(),
                    variable: vars.for_reason(reason),
                }
            }
        };
        self.check_step(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
            .map_err(fail("PING"))?;
        self.check_step(move |mut c| async move { script.load_async(&mut c).await })
            .await
            .map_err(fail("SCRIPT LOAD"))?;
        self.check_step(move |mut c| async move {
            redis::cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(1)
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map_err(fail("EVALSHA (running SET, GET, DEL, EXISTS, TIME)"))?;
        self.check_step(move |mut c| async move {
            redis::cmd("EVAL")
                .arg(CHECK_SCRIPT)
                .arg(1)
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map_err(fail("EVAL"))?;
        let simple: [(&'static str, BuildCmd); 3] = [
            ("EXISTS", |k| redis::cmd("EXISTS").arg(k).take()),
            ("DBSIZE", |_| redis::cmd("DBSIZE")),
            ("SCAN", |k| {
                redis::cmd("SCAN")
                    .arg(0)
                    .arg("MATCH")
                    .arg(k)
                    .arg("COUNT")
                    .arg(1)
                    .take()
            }),
        ];
        for (name, build) in simple {
            let cmd = build(key);
            let cmd = &cmd;
            self.check_step(
                move |mut c| async move { cmd.query_async::<redis::Value>(&mut c).await },
            )
            .await
            .map_err(fail(name))?;
        }
        Ok(())
    }

    async fn check_step<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let budget = super::CONNECT_TIMEOUT.max(self.inner.timeout);
        self.attempt_within(&f, budget).await
    }
}
