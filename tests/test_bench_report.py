"""The heartbeat benchmark's reports: figure table, ratios to the floor, issue-15 targets, markdown summary."""

from __future__ import annotations

import json

from benchmarks import heartbeat_load
from benchmarks.bench_report import figure_rows, markdown_summary, ratios, target_rows


def _run(tree_us: float, node_us: float, connect_s: float, rss: int, **extra) -> dict:
    return {
        "transport": extra.pop("transport", "native"),
        "connections": 10_000,
        "connections_requested": 10_000,
        "connect_failed": 0,
        "connect_s": connect_s,
        "connect_tree_cpu_us_per_conn": extra.pop("connect_us", 120.0),
        "rss_per_conn": rss,
        "result": {
            "offered_rate": 20_000.0,
            "achieved_send_rate": 19_990.0,
            "processed_rate": 19_990.0,
            "match": True,
            "sent": 400_000,
            "skipped": 0,
            "tree_cpu_us_per_hb": tree_us,
            "server_cpu_us_per_hb": node_us,
            "rtt_p99_ms": extra.pop("p99", 4.0),
            "presence_p99_ms": extra.pop("presence", None),
        },
        **extra,
    }


def _doc() -> dict:
    runs = {
        "spidi": _run(9.0, 7.5, 1.5, 3000, presence=80.0),
        "spidi-websockets": _run(40.0, 35.0, 15.0, 19_000, transport="websockets", p99=300.0),
        "bare-uvloop": _run(6.0, 6.0, 0.8, 1000, transport="uvloop (bare)"),
    }
    runs["spidi"]["storm"] = {
        "requested": 10_000,
        "connected": 9_990,
        "all_in": False,
        "seconds": 4.2,
        "failures": {"reset": 10, "timeout": 0},
        "tree_cpu_s": 1.2,
        "tree_cpu_us_per_conn": 120.1,
    }
    return {
        "label": "unit",
        "timestamp": "20261204T201500",
        "command": "python -m benchmarks.heartbeat_load --compare",
        "json_name": "20261204T201500-unit.json",
        "config": {"connections": 10_000, "rooms": 10, "rate": 20_000.0, "duration": 20, "pin": True},
        "host": {
            "cpu_model": "Test CPU",
            "cpus": 2,
            "kernel": "6.1",
            "python": "3.11.7",
            "git_rev": "abc1234",
        },
        "runs": runs,
        "failures": {
            "spidi-native": "RuntimeError: spidi-native exited with 2:\nspidi: configuration error: x"
        },
    }


def test_ratios_to_the_floor():
    doc = _doc()
    out = ratios(doc["runs"])
    assert out["spidi/bare-uvloop"]["tree_cpu_us_per_hb"] == 1.5
    assert out["spidi/bare-uvloop"]["connect_s"] == 1.5 / 0.8
    assert out["spidi/spidi-websockets"]["rss_per_conn"] == 3000 / 19_000
    assert "spidi-picows/bare-uvloop" not in out  # did not run


def test_targets_pass_and_fail_with_values():
    targets = dict(target_rows(_doc()))
    assert targets["CPU per heartbeat (server tree) <= 10 us"] == ["PASS 9.00 us", "FAIL 40.00 us"]
    assert targets["CPU per heartbeat <= 1.6x bare-uvloop"] == ["PASS 1.50x", "FAIL 6.67x"]
    assert targets["RSS per idle connection <= 4 KiB"][0].startswith("PASS 2.93")
    assert targets["RTT p99 < 50 ms"][1].startswith("FAIL 300.0 ms")
    assert targets["presence change -> monitor p99 < 100 ms"] == ["PASS 80.0 ms at 19,990/s", "-"]
    storm = targets["storm: every client in, no reset, < 5 s"]
    assert storm[0].startswith("FAIL 9,990/10,000 in 4.20 s, 10 reset failed") and storm[1] == "-"


def test_markdown_summary_has_machine_command_table_ratios_and_failures():
    text = markdown_summary(_doc())
    assert text.startswith("# Heartbeat load: unit\n")
    assert "- Date: 2026-12-04 20:15:00 UTC" in text
    assert "Test CPU, 2 CPUs, kernel 6.1, Python 3.11.7" in text
    assert "`python -m benchmarks.heartbeat_load --compare`" in text
    assert (
        "**spidi-native did not run**: RuntimeError: spidi-native exited with 2: / spidi: configuration error: x"
        in text
    )
    assert "| figure | spidi | spidi-websockets | bare-uvloop |" in text
    assert "| server tree CPU per heartbeat (us) | 9.00 | 40.00 | 6.00 |" in text
    assert "| storm: reset | 10 | - | - |" in text
    assert "| spidi/bare-uvloop | 1.50 |" in text
    assert "## Issue 15 targets" in text


def test_figure_rows_without_a_window_show_connect_figures_only():
    doc = _doc()
    for run in doc["runs"].values():
        run["result"] = None
    labels = [label for label, _ in figure_rows(doc["runs"])]
    assert "connect time (s)" in labels and "storm: time until all in (s)" in labels
    assert "RTT p99 (ms)" not in labels


def test_storm_run_writes_json_and_markdown(tmp_path, monkeypatch):
    """End to end against the bare uvloop server: a small storm, its JSON and its summary."""
    monkeypatch.setattr(heartbeat_load, "RESULTS_DIR", tmp_path)
    status = heartbeat_load.main(["--storm", "40/20", "--servers", "bare-uvloop", "--no-pin", "--label", "t"])
    assert status == 0
    (json_path,) = tmp_path.glob("*-t.json")
    doc = json.loads(json_path.read_text())
    storm = doc["runs"]["bare-uvloop"]["storm"]
    assert storm["connected"] == storm["requested"] == 40 and storm["all_in"]
    assert doc["config"]["connect_concurrency"] == 20
    text = json_path.with_suffix(".md").read_text()
    assert "--storm 40/20 --servers bare-uvloop --no-pin --label t" in text
    assert "| storm: clients in | 40 / 40 |" in text


def test_find_max_target_uses_the_rate_held():
    doc = _doc()
    doc["config"].update(find_max=True, max_p99_ms=50.0)
    doc["runs"]["spidi"]["max_rate_held"] = 122_000.0
    doc["runs"]["spidi-websockets"]["max_rate_held"] = 30_500.0
    targets = dict(target_rows(doc))
    assert targets[">= 100,000 heartbeats/s held with p99 RTT < 50 ms"] == [
        "PASS 122,000/s held",
        "FAIL 30,500/s held",
    ]
    doc["config"]["max_p99_ms"] = float("inf")  # --gen-ceiling: no RTT limit, no such claim
    assert ">= 100,000 heartbeats/s held with p99 RTT < 50 ms" not in dict(target_rows(doc))
