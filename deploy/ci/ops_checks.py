#!/usr/bin/env python3
"""Checks behind .ci/check-deploy for the Grafana dashboard and the Helm chart, one
subcommand per check (deploy_checks.py has the kustomize overlays, alerts and live checks).

Each subcommand prints what it looked at and exits 0 (pass) or 1 (fail). Run from the
repository root. Needs PyYAML (a dependency of kubernetes-validate).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Iterator

import yaml

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


def load_docs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(required=True)
    sub.add_parser("dashboard").set_defaults(fn=cmd_dashboard)
    p = sub.add_parser("dashboard-configmap")
    p.add_argument("rendered")
    p.set_defaults(fn=cmd_dashboard_configmap)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
