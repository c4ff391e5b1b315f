#!/usr/bin/env python3
"""Checks behind .ci/check-deploy, one subcommand per check.

Each subcommand prints what it looked at and exits 0 (pass) or 1 (fail); exit 3 means the
whole check was skipped (it says why). Lines starting with "SKIP:" are counted as skipped
items by .ci/check-deploy. Run from the repository root. Needs PyYAML (a dependency of
kubernetes-validate) and, for `k8s-schema`, kubernetes-validate.

The Kubernetes checks read rendered overlays (`kubectl kustomize deploy/kubernetes/overlays/X`
written to a file), never the base files alone: what is checked is what would be applied.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Iterator

import yaml

K8S_DIR = "deploy/kubernetes"
BASE_DIR = f"{K8S_DIR}/base"
ALERTS = "deploy/prometheus/alerts.yaml"
DASHBOARD = "deploy/grafana/realtime-service.json"
CENTRIFUGO_HTTP = "deploy/centrifugo/config.json"
CENTRIFUGO_GRPC = "deploy/centrifugo/config-grpc.json"
RUNBOOK = "deploy/RUNBOOK.md"
DOCKERFILE = "Dockerfile"
POLICY = "config/channel-policy.toml"
CONFIG_DOC = "docs/configuration.md"
ENV_EXAMPLE = ".env.example"

APP = "realtime-service"
SECRET_HEADER = "X-Centrifugo-Proxy-Secret"
SECRET_METADATA = "x-centrifugo-proxy-secret"
# Centrifugo v6.3+ expands ${CENTRIFUGO_VAR_...} in map-valued options (http.static_headers,
# grpc.static_metadata) and refuses to start when the variable is unset.
CENTRIFUGO_VAR = re.compile(r"^\$\{CENTRIFUGO_VAR_[A-Z0-9_]+\}$")
PORTS = {"http": 9730, "grpc": 9731, "metrics": 9732}
PORT_SETTINGS = {"http": "LISTEN_PORT", "grpc": "GRPC_PROXY_LISTEN_PORT", "metrics": "METRICS_LISTEN_PORT"}
# Kinds with no schema in kubernetes-validate (CRDs).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
             ("monitoring.coreos.com/v1", "PodMonitor")}
# Secret values: only ever from a Secret (secretKeyRef or a mounted file), never a ConfigMap.
SECRET_ENV = {"CENTRIFUGO_PROXY_SECRET", "CENTRIFUGO_PROXY_SECRET_PREVIOUS", "REDIS_URL"}
# Read by libraries, not by the service's settings (docs/configuration.md says so).
RUNTIME_ENV = {"TOKIO_WORKER_THREADS"}
# Seconds reserved for the span flush in the grace-period sum (deployment.yaml comment).
SPAN_FLUSH_BUDGET_S = 5.0
# The memory arithmetic of docs/operations.md#sizing, in MiB.
RSS_IDLE_MIB = 18  # release binary with mimalloc, measured idle
POOL_1M_TICKETS_MIB = 40  # the loader at peak over idle (measured 36 MiB for 1M tickets)
CONN_BUFFER_KIB = 16
GRPC_IDLE_CONN_KIB = 43  # an idle gRPC connection (measured: 2000 preface-only connections)

PROXY_TYPES = ["connect", "refresh", "subscribe", "publish", "sub_refresh", "rpc"]
GRPC_METHODS = {"connect": "Connect", "refresh": "Refresh", "subscribe": "Subscribe", "publish": "Publish",
                "sub_refresh": "SubRefresh", "rpc": "RPC"}
GRPC_SERVICE = "centrifugal.centrifugo.proxy.CentrifugoProxy"
NAMESPACES = ["family", "chat", "diary", "flowcoach", "notifications", "admin", "broadcast"]
PUBLISH_NAMESPACES = {"family", "chat", "diary", "admin"}
SUB_REFRESH_NAMESPACES = {"chat", "diary", "flowcoach"}

# The metrics contract: name -> (type, {label: values that must all be present from startup}).
METRICS_CONTRACT: dict[str, tuple[str, dict[str, list[str]]]] = {
    "realtime_proxy_requests_total": ("counter", {"proxy": PROXY_TYPES}),
    "realtime_proxy_request_duration_seconds": ("histogram", {"proxy": PROXY_TYPES}),
    "realtime_centrifugo_connect_total": ("counter", {"outcome": [
        "accepted", "accepted_degraded", "disconnected", "invalid_ticket", "identity_error",
        "unavailable", "fallback_pool_consumed", "fallback_pool_miss", "bad_request",
        "internal_error"]}),
    "realtime_identity_validate_duration_seconds": ("histogram", {"source": ["request", "probe"]}),
    "realtime_identity_outage": ("gauge", {}),
    "realtime_identity_consecutive_failures": ("gauge", {}),
    "realtime_fallback_pool_size": ("gauge", {}),
    "realtime_fallback_pool_low_watermark": ("gauge", {}),
    "realtime_fallback_pool_status": ("gauge", {"status": [
        "disabled", "loaded", "missing", "unreadable", "empty"]}),
    "realtime_proxy_signature_rejections_total": ("counter", {"reason": ["missing", "malformed", "mismatch"]}),
    "realtime_proxy_decisions_total": ("counter", {"proxy": ["refresh", "subscribe", "publish", "sub_refresh", "rpc"]}),
    "realtime_build_info": ("gauge", {"version": [], "commit": []}),
    # The standard process metrics of Prometheus client libraries (read from /proc).
    "process_cpu_seconds_total": ("counter", {}),
    "process_resident_memory_bytes": ("gauge", {}),
    "process_virtual_memory_bytes": ("gauge", {}),
    "process_open_fds": ("gauge", {}),
    "process_max_fds": ("gauge", {}),
    "process_start_time_seconds": ("gauge", {}),
    "process_threads": ("gauge", {}),
}
# Families outside the service's own prefix: the conventional process_* ones only.
METRIC_PREFIXES = ("realtime_", "process_")


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.items.append(message)
            print(f"  problem: {message}")
        return ok

    def exit(self, summary: str) -> None:
        if self.items:
            print(f"{len(self.items)} problem(s)")
            sys.exit(1)
        print(summary)
        sys.exit(0)


# --------------------------------------------------------------------------- helpers


def load_docs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


class Setting:
    def __init__(self, name: str, default: str | None) -> None:
        self.name, self.default = name, default


def settings_reference() -> dict[str, Setting]:
    """Every variable of docs/configuration.md: a table row whose first cell is `NAME`.

    The default cell is a backticked value, "empty" (""), or anything else (no default).
    """
    out: dict[str, Setting] = {}
    row = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|(.*)\|\s*$")
    with open(CONFIG_DOC, encoding="utf-8") as f:
        for line in f:
            m = row.match(line)
            if not m:
                continue
            cell = m.group(2).strip()
            dm = re.fullmatch(r"`([^`]*)`", cell)
            default = dm.group(1) if dm else ("" if cell == "empty" else None)
            out[m.group(1)] = Setting(m.group(1), default)
    if not out:
        raise SystemExit(f"no variable rows found in {CONFIG_DOC}")
    return out


class Rendered:
    """One rendered overlay: the output of `kubectl kustomize deploy/kubernetes/overlays/<name>`."""

    def __init__(self, spec: str) -> None:
        self.name, _, self.path = spec.partition("=")
        if not self.path:
            raise SystemExit(f"--rendered wants NAME=FILE, got {spec!r}")
        self.docs = load_docs(self.path)

    def find(self, kind: str, name: str | None = None, prefix: bool = False) -> dict[str, Any]:
        for doc in self.docs:
            n = doc.get("metadata", {}).get("name", "")
            if doc.get("kind") == kind and (name is None or n == name or (prefix and n.startswith(name + "-"))):
                return doc
        raise SystemExit(f"{self.name}: no {kind} {name or ''} in {self.path}")

    def deployment(self) -> dict[str, Any]:
        return self.find("Deployment", APP)

    def container(self) -> dict[str, Any]:
        (c,) = self.deployment()["spec"]["template"]["spec"]["containers"]
        return c

    def config_map(self) -> dict[str, Any]:
        return self.find("ConfigMap", f"{APP}-config", prefix=True)

    def env(self) -> dict[str, str]:
        return dict(self.config_map().get("data") or {})


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def go_duration_seconds(text: str) -> float:
    """Parse a Go duration string such as "1s", "1500ms", "1m30s"."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def effective(env: dict[str, str], name: str, ref: dict[str, Setting]) -> float:
    value = env.get(name) or (ref[name].default if name in ref else None)
    if value in (None, ""):
        raise SystemExit(f"{name}: neither set nor given a default in {CONFIG_DOC}")
    return float(value)


def mebibytes(quantity: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)?", str(quantity))
    if not m:
        raise ValueError(f"memory quantity {quantity!r}")
    return float(m.group(1)) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, None: 1 / 2**20}[m.group(2)]


def centrifugo_proxies(cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, proxy object) for every proxy in a Centrifugo v6 config."""
    out = []
    for kind in ("connect", "refresh"):
        p = cfg.get("client", {}).get("proxy", {}).get(kind)
        if p:
            out.append((f"client.proxy.{kind}", p))
    for kind, p in (cfg.get("channel", {}).get("proxy") or {}).items():
        out.append((f"channel.proxy.{kind}", p))
    if cfg.get("rpc", {}).get("proxy"):
        out.append(("rpc.proxy", cfg["rpc"]["proxy"]))
    for p in cfg.get("proxies") or []:
        out.append((f"proxies[{p.get('name')}]", p))
    return out


def proxy_types(cfg: dict[str, Any]) -> dict[int, str]:
    """id(proxy object) -> proxy type. HTTP endpoints name it in the path; a gRPC endpoint
    serves every type, so it comes from where the proxy is used."""
    out: dict[int, str] = {}
    named = {p.get("name"): p for p in cfg.get("proxies") or []}
    for kind in ("connect", "refresh"):
        p = cfg.get("client", {}).get("proxy", {}).get(kind)
        if p:
            out[id(p)] = kind
    for n in cfg.get("channel", {}).get("namespaces", []):
        for kind in ("subscribe", "publish", "sub_refresh"):
            if n.get(f"{kind}_proxy_enabled") and n.get(f"{kind}_proxy_name") in named:
                out.setdefault(id(named[n[f"{kind}_proxy_name"]]), kind)
    rpc = cfg.get("rpc", {}).get("without_namespace", {})
    if rpc.get("proxy_enabled") and rpc.get("proxy_name") in named:
        out.setdefault(id(named[rpc["proxy_name"]]), "rpc")
    for p in named.values():
        url = urllib.request.urlparse(p["endpoint"])
        m = re.fullmatch(r"/centrifugo/([a-z_]+)", url.path)
        if url.scheme in ("http", "https"):
            out[id(p)] = m.group(1) if m else "?"
    return out


def github_anchor(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    with open(RUNBOOK, encoding="utf-8") as f:
        return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", f.read(), re.M)}


# --------------------------------------------------------------------------- static checks


def cmd_k8s_schema(args: argparse.Namespace) -> None:
    import kubernetes_validate  # noqa: PLC0415 (installed by .ci/check-deploy)
    from kubernetes_validate import utils as kv_utils  # noqa: PLC0415

    fails = Failures()
    validated = 0
    for spec in args.rendered:
        r = Rendered(spec)
        for doc in r.docs:
            kind, api = doc.get("kind"), doc.get("apiVersion")
            ident = f"{r.name}: {kind}/{doc.get('metadata', {}).get('name')}"
            if (api, kind) in CRD_KINDS:
                print(f"SKIP: {ident}: CRD {api}, kubernetes-validate has no schema for it offline "
                      "(structure checked by `manifests`; rules by promtool)")
                continue
            for version in args.versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    validated += 1
                except kv_utils.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    fails.check(False, f"{ident} (k8s {version}) at {where or '<root>'}: {e.message}")
                except kv_utils.SchemaNotFoundError as e:
                    fails.check(False, f"{ident}: {e.message}")
            print(f"ok   {ident} (strict, k8s {', '.join(args.versions)})")
    fails.exit(f"{validated} validations passed")


def check_overlay(r: Rendered, ref: dict[str, Setting], fails: Failures) -> None:
    """Cross-references inside one rendered overlay, and the settings they must agree on."""
    p = f"{r.name}:"
    dep = r.deployment()
    svc = r.find("Service", APP)
    pdb = r.find("PodDisruptionBudget", APP)
    smon = r.find("ServiceMonitor", APP)
    rule = r.find("PrometheusRule", APP)
    cm = r.config_map()
    env = r.env()
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = r.container()

    # The ConfigMap is generated (name-hash suffix), so a change rolls the pods.
    cm_name = cm["metadata"]["name"]
    fails.check(re.fullmatch(rf"{APP}-config-[a-z0-9]{{10}}", cm_name) is not None,
                f"{p} ConfigMap {cm_name} carries no content hash (not from configMapGenerator)")
    refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom", [])]
    fails.check(refs == [cm_name], f"{p} envFrom {refs} does not load the generated ConfigMap {cm_name}")

    # Image: set by the overlay's `images:` (a registry and a tag), never the base's bare name.
    image = container["image"]
    fails.check("/" in image.split(":")[0] and ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image,
                f"{p} image {image!r} has no registry and tag (overlay `images:`)")

    # Selectors.
    fails.check(selector_matches(dep["spec"]["selector"], pod_labels), f"{p} Deployment selector misses its pods")
    fails.check(selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels), f"{p} Service selector misses the pods")
    fails.check(selector_matches(pdb["spec"]["selector"], pod_labels), f"{p} PDB selector misses the pods")
    fails.check(selector_matches(smon["spec"]["selector"], svc["metadata"]["labels"]),
                f"{p} ServiceMonitor selector misses the Service")
    for np in r.docs:
        if np.get("kind") == "NetworkPolicy":
            fails.check(selector_matches(np["spec"]["podSelector"], pod_labels),
                        f"{p} NetworkPolicy {np['metadata']['name']} does not select the pods")
    spread = {c["topologyKey"]: c for c in spec.get("topologySpreadConstraints", [])}
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        c = spread.get(key)
        fails.check(c is not None and selector_matches(c["labelSelector"], pod_labels),
                    f"{p} no topology spread over {key} selecting the pods")

    # Ports: ConfigMap <-> container <-> Service <-> ServiceMonitor <-> NetworkPolicy.
    cports = {q["name"]: q["containerPort"] for q in container["ports"]}
    sports = {q["name"]: q for q in svc["spec"]["ports"]}
    for name, port in PORTS.items():
        fails.check(cports.get(name) == port, f"{p} container port {name} is {cports.get(name)}, want {port}")
        fails.check(env.get(PORT_SETTINGS[name]) == str(port), f"{p} {PORT_SETTINGS[name]} is not {port}")
        fails.check(sports.get(name, {}).get("port") == port and sports[name].get("targetPort") == name,
                    f"{p} Service port {name} is not {port} -> {name}")
    fails.check(sports.get("grpc", {}).get("appProtocol") == "grpc", f"{p} Service grpc port is not appProtocol grpc")
    for ep in smon["spec"]["endpoints"]:
        fails.check(ep.get("port") == "metrics", f"{p} ServiceMonitor scrapes {ep.get('port')!r}, not metrics")
        fails.check(ep.get("path", "/metrics") == "/metrics", f"{p} ServiceMonitor path is not /metrics")
    ingress = r.find("NetworkPolicy", f"{APP}-ingress")
    allowed: dict[int, list[Any]] = {}
    for rule_ in ingress["spec"]["ingress"]:
        for port in rule_.get("ports", []):
            allowed.setdefault(port["port"], []).append(rule_["from"])
    fails.check(set(allowed) == set(PORTS.values()), f"{p} ingress ports {sorted(allowed)} != {sorted(PORTS.values())}")
    centrifugo_peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "centrifugo"}}}
    for name in ("http", "grpc"):
        fails.check(allowed.get(PORTS[name]) == [[centrifugo_peer]],
                    f"{p} port {PORTS[name]} ({name}) is open to more than Centrifugo pods")
    prom = allowed.get(PORTS["metrics"], [[{}]])[0][0]
    fails.check("namespaceSelector" in prom and "podSelector" in prom,
                f"{p} port {PORTS['metrics']} must be limited by namespace and pod selector (Prometheus)")

    # Probes (on the metrics listener, away from the proxy port's connection cap) and lifecycle.
    for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        fails.check(get.get("path") == path and get.get("port") == "metrics",
                    f"{p} {probe} is not GET {path} on the metrics port")
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    fails.check("sleep" in pre_stop and "exec" not in pre_stop, f"{p} preStop must be the native sleep action (no shell)")
    pre_stop_s = float(pre_stop.get("sleep", {}).get("seconds", 0))
    drain_s = effective(env, "SHUTDOWN_DRAIN_DELAY_MS", ref) / 1000
    timeout_s = effective(env, "SHUTDOWN_TIMEOUT_MS", ref) / 1000
    need = pre_stop_s + drain_s + timeout_s + SPAN_FLUSH_BUDGET_S
    grace = spec.get("terminationGracePeriodSeconds", 30)
    fails.check(grace > need, f"{p} terminationGracePeriodSeconds {grace} <= {need:g}")
    print(f"{p} grace period {grace} s {'>' if grace > need else '<='} preStop {pre_stop_s:g} + drain {drain_s:g} "
          f"+ shutdown timeout {timeout_s:g} + span flush {SPAN_FLUSH_BUDGET_S:g} = {need:g} s")

    # Memory: the limit must hold every bound filled at once (docs/operations.md#sizing).
    res = container.get("resources", {})
    fails.check(bool(res.get("requests")) and bool(res.get("limits")), f"{p} resources requests/limits missing")
    bodies = effective(env, "PROXY_MAX_INFLIGHT", ref) * effective(env, "PROXY_MAX_BODY_BYTES", ref) / 2**20
    conns = effective(env, "HTTP_MAX_CONNECTIONS", ref) * CONN_BUFFER_KIB / 1024
    if env.get("GRPC_PROXY_LISTEN_PORT"):
        # The gRPC listener's own table, under the same cap, full of idle connections.
        conns += effective(env, "HTTP_MAX_CONNECTIONS", ref) * GRPC_IDLE_CONN_KIB / 1024
    bound = RSS_IDLE_MIB + POOL_1M_TICKETS_MIB + bodies + conns
    limit = mebibytes(res.get("limits", {}).get("memory", "0"))
    fails.check(limit >= bound * 1.25, f"{p} memory limit {limit:g} MiB < 1.25 x bound {bound:g} MiB")
    print(f"{p} memory limit {limit:g} MiB vs bound {RSS_IDLE_MIB} idle + {POOL_1M_TICKETS_MIB} pool (1M) "
          f"+ {bodies:g} bodies + {conns:g} connections = {bound:g} MiB (x1.25 = {bound * 1.25:g})")

    # Security context.
    psc, csc = spec.get("securityContext", {}), container.get("securityContext", {})
    for where, sc in (("pod", psc), ("container", csc)):
        fails.check(sc.get("runAsNonRoot") is True, f"{p} {where} runAsNonRoot is not true")
        fails.check(sc.get("runAsUser") == 65532 and sc.get("runAsGroup") == 65532, f"{p} {where} uid/gid is not 65532")
        fails.check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{p} {where} seccomp is not RuntimeDefault")
    fails.check(psc.get("fsGroup") == 65532, f"{p} pod fsGroup is not 65532")
    fails.check(csc.get("readOnlyRootFilesystem") is True, f"{p} readOnlyRootFilesystem is not true")
    fails.check(csc.get("allowPrivilegeEscalation") is False, f"{p} allowPrivilegeEscalation is not false")
    fails.check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{p} capabilities do not drop ALL")

    # Mounted Secrets: whole directories (no subPath), read-only, 0440 for fsGroup.
    mounts = {m["mountPath"].rstrip("/"): m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}

    def volume_of(path: str, as_dir: bool) -> dict[str, Any] | None:
        parent = path.rstrip("/") if as_dir else os.path.dirname(path)
        m = mounts.get(parent)
        if not fails.check(m is not None, f"{p} {path} is not in a mounted volume"):
            return None
        fails.check("subPath" not in m and "subPathExpr" not in m and m.get("readOnly") is True,
                    f"{p} the mount of {parent} uses subPath or is not readOnly")
        return volumes[m["name"]]

    for name in ("CENTRIFUGO_PROXY_SECRET_FILE", "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE"):
        if env.get(name):
            vol = volume_of(env[name], as_dir=False)
            if vol is not None:
                sec = vol.get("secret", {})
                fails.check(sec.get("secretName") == f"{APP}-proxy-secret" and sec.get("defaultMode") == 0o440,
                            f"{p} {name} is not in the proxy-secret Secret volume with defaultMode 288")
    tickets = env.get("FALLBACK_TICKETS_PATH", "")
    if fails.check(bool(tickets), f"{p} FALLBACK_TICKETS_PATH is not set"):
        vol = volume_of(tickets, as_dir=True)
        if vol is not None:
            proj = vol.get("projected", {})
            sources = proj.get("sources", [])
            fails.check(bool(sources) and all("secret" in s for s in sources),
                        f"{p} the pool is not a projected volume of Secrets")
            fails.check(proj.get("defaultMode") == 0o440, f"{p} pool defaultMode is not 288 (0440)")
            paths = [i["path"] for s in sources for i in s["secret"].get("items", [])]
            fails.check(len(paths) == len(set(paths)) and not any(x.startswith(".") for x in paths),
                        f"{p} pool file names {paths} collide or start with '.'")
            fails.check(any(s["secret"].get("optional") is False for s in sources),
                        f"{p} no pool Secret is required (optional: false)")

    # Settings: every name documented; secrets never in the ConfigMap; REDIS_URL from a Secret.
    env_list = {e["name"]: e for e in container.get("env", [])}
    for name in SECRET_ENV:
        fails.check(name not in env, f"{p} {name} is in the ConfigMap (it is a secret)")
    for name in list(env) + list(env_list):
        fails.check(name in ref or name in RUNTIME_ENV, f"{p} {name} is not in {CONFIG_DOC} (typo?)")
    for name, e in env_list.items():
        fails.check("valueFrom" in e, f"{p} env {name} is a literal: settings belong in config.env")
    fails.check(env.get("CENTRIFUGO_PROXY_AUTH") == "static_header", f"{p} CENTRIFUGO_PROXY_AUTH is not static_header")
    if env.get("FALLBACK_LEDGER") == "redis":
        ref_ = env_list.get("REDIS_URL", {}).get("valueFrom", {})
        fails.check("secretKeyRef" in ref_, f"{p} FALLBACK_LEDGER=redis without REDIS_URL from a secretKeyRef")
        egress = r.find("NetworkPolicy", f"{APP}-egress")
        fails.check(any(q.get("port") == 6379 for e in egress["spec"]["egress"] for q in e.get("ports", [])),
                    f"{p} FALLBACK_LEDGER=redis but no egress to Redis (6379)")
    sampler, arg = env.get("OTEL_TRACES_SAMPLER", ""), env.get("OTEL_TRACES_SAMPLER_ARG", "1")
    if r.name == "prod":
        fails.check(sampler in ("traceidratio", "parentbased_traceidratio") and float(arg) < 1,
                    f"{p} samples every root span ({sampler} {arg}): Centrifugo sends no traceparent")
        fails.check(dep["spec"]["replicas"] >= 3, f"{p} fewer than 3 replicas")

    # Alerts: picked up by the same kube-prometheus-stack as the ServiceMonitor; absolute
    # runbook links to existing headings.
    fails.check(smon["metadata"]["labels"].get("release") == rule["metadata"]["labels"].get("release"),
                f"{p} ServiceMonitor and PrometheusRule carry different `release` labels")
    anchors = runbook_anchors()
    bases = set()
    for group in rule["spec"]["groups"]:
        for rr in group["rules"]:
            url = rr.get("annotations", {}).get("runbook_url", "")
            base, _, anchor = url.partition("#")
            bases.add(base)
            fails.check(re.match(r"^https?://[^/]+/", base) is not None and base.endswith("/" + RUNBOOK),
                        f"{p} {rr.get('alert')}: runbook_url {url!r} is not an absolute URL of {RUNBOOK}")
            fails.check(anchor in anchors, f"{p} {rr.get('alert')}: #{anchor} is not a heading of {RUNBOOK}")
    fails.check(len(bases) == 1, f"{p} runbook URLs have {len(bases)} different bases")


def cmd_manifests(args: argparse.Namespace) -> None:
    fails = Failures()
    ref = settings_reference()
    for spec in args.rendered:
        check_overlay(Rendered(spec), ref, fails)
    # The base lists every manifest beside it; overlays only patch.
    kust = load_docs(os.path.join(BASE_DIR, "kustomization.yaml"))[0]
    listed = set(kust.get("resources", []))
    for path in sorted(glob.glob(os.path.join(BASE_DIR, "*.yaml"))):
        base = os.path.basename(path)
        if base != "kustomization.yaml":
            fails.check(base in listed, f"{base} is not listed in {BASE_DIR}/kustomization.yaml")
    fails.check("../../prometheus" in listed, "the base does not include ../../prometheus")
    overlays = sorted(os.path.basename(d) for d in glob.glob(f"{K8S_DIR}/overlays/*"))
    rendered = sorted(Rendered(s).name for s in args.rendered)
    fails.check(overlays == rendered, f"overlays {overlays} but rendered {rendered}: render every overlay")
    fails.exit(f"{len(args.rendered)} rendered overlays agree with themselves and {CONFIG_DOC}")


def cmd_config_docs(_: argparse.Namespace) -> None:
    """docs/configuration.md and .env.example name the same variables."""
    fails = Failures()
    ref = settings_reference()
    with open(ENV_EXAMPLE, encoding="utf-8") as f:
        example = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", f.read(), re.M))
    fails.check(not set(ref) - example, f"in {CONFIG_DOC}, not in {ENV_EXAMPLE}: {sorted(set(ref) - example)}")
    fails.check(not example - set(ref), f"in {ENV_EXAMPLE}, not in {CONFIG_DOC}: {sorted(example - set(ref))}")
    print(f"{len(ref)} variables")
    fails.exit(f"{CONFIG_DOC} and {ENV_EXAMPLE} agree")


def cmd_extract_rules(args: argparse.Namespace) -> None:
    """The PrometheusRule's .spec as a plain rules file: from a rendered overlay (what is
    applied) or from alerts.yaml itself (what the promtool tests were written against)."""
    docs = Rendered(args.rendered).docs if args.rendered else load_docs(ALERTS)
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise SystemExit(f"want exactly one PrometheusRule, found {len(rules)}")
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
    n = sum(len(g["rules"]) for g in rules[0]["spec"]["groups"])
    print(f"{args.rendered or ALERTS} .spec -> {args.out} ({n} rules)")


def cmd_runbook(_: argparse.Namespace) -> None:
    """Every alert has summary, description, a runbook_url whose anchor is a RUNBOOK heading,
    and a severity; every alert is tested in alerts_test.yaml."""
    fails = Failures()
    anchors = runbook_anchors()
    with open("deploy/prometheus/alerts_test.yaml", encoding="utf-8") as f:
        tests = yaml.safe_load(f)
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
    fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    silent = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
              if not t.get("exp_alerts")}
    rule = load_docs(ALERTS)[0]
    count = 0
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            name = r.get("alert")
            if not name:
                continue
            count += 1
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                fails.check(bool(ann.get(key)), f"{name}: no {key}")
            fails.check(r.get("labels", {}).get("severity") in {"warning", "critical", "info"}, f"{name}: no severity")
            url = ann.get("runbook_url", "")
            path, _, anchor = url.partition("#")
            # kustomize replaces exactly this path with the absolute URL (deploy/prometheus/).
            fails.check(path == RUNBOOK, f"{name}: runbook_url {url!r} is not {RUNBOOK}#<anchor>")
            fails.check(anchor in anchors, f"{name}: anchor #{anchor} is not a heading of {RUNBOOK}")
            fails.check(name in fired, f"{name}: no promtool test where it fires")
            fails.check(name in silent, f"{name}: no promtool test where it stays silent")
    extra = tested - {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    fails.check(not extra, f"tests name unknown alerts: {sorted(extra)}")
    fails.exit(f"{count} alerts: annotations, runbook anchors and fire/no-fire tests present")


def secret_map_ok(fails: Failures, label: str, mapping: dict[str, str], key: str) -> None:
    """The secret goes in as ${CENTRIFUGO_VAR_...}: Centrifugo refuses to start without it,
    where a literal placeholder would start and be refused on every call."""
    fails.check(list(mapping) == [key], f"{label}: must carry exactly {key}, got {sorted(mapping)}")
    value = mapping.get(key, "")
    fails.check(CENTRIFUGO_VAR.match(value) is not None,
                f"{label}: {key} is {value!r}, not ${{CENTRIFUGO_VAR_...}} (Centrifugo v6.3+ expands it)")


def cmd_centrifugo_config(args: argparse.Namespace) -> None:
    fails = Failures()
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    ref = settings_reference()
    identity_s = effective({}, "IDENTITY_VALIDATE_DEADLINE_MS", ref) / 1000
    rpc_s = effective({}, "RPC_DEADLINE_MS", ref) / 1000
    proxies = centrifugo_proxies(cfg)
    types = proxy_types(cfg)
    by_type: dict[str, list[str]] = {}
    named = {p["name"]: p for p in cfg.get("proxies", [])}
    grpc = args.transport == "grpc"
    secret_vars = set()

    for label, p in proxies:
        kind = types.get(id(p), "?")
        by_type.setdefault(kind, []).append(label)
        fails.check(kind in PROXY_TYPES, f"{label}: cannot tell its proxy type ({p['endpoint']})")
        url = urllib.request.urlparse(p["endpoint"])
        if grpc:
            fails.check(p["endpoint"] == f"grpc://{APP}:{PORTS['grpc']}", f"{label}: endpoint is not grpc://{APP}:9731")
            fails.check("http" not in p, f"{label}: a gRPC proxy with http options (status transforms do not apply)")
            md = (p.get("grpc") or {}).get("static_metadata") or {}
            secret_map_ok(fails, f"{label} grpc.static_metadata", md, SECRET_METADATA)
            secret_vars.update(md.values())
            forwarded = [h.lower() for h in (p.get("http_headers") or []) + (p.get("grpc_metadata") or [])]
        else:
            fails.check(url.scheme == "http" and url.hostname == APP and url.port == PORTS["http"]
                        and url.path == f"/centrifugo/{kind}",
                        f"{label}: endpoint is not http://{APP}:9730/centrifugo/{kind}")
            headers = (p.get("http") or {}).get("static_headers") or {}
            secret_map_ok(fails, f"{label} http.static_headers", headers, SECRET_HEADER)
            secret_vars.update(headers.values())
            forwarded = [h.lower() for h in (p.get("http_headers") or []) + (p.get("grpc_metadata") or [])]
        forwarded += [h.lower() for h in p.get("emulated_headers") or []]
        fails.check(SECRET_HEADER.lower() not in forwarded,
                    f"{label}: the secret is forwarded from clients (http_headers/grpc_metadata/emulated_headers)")
        timeout = go_duration_seconds(p.get("timeout", "1s"))
        floor = {"connect": identity_s, "rpc": rpc_s}.get(kind, 0.0)
        fails.check("timeout" in p, f"{label}: timeout not set explicitly")
        fails.check(timeout > floor, f"{label}: timeout {timeout}s is not above the service deadline {floor}s")
        print(f"{label:28} {kind:12} timeout {timeout:g}s > {floor:g}s")
        if kind != "connect":
            fails.check(p.get("include_connection_meta") is True, f"{label}: include_connection_meta is not true")
        transforms = (p.get("http") or {}).get("status_to_code_transforms") or []
        for t in transforms:
            err, disc = t.get("to_error") or {}, t.get("to_disconnect") or {}
            fails.check(bool(err.get("code")) != bool(disc.get("code")),
                        f"{label}: transform {t.get('status_code')} needs exactly one of to_error/to_disconnect")
            text = err.get("message") or disc.get("reason") or ""
            fails.check(text.isascii() and len(text.encode()) <= 123, f"{label}: transform text too long or not ASCII")
            if disc:
                fails.check(4000 <= disc["code"] <= 4999, f"{label}: disconnect code {disc['code']} not in 4000-4999")
            if err:
                # Centrifugo's own codes the service's answers mean: 101 unauthorized, 107 bad
                # request, 111 too many requests (the in-flight limit, as the gRPC answer says).
                fails.check(400 <= err["code"] <= 1999 or err["code"] in {101, 107, 111},
                            f"{label}: error code {err['code']} outside the app range")
        got = {t["status_code"]: t for t in transforms}
        if grpc:
            pass  # no HTTP status: the decision travels in the response message
        elif kind == "connect":
            want = {
                401: {"to_disconnect": {"code": 4401, "reason": "invalid ticket"}},
                503: {"to_error": {"code": 503, "message": "ticket validation temporarily unavailable",
                                   "temporary": True}},
                400: {"to_error": {"code": 107, "message": "bad request"}},
                413: {"to_error": {"code": 107, "message": "bad request"}},
                429: {"to_error": {"code": 111, "message": "too many requests", "temporary": True}},
            }
            fails.check(set(got) == set(want), f"{label}: transforms for {sorted(got)}, want {sorted(want)}")
            for status, w in want.items():
                for key, sub in w.items():
                    have = (got.get(status) or {}).get(key) or {}
                    fails.check(all(have.get(k) == v for k, v in sub.items()),
                                f"{label}: {status} must map {key} {sub}, got {got.get(status)}")
        elif kind in ("refresh", "sub_refresh"):
            # A matched transform yields a response without result, which refresh handlers treat
            # as "expired"; without one a failure gets a 60 s extension instead.
            fails.check(not transforms, f"{label}: refresh-type proxies must have no status transforms")
        else:
            fails.check(set(got) <= {401, 400, 413, 429}, f"{label}: unexpected transforms {sorted(got)}")
            fails.check(got.get(429, {}).get("to_error", {}).get("temporary") is True,
                        f"{label}: 429 (PROXY_MAX_INFLIGHT full) must map to a temporary error")
            for status, t in got.items():
                fails.check("to_error" in t and "to_disconnect" not in t,
                            f"{label}: {status} must map to an error, not a disconnect")
    fails.check(len(secret_vars) == 1, f"proxies use {len(secret_vars)} different secret variables: {sorted(secret_vars)}")
    for kind in PROXY_TYPES:
        fails.check(kind in by_type, f"no proxy for {kind}")
    for kind in ("connect", "refresh"):
        fails.check(cfg.get("client", {}).get("proxy", {}).get(kind, {}).get("enabled") is True, f"{kind} not enabled")
    for name in named:
        fails.check(re.fullmatch(r"[-a-zA-Z0-9_.]{2,}", name) is not None and name != "default",
                    f"named proxy {name!r} is not a valid name")

    # A production Centrifugo: several nodes on one Redis, Prometheus and health endpoints on,
    # and the API key from the environment (CENTRIFUGO_HTTP_API_KEY), never in the file.
    engine = cfg.get("engine", {})
    fails.check(engine.get("type") == "redis" and bool(engine.get("redis", {}).get("address")),
                "engine is not redis with an address (one Centrifugo node only)")
    fails.check("password" not in engine.get("redis", {}), "a Redis password in the file (use CENTRIFUGO_ENGINE_REDIS_PASSWORD)")
    fails.check(cfg.get("prometheus", {}).get("enabled") is True, "prometheus.enabled is not true")
    fails.check(cfg.get("health", {}).get("enabled") is True, "health.enabled is not true")
    fails.check("key" not in cfg.get("http_api", {}), "http_api.key is in the file (use CENTRIFUGO_HTTP_API_KEY)")
    fails.check(not cfg.get("http_api", {}).get("insecure"), "http_api.insecure is on")
    fails.check(bool(cfg.get("http_server", {}).get("internal_port")),
                "no http_server.internal_port: API, metrics and health would share the client port")

    # Namespaces from the default channel policy.
    ns = {n["name"]: n for n in cfg.get("channel", {}).get("namespaces", [])}
    fails.check(sorted(ns) == sorted(NAMESPACES), f"namespaces {sorted(ns)} != {sorted(NAMESPACES)}")
    for name, n in ns.items():
        def uses(flag: str, name_key: str, kind: str, n: dict[str, Any] = n) -> bool:
            if not n.get(flag):
                return False
            target = named.get(n.get(name_key, "default"))
            fails.check(target is not None and types.get(id(target)) == kind,
                        f"namespace {name}: {name_key} does not name a {kind} proxy")
            return True
        fails.check(uses("subscribe_proxy_enabled", "subscribe_proxy_name", "subscribe"),
                    f"namespace {name}: subscribe proxy off")
        pub = uses("publish_proxy_enabled", "publish_proxy_name", "publish")
        fails.check(pub == (name in PUBLISH_NAMESPACES), f"namespace {name}: publish proxy {'on' if pub else 'off'}")
        if name not in PUBLISH_NAMESPACES:
            fails.check(not n.get("allow_publish_for_client") and not n.get("allow_publish_for_subscriber")
                        and not n.get("allow_publish_for_anonymous"),
                        f"namespace {name}: client publish allowed without the publish proxy")
        sr = uses("sub_refresh_proxy_enabled", "sub_refresh_proxy_name", "sub_refresh")
        fails.check(sr == (name in SUB_REFRESH_NAMESPACES), f"namespace {name}: sub_refresh proxy {'on' if sr else 'off'}")
    # The same, derived from the service's built-in channel policy (compiled into the binary).
    if os.path.exists(POLICY):
        import tomllib  # noqa: PLC0415 (Python >= 3.11)

        with open(POLICY, "rb") as f:
            policy = tomllib.load(f).get("namespaces", {})
        pol_pub = {n for n, r in policy.items() if r.get("publish")}
        pol_sr = {n for n, r in policy.items() if r.get("subscription_ttl_s")}
        cfg_pub = {n for n, r in ns.items() if r.get("publish_proxy_enabled")}
        cfg_sr = {n for n, r in ns.items() if r.get("sub_refresh_proxy_enabled")}
        fails.check(set(policy) == set(ns), f"{POLICY} namespaces {sorted(policy)} != Centrifugo's {sorted(ns)}")
        fails.check(pol_pub == cfg_pub, f"publish: policy allows {sorted(pol_pub)}, Centrifugo proxies {sorted(cfg_pub)}")
        fails.check(pol_sr == cfg_sr, f"subscription_ttl_s in {sorted(pol_sr)}, sub_refresh proxy on {sorted(cfg_sr)}")
        print(f"matches {POLICY}: {len(policy)} namespaces, publish {sorted(pol_pub)}, sub_refresh {sorted(pol_sr)}")
    else:
        print(f"SKIP: {POLICY} not found: namespaces checked against the contract list only")
    rpc = cfg.get("rpc", {}).get("without_namespace", {})
    fails.check(rpc.get("proxy_enabled") is True, "rpc.without_namespace.proxy_enabled is not true")
    target = named.get(rpc.get("proxy_name", "default"))
    fails.check(target is not None and types.get(id(target)) == "rpc", "rpc.without_namespace.proxy_name is not an rpc proxy")
    fails.check(cfg.get("client", {}).get("allowed_origins") not in (None, [], ["*"]), "allowed_origins is open")
    fails.exit(f"{args.config}: a {args.transport} Centrifugo config that matches the service's contract")


def cmd_centrifugo_pair(_: argparse.Namespace) -> None:
    """The gRPC config is the HTTP one with only the transport changed."""
    fails = Failures()
    with open(CENTRIFUGO_HTTP, encoding="utf-8") as f:
        http_cfg = json.load(f)
    with open(CENTRIFUGO_GRPC, encoding="utf-8") as f:
        grpc_cfg = json.load(f)

    def strip(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg = json.loads(json.dumps(cfg))
        for _, p in centrifugo_proxies(cfg):
            for key in ("endpoint", "http", "grpc"):
                p.pop(key, None)
        return cfg
    a, b = strip(http_cfg), strip(grpc_cfg)
    for key in sorted(set(a) | set(b)):
        fails.check(a.get(key) == b.get(key), f"`{key}` differs between {CENTRIFUGO_HTTP} and {CENTRIFUGO_GRPC}")
    fails.exit("the two Centrifugo configs differ in endpoints and transport options only")


def cmd_dockerfile(_: argparse.Namespace) -> None:
    fails = Failures()
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = f.read()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    fails.check(len(froms) == 2, "not a two-stage build")
    fails.check(bool(froms) and "gcr.io/distroless/cc-debian12:nonroot" in froms[-1], "final stage is not distroless cc nonroot")
    fails.check(any("cargo build --release --locked" in ln for ln in lines), "no `cargo build --release --locked`")
    fails.check("USER 65532:65532" in lines, "USER is not numeric 65532:65532")
    fails.check(any(re.fullmatch(r"EXPOSE 9730 9731 9732", ln) for ln in lines), "EXPOSE 9730 9731 9732 missing")
    binary = "/usr/local/bin/realtime-service"
    fails.check(any(ln.startswith("HEALTHCHECK") and f'CMD ["{binary}", "healthcheck"]' in ln for ln in lines),
                "HEALTHCHECK is not the exec form of `realtime-service healthcheck`")
    fails.check(f'ENTRYPOINT ["{binary}"]' in lines and 'CMD ["serve"]' in lines, "ENTRYPOINT/CMD are not binary + serve")
    fails.check(any(ln.startswith("COPY --from=builder") and ln.endswith(binary) for ln in lines),
                f"binary not copied to {binary}")
    labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", text))
    for want in ("title", "description", "source", "licenses", "version", "revision", "created"):
        fails.check(f"org.opencontainers.image.{want}" in labels, f"OCI label org.opencontainers.image.{want} missing")
    with open("Cargo.toml", encoding="utf-8") as f:
        cargo = f.read()
    release = re.search(r"^\[profile\.release\]\n((?:(?!\[).*\n)*)", cargo, re.M)
    fails.check(release is not None and re.search(r'^strip\s*=\s*("symbols"|"debuginfo"|true)', release.group(1), re.M)
                is not None, "[profile.release] does not strip debug symbols")
    with open(".dockerignore", encoding="utf-8") as f:
        ignored = {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}
    fails.check({"target/", ".git/"} <= ignored, ".dockerignore does not exclude target/ and .git/")
    print("NOT VERIFIED: no Docker engine here; the image was never built or run (static checks only)")
    fails.exit("Dockerfile has the expected shape")


def cmd_rust_version(_: argparse.Namespace) -> None:
    """Cargo.toml's rust-version is what the locked dependencies need: the highest
    rust-version any of them declares (cargo would refuse an older toolchain anyway, with a
    less helpful message)."""
    fails = Failures()
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-2000:])
        sys.exit(1)
    meta = json.loads(out.stdout)

    def ver(v: str | None) -> tuple[int, ...]:
        return tuple(int(x) for x in (v or "0").split("."))
    root = next(p for p in meta["packages"] if p["name"] == APP)
    deps = [(ver(p.get("rust_version")), p["name"], p["version"]) for p in meta["packages"] if p["name"] != APP]
    need, name, version = max(deps)
    ours = ver(root.get("rust_version"))
    need_s = ".".join(map(str, need))
    print(f"Cargo.toml rust-version {root.get('rust_version')}; highest locked dependency: {name} {version} needs {need_s}")
    fails.check(ours[:2] == need[:2] or ours >= need,
                f"rust-version {root.get('rust_version')} is below {need_s} ({name} {version})")
    if ours[:2] > need[:2]:
        print(f"note: rust-version is above what the dependencies need ({need_s}): the crate's own code must need it")
    with open("README.md", encoding="utf-8") as f:
        fails.check(root.get("rust_version", "") in f.read(), "README.md does not state the toolchain (rust-version)")
    fails.exit("rust-version matches the locked dependencies")


# --------------------------------------------------------------------------- live checks


def parse_scrape(path: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    types: dict[str, str] = {}
    samples = []
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                types[name] = kind.strip()
            elif line.strip() and not line.startswith("#"):
                m = line_re.match(line)
                if m:
                    labels = dict(label_re.findall(m.group(3) or ""))
                    samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every expression in the alerts and the dashboard."""
    out = []
    for group in load_docs(ALERTS)[0]["spec"]["groups"]:
        for r in group["rules"]:
            out.append((f"alert {r.get('alert') or r.get('record')}", r["expr"]))
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {p.get('title')!r}", t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            out.append((f"variable ${var['name']}", q))
    return out


def cmd_metric_refs(args: argparse.Namespace) -> None:
    """Every realtime_* and process_* metric (and every fixed label value) used by alerts and the dashboard
    exists in the live scrape."""
    fails = Failures()
    types, samples = parse_scrape(args.scrape)
    names = {s[0] for s in samples} | set(types)
    series: dict[str, list[dict[str, str]]] = {}
    for name, labels, _ in samples:
        series.setdefault(name, []).append(labels)
    sel_re = re.compile(r"\b((?:realtime|process)_[a-z0-9_]+)\s*(\{([^}]*)\})?")
    matcher_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
    used: set[str] = set()
    for where, expr in expressions():
        for m in sel_re.finditer(expr):
            name = m.group(1)
            used.add(name)
            if not fails.check(name in names, f"{where}: {name} is not in the scrape"):
                continue
            for label, op, value in matcher_re.findall(m.group(3) or ""):
                if op not in ("=", "=~") or "$" in value:
                    continue
                ok = any(
                    (op == "=" and s.get(label, "") == value) or (op == "=~" and re.fullmatch(value, s.get(label, "")))
                    for s in series.get(name, [])
                )
                fails.check(ok, f"{where}: no series {name}{{{label}{op}\"{value}\"}} in the scrape")
    print(f"{len(used)} metric names used by alerts and dashboard: " + ", ".join(sorted(used)))
    fails.exit("all found in the live scrape")


def cmd_metrics_contract(args: argparse.Namespace) -> None:
    """The metric families of the contract, with their types and pre-initialised label values."""
    fails = Failures()
    types, samples = parse_scrape(args.scrape)
    for name, (kind, labels) in METRICS_CONTRACT.items():
        if not fails.check(types.get(name) == kind, f"{name}: TYPE {types.get(name)!r}, want {kind}"):
            continue
        sample_name = f"{name}_count" if kind == "histogram" else name
        rows = [lab for n, lab, _ in samples if n == sample_name]
        fails.check(bool(rows), f"{name}: no samples")
        for label, values in labels.items():
            have = {r.get(label) for r in rows}
            missing = [v for v in values if v not in have]
            fails.check(not missing, f"{name}: no series for {label}={missing}")
            if not values:
                fails.check(have != {None}, f"{name}: no {label} label")
    extra = sorted(n for n in types if n.startswith("realtime_") and n not in METRICS_CONTRACT)
    if extra:
        print("also exported (not in the contract list): " + ", ".join(extra))
    non_prefixed = sorted(n for n in types if not n.startswith(METRIC_PREFIXES))
    fails.check(not non_prefixed, f"metrics without a {' or '.join(METRIC_PREFIXES)} prefix: {non_prefixed}")

    def value(name: str, **labels: str) -> float | None:
        for n, lab, v in samples:
            if n == name and all(lab.get(k) == w for k, w in labels.items()):
                return v
        return None

    # What this run did (see .ci/check-deploy): pool of args.pool tickets, identity down.
    status = [lab.get("status") for n, lab, v in samples if n == "realtime_fallback_pool_status" and v == 1]
    fails.check(status == ["loaded"], f"fallback pool status {status}, want ['loaded']")
    fails.check(value("realtime_fallback_pool_size") == args.pool,
                f"fallback pool size {value('realtime_fallback_pool_size')}, want {args.pool}")
    fails.check(value("realtime_fallback_pool_low_watermark") == args.watermark,
                f"low watermark {value('realtime_fallback_pool_low_watermark')}, want {args.watermark}")
    if args.startup:
        fails.exit(f"{len(METRICS_CONTRACT)} metric families present from startup, with their label sets")
    for status_code in ("503", "401"):
        v = value("realtime_proxy_requests_total", proxy="connect", status=status_code, transport="http")
        fails.check((v or 0) >= 1, f"realtime_proxy_requests_total{{proxy=connect,status={status_code}}} = {v}, want >= 1")
    for reason in ("missing", "mismatch"):
        v = value("realtime_proxy_signature_rejections_total", reason=reason)
        fails.check((v or 0) >= 1, f"realtime_proxy_signature_rejections_total{{reason={reason}}} = {v}, want >= 1")
    fails.check((value("realtime_identity_consecutive_failures") or 0) >= 1, "identity failures not counted")
    with open("Cargo.toml", encoding="utf-8") as f:
        version = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    if version:
        fails.check(value("realtime_build_info", version=version.group(1)) == 1,
                    f"realtime_build_info{{version=\"{version.group(1)}\"}} is not 1")
    print("connect outcomes this run: " + ", ".join(
        f"{lab['outcome']}={v:g}" for n, lab, v in samples if n == "realtime_centrifugo_connect_total" and v))
    fails.exit(f"{len(METRICS_CONTRACT)} metric families present with their label sets")


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def cmd_requests(args: argparse.Namespace) -> None:
    """Real calls, as Centrifugo would make them, against the running service."""
    fails = Failures()
    base = f"http://127.0.0.1:{args.port}"
    ct = {"Content-Type": "application/json"}
    auth = {**ct, SECRET_HEADER: args.secret}
    connect = json.dumps({"client": "b8a9c5e6-0d0e-4f54-9a7e-0c4b7e0ad001", "transport": "websocket",
                          "protocol": "json", "encoding": "json", "data": {"token": "ci-ticket-not-in-pool"},
                          "name": "js"}).encode()
    cases = [
        ("connect, ticket, identity down", auth, 503, b'"temporary":true'),
        ("connect without the secret header", ct, 401, None),
        ("connect with a wrong secret", {**ct, SECRET_HEADER: "not-the-secret"}, 401, None),
    ]
    for label, headers, want, needle in cases:
        status, body = http("POST", f"{base}/centrifugo/connect", connect, headers)
        ok = status == want and (needle is None or needle in body)
        fails.check(ok, f"{label}: HTTP {status} {body[:200]!r}, want {want}")
        print(f"{label:40} -> {status} {body[:120].decode(errors='replace')}")
    status, body = http("POST", f"{base}/centrifugo/connect", b"{", auth)
    fails.check(status == 400, f"malformed JSON: HTTP {status}, want 400")
    print(f"{'connect with malformed JSON':40} -> {status} {body[:120].decode(errors='replace')}")
    fails.exit("connect answers as the contract says")


def cmd_endpoints(args: argparse.Namespace) -> None:
    """Every proxy endpoint of the HTTP Centrifugo config is a route the service serves."""
    fails = Failures()
    with open(CENTRIFUGO_HTTP, encoding="utf-8") as f:
        cfg = json.load(f)
    seen = set()
    for label, p in centrifugo_proxies(cfg):
        path = urllib.request.urlparse(p["endpoint"]).path
        if path in seen:
            continue
        seen.add(path)
        status, body = http("POST", f"http://127.0.0.1:{args.port}{path}", b"{}",
                            {"Content-Type": "application/json", SECRET_HEADER: args.secret})
        print(f"POST {path:26} {{}} -> {status} {body[:80].decode(errors='replace')}")
        fails.check(status not in (404, 405), f"{label}: POST {path} -> {status} (not served)")
    fails.exit(f"{len(seen)} endpoints served")


def cmd_grpc_methods(_: argparse.Namespace) -> None:
    """The gRPC methods the gRPC Centrifugo config calls, one full path per line."""
    with open(CENTRIFUGO_GRPC, encoding="utf-8") as f:
        cfg = json.load(f)
    types = proxy_types(cfg)
    methods = sorted({GRPC_METHODS[types[id(p)]] for _, p in centrifugo_proxies(cfg) if id(p) in types})
    for m in methods:
        print(f"/{GRPC_SERVICE}/{m}")


def cmd_check_config(args: argparse.Namespace) -> None:
    """`realtime-service check-config` on a rendered overlay's settings, as its pods get them.

    Paths under /var/run/realtime/ are moved under --root (secret files and the pool are
    created there); secretKeyRef values get local stand-ins. Every ConfigMap key must be a
    setting that check-config prints (an unknown name would be ignored silently)."""
    fails = Failures()
    r = Rendered(args.rendered)
    env = r.env()
    for e in r.container().get("env", []):
        if "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = {"REDIS_URL": "redis://127.0.0.1:6379/0"}.get(e["name"], args.secret)
    mount = "/var/run/realtime/"
    for k, v in env.items():
        if v.startswith(mount):
            env[k] = os.path.join(args.root, v[len(mount):])
    for k in ("CENTRIFUGO_PROXY_SECRET_FILE", "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE"):
        if k in env:
            os.makedirs(os.path.dirname(env[k]), exist_ok=True)
            with open(env[k], "w", encoding="utf-8") as f:
                f.write(args.secret + "\n")
    if env.get("FALLBACK_TICKETS_PATH", "").startswith(args.root):
        os.makedirs(env["FALLBACK_TICKETS_PATH"], exist_ok=True)
        with open(os.path.join(env["FALLBACK_TICKETS_PATH"], "tickets-0"), "w", encoding="utf-8") as f:
            f.write("ci-check-config-ticket-1\nci-check-config-ticket-2\n")
    if "CENTRIFUGO_PROXY_SECRET_FILE" not in env:
        env["CENTRIFUGO_PROXY_SECRET"] = args.secret
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    out = subprocess.run([args.bin, "check-config"], env=run_env, capture_output=True, text=True, timeout=20,
                         check=False)
    text = out.stdout + out.stderr
    fails.check(out.returncode == 0, f"{r.name}: check-config exited {out.returncode}:\n{text}")
    known = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.M))
    unknown = sorted(k for k in r.env() if k not in known)
    fails.check(not unknown, f"{r.name}: ConfigMap keys that check-config does not report: {unknown}")
    for line in text.splitlines():
        if line.startswith("#") or "WARN" in line:
            print(f"{r.name}: {line}")
    fails.exit(f"{r.name}: {len(r.env())} ConfigMap settings; check-config accepts them")


def cmd_ports(args: argparse.Namespace) -> None:
    """/metrics only on the metrics port; health routes on both (METRICS_LISTEN_PORT contract)."""
    fails = Failures()
    main, metrics = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.metrics_port}"
    for base, path, want in [
        (main, "/livez", 200), (main, "/readyz", 200), (main, "/health", 200), (main, "/metrics", 404),
        (metrics, "/livez", 200), (metrics, "/readyz", 200), (metrics, "/health", 200), (metrics, "/metrics", 200),
    ]:
        status, body = http("GET", base + path)
        fails.check(status == want, f"GET {base}{path} -> {status}, want {want}")
        print(f"GET {base}{path:9} -> {status}")
        if path == "/health" and status == 200:
            try:
                json.loads(body)
            except ValueError:
                fails.check(False, f"{base}/health is not JSON")
    fails.exit("routes are split between the ports as deployed")


def cmd_wait_status(args: argparse.Namespace) -> None:
    """Poll url until it answers `status` (or the deadline passes)."""
    import time  # noqa: PLC0415

    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _ = http("GET", args.url, timeout=1.0)
            last = str(status)
            if status == args.status:
                print(f"{args.url} -> {status}")
                sys.exit(0)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            last = str(e)
        time.sleep(0.1)
    print(f"{args.url}: no {args.status} within {args.timeout}s (last: {last})")
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("k8s-schema")
    p.add_argument("--versions", nargs="+", default=["1.30.0", "1.37.0"])
    p.add_argument("--rendered", nargs="+", required=True, metavar="NAME=FILE")
    p.set_defaults(fn=cmd_k8s_schema)
    p = sub.add_parser("manifests")
    p.add_argument("--rendered", nargs="+", required=True, metavar="NAME=FILE")
    p.set_defaults(fn=cmd_manifests)
    sub.add_parser("config-docs").set_defaults(fn=cmd_config_docs)
    p = sub.add_parser("extract-rules")
    p.add_argument("out")
    p.add_argument("--rendered", metavar="NAME=FILE", help="from a rendered overlay instead of alerts.yaml")
    p.set_defaults(fn=cmd_extract_rules)
    sub.add_parser("runbook").set_defaults(fn=cmd_runbook)
    p = sub.add_parser("centrifugo-config")
    p.add_argument("--config", required=True)
    p.add_argument("--transport", choices=["http", "grpc"], required=True)
    p.set_defaults(fn=cmd_centrifugo_config)
    sub.add_parser("centrifugo-pair").set_defaults(fn=cmd_centrifugo_pair)
    sub.add_parser("dockerfile").set_defaults(fn=cmd_dockerfile)
    sub.add_parser("rust-version").set_defaults(fn=cmd_rust_version)
    sub.add_parser("grpc-methods").set_defaults(fn=cmd_grpc_methods)
    p = sub.add_parser("check-config")
    p.add_argument("--bin", required=True)
    p.add_argument("--rendered", required=True, metavar="NAME=FILE")
    p.add_argument("--root", required=True, help="stands in for /var/run/realtime/")
    p.add_argument("--secret", required=True)
    p.set_defaults(fn=cmd_check_config)
    p = sub.add_parser("metric-refs")
    p.add_argument("scrape")
    p.set_defaults(fn=cmd_metric_refs)
    p = sub.add_parser("metrics-contract")
    p.add_argument("scrape")
    p.add_argument("--pool", type=float, required=True)
    p.add_argument("--watermark", type=float, required=True)
    p.add_argument("--startup", action="store_true", help="scrape taken before any request")
    p.set_defaults(fn=cmd_metrics_contract)
    for name, fn in (("requests", cmd_requests), ("endpoints", cmd_endpoints)):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--secret", required=True)
        p.set_defaults(fn=fn)
    p = sub.add_parser("ports")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.set_defaults(fn=cmd_ports)
    p = sub.add_parser("wait-status")
    p.add_argument("url")
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--timeout", type=float, default=20.0)
    p.set_defaults(fn=cmd_wait_status)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
