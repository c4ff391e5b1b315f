//! Why a Redis call failed, in the words an operator acts on: the `reason` label of
//! `realtime_redis_errors_total`, and the wording of `check-config` and startup errors.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// One value of the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens, the connection was reset or dropped, the name does not resolve.
    Unreachable,
    /// No answer within `REDIS_TIMEOUT_MS`.
    Timeout,
    /// The password (or user) was refused: `WRONGPASS`, `NOAUTH`.
    Auth,
    /// The ACL user may not run a command the service uses: `NOPERM`.
    Permission,
    /// The TLS handshake failed (an unknown CA, a wrong name, a refused client certificate).
    Tls,
    /// Redis answered with another error (`OOM`, `READONLY`, `LOADING`, ...).
    Server,
}

impl Failure {
    pub const ALL: [Self; 6] = [
        Self::Unreachable,
        Self::Timeout,
        Self::Auth,
        Self::Permission,
        Self::Tls,
        Self::Server,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Permission => "permission",
            Self::Tls => "tls",
            Self::Server => "server",
        }
    }

    /// A misconfiguration rather than an outage: startup refuses it (exit 2).
    pub fn is_misconfiguration(self) -> bool {
        matches!(self, Self::Auth | Self::Permission)
    }

    /// Classifies an error of the client library.
    pub fn of(e: &redis::RedisError) -> Self {
        if matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
            || e.kind() == redis::ErrorKind::AuthenticationFailed
        {
            return Self::Auth;
        }
        if e.code() == Some("NOPERM") {
            return Self::Permission;
        }
        if e.is_timeout() {
            return Self::Timeout;
        }
        // The client library wraps rustls's error in an I/O error whose text is rustls's.
        if e.kind() == redis::ErrorKind::Io && is_tls_text(&e.to_string()) {
            return Self::Tls;
        }
        if e.kind() == redis::ErrorKind::Io || e.is_connection_refusal() {
            return Self::Unreachable;
        }
        if is_tls_text(&e.to_string()) {
            return Self::Tls;
        }
        Self::Server
    }
}

/// Whether an error's text is a TLS failure's (rustls's messages, or the library's own).
fn is_tls_text(text: &str) -> bool {
    ["certificate", "TLS", "tls", "handshake", "InvalidDnsName"]
        .iter()
        .any(|w| text.contains(w))
}

/// The client's metrics. Created with the client; registered once by the application.
#[derive(Clone)]
pub struct RedisMetrics {
    /// Calls that failed, by reason.
    pub errors: IntCounterVec,
    /// Calls answered at once without Redis because the breaker was open.
    pub fast_failures: IntCounter,
    /// 1 while the breaker is closed (calls go to Redis).
    pub available: IntGauge,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        let m = Self {
            errors: IntCounterVec::new(
                Opts::new(
                    "realtime_redis_errors_total",
                    "Redis calls that failed, by reason (unreachable, timeout, auth, permission, tls, server).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            fast_failures: IntCounter::new(
                "realtime_redis_fast_failures_total",
                "Calls decided without Redis at once because it was not answering (the breaker was open).",
            )
            .expect("static metric definition"),
            available: IntGauge::new(
                "realtime_redis_available",
                "1 while calls go to Redis (always 1 without REDIS_URL); 0 while it does not answer and one probe at a time asks it.",
            )
            .expect("static metric definition"),
        };
        for reason in Failure::ALL {
            m.errors.with_label_values(&[reason.as_str()]);
        }
        m.available.set(1);
        m
    }
}

impl RedisMetrics {
    /// Registers every metric. Registering twice into one registry is a bug.
    pub fn register(&self, registry: &Registry) {
        let collectors: [Box<dyn prometheus::core::Collector>; 3] = [
            Box::new(self.errors.clone()),
            Box::new(self.fast_failures.clone()),
            Box::new(self.available.clone()),
        ];
        for c in collectors {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
    }

    pub fn failed(&self, reason: Failure) {
        self.errors.with_label_values(&[reason.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_and_io_kinds_map_to_reasons() {
        let io = |kind| redis::RedisError::from(std::io::Error::from(kind));
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::ConnectionRefused)),
            Failure::Unreachable
        );
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::BrokenPipe)),
            Failure::Unreachable
        );
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::TimedOut)),
            Failure::Timeout
        );
        let tls = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(Failure::of(&tls), Failure::Tls);
        let auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(Failure::of(&auth), Failure::Auth);
        assert!(Failure::Auth.is_misconfiguration());
        assert!(!Failure::Unreachable.is_misconfiguration());
    }

    #[test]
    fn every_reason_is_exported_at_zero() {
        let registry = Registry::new();
        RedisMetrics::default().register(&registry);
        let families = registry.gather();
        let errors = families
            .iter()
            .find(|f| f.name() == "realtime_redis_errors_total")
            .expect("errors");
        assert_eq!(errors.get_metric().len(), Failure::ALL.len());
    }
}
