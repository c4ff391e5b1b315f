//! The fallback pool's settings: which ledger, where, how long a consumed mark is kept, what
//! to do while Redis does not answer, and how often the ticket set is reloaded.
//!
//! Pure parse functions over the raw `&str` values, each error naming its variable, so
//! `Settings` and `check-config` validate them the same way.

use std::path::PathBuf;
use std::time::Duration;

use crate::config_error::{invalid, ConfigError, ConfigErrors, Problems};
use crate::redis_client::RedisConfig;

/// `FALLBACK_LEDGER_TTL_S` default: 30 days.
pub const DEFAULT_LEDGER_TTL_S: u64 = 2_592_000;
/// A consumed mark must outlive the ticket's stay in the Secret; a day is the floor below
/// which an ordinary rotation cadence would make used tickets valid again.
pub const MIN_LEDGER_TTL_S: u64 = 86_400;
/// Five years: beyond that the value is a typo.
pub const MAX_LEDGER_TTL_S: u64 = 157_680_000;
/// `FALLBACK_RELOAD_INTERVAL_S` default.
pub const DEFAULT_RELOAD_INTERVAL_S: u64 = 30;

/// `FALLBACK_LEDGER`: where consumption is recorded. Spelled as in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Per process: a restart makes consumed tickets valid again.
    Memory,
    /// An append-only file: once per host, across restarts.
    File,
    /// Redis: once per cluster, across restarts.
    Redis,
}

impl LedgerKind {
    pub const ALL: [Self; 3] = [Self::Memory, Self::File, Self::Redis];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File => "file",
            Self::Redis => "redis",
        }
    }
}

/// `FALLBACK_LEDGER_UNAVAILABLE`: a take while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Claim in process memory (the outage keeps its fallback) and write it to Redis later.
    Local,
    /// Fail closed: the connect is answered 503.
    Deny,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Deny => "deny",
        }
    }
}

/// The ledger, ready to build.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub kind: LedgerKind,
    /// `FALLBACK_LEDGER_PATH`: required with `file`.
    pub path: Option<PathBuf>,
    /// The Redis connection: required with `redis`.
    pub redis: Option<RedisConfig>,
    /// `FALLBACK_LEDGER_TTL_S`: how long Redis keeps a consumed mark.
    pub ttl: Duration,
    pub on_unavailable: OnUnavailable,
}

/// Everything the pool needs besides `FALLBACK_TICKETS_PATH` and `FALLBACK_LOW_WATERMARK`.
#[derive(Debug, Clone)]
pub struct FallbackConfig {
    pub ledger: LedgerConfig,
    /// `FALLBACK_RELOAD_INTERVAL_S`: `None` (0) means only on SIGHUP.
    pub reload_interval: Option<Duration>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            kind: LedgerKind::Memory,
            path: None,
            redis: None,
            ttl: Duration::from_secs(DEFAULT_LEDGER_TTL_S),
            on_unavailable: OnUnavailable::Local,
        }
    }
}

impl FallbackConfig {
    /// Reads `FALLBACK_LEDGER`, `FALLBACK_LEDGER_PATH`, `FALLBACK_LEDGER_TTL_S`,
    /// `FALLBACK_LEDGER_UNAVAILABLE` and `FALLBACK_RELOAD_INTERVAL_S` through `get`, with the
    /// Redis settings already parsed (`RedisConfig::from_lookup`). Unset and empty mean default.
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        redis: Option<&RedisConfig>,
    ) -> Result<Self, ConfigErrors> {
        let value = |var: &str| get(var).filter(|v| !v.trim().is_empty());
        // Every variable is checked, so one run of `check-config` names every problem.
        let mut p = Problems::default();
        let kind = p.take(
            value("FALLBACK_LEDGER").map_or(Ok(LedgerKind::Memory), |v| parse_ledger_kind(&v)),
        );
        let path = value("FALLBACK_LEDGER_PATH").map(|p| PathBuf::from(p.trim()));
        let ttl = p.take(
            value("FALLBACK_LEDGER_TTL_S")
                .map_or(Ok(Duration::from_secs(DEFAULT_LEDGER_TTL_S)), |v| {
                    parse_ledger_ttl_s(&v)
                }),
        );
        let on_unavailable = p.take(
            value("FALLBACK_LEDGER_UNAVAILABLE")
                .map_or(Ok(OnUnavailable::Local), |v| parse_on_unavailable(&v)),
        );
        let reload_interval = p.take(value("FALLBACK_RELOAD_INTERVAL_S").map_or(
            Ok(Some(Duration::from_secs(DEFAULT_RELOAD_INTERVAL_S))),
            |v| parse_reload_interval_s(&v),
        ));
        match kind {
            Some(LedgerKind::File) if path.is_none() => {
                p.push("FALLBACK_LEDGER_PATH", "required when FALLBACK_LEDGER=file")
            }
            Some(LedgerKind::Redis) if redis.is_none() => {
                p.push("REDIS_URL", "required when FALLBACK_LEDGER=redis");
            }
            _ => {}
        }
        let (Some(kind), Some(ttl), Some(on_unavailable), Some(reload_interval)) =
            (kind, ttl, on_unavailable, reload_interval)
        else {
            return p.finish(|| unreachable!("a value is missing only after an error"));
        };
        p.finish(|| ())?;
        Ok(Self {
            ledger: LedgerConfig {
                kind,
                path,
                redis: redis.cloned().filter(|_| kind == LedgerKind::Redis),
                ttl,
                on_unavailable,
            },
            reload_interval,
        })
    }
}

pub fn parse_ledger_kind(value: &str) -> Result<LedgerKind, ConfigError> {
    LedgerKind::ALL
        .into_iter()
        .find(|k| k.as_str() == value.trim())
        .ok_or_else(|| invalid("FALLBACK_LEDGER", "must be memory, file or redis"))
}

pub fn parse_on_unavailable(value: &str) -> Result<OnUnavailable, ConfigError> {
    match value.trim() {
        "local" => Ok(OnUnavailable::Local),
        "deny" => Ok(OnUnavailable::Deny),
        _ => Err(invalid(
            "FALLBACK_LEDGER_UNAVAILABLE",
            "must be local or deny",
        )),
    }
}

pub fn parse_ledger_ttl_s(value: &str) -> Result<Duration, ConfigError> {
    let seconds: u64 = value
        .trim()
        .parse()
        .map_err(|_| invalid("FALLBACK_LEDGER_TTL_S", "must be a whole number of seconds"))?;
    if seconds < MIN_LEDGER_TTL_S {
        return Err(invalid(
            "FALLBACK_LEDGER_TTL_S",
            format!(
                "{seconds} s is shorter than a day ({MIN_LEDGER_TTL_S} s): a consumed ticket still in the Secret would become valid again; it must cover how long a ticket can stay in the Secret"
            ),
        ));
    }
    if seconds > MAX_LEDGER_TTL_S {
        return Err(invalid(
            "FALLBACK_LEDGER_TTL_S",
            format!("must be at most {MAX_LEDGER_TTL_S} s (five years)"),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// `FALLBACK_RELOAD_INTERVAL_S`: 0 (never, SIGHUP only) or 1 s to a day.
pub fn parse_reload_interval_s(value: &str) -> Result<Option<Duration>, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(s @ 1..=86_400) => Ok(Some(Duration::from_secs(s))),
        _ => Err(invalid(
            "FALLBACK_RELOAD_INTERVAL_S",
            "must be 0 (never) or a whole number of seconds up to 86400",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<FallbackConfig, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let get = move |k: &str| map.get(k).cloned();
        let redis = RedisConfig::from_lookup(&get).map_err(|e| e.to_string())?;
        FallbackConfig::from_lookup(&get, redis.as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_memory_local_thirty_days_thirty_seconds() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.ledger.kind, LedgerKind::Memory);
        assert_eq!(c.ledger.on_unavailable, OnUnavailable::Local);
        assert_eq!(c.ledger.ttl, Duration::from_secs(2_592_000));
        assert_eq!(c.reload_interval, Some(Duration::from_secs(30)));
        assert!(c.ledger.redis.is_none());
    }

    #[test]
    fn file_needs_a_path_and_redis_needs_a_url() {
        let err = parse(&[("FALLBACK_LEDGER", "file")]).expect_err("no path");
        assert!(err.starts_with("FALLBACK_LEDGER_PATH:"), "{err}");
        let c = parse(&[
            ("FALLBACK_LEDGER", "file"),
            ("FALLBACK_LEDGER_PATH", "/v/ledger"),
        ])
        .expect("file");
        assert_eq!(c.ledger.path, Some(PathBuf::from("/v/ledger")));
        let err = parse(&[("FALLBACK_LEDGER", "redis")]).expect_err("no url");
        assert!(err.starts_with("REDIS_URL:"), "{err}");
        let c = parse(&[
            ("FALLBACK_LEDGER", "redis"),
            ("REDIS_URL", "redis://127.0.0.1"),
        ])
        .expect("redis");
        assert!(c.ledger.redis.is_some());
    }

    #[test]
    fn unknown_values_are_rejected_by_name() {
        let err = parse(&[("FALLBACK_LEDGER", "etcd")]).expect_err("unknown ledger");
        assert!(err.starts_with("FALLBACK_LEDGER:"), "{err}");
        let err = parse(&[("FALLBACK_LEDGER_UNAVAILABLE", "maybe")]).expect_err("unknown");
        assert!(err.starts_with("FALLBACK_LEDGER_UNAVAILABLE:"), "{err}");
        let c = parse(&[("FALLBACK_LEDGER_UNAVAILABLE", "deny")]).expect("deny");
        assert_eq!(c.ledger.on_unavailable, OnUnavailable::Deny);
    }

    #[test]
    fn ttl_under_a_day_is_rejected_with_the_reason() {
        let err = parse(&[("FALLBACK_LEDGER_TTL_S", "3600")]).expect_err("an hour");
        assert!(err.starts_with("FALLBACK_LEDGER_TTL_S:"), "{err}");
        assert!(err.contains("shorter than a day"), "{err}");
        assert!(parse(&[("FALLBACK_LEDGER_TTL_S", "86400")]).is_ok());
        assert!(parse(&[("FALLBACK_LEDGER_TTL_S", "1e9")]).is_err());
        assert!(parse(&[("FALLBACK_LEDGER_TTL_S", "999999999")]).is_err());
    }

    #[test]
    fn reload_interval_zero_means_never() {
        let c = parse(&[("FALLBACK_RELOAD_INTERVAL_S", "0")]).expect("never");
        assert_eq!(c.reload_interval, None);
        let err = parse(&[("FALLBACK_RELOAD_INTERVAL_S", "-1")]).expect_err("negative");
        assert!(err.starts_with("FALLBACK_RELOAD_INTERVAL_S:"), "{err}");
    }
}
