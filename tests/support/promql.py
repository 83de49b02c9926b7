"""PromQL in the operations files: the queries they hold, and the metric and label names each
query reads.

Syntax is left to the real parser (``promtool check rules`` or a running Prometheus); this
module only finds names in queries that already parse. A name is a metric when it stands
outside braces, brackets, quotes and grouping clauses and is neither a function (followed by
``(``) nor a PromQL keyword.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
}  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$model": ".*"}


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, Grafana's variables replaced by values."""
    dashboard: dict[str, Any] = json.loads(path.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((panel["title"], expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        if match:
            out.append((f"variable {variable['name']}", f"count by ({match[2]}) ({match[1]})"))
    return out


def rule_queries(path: Path) -> list[tuple[str, str]]:
    """(alert or record name, PromQL) for every rule of a rule file."""
    rules = yaml.safe_load(path.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names the query selects."""
    text = _without_strings(expr)
    text = MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in IDENT.finditer(text):
        name = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or name.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name) or (
            match.start() > 0 and text[match.start() - 1].isdigit()
        ):
            continue
        names.add(name)
    return names


def label_names(expr: str) -> set[str]:
    """Label names the query matches on or groups by."""
    text = _without_strings(expr)
    labels = set()
    for inside in MATCHERS.findall(text):
        labels.update(m.group(1) for m in re.finditer(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)", inside))
    for _, inside in GROUPING.findall(text):
        labels.update(name.strip() for name in inside.split(",") if name.strip())
    return labels


def as_rule_file(queries: list[tuple[str, str]]) -> str:
    """The queries as recording rules, so that ``promtool check rules`` parses each one."""
    rules = [{"record": f"check:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    return yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, sort_keys=False)
