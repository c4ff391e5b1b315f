//! The Centrifugo configuration that goes with a running demo: the shipped
//! `deploy/centrifugo/config.json` (HTTP proxies) or `config-grpc.json` (gRPC proxies), with
//! only what a one-machine try-out needs changed: the proxy endpoints point at the demo's
//! listeners, the engine is Centrifugo's in-memory one (no Redis), and browsers on localhost
//! may connect. The secret stays `${CENTRIFUGO_VAR_PROXY_SECRET}`, which Centrifugo expands
//! from its environment, so it is never written to a file.

use std::net::SocketAddr;

use serde_json::{json, Value};

const SHIPPED_HTTP: &str = include_str!("../../deploy/centrifugo/config.json");
const SHIPPED_GRPC: &str = include_str!("../../deploy/centrifugo/config-grpc.json");
/// The service's address in the shipped files (the Kubernetes Service name and ports).
const SHIPPED_HTTP_BASE: &str = "http://realtime-service:9730";
const SHIPPED_GRPC_BASE: &str = "grpc://realtime-service:9731";

/// Which shipped file, and where the demo listens.
#[derive(Debug, Clone, Copy)]
pub enum Proxies {
    Http(SocketAddr),
    Grpc(SocketAddr),
}

/// The configuration as pretty JSON.
pub fn config(proxies: Proxies) -> Result<String, serde_json::Error> {
    let (shipped, from, to) = match proxies {
        Proxies::Http(addr) => (SHIPPED_HTTP, SHIPPED_HTTP_BASE, format!("http://{addr}")),
        Proxies::Grpc(addr) => (SHIPPED_GRPC, SHIPPED_GRPC_BASE, format!("grpc://{addr}")),
    };
    let mut config: Value = serde_json::from_str(shipped)?;
    point_endpoints(&mut config, from, &to);
    config["engine"] = json!({ "type": "memory" });
    config["client"]["allowed_origins"] = json!(["http://localhost:*", "http://127.0.0.1:*"]);
    serde_json::to_string_pretty(&config)
}

/// Every `endpoint` string under `value` that starts with `from` starts with `to` instead.
fn point_endpoints(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(s) if key == "endpoint" => {
                        if let Some(rest) = s.strip_prefix(from) {
                            *s = format!("{to}{rest}");
                        }
                    }
                    _ => point_endpoints(child, from, to),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| point_endpoints(item, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(config: &Value) -> Vec<String> {
        let mut found = Vec::new();
        fn walk(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        match child.as_str() {
                            Some(s) if key == "endpoint" => found.push(s.to_owned()),
                            _ => walk(child, found),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
                _ => {}
            }
        }
        walk(config, &mut found);
        found
    }

    #[test]
    fn every_http_endpoint_points_at_the_demo() {
        let addr: SocketAddr = "127.0.0.1:9730".parse().expect("addr");
        let config: Value =
            serde_json::from_str(&config(Proxies::Http(addr)).expect("renders")).expect("json");
        let found = endpoints(&config);
        // connect, refresh and the four named proxies.
        assert_eq!(found.len(), 6, "{found:?}");
        for endpoint in &found {
            assert!(
                endpoint.starts_with("http://127.0.0.1:9730/centrifugo/"),
                "{endpoint}"
            );
        }
        assert_eq!(config["engine"]["type"], "memory");
    }

    #[test]
    fn every_grpc_endpoint_points_at_the_demo_and_the_secret_stays_a_variable() {
        let addr: SocketAddr = "127.0.0.1:9731".parse().expect("addr");
        let rendered = config(Proxies::Grpc(addr)).expect("renders");
        let config: Value = serde_json::from_str(&rendered).expect("json");
        let found = endpoints(&config);
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(
            found.iter().all(|e| e == "grpc://127.0.0.1:9731"),
            "{found:?}"
        );
        assert!(rendered.contains("${CENTRIFUGO_VAR_PROXY_SECRET}"));
    }
}
