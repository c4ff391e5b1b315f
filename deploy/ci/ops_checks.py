#!/usr/bin/env python3
"""Checks behind .ci/check-deploy for the Grafana dashboard and the Helm chart, one
subcommand per check (deploy_checks.py has the kustomize overlays, alerts and live checks).

Each subcommand prints what it looked at and exits 0 (pass) or 1 (fail). Run from the
repository root. Needs PyYAML (a dependency of kubernetes-validate), through deploy_checks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Iterator

# The same directory: the shared helpers of the deploy checks.
from deploy_checks import Failures, load_docs

DASHBOARD = "deploy/grafana/realtime-service.json"
# Every panel query selects on these dashboard variables.
SELECTORS = ['cluster=~"$cluster"', 'job=~"$job"', 'namespace=~"$namespace"', 'pod=~"$pod"']
# process_* families come from every Prometheus client library, Centrifugo's included: a
# panel of them keeps only the pods that report this service's build info.
PROCESS_GUARD = "and on (cluster, namespace, pod) realtime_build_info{"
# Signals the RUNBOOK points at that the dashboard must show.
DASHBOARD_METRICS = [
    "realtime_fallback_ledger_reachable", "realtime_fallback_ledger_errors_total",
    "realtime_fallback_ledger_local_claims_total", "realtime_fallback_ledger_conflicts_total",
    "realtime_fallback_reloads_total", "realtime_channel_policy_reloads_total",
    "realtime_proxy_secret_reloads_total", "realtime_fallback_pool_last_reload_timestamp_seconds",
    "realtime_proxy_overload_rejections_total", "realtime_publish_limiter_fallback_total",
    "realtime_otel_export_failures_total",
]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


# ------------------------------------------------------------------------------ dashboard


def cmd_dashboard(_: argparse.Namespace) -> None:
    """Variables cluster, job, namespace, pod; every query selects on all four; process
    panels only this service's pods; the ledger, reload and failure signals shown."""
    fails = Failures()
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    names = [v["name"] for v in d["templating"]["list"]]
    fails.check(names == ["DS_PROMETHEUS", "cluster", "job", "namespace", "pod"],
                f"variables {names}, want DS_PROMETHEUS, cluster, job, namespace, pod")
    exprs = []
    for p in panels(d["panels"]):
        for t in p.get("targets", []):
            e = t["expr"]
            exprs.append(e)
            for sel in SELECTORS:
                fails.check(sel in e, f"panel {p['title']!r}: query without {sel}: {e}")
            if re.search(r"\bprocess_", e):
                fails.check(PROCESS_GUARD in e, f"panel {p['title']!r}: process_* query not limited to "
                            f"this service's pods ({PROCESS_GUARD}...): {e}")
    text = "\n".join(exprs)
    for m in DASHBOARD_METRICS:
        fails.check(re.search(rf"\b{m}\b", text) is not None, f"no panel shows {m}")
    fails.exit(f"{len(exprs)} queries on cluster, job, namespace and pod; process panels limited; "
               f"{len(DASHBOARD_METRICS)} ledger, reload and failure signals shown")


def cmd_dashboard_configmap(args: argparse.Namespace) -> None:
    """The rendered deploy/grafana kustomization: one ConfigMap, labelled for Grafana's
    dashboard sidecar, holding exactly the dashboard file."""
    fails = Failures()
    docs = load_docs(args.rendered)
    maps = [d for d in docs if d.get("kind") == "ConfigMap"]
    fails.check(len(docs) == 1 and len(maps) == 1, f"want one ConfigMap, got {[d.get('kind') for d in docs]}")
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = f.read()
    for cm in maps:
        labels = cm["metadata"].get("labels", {})
        fails.check(labels.get("grafana_dashboard") == "1", f"labels {labels}: no grafana_dashboard: \"1\"")
        data = cm.get("data", {})
        fails.check(list(data) == ["realtime-service.json"], f"data keys {list(data)}")
        fails.check(data.get("realtime-service.json") == dashboard, "the ConfigMap's dashboard differs from the file")
    fails.exit(f"{args.rendered}: the dashboard ConfigMap, labelled grafana_dashboard=1")


# ------------------------------------------------------------------------------ kubernetes


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    """The object of that kind whose name is `name` or `name-<hash>` (a generated one)."""
    for d in docs:
        n = d.get("metadata", {}).get("name", "")
        if d.get("kind") == kind and (n == name or n.startswith(name + "-")):
            return d
    return None


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(dep: dict[str, Any]) -> dict[str, str]:
    return dep["spec"]["template"]["metadata"]["labels"]


def cmd_dev_stack(args: argparse.Namespace) -> None:
    """The rendered dev overlay is a whole stack: Centrifugo with the shipped config and the
    service's proxy secret, the Redis its config names, and NetworkPolicy peers that match the
    pods it deploys."""
    fails = Failures()
    docs = load_docs(args.rendered)
    ns = find(docs, "Namespace", "realtime-dev")
    fails.check(ns is not None, "no Namespace realtime-dev")
    objects = [d for d in docs if d.get("kind") != "Namespace"]
    wrong_ns = sorted({d["metadata"].get("namespace") for d in objects} - {"realtime-dev"}, key=str)
    fails.check(not wrong_ns, f"objects outside realtime-dev: {wrong_ns}")
    app, cf, redis = (find(docs, "Deployment", n) for n in ("realtime-service", "centrifugo", "redis"))
    for name, dep in (("realtime-service", app), ("centrifugo", cf), ("redis", redis)):
        fails.check(dep is not None, f"no Deployment {name}")
        svc = find(docs, "Service", name)
        if fails.check(svc is not None, f"no Service {name}") and dep is not None:
            fails.check(matches(svc["spec"]["selector"], pod_labels(dep)), f"Service {name} misses its pods")
    if app is None or cf is None or redis is None:
        fails.exit("")
    # Centrifugo: the shipped config, byte for byte, mounted where its command reads it.
    cm = find(docs, "ConfigMap", "centrifugo-config")
    with open("deploy/centrifugo/config.json", encoding="utf-8") as f:
        shipped = f.read()
    if fails.check(cm is not None, "no ConfigMap centrifugo-config"):
        fails.check(cm.get("data", {}).get("config.json") == shipped, "centrifugo-config is not deploy/centrifugo/config.json")
        vols = {v["name"]: v for v in cf["spec"]["template"]["spec"].get("volumes", [])}
        used = [v for v in vols.values() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
        fails.check(len(used) == 1, "Centrifugo does not mount the generated centrifugo-config")
    (c,) = cf["spec"]["template"]["spec"]["containers"]
    fails.check("--config=/centrifugo/config.json" in c.get("command", []) + c.get("args", []),
                "Centrifugo is not started with --config=/centrifugo/config.json")
    fails.check(c["image"].startswith("centrifugo/centrifugo:v6"), f"Centrifugo image {c['image']} is not v6")
    # Its proxy secret is the one the service reads (the Secret mounted into the service).
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get("CENTRIFUGO_VAR_PROXY_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
    app_secrets = {v.get("secret", {}).get("secretName") for v in app["spec"]["template"]["spec"].get("volumes", [])}
    fails.check(ref.get("name") in app_secrets and ref.get("key") == "secret",
                f"CENTRIFUGO_VAR_PROXY_SECRET {ref} is not key `secret` of the service's Secret {sorted(app_secrets - {None})}")
    # Redis: the host and port Centrifugo's engine is configured with.
    addr = json.loads(shipped)["engine"]["redis"]["address"][0]
    host_port = addr.split("://", 1)[1].rsplit("@", 1)[-1].split("/")[0]
    host, _, port = host_port.partition(":")
    rsvc = find(docs, "Service", host)
    fails.check(rsvc is not None and any(p_["port"] == int(port) for p_ in rsvc["spec"]["ports"]),
                f"no Service {host}:{port} for Centrifugo's engine ({addr})")
    # The NetworkPolicy's Centrifugo peer selects the Centrifugo pods deployed here.
    ing = find(docs, "NetworkPolicy", "realtime-service-ingress")
    peers = [f.get("podSelector", {}).get("matchLabels", {}) for rule in (ing or {}).get("spec", {}).get("ingress", [])
             for f in rule.get("from", []) if "namespaceSelector" not in f]
    fails.check(any(matches(p_, pod_labels(cf)) for p_ in peers),
                f"no same-namespace ingress peer of realtime-service-ingress selects Centrifugo's pods ({peers})")
    # The stand-in identity-service: where IDENTITY_VALIDATE_GRPC_ADDRESS points, selected by
    # the egress policy, the service's own image running `standin`.
    standin = find(docs, "Deployment", "identity-service")
    if fails.check(standin is not None, "no Deployment identity-service (the stand-in)"):
        (sc,) = standin["spec"]["template"]["spec"]["containers"]
        ac = next((c_ for c_ in app["spec"]["template"]["spec"]["containers"] if c_["name"] == "realtime-service"), None)
        fails.check(sc.get("args") == ["standin"] and ac is not None and sc["image"] == ac["image"],
                    f"identity-service does not run `standin` from the service's image ({sc.get('image')})")
        config = next((d for d in docs if d.get("kind") == "ConfigMap"
                       and d["metadata"]["name"].startswith("realtime-service-config")), {})
        target = config.get("data", {}).get("IDENTITY_VALIDATE_GRPC_ADDRESS", "")
        isvc_name, _, iport = target.partition(":")
        isvc = find(docs, "Service", isvc_name)
        fails.check(isvc is not None and matches(isvc["spec"]["selector"], pod_labels(standin))
                    and any(str(p_["port"]) == iport for p_ in isvc["spec"]["ports"]),
                    f"IDENTITY_VALIDATE_GRPC_ADDRESS={target!r} does not reach the stand-in")
        egress = find(docs, "NetworkPolicy", "realtime-service-egress")
        epeers = [f.get("podSelector", {}).get("matchLabels", {}) for rule in (egress or {}).get("spec", {}).get("egress", [])
                  for f in rule.get("to", []) if "namespaceSelector" not in f]
        fails.check(any(p_ and matches(p_, pod_labels(standin)) for p_ in epeers),
                    "no egress peer of realtime-service-egress selects the stand-in's pods")
    fails.exit(f"{args.rendered}: realtime-service, Centrifugo (shipped config, shared secret), Redis, the "
               "identity stand-in; services, namespace and NetworkPolicy peers match")


def cmd_autoscaling(args: argparse.Namespace) -> None:
    """prod with the autoscaling component: an HPA on the Deployment, which no longer sets
    `replicas` (an apply would reset the autoscaler's choice), min replicas of prod."""
    fails = Failures()
    docs = load_docs(args.rendered)
    dep = find(docs, "Deployment", "realtime-service")
    hpa = find(docs, "HorizontalPodAutoscaler", "realtime-service")
    if not fails.check(dep is not None and hpa is not None, "no Deployment or no HorizontalPodAutoscaler"):
        fails.exit("")
    ref = hpa["spec"]["scaleTargetRef"]
    fails.check((ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"]), f"scaleTargetRef {ref}")
    fails.check(hpa["metadata"].get("namespace") == dep["metadata"].get("namespace"), "HPA in another namespace")
    fails.check("replicas" not in dep["spec"], "the Deployment still sets replicas")
    fails.check(hpa["spec"]["minReplicas"] >= 3, "minReplicas under prod's 3")
    fails.check(hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"], "maxReplicas under minReplicas")
    limits = dep["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("requests", {})
    fails.check("cpu" in limits, "CPU utilisation needs a CPU request")
    fails.exit(f"{args.rendered}: HPA {hpa['spec']['minReplicas']}-{hpa['spec']['maxReplicas']} owns the replicas")


# ------------------------------------------------------------------------------ helm


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pods of the realtime-service Deployment run, with names that differ by
    construction taken out: the settings ConfigMap by its data (kustomize hashes its name,
    Helm prefixes it with the release)."""
    dep = find(docs, "Deployment", "realtime-service")
    if dep is None:
        raise SystemExit("no Deployment realtime-service")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    settings = {}
    for src in c.get("envFrom", []):
        cm = find(docs, "ConfigMap", src["configMapRef"]["name"])
        settings.update((cm or {}).get("data") or {})
    keys = ["name", "image", "imagePullPolicy", "args", "command", "ports", "env", "startupProbe",
            "livenessProbe", "readinessProbe", "lifecycle", "resources", "securityContext", "volumeMounts"]
    return {
        "replicas": dep["spec"].get("replicas"),
        # By name: the order of env entries means nothing without $(VAR) references.
        "container": {**{k: c.get(k) for k in keys}, "env": sorted(c.get("env", []), key=lambda e: e["name"])},
        "settings (envFrom ConfigMap)": settings,
        "pod securityContext": spec.get("securityContext"),
        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds"),
        "serviceAccountName": spec.get("serviceAccountName"),
        "automountServiceAccountToken": spec.get("automountServiceAccountToken"),
        "volumes": spec.get("volumes"),
        "topology keys": [t["topologyKey"] for t in spec.get("topologySpreadConstraints", [])],
    }


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: chart {json.dumps(a)} / overlay {json.dumps(b)}"


def cmd_chart_vs_overlay(args: argparse.Namespace) -> None:
    """`helm template` with prod-like values and the rendered prod overlay run the same
    workload: containers, env and settings, probes, security contexts, volumes."""
    fails = Failures()
    chart, overlay = workload(load_docs(args.chart)), workload(load_docs(args.overlay))
    for d in differences(chart, overlay):
        fails.check(False, d)
    fails.exit(f"{args.chart} and {args.overlay}: the same workload "
               f"({len(chart['settings (envFrom ConfigMap)'])} settings, {len(chart['volumes'])} volumes)")


def cmd_chart_kinds(args: argparse.Namespace) -> None:
    """What a values file turns on is rendered, and nothing else (`--want KIND` / `--not KIND`)."""
    fails = Failures()
    kinds = sorted(d.get("kind", "") for d in load_docs(args.rendered))
    for k in args.want or []:
        fails.check(k in kinds, f"{args.rendered}: no {k} (kinds: {kinds})")
    for k in args.never or []:
        fails.check(k not in kinds, f"{args.rendered}: an unexpected {k}")
    fails.exit(f"{args.rendered}: {', '.join(kinds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(required=True)
    sub.add_parser("dashboard").set_defaults(fn=cmd_dashboard)
    p = sub.add_parser("dashboard-configmap")
    p.add_argument("rendered")
    p.set_defaults(fn=cmd_dashboard_configmap)
    for name, fn in (("dev-stack", cmd_dev_stack), ("autoscaling", cmd_autoscaling)):
        p = sub.add_parser(name)
        p.add_argument("rendered")
        p.set_defaults(fn=fn)
    p = sub.add_parser("chart-vs-overlay")
    p.add_argument("--chart", required=True)
    p.add_argument("--overlay", required=True)
    p.set_defaults(fn=cmd_chart_vs_overlay)
    p = sub.add_parser("chart-kinds")
    p.add_argument("rendered")
    p.add_argument("--want", action="append")
    p.add_argument("--not", dest="never", action="append")
    p.set_defaults(fn=cmd_chart_kinds)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
