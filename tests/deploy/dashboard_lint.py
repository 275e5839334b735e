"""Checks the Grafana dashboards (infra/deploy/grafana/dashboards/*.json) and the metric names
of the alert rules: valid JSON, unique panel ids, every panel and query on the provisioned
data source (by uid), and every metric a PromQL expression names is one the services export.
A panel described as "What <Alert> watches" queries what that alert's expression compares
(whitespace aside, `$__rate_interval` read as the alert's window).

The known metric names are those of the "Metrics" table in docs/operations.md when it exists;
until then, the names the Rust sources register (`counter!("…")`, `gauge!("…")`,
`histogram!("…")`) plus NEW_METRICS, which are being added with exactly these names.
"""

import json
import re

from lintlib import DEPLOY, ROOT, Problems, load_yaml, rel

NEW_METRICS = {
    "db_pool_connections",
    "db_pool_max_connections",
    "query_cache_entries",
    "query_cache_bytes",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "build_info",
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
MACRO = re.compile(r'(?:counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')


def documented_metrics():
    """Names in the first column of the table under `## Metrics`, or None without one."""
    path = ROOT / "docs" / "operations.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = re.search(r"^## Metrics[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not section:
        return None
    names = set()
    for line in section.group(1).splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)", first))
    return names


def registered_metrics():
    names = set()
    for path in ROOT.rglob("*.rs"):
        if {"target", ".data"} & set(path.relative_to(ROOT).parts):
            continue
        names |= set(MACRO.findall(path.read_text(encoding="utf-8")))
    return names | NEW_METRICS


def metric_names(expr):
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def unknown_metrics(expr, known):
    unknown = set()
    for name in metric_names(expr):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        if name not in known and base not in known:
            unknown.add(name)
    return unknown


def provisioned_uid(problems):
    folder = DEPLOY / "grafana" / "provisioning" / "datasources"
    sources = [
        s for f in sorted(folder.glob("*.y*ml")) for s in load_yaml(f).get("datasources", [])
    ]
    prometheus = [s for s in sources if s.get("type") == "prometheus"]
    if problems.require(
        len(prometheus) == 1 and prometheus[0].get("uid"),
        rel(folder),
        "needs exactly one Prometheus data source with a uid",
    ):
        return prometheus[0]["uid"]
    return None


def walk(panels):
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))


def check_dashboard(problems, path, uid, known, seen_uids, alerts):
    where = rel(path)
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problems.add(where, f"not valid JSON: {e}")
        return 0
    problems.require(
        board.get("uid") and board["uid"] not in seen_uids,
        where,
        f"dashboard uid {board.get('uid')!r} missing or used twice",
    )
    seen_uids.add(board.get("uid"))
    problems.require(board.get("schemaVersion", 0) >= 36, where, "schemaVersion below 36")
    ids = set()
    panels = list(walk(board.get("panels", [])))
    for panel in panels:
        pw = f"{where} panel {panel.get('id')} {panel.get('title')!r}"
        problems.require(panel.get("id") not in ids, pw, "panel id used twice")
        ids.add(panel.get("id"))
        problems.require("gridPos" in panel, pw, "no gridPos")
        if panel.get("type") == "row":
            continue
        problems.require(
            panel.get("datasource", {}).get("uid") == uid, pw, f"data source is not uid {uid!r}"
        )
        targets = panel.get("targets", [])
        problems.require(targets, pw, "no query")
        for target in targets:
            problems.require(
                target.get("datasource", {"uid": uid}).get("uid") == uid,
                pw,
                f"query {target.get('refId')} data source is not uid {uid!r}",
            )
            expr = target.get("expr", "")
            problems.require(expr, pw, f"query {target.get('refId')} has no expr")
            for name in sorted(unknown_metrics(expr, known)):
                problems.add(pw, f"metric {name} is not exported by any service")
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            problems.require(
                var.get("datasource", {}).get("uid") == uid,
                f"{where} variable {var.get('name')}",
                f"data source is not uid {uid!r}",
            )
    check_watched(problems, path, board, alerts)
    return len(panels)


WATCHES = re.compile(r"What (\w+) watches")


def squeezed(expr):
    return re.sub(r"\s+", "", expr)


def check_watched(problems, path, board, alerts):
    """Panels that say they show what an alert watches query the alert's own expression."""
    for panel in walk(board.get("panels", [])):
        found = WATCHES.search(panel.get("description", ""))
        if not found:
            continue
        pw = f"{rel(path)} panel {panel.get('id')} {panel.get('title')!r}"
        alert = alerts.get(found.group(1))
        if alert is None:
            problems.add(pw, f"names alert {found.group(1)}, which alerts.yml does not have")
            continue
        window = re.search(r"\[(\d+[smh])\]", alert)
        for target in panel.get("targets", []):
            expr = squeezed(target.get("expr", ""))
            if window:
                expr = expr.replace("[$__rate_interval]", f"[{window.group(1)}]")
            problems.require(
                expr and expr in squeezed(alert),
                pw,
                f"query {target.get('refId')} is not what {found.group(1)} compares: {alert}",
            )


def check_provider_mount(problems):
    """The dashboards provider reads the folder compose.yaml mounts the dashboards at."""
    folder = DEPLOY / "grafana" / "provisioning" / "dashboards"
    paths = {
        p["options"]["path"]
        for f in folder.glob("*.y*ml")
        for p in load_yaml(f).get("providers", [])
    }
    grafana = load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = {
        m.split(":")[1] for m in grafana.get("volumes", []) if m.startswith("./grafana/dashboards:")
    }
    problems.require(
        paths and paths <= mounts,
        rel(folder),
        f"provider paths {sorted(paths)} are not where compose.yaml mounts the dashboards"
        f" {sorted(mounts)}",
    )


def main():
    problems = Problems("dashboards")
    documented = documented_metrics()
    known = (documented if documented is not None else registered_metrics()) | PROMETHEUS_SERIES
    source = (
        "the Metrics table of docs/operations.md"
        if documented is not None
        else "the Rust sources and the new names"
    )
    uid = provisioned_uid(problems)
    seen, panels = set(), 0
    boards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    problems.require(boards, "infra/deploy/grafana/dashboards", "no dashboard")
    rules = DEPLOY / "prometheus" / "alerts.yml"
    alerts = {
        rule["alert"]: rule["expr"]
        for group in load_yaml(rules)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    for path in boards:
        panels += check_dashboard(problems, path, uid, known, seen, alerts)
    check_provider_mount(problems)
    for group in load_yaml(rules)["groups"]:
        for rule in group["rules"]:
            for name in sorted(unknown_metrics(rule["expr"], known)):
                problems.add(
                    f"{rel(rules)} {rule.get('alert')}",
                    f"metric {name} is not exported by any service",
                )
    problems.finish(
        f"{len(boards)} dashboards, {panels} panels on data source {uid!r}; metric names"
        f" checked against {source} ({len(known)} names)"
    )


if __name__ == "__main__":
    main()
