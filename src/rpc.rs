//! The rpc proxy's backends: routing a method to an HTTP backend by its prefix
//! (`family.get_members` -> the `family` backend from `RPC_ROUTES`) and the call itself with
//! a deadline. Mapping the answer onto Centrifugo's reply is a decision (`decide::rpc`).
//!
//! Backends are `http://` or `https://` URLs; https verifies the backend's certificate
//! against the webpki roots, or against `RPC_TLS_CA_PATH` when set (see `tls`). Any other
//! scheme is refused at startup.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

/// Largest backend answer read; a larger one is treated as a backend failure.
const MAX_BACKEND_BODY: usize = 1024 * 1024;

/// A bad `RPC_ROUTES` value; the message names the variable, its only source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RPC_ROUTES: {0}")]
pub struct RoutesError(pub String);

fn invalid(_var: &str, message: impl Into<String>) -> RoutesError {
    RoutesError(message.into())
}

/// Method prefix -> backend URL.
#[derive(Debug, Clone, Default)]
pub struct Routes(HashMap<String, String>);

impl Routes {
    /// Parses `RPC_ROUTES`: `prefix=http[s]://host:port/path[,prefix=...]`.
    pub fn parse(raw: &str) -> Result<Self, RoutesError> {
        const VAR: &str = "RPC_ROUTES";
        let mut routes = HashMap::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (prefix, url) = entry
                .split_once('=')
                .map(|(p, u)| (p.trim(), u.trim()))
                .ok_or_else(|| invalid(VAR, format!("{entry:?} is not prefix=url")))?;
            if prefix.is_empty() || prefix.contains(['.', ' ', ':']) {
                return Err(invalid(
                    VAR,
                    format!("bad method prefix {prefix:?} in {entry:?}"),
                ));
            }
            crate::tls::check_http_url(url).map_err(|e| invalid(VAR, format!("{prefix}: {e}")))?;
            if routes.insert(prefix.to_owned(), url.to_owned()).is_some() {
                return Err(invalid(VAR, format!("prefix {prefix:?} is listed twice")));
            }
        }
        Ok(Self(routes))
    }

    /// The backend for a method: the part before the first `.` names it.
    pub fn backend_for(&self, method: &str) -> Option<&str> {
        let prefix = method.split_once('.').map_or(method, |(p, _)| p);
        self.0.get(prefix).map(String::as_str)
    }
}

/// The JSON a backend receives.
#[derive(Serialize)]
pub struct BackendRequest<'a> {
    /// The full method name, prefix included.
    pub method: &'a str,
    pub user: &'a str,
    /// The client's rpc data (raw JSON), or `null`.
    pub data: &'a RawValue,
    /// The connection's meta exactly as Centrifugo sent it.
    pub context: &'a RawValue,
}

/// What came back from a backend, before mapping.
#[derive(Debug)]
pub enum BackendAnswer {
    Status {
        status: u16,
        /// The status's reason phrase, for refusals without a message of their own.
        reason: &'static str,
        body: Vec<u8>,
    },
    /// Timeout, connection refused, reset, oversized body.
    Failed,
}

/// The HTTP client for backends: one pooled client, a whole-call deadline.
#[derive(Clone)]
pub struct RpcClient {
    routes: std::sync::Arc<Routes>,
    http: reqwest::Client,
}

impl RpcClient {
    pub fn new(
        routes: Routes,
        deadline: Duration,
        tls: &crate::tls::OutgoingTls,
    ) -> Result<Self, String> {
        let http = crate::tls::http_client(deadline, tls)?;
        Ok(Self {
            routes: std::sync::Arc::new(routes),
            http,
        })
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// One POST to the backend; never retried (the call may have had effects).
    pub async fn call(&self, url: &str, request: &BackendRequest<'_>) -> BackendAnswer {
        let Ok(body) = serde_json::to_vec(request) else {
            return BackendAnswer::Failed;
        };
        let send = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send();
        let mut response = match send.await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, timeout = e.is_timeout(), "rpc backend call failed");
                return BackendAnswer::Failed;
            }
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BACKEND_BODY => {
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    tracing::warn!(status, "rpc backend answer too large");
                    return BackendAnswer::Failed;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, timeout = e.is_timeout(), "rpc backend answer unreadable");
                    return BackendAnswer::Failed;
                }
            }
        }
        BackendAnswer::Status {
            status,
            reason: reason_phrase(status),
            body,
        }
    }
}

/// The standard reason phrase of an HTTP status (`Forbidden` for 403).
pub fn reason_phrase(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_route_by_prefix() {
        let routes =
            Routes::parse("family=http://family:8080/rpc, diary=http://diary/rpc").expect("valid");
        assert_eq!(
            routes.backend_for("family.get_members"),
            Some("http://family:8080/rpc")
        );
        assert_eq!(routes.backend_for("diary"), Some("http://diary/rpc"));
        assert_eq!(routes.backend_for("familyx.get"), None);
        assert_eq!(routes.backend_for("chat.send"), None);
        // https backends are supported (issue 9 changed this contract).
        let tls = Routes::parse("a=https://a.internal/rpc").expect("https is valid");
        assert_eq!(tls.backend_for("a.b"), Some("https://a.internal/rpc"));
        assert!(Routes::parse("")
            .expect("empty ok")
            .backend_for("a.b")
            .is_none());
    }

    #[test]
    fn bad_routes_name_the_variable() {
        for bad in [
            "family",
            "=http://x/",
            "family=ftp://x/",
            "a=https://",
            "a=family:8080/rpc",
            "a=http://x/,a=http://y/",
            "a.b=http://x/",
        ] {
            let err = Routes::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("RPC_ROUTES:"), "{bad}: {err}");
        }
    }
}
