"""Prometheus alerts and the Grafana dashboard: valid PromQL over metrics archiverd exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from archiverd.metrics import Metrics
from tests.deploy.tools import ROOT, tool

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
# Prometheus's own per-target scrape health: the only way to see a daemon that is down.
PROMETHEUS_SERIES = {"up"}
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip


def exported_names() -> set[str]:
    """Every series name a fresh daemon's registry can expose (with client suffixes)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(sample.name for sample in family.samples)
        suffixes = {"counter": ("_total", "_created"), "info": ("_info",), "gauge": ("",)}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (not functions, keywords, labels or numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, regexes
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, and the template variables."""
    dash = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["expr"])
        for panel in dash["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert query, variable["definition"]
            found.append((f"${variable['name']}", query.group(1)))
    return found


def test_metric_name_extraction_sees_through_promql() -> None:
    """The name extractor finds series names but not functions, labels, numbers or variables."""
    expr = (
        'sum by (reason) (increase(archiverd_upload_failures_total{reason=~"a|b",'
        ' instance=~"$instance"}[$__rate_interval])) > 1e9 and on(instance) up offset 1h'
        " / time() - archiverd_spool_bytes"
    )
    assert metric_names(expr) == {"archiverd_upload_failures_total", "up", "archiverd_spool_bytes"}


def test_registry_names_include_client_suffixes() -> None:
    """prometheus_client adds _total to counters and _info to Info; gauges keep their name."""
    names = exported_names()
    assert "archiverd_upload_failures_total" in names
    assert "archiverd_upload_failures" not in names
    assert "archiverd_build_info" in names
    assert "archiverd_spool_bytes" in names


def test_alert_rules_use_only_exported_metrics() -> None:
    """Every series an alert reads is one archiverd exports (or Prometheus's `up`)."""
    exported = exported_names()
    used: set[str] = set()
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - exported - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']} uses {sorted(unknown)}"
        used |= names
    for needed in (
        "archiverd_oldest_pending_segment_age_seconds",
        "archiverd_spool_bytes",
        "archiverd_spool_full",
        "archiverd_upload_failures_total",
        "up",
    ):
        assert needed in used


def test_alert_rules_are_well_formed() -> None:
    """Each alert has a unique name, a severity and a summary and description."""
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_dashboard_uses_only_exported_metrics() -> None:
    """Every panel query reads only series archiverd exports."""
    exported = exported_names()
    exprs = _dashboard_exprs()
    assert len(exprs) > 10
    used: set[str] = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, title
        assert not names - exported, f"panel {title!r} uses {sorted(names - exported)}"
        used |= names
    assert "archiverd_pack_seconds_total" in used
    assert "archiverd_source_bytes_read_total" in used


def test_dashboard_is_importable_json() -> None:
    """The dashboard is one JSON object with unique panel ids and a Prometheus datasource input."""
    dash = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "archiverd"
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = tool("promtool", "apt-get install prometheus")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_alert_rules() -> None:
    """promtool check rules parses every expression and annotation template."""
    done = _promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_accepts_dashboard_queries(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL (checked as recording rules by promtool)."""
    rules = [
        {
            "record": f"archiverd_dashboard:query_{n}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for n, (_, expr) in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def _alert(name: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for r in _rules() if r["alert"] == name)
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": {**label, "severity": severity}} for label in labels],
    }


A = {"job": "archiverd", "instance": "node-a:9464"}
SAWTOOTH = " ".join(["0 100 200"] * 100)  # a spool emptied by every upload


def _series(name: str, node: str, values: str, **labels: str) -> dict[str, str]:
    """One promtool input series of `name` scraped from node-<node>."""
    label_text = "".join(f',{key}="{value}"' for key, value in labels.items())
    selector = f'{name}{{job="archiverd",instance="node-{node}:9464"{label_text}}}'
    return {"series": selector, "values": values}


ALERT_CASES: list[tuple[str, list[dict[str, str]], list[dict[str, Any]]]] = [
    (
        "uploads overdue after 2 h + 15 m of pending data, not before",
        [_series("archiverd_oldest_pending_segment_age_seconds", "a", "0+60x200")],
        [_alert("ArchiverdUploadsOverdue", "125m"), _alert("ArchiverdUploadsOverdue", "140m", A)],
    ),
    (
        "spool full for 5 m fires; a brief full spool does not",
        [
            _series("archiverd_spool_full", "a", "0 0 1x30"),
            _series("archiverd_spool_full", "b", "0 0 1 0x30"),
        ],
        [_alert("ArchiverdSpoolFull", "4m"), _alert("ArchiverdSpoolFull", "20m", A)],
    ),
    (
        "access denied fires at once with its reason; throttling alone does not",
        [
            _series("archiverd_upload_failures_total", "a", "0+1x5", reason="access_denied"),
            _series("archiverd_upload_failures_total", "b", "0+5x5", reason="throttled"),
        ],
        [
            _alert(
                "ArchiverdUploadDenied",
                "5m",
                {"instance": "node-a:9464", "reason": "access_denied"},
            )
        ],
    ),
    (
        "failures with no success fire; failures with successes do not",
        [
            _series("archiverd_upload_failures_total", "a", "0+1x200", reason="network"),
            _series("archiverd_segments_uploaded_total", "a", "0x200"),
            _series("archiverd_upload_failures_total", "b", "0+1x200", reason="network"),
            _series("archiverd_segments_uploaded_total", "b", "0+1x200"),
        ],
        [_alert("ArchiverdUploadFailing", "120m", {"instance": "node-a:9464"})],
    ),
    (
        "a spool that never empties and grows fires; one drained each upload does not",
        [
            _series("archiverd_spool_bytes", "a", "1000+100x300"),
            _series("archiverd_spool_bytes", "b", SAWTOOTH),
        ],
        [_alert("ArchiverdSpoolGrowing", "30m"), _alert("ArchiverdSpoolGrowing", "100m", A)],
    ),
    (
        "no confirmed upload for 6 h with objects waiting fires",
        [
            _series("archiverd_last_upload_success_timestamp_seconds", "a", "60x450"),
            _series("archiverd_spool_objects", "a", "3x450"),
        ],
        [
            _alert("ArchiverdNoSuccessfulUpload", "300m"),
            _alert("ArchiverdNoSuccessfulUpload", "400m", A),
        ],
    ),
    (
        "archive lag past its limit for 10 m fires; below it, or with no limit, it does not",
        [
            _series("archiverd_archive_lag_seconds", "a", "0+60x200"),
            _series("archiverd_archive_lag_limit_seconds", "a", "4500x200"),
            _series("archiverd_archive_lag_seconds", "b", "0+60x200"),
            _series("archiverd_archive_lag_limit_seconds", "b", "0x200"),
            _series("archiverd_archive_lag_seconds", "c", "0+60x30 0+60x30 0+60x30 0+60x30"),
            _series("archiverd_archive_lag_limit_seconds", "c", "4500x200"),
        ],
        [_alert("ArchiverdArchiveLagHigh", "80m"), _alert("ArchiverdArchiveLagHigh", "100m", A)],
    ),
    (
        "a target down for 5 m fires",
        [_series("up", "a", "1 1 0x10")],
        [_alert("ArchiverdDown", "3m"), _alert("ArchiverdDown", "10m", A)],
    ),
]


@pytest.mark.parametrize(("case", "series", "checks"), ALERT_CASES, ids=[c[0] for c in ALERT_CASES])
def test_alerts_fire_on_promtool_series(
    tmp_path: Path, case: str, series: list[dict[str, str]], checks: list[dict[str, Any]]
) -> None:
    """promtool test rules: each alert fires on the failure it names and stays quiet otherwise."""
    # Same rules, annotations dropped: promtool compares annotations verbatim and those are
    # prose for humans (their templates are checked by `promtool check rules`).
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    test = tmp_path / "alerts_test.yaml"
    test.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
            }
        )
    )
    done = _promtool("test", "rules", str(test))
    assert done.returncode == 0, f"{case}:\n{done.stdout}{done.stderr}"


def _used_by_alerts_and_dashboard() -> set[str]:
    used: set[str] = set()
    for rule in _rules():
        used |= metric_names(rule["expr"])
    for _, expr in _dashboard_exprs():
        used |= metric_names(expr)
    return used


def stale_and_unshown(exported: set[str], families: set[str]) -> tuple[set[str], set[str]]:
    """(series the alerts/dashboard read that are not exported, families nothing reads)."""
    used = _used_by_alerts_and_dashboard()
    stale = used - exported - PROMETHEUS_SERIES
    unshown = {
        family
        for family in families
        if not any(name == family or name.startswith(f"{family}_") for name in used)
    }
    return stale, unshown


def _families() -> set[str]:
    return {family.name for family in Metrics().registry.collect()}


def test_every_exported_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    """No metric the code exports goes unread: a new or renamed one needs a panel or alert."""
    stale, unshown = stale_and_unshown(exported_names(), _families())
    assert stale == set()
    assert unshown == set()


def test_a_renamed_metric_fails_the_check() -> None:
    """Renaming a metric in the code (simulated on the registry's names) is caught both ways."""
    renamed = {
        name.replace("archiverd_spool_bytes", "archiverd_spool_size_bytes")
        for name in exported_names()
    }
    families = {
        name.replace("archiverd_spool_bytes", "archiverd_spool_size_bytes") for name in _families()
    }
    stale, unshown = stale_and_unshown(renamed, families)
    assert stale == {"archiverd_spool_bytes"}
    assert unshown == {"archiverd_spool_size_bytes"}
