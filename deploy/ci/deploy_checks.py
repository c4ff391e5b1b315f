#!/usr/bin/env python3
"""Checks behind .ci/check-deploy, one subcommand per check.

Each subcommand prints what it looked at and exits 0 (pass) or 1 (fail). Lines starting
with "SKIP:" are counted as skipped items by .ci/check-deploy. Run from the repository root.
Needs PyYAML (a dependency of kubernetes-validate) and, for `k8s-schema`, kubernetes-validate.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import urllib.error
import urllib.request
from typing import Any, Iterator

import yaml

K8S_DIR = "deploy/kubernetes"
ALERTS = "deploy/prometheus/alerts.yaml"
DASHBOARD = "deploy/grafana/realtime-service.json"
CENTRIFUGO = "deploy/centrifugo/config.json"
RUNBOOK = "deploy/RUNBOOK.md"
DOCKERFILE = "Dockerfile"
POLICY = "config/channel-policy.toml"

APP = "realtime-service"
SECRET_HEADER = "X-Centrifugo-Proxy-Secret"
# Kinds with no schema in kubernetes-validate (CRDs, kustomize's own file).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
KUSTOMIZE_KINDS = {"Kustomization"}

# The service's configuration contract: env var -> default (None: no default).
ENV_DEFAULTS = {
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "text",
    "LISTEN_HOST": "0.0.0.0",
    "LISTEN_PORT": "9730",
    "METRICS_LISTEN_PORT": None,
    "CENTRIFUGO_PROXY_AUTH": "hmac",
    "CENTRIFUGO_PROXY_SECRET": None,
    "CENTRIFUGO_PROXY_SECRET_PREVIOUS": None,
    "PROXY_MAX_BODY_BYTES": "65536",
    "PROXY_HTTP_STATUS_MODE": "mapped",
    "CONNECT_INFO_FIELDS": "",
    "IDENTITY_VALIDATE_GRPC_ADDRESS": "localhost:50051",
    "IDENTITY_VALIDATE_NEGOTIATION_TYPE": "plaintext",
    "IDENTITY_VALIDATE_DEADLINE_MS": "2500",
    "IDENTITY_PROBE_INTERVAL_MS": "1000",
    "FALLBACK_TICKETS_PATH": "",
    "FALLBACK_DEGRADED_WINDOW_MS": "5000",
    "FALLBACK_LOW_WATERMARK": "1000",
    "FALLBACK_CONNECT_TTL_S": "300",
    "SHUTDOWN_DRAIN_DELAY_MS": "5000",
    "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "OTEL_SERVICE_NAME": "realtime-service",
    "OTEL_TRACES_SAMPLER_ARG": "1.0",
    "OTEL_SDK_DISABLED": None,
    "CHANNEL_POLICY_PATH": None,
    "CONNECTION_REFRESH_TTL_S": "3600",
    "PUBLISH_RATE_PER_SECOND": "20",
    "PUBLISH_BURST": "40",
    "RPC_ROUTES": "",
    "RPC_DEADLINE_MS": "800",
}
SECRET_ENV = {"CENTRIFUGO_PROXY_SECRET", "CENTRIFUGO_PROXY_SECRET_PREVIOUS"}
# Seconds reserved for the span flush in the grace-period sum (deployment.yaml comment).
SPAN_FLUSH_BUDGET_S = 5.0

PROXY_TYPES = ["connect", "refresh", "subscribe", "publish", "sub_refresh", "rpc"]
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
    "realtime_build_info": ("gauge", {"version": []}),
}


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


def k8s_files() -> list[str]:
    return sorted(glob.glob(os.path.join(K8S_DIR, "*.yaml")))


def all_manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in k8s_files() + [ALERTS]:
        for doc in load_docs(path):
            yield path, doc


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    for _, doc in all_manifests():
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise SystemExit(f"no {kind} {name or ''} in {K8S_DIR}")


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


def configmap_env() -> dict[str, str]:
    return dict(find("ConfigMap", f"{APP}-config").get("data") or {})


def effective_ms(env: dict[str, str], name: str) -> float:
    return float(env.get(name) or ENV_DEFAULTS[name])


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


def proxy_type_of(obj: dict[str, Any]) -> str:
    path = urllib.request.urlparse(obj["endpoint"]).path
    m = re.fullmatch(r"/centrifugo/([a-z_]+)", path)
    return m.group(1) if m else "?"


def github_anchor(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


# --------------------------------------------------------------------------- static checks


def cmd_k8s_schema(args: argparse.Namespace) -> None:
    import kubernetes_validate  # noqa: PLC0415 (installed by .ci/check-deploy)
    from kubernetes_validate import utils as kv_utils  # noqa: PLC0415

    fails = Failures()
    validated = 0
    for path, doc in all_manifests():
        kind, api = doc.get("kind"), doc.get("apiVersion")
        ident = f"{path}: {kind}/{doc.get('metadata', {}).get('name')}"
        if kind in KUSTOMIZE_KINDS:
            print(f"SKIP: {path}: {kind}: kustomize build file, not a cluster object (resources checked by `manifests`)")
            continue
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


def cmd_manifests(_: argparse.Namespace) -> None:
    """Cross-references between the manifests, and the settings they must agree on."""
    fails = Failures()
    dep = find("Deployment", APP)
    svc = find("Service", APP)
    pdb = find("PodDisruptionBudget", APP)
    smon = find("ServiceMonitor", APP)
    rule = find("PrometheusRule", APP)
    env = configmap_env()
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]

    # Selectors.
    fails.check(selector_matches(dep["spec"]["selector"], pod_labels), "Deployment selector does not match its pods")
    fails.check(selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels), "Service selector misses the pods")
    fails.check(selector_matches(pdb["spec"]["selector"], pod_labels), "PDB selector misses the pods")
    fails.check(selector_matches(smon["spec"]["selector"], svc["metadata"]["labels"]),
                "ServiceMonitor selector misses the Service")
    for _, np in all_manifests():
        if np.get("kind") == "NetworkPolicy":
            fails.check(selector_matches(np["spec"]["podSelector"], pod_labels),
                        f"NetworkPolicy {np['metadata']['name']} does not select the pods")
    fails.check(dep["spec"]["replicas"] == 3, "replicas is not 3")

    # Ports: ConfigMap <-> container <-> Service <-> ServiceMonitor <-> NetworkPolicy.
    cports = {p["name"]: p["containerPort"] for p in container["ports"]}
    fails.check(cports.get("http") == int(env.get("LISTEN_PORT", "9730")), "container port http != LISTEN_PORT")
    fails.check(cports.get("metrics") == int(env.get("METRICS_LISTEN_PORT", "0")),
                "container port metrics != METRICS_LISTEN_PORT")
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    fails.check(sports.get("http", {}).get("port") == 9730, "Service port http is not 9730")
    fails.check(sports.get("metrics", {}).get("port") == 9731, "Service port metrics is not 9731")
    for name, p in sports.items():
        fails.check(p.get("targetPort") in cports or p.get("targetPort") in cports.values(),
                    f"Service port {name} targets {p.get('targetPort')!r}, not a container port")
    for ep in smon["spec"]["endpoints"]:
        fails.check(ep.get("port") in sports, f"ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port")
        fails.check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor path is not /metrics")
    ingress = find("NetworkPolicy", f"{APP}-ingress")
    allowed = {}
    for rule_ in ingress["spec"]["ingress"]:
        for port in rule_.get("ports", []):
            allowed.setdefault(port["port"], []).append(rule_["from"])
    fails.check(set(allowed) == {cports["http"], cports["metrics"]}, f"ingress ports {sorted(allowed)} != container ports")
    centrifugo_peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "centrifugo"}}}
    fails.check(allowed.get(cports["http"]) == [[centrifugo_peer]], "port 9730 is open to more than Centrifugo pods")
    prom = allowed.get(cports["metrics"], [[{}]])[0][0]
    fails.check("namespaceSelector" in prom and "podSelector" in prom,
                "port 9731 must be limited by both namespace and pod selector (Prometheus)")

    # Probes and lifecycle.
    fails.check(container["livenessProbe"]["httpGet"]["path"] == "/livez", "liveness probe is not /livez")
    fails.check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe is not /readyz")
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    fails.check("sleep" in pre_stop and "exec" not in pre_stop, "preStop must be the native sleep action (no shell)")
    pre_stop_s = float(pre_stop.get("sleep", {}).get("seconds", 0))
    drain_s = effective_ms(env, "SHUTDOWN_DRAIN_DELAY_MS") / 1000
    inflight_s = max(effective_ms(env, "IDENTITY_VALIDATE_DEADLINE_MS"), effective_ms(env, "RPC_DEADLINE_MS")) / 1000
    need = pre_stop_s + drain_s + inflight_s + SPAN_FLUSH_BUDGET_S
    grace = spec.get("terminationGracePeriodSeconds", 30)
    fails.check(grace > need, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop_s} + drain {drain_s} "
                f"+ in-flight {inflight_s} + flush {SPAN_FLUSH_BUDGET_S}")
    print(f"grace period: {grace} s {'>' if grace > need else '<='} {pre_stop_s:g} + {drain_s:g} + {inflight_s:g} + {SPAN_FLUSH_BUDGET_S:g} "
          f"= {need:g} s")

    # Security context.
    psc, csc = spec.get("securityContext", {}), container.get("securityContext", {})
    for where, sc in (("pod", psc), ("container", csc)):
        fails.check(sc.get("runAsNonRoot") is True, f"{where} runAsNonRoot is not true")
        fails.check(sc.get("runAsUser") == 65532 and sc.get("runAsGroup") == 65532, f"{where} uid/gid is not 65532")
        fails.check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where} seccomp is not RuntimeDefault")
    fails.check(psc.get("fsGroup") == 65532, "pod fsGroup is not 65532")
    fails.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    fails.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    fails.check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities do not drop ALL")
    res = container.get("resources", {})
    fails.check(bool(res.get("requests")) and bool(res.get("limits")), "resources requests/limits missing")

    # Fallback tickets: a directory mount of the Secret, readable by the non-root user.
    tickets = env.get("FALLBACK_TICKETS_PATH", "")
    mounts = container.get("volumeMounts", [])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    match = [m for m in mounts if tickets.startswith(m["mountPath"].rstrip("/") + "/")]
    if fails.check(len(match) == 1, f"FALLBACK_TICKETS_PATH {tickets!r} is not under exactly one volume mount"):
        mount = match[0]
        fails.check("subPath" not in mount and "subPathExpr" not in mount, "the tickets volume uses subPath")
        fails.check(mount.get("readOnly") is True, "the tickets mount is not readOnly")
        vol = volumes[mount["name"]]
        secret = vol.get("secret", {})
        fails.check(secret.get("secretName") == f"{APP}-fallback-tickets", "tickets volume is not the tickets Secret")
        fails.check(secret.get("defaultMode") == 0o440, f"tickets defaultMode is {secret.get('defaultMode')}, not 288 (0440)")
        file_name = tickets[len(mount["mountPath"].rstrip("/")) + 1:]
        items = secret.get("items")
        if items:
            fails.check(any(i["path"] == file_name for i in items), f"no Secret item is mounted as {file_name!r}")
    # Secrets only through secretKeyRef; everything else from the ConfigMap.
    env_list = {e["name"]: e for e in container.get("env", [])}
    for name in SECRET_ENV:
        fails.check(name not in env, f"{name} is in the ConfigMap (it is a secret)")
    fails.check("secretKeyRef" in env_list.get("CENTRIFUGO_PROXY_SECRET", {}).get("valueFrom", {}),
                "CENTRIFUGO_PROXY_SECRET is not from a secretKeyRef")
    fails.check(any(e.get("configMapRef", {}).get("name") == f"{APP}-config" for e in container.get("envFrom", [])),
                "the ConfigMap is not loaded with envFrom")
    for name in list(env) + list(env_list):
        fails.check(name in ENV_DEFAULTS, f"{name} is not a setting of the service (typo?)")
    fails.check(env.get("CENTRIFUGO_PROXY_AUTH") == "static_header", "CENTRIFUGO_PROXY_AUTH is not static_header")

    # Labels for kube-prometheus-stack selection.
    fails.check(smon["metadata"]["labels"].get("release") == rule["metadata"]["labels"].get("release"),
                "ServiceMonitor and PrometheusRule carry different `release` labels")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            fails.check("alert" in r and "expr" in r, f"rule in {group['name']} lacks alert/expr")

    # Kustomization: every manifest listed, every listed file present.
    kust = load_docs(os.path.join(K8S_DIR, "kustomization.yaml"))[0]
    listed = kust.get("resources", [])
    for res_ in listed:
        fails.check(os.path.exists(os.path.join(K8S_DIR, res_)), f"kustomization resource {res_} does not exist")
    for path in k8s_files():
        base = os.path.basename(path)
        if base != "kustomization.yaml":
            fails.check(base in listed, f"{base} is not listed in kustomization.yaml")
    prom_kust = load_docs("deploy/prometheus/kustomization.yaml")[0]
    fails.check(prom_kust.get("resources") == ["alerts.yaml"], "deploy/prometheus/kustomization.yaml must list alerts.yaml")
    fails.check("../prometheus" in listed, "kustomization.yaml does not include ../prometheus")
    fails.check(any(i.get("name") == container["image"].split(":")[0] for i in kust.get("images", [])),
                "kustomization images[] does not name the container image")
    fails.exit("manifests agree with each other and with the ConfigMap")


def cmd_extract_rules(args: argparse.Namespace) -> None:
    docs = load_docs(ALERTS)
    if len(docs) != 1 or docs[0].get("kind") != "PrometheusRule":
        raise SystemExit(f"{ALERTS} must hold exactly one PrometheusRule")
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(docs[0]["spec"], f, sort_keys=False)
    n = sum(len(g["rules"]) for g in docs[0]["spec"]["groups"])
    print(f"{ALERTS} .spec -> {args.out} ({n} rules)")


def cmd_runbook(_: argparse.Namespace) -> None:
    """Every alert has summary, description, a runbook_url whose anchor is a RUNBOOK heading,
    and a severity; every alert is tested in alerts_test.yaml."""
    fails = Failures()
    with open(RUNBOOK, encoding="utf-8") as f:
        anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", f.read(), re.M)}
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
            fails.check(path.endswith(RUNBOOK), f"{name}: runbook_url {url!r} does not point at {RUNBOOK}")
            fails.check(anchor in anchors, f"{name}: anchor #{anchor} is not a heading of {RUNBOOK}")
            fails.check(name in fired, f"{name}: no promtool test where it fires")
            fails.check(name in silent, f"{name}: no promtool test where it stays silent")
    extra = tested - {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    fails.check(not extra, f"tests name unknown alerts: {sorted(extra)}")
    fails.exit(f"{count} alerts: annotations, runbook anchors and fire/no-fire tests present")


def cmd_centrifugo_config(_: argparse.Namespace) -> None:
    fails = Failures()
    with open(CENTRIFUGO, encoding="utf-8") as f:
        cfg = json.load(f)
    env = configmap_env()
    identity_s = max(effective_ms(env, "IDENTITY_VALIDATE_DEADLINE_MS"), 2500) / 1000
    rpc_s = max(effective_ms(env, "RPC_DEADLINE_MS"), 800) / 1000
    proxies = centrifugo_proxies(cfg)
    by_type: dict[str, list[str]] = {}
    named = {p["name"]: p for p in cfg.get("proxies", [])}

    for label, p in proxies:
        kind = proxy_type_of(p)
        by_type.setdefault(kind, []).append(label)
        fails.check(kind in PROXY_TYPES, f"{label}: endpoint {p['endpoint']} is not /centrifugo/<proxy type>")
        url = urllib.request.urlparse(p["endpoint"])
        fails.check(url.scheme == "http" and url.hostname == APP and url.port == 9730,
                    f"{label}: endpoint is not http://{APP}:9730/... (the Service)")
        timeout = go_duration_seconds(p.get("timeout", "1s"))
        floor = {"connect": identity_s, "rpc": rpc_s}.get(kind, 0.0)
        fails.check("timeout" in p, f"{label}: timeout not set explicitly")
        fails.check(timeout > floor, f"{label}: timeout {timeout}s is not above the service deadline {floor}s")
        print(f"{label:28} {kind:12} timeout {timeout:g}s > {floor:g}s")
        headers = (p.get("http") or {}).get("static_headers") or {}
        fails.check(list(headers) == [SECRET_HEADER], f"{label}: static_headers must be exactly {SECRET_HEADER}")
        forwarded = [h.lower() for h in (p.get("http_headers") or []) + (p.get("emulated_headers") or [])]
        fails.check(SECRET_HEADER.lower() not in forwarded,
                    f"{label}: {SECRET_HEADER} is forwarded from clients (http_headers/emulated_headers)")
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
                fails.check(400 <= err["code"] <= 1999 or err["code"] in {101, 107},
                            f"{label}: error code {err['code']} outside the app range")
        got = {t["status_code"]: t for t in transforms}
        if kind == "connect":
            want = {
                401: {"to_disconnect": {"code": 4401, "reason": "invalid ticket"}},
                503: {"to_disconnect": {"code": 4503, "reason": "ticket validation temporarily unavailable"}},
                400: {"to_error": {"code": 107, "message": "bad request"}},
                413: {"to_error": {"code": 107, "message": "bad request"}},
            }
            fails.check(set(got) == set(want), f"{label}: transforms for {sorted(got)}, want {sorted(want)}")
            for status, w in want.items():
                for key, sub in w.items():
                    have = (got.get(status) or {}).get(key) or {}
                    fails.check(all(have.get(k) == v for k, v in sub.items()),
                                f"{label}: {status} must map {key} {sub}, got {got.get(status)}")
            fails.check(p.get("enabled") is True, f"{label}: not enabled")
        elif kind in ("refresh", "sub_refresh"):
            # A matched transform yields a response without result, which refresh handlers treat
            # as "expired"; without one a failure gets a 60 s extension instead.
            fails.check(not transforms, f"{label}: refresh-type proxies must have no status transforms")
        else:
            fails.check(set(got) <= {401, 400, 413}, f"{label}: unexpected transforms {sorted(got)}")
            for status, t in got.items():
                fails.check("to_error" in t and "to_disconnect" not in t,
                            f"{label}: {status} must map to an error, not a disconnect")
    for kind in PROXY_TYPES:
        fails.check(kind in by_type, f"no proxy for {kind}")
    fails.check(cfg.get("client", {}).get("proxy", {}).get("refresh", {}).get("enabled") is True, "refresh not enabled")
    for name in named:
        fails.check(re.fullmatch(r"[-a-zA-Z0-9_.]{2,}", name) is not None and name != "default",
                    f"named proxy {name!r} is not a valid name")

    # Namespaces from the default channel policy.
    ns = {n["name"]: n for n in cfg.get("channel", {}).get("namespaces", [])}
    fails.check(sorted(ns) == sorted(NAMESPACES), f"namespaces {sorted(ns)} != {sorted(NAMESPACES)}")
    for name, n in ns.items():
        def uses(flag: str, name_key: str, kind: str, n: dict[str, Any] = n) -> bool:
            if not n.get(flag):
                return False
            target = named.get(n.get(name_key, "default"))
            fails.check(target is not None and proxy_type_of(target) == kind,
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
    fails.check(target is not None and proxy_type_of(target) == "rpc", "rpc.without_namespace.proxy_name is not an rpc proxy")
    fails.check(cfg.get("client", {}).get("allowed_origins") not in (None, [], ["*"]), "allowed_origins is open")
    fails.exit("Centrifugo config matches the service's contract")


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
    fails.check(any(re.fullmatch(r"EXPOSE 9730 9731", ln) for ln in lines), "EXPOSE 9730 9731 missing")
    binary = "/usr/local/bin/realtime-service"
    fails.check(any(ln.startswith("HEALTHCHECK") and f'CMD ["{binary}", "healthcheck"]' in ln for ln in lines),
                "HEALTHCHECK is not the exec form of `realtime-service healthcheck`")
    fails.check(f'ENTRYPOINT ["{binary}"]' in lines and 'CMD ["serve"]' in lines, "ENTRYPOINT/CMD are not binary + serve")
    fails.check(any(ln.startswith("COPY --from=builder") and ln.endswith(binary) for ln in lines),
                f"binary not copied to {binary}")
    with open(".dockerignore", encoding="utf-8") as f:
        ignored = {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}
    fails.check({"target/", ".git/"} <= ignored, ".dockerignore does not exclude target/ and .git/")
    print("NOT VERIFIED: no Docker engine here; the image was never built or run (static checks only)")
    fails.exit("Dockerfile has the expected shape")


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
    """Every realtime_* metric (and every fixed label value) used by alerts and the dashboard
    exists in the live scrape."""
    fails = Failures()
    types, samples = parse_scrape(args.scrape)
    names = {s[0] for s in samples} | set(types)
    series: dict[str, list[dict[str, str]]] = {}
    for name, labels, _ in samples:
        series.setdefault(name, []).append(labels)
    sel_re = re.compile(r"\b(realtime_[a-z0-9_]+)\s*(\{([^}]*)\})?")
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
    non_prefixed = sorted(n for n in types if not n.startswith("realtime_"))
    fails.check(not non_prefixed, f"metrics without the realtime_ prefix: {non_prefixed}")

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
        v = value("realtime_proxy_requests_total", proxy="connect", status=status_code)
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
        ("connect, ticket, identity down", auth, 503, b"4503"),
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
    """Every proxy endpoint of the Centrifugo config is a route the service serves."""
    fails = Failures()
    with open(CENTRIFUGO, encoding="utf-8") as f:
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
    p.set_defaults(fn=cmd_k8s_schema)
    sub.add_parser("manifests").set_defaults(fn=cmd_manifests)
    p = sub.add_parser("extract-rules")
    p.add_argument("out")
    p.set_defaults(fn=cmd_extract_rules)
    sub.add_parser("runbook").set_defaults(fn=cmd_runbook)
    sub.add_parser("centrifugo-config").set_defaults(fn=cmd_centrifugo_config)
    sub.add_parser("dockerfile").set_defaults(fn=cmd_dockerfile)
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
