"""Reporting of the heartbeat load benchmark: the figure table, ratios, issue-15 targets, markdown.

Everything here reads the results document that ``heartbeat_load.py`` writes as JSON (``runs`` per
server kind, each with its connect figures, RSS, ``result`` = the table's window, ``storm``), so a
summary can be rebuilt from a stored JSON file and the writer can be tested without a server.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

FLOOR = "bare-uvloop"
# (server, reference) pairs whose ratios a run reports, when both ran.
COMPARE_PAIRS = (
    ("spidi", FLOOR),
    ("spidi-native", FLOOR),
    ("spidi-websockets", FLOOR),
    ("spidi-picows", FLOOR),
    ("spidi-pure", FLOOR),
    ("spidi", "spidi-websockets"),
    ("spidi", "spidi-picows"),
    ("spidi-websockets", "bare-websockets"),
    ("spidi-picows", "bare-picows"),
    ("spidi", "spidi-pure"),
    ("spidi-2w", "spidi"),
    ("spidi-picows-2w", "spidi-picows"),
)
# Figures compared by the ratios: (key in the run document or its result, label). Lower is better
# for all but the processed rate.
RATIO_FIGURES = (
    ("tree_cpu_us_per_hb", "CPU/heartbeat (tree)"),
    ("server_cpu_us_per_hb", "CPU/heartbeat (node)"),
    ("connect_tree_cpu_us_per_conn", "CPU/connect (tree)"),
    ("connect_s", "connect time"),
    ("rss_per_conn", "RSS/connection"),
    ("processed_rate", "processed rate"),
)
MIB = 1024 * 1024


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    """A figure for a table: ``none`` for None, strings as they are."""
    if value is None:
        return none
    if isinstance(value, str):
        return value
    return format(value, spec)


def figure(run: dict, key: str):
    """A figure of a run document: from its table window (``result``) or its connect/RSS info."""
    result = run.get("result") or {}
    return result[key] if key in result else run.get(key)


def figure_rows(runs: dict[str, dict], find_max: bool = False) -> list[tuple[str, list[str]]]:
    """The table: one row per figure, one column per server (``runs``: kind -> run document)."""
    rows: list[tuple[str, list[str]]] = []
    docs = list(runs.values())
    results = [d.get("result") or {} for d in docs]

    def add(label: str, values: list) -> None:
        rows.append((label, [v if isinstance(v, str) else fmt(v) for v in values]))

    add("transport", [d.get("transport") or "-" for d in docs])
    add(
        "connections ready",
        [f"{d.get('connections', 0):,} / {d.get('connections_requested', 0):,}" for d in docs],
    )
    add("connect time (s)", [fmt(d.get("connect_s"), ".2f") for d in docs])
    add("connect rate (conn/s)", [d.get("connect_rate") for d in docs])
    add(
        "connect latency p50 / p99 (ms)",
        [_pair(d.get("connect_p50_ms"), d.get("connect_p99_ms")) for d in docs],
    )
    add("connect failures", [_failures(d.get("connect_failures")) for d in docs])
    add(
        "kernel: listen overflows / SYN retransmits",
        [
            f"{(d.get('connect_kernel_tcp') or {}).get('ListenOverflows', '-')} / "
            f"{(d.get('connect_kernel_tcp') or {}).get('TCPSynRetrans', '-')}"
            for d in docs
        ],
    )
    add("generator CPU in connect phase (s)", [fmt(d.get("gen_connect_cpu_s"), ".2f") for d in docs])
    add("node CPU per connect (us)", [d.get("connect_cpu_us_per_conn") for d in docs])
    add("server tree CPU per connect (us)", [d.get("connect_tree_cpu_us_per_conn") for d in docs])
    add("redis CPU per connect (us)", [d.get("connect_redis_cpu_us_per_conn") for d in docs])
    add(
        "writer / PostgreSQL CPU per connect (us)",
        [
            _pair(
                *((d.get("connect_cpu_us_per_conn_by_process") or {}).get(r) for r in ("writer", "postgres"))
            )
            if d.get("connect_cpu_us_per_conn_by_process")
            else "-"
            for d in docs
        ],
    )
    add("server RSS before (MiB)", [fmt((d.get("rss_before") or 0) / MIB, ".1f") for d in docs])
    add("server RSS idle conns (MiB)", [fmt((d.get("rss_idle") or 0) / MIB, ".1f") for d in docs])
    add(
        "RSS per idle connection, node (KiB)", [fmt((d.get("rss_per_conn") or 0) / 1024, ".2f") for d in docs]
    )
    add(
        "RSS per idle connection, redis (KiB)",
        [
            fmt(None if d.get("redis_rss_per_conn") is None else d["redis_rss_per_conn"] / 1024, ".2f")
            for d in docs
        ],
    )
    if any(d.get("storm") for d in docs):
        storms = [d.get("storm") or {} for d in docs]
        add("storm: clients in", [f"{s['connected']:,} / {s['requested']:,}" if s else "-" for s in storms])
        add("storm: time until all in (s)", [fmt(s.get("seconds"), ".2f") for s in storms])
        for kind in ("reset", "timeout", "refused", "rejected", "closed", "other"):
            add(f"storm: {kind}", [(s.get("failures") or {}).get(kind, 0) if s else None for s in storms])
        add("storm: server tree CPU (s)", [fmt(s.get("tree_cpu_s"), ".2f") for s in storms])
        add("storm: server tree CPU per client (us)", [s.get("tree_cpu_us_per_conn") for s in storms])
    if not any(results):
        return rows
    if find_max:
        add("max rate held (hb/s)", [d.get("max_rate_held") for d in docs])
        add("ramp stopped because", [d.get("stop_reason") or "-" for d in docs])
    add("offered rate (hb/s)", [r.get("offered_rate") for r in results])
    add("achieved send rate (hb/s)", [r.get("achieved_send_rate") for r in results])
    add(
        "generator kept the offered rate",
        [
            f"{r['achieved_send_rate'] / r['offered_rate'] * 100:.1f}% "
            + ("OK" if r["achieved_send_rate"] >= 0.99 * r["offered_rate"] else "LOW")
            if r.get("offered_rate")
            else "-"
            for r in results
        ],
    )
    add("sent (skipped)", [f"{r.get('sent', 0):,} ({r.get('skipped', 0):,})" if r else "-" for r in results])
    add("server processed", [r.get("processed_total") for r in results])
    add("processed == sent", [("MATCH" if r.get("match") else "MISMATCH") if r else "-" for r in results])
    add("processed rate in window (hb/s)", [r.get("processed_rate") for r in results])
    for q in ("p50", "p95", "p99", "max"):
        add(f"RTT {q} (ms)", [fmt(r.get(f"rtt_{q}_ms"), ".2f") for r in results])
    add(
        "RTT samples (lost)",
        [f"{r.get('rtt_samples', 0):,} ({r.get('rtt_lost', 0)})" if r else "-" for r in results],
    )
    add("presence change to monitor p50 (ms)", [fmt(r.get("presence_p50_ms"), ".1f") for r in results])
    add("presence change to monitor p99 (ms)", [fmt(r.get("presence_p99_ms"), ".1f") for r in results])
    add("presence samples", [r.get("presence_samples") for r in results])
    add("server tree CPU (%)", [fmt(r.get("tree_cpu_pct"), ".1f") for r in results])
    add("server tree CPU per heartbeat (us)", [fmt(r.get("tree_cpu_us_per_hb"), ".2f") for r in results])
    add("node CPU (%)", [fmt(r.get("server_cpu_pct"), ".1f") for r in results])
    add("node CPU per heartbeat (us)", [fmt(r.get("server_cpu_us_per_hb"), ".2f") for r in results])
    add(
        "CPU-bound ceiling est. (hb/s)",
        [1e6 / r["tree_cpu_us_per_hb"] if r.get("tree_cpu_us_per_hb") else None for r in results],
    )
    add("redis CPU (%)", [fmt(r.get("redis_cpu_pct"), ".1f") for r in results])
    add("redis CPU per heartbeat (us)", [fmt(r.get("redis_cpu_us_per_hb"), ".2f") for r in results])
    add("redis commands/s", [r.get("redis_commands_per_s") for r in results])
    add("server RSS after (MiB)", [fmt((d.get("rss_after") or 0) / MIB, ".1f") for d in docs])
    add("generator CPU (%)", [fmt(r.get("gen_cpu_pct"), ".1f") for r in results])
    add(
        "other load on server / generator CPU (%)",
        [_pair(r.get("other_on_server_cpu_pct"), r.get("other_on_gen_cpu_pct")) for r in results],
    )
    add("generator CPU per heartbeat (us)", [fmt(r.get("gen_cpu_us_per_hb"), ".2f") for r in results])
    add("generator ceiling est. (hb/s)", [r.get("gen_ceiling_hb_s") for r in results])
    add("server errors", [r.get("server_errors") for r in results])
    add("generator errors", [sum((d.get("generator_errors") or {}).values()) for d in docs])
    return rows


def _pair(a, b) -> str:
    return "-" if a is None and b is None else f"{fmt(a, '.1f')} / {fmt(b, '.1f')}"


def _failures(failures: dict | None) -> str:
    failed = {kind: n for kind, n in (failures or {}).items() if n}
    return ", ".join(f"{n} {kind}" for kind, n in failed.items()) if failed else "0"


def ratios(runs: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """server / reference for the ``RATIO_FIGURES`` of every ``COMPARE_PAIRS`` pair that ran.

    The reference's CPU per heartbeat is its whole tree too (a bare server is one process), so
    ``tree_cpu_us_per_hb`` against the floor is the issue's "≤ 1.6x the raw-uvloop floor".
    """
    out = {}
    for kind, ref in COMPARE_PAIRS:
        base, other = runs.get(kind), runs.get(ref)
        if not base or not other:
            continue
        row = {}
        for key, _ in RATIO_FIGURES:
            a, b = figure(base, key), figure(other, key)
            row[key] = a / b if a and b else None
        out[f"{kind}/{ref}"] = row
    return out


def print_table(header: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """Print a plain-text table with a first label column."""
    widths = [max(len(header[0]), *(len(label) for label, _ in rows))]
    for i in range(1, len(header)):
        widths.append(max(len(header[i]), *(len(values[i - 1]) for _, values in rows)))
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))
    print(line)
    print("-" * len(line))
    for label, values in rows:
        print("  ".join([label.ljust(widths[0]), *(v.rjust(widths[i + 1]) for i, v in enumerate(values))]))


def ratio_rows(comparison: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The ratio table's header and rows."""
    header = ["ratio (server / reference)", *(label for _, label in RATIO_FIGURES)]
    return header, [
        (pair, [fmt(v.get(key), ".2f") for key, _ in RATIO_FIGURES]) for pair, v in comparison.items()
    ]


# -- issue 15's targets ---------------------------------------------------------------------------


def _check(value, ok, text: str) -> str:
    if value is None:
        return "-"
    return f"{'PASS' if ok(value) else 'FAIL'} {text}"


def target_rows(doc: dict) -> list[tuple[str, list[str]]]:
    """Issue 15's targets, one column per Spidi kind that ran: PASS/FAIL with the measured value.

    A target measured at another scale than the issue's (e.g. connect time with C below 10,000)
    still shows its value: the scenario line of the summary says what was run.
    """
    runs = {k: v for k, v in doc.get("runs", {}).items() if k.startswith("spidi")}
    floor = doc.get("runs", {}).get(FLOOR)
    floor_hb = figure(floor, "tree_cpu_us_per_hb") if floor else None
    rows = []

    def row(label: str, fn) -> None:
        values = [fn(run) for run in runs.values()]
        if any(v != "-" for v in values):
            rows.append((label, values))

    row(
        "CPU per heartbeat (server tree) <= 10 us",
        lambda r: _check(
            figure(r, "tree_cpu_us_per_hb"),
            lambda v: v <= 10,
            f"{fmt(figure(r, 'tree_cpu_us_per_hb'), '.2f')} us",
        ),
    )
    row(
        f"CPU per heartbeat <= 1.6x {FLOOR}",
        lambda r: _check(
            _div(figure(r, "tree_cpu_us_per_hb"), floor_hb),
            lambda v: v <= 1.6,
            f"{fmt(_div(figure(r, 'tree_cpu_us_per_hb'), floor_hb), '.2f')}x",
        ),
    )
    row(
        "RTT p99 < 50 ms",
        lambda r: _check(
            figure(r, "rtt_p99_ms"),
            lambda v: v < 50,
            f"{fmt(figure(r, 'rtt_p99_ms'), '.1f')} ms at {fmt(figure(r, 'processed_rate'))}/s",
        ),
    )
    cfg = doc.get("config") or {}
    if cfg.get("find_max") and (cfg.get("max_p99_ms") or 0) <= 50:
        row(
            ">= 100,000 heartbeats/s held with p99 RTT < 50 ms",
            lambda r: _check(
                r.get("max_rate_held"), lambda v: v >= 100_000, f"{fmt(r.get('max_rate_held'))}/s held"
            ),
        )
    row(
        f"connects (CONNECT, 2 SUBSCRIBE, HELLO) < 2 s at {cfg.get('connect_concurrency', 100)} in flight",
        lambda r: _check(
            None if r.get("storm") else r.get("connect_s"),
            lambda v: v < 2 and r.get("connect_failed", 0) == 0,
            f"{fmt(r.get('connect_s'), '.2f')} s for {fmt(r.get('connections_requested'))}",
        ),
    )
    row(
        "server CPU per connection <= 150 us",
        lambda r: _check(
            r.get("connect_tree_cpu_us_per_conn"),
            lambda v: v <= 150,
            f"{fmt(r.get('connect_tree_cpu_us_per_conn'))} us",
        ),
    )
    row(
        "RSS per idle connection <= 4 KiB",
        lambda r: _check(
            r.get("rss_per_conn"),
            lambda v: v <= 4096,
            f"{fmt((r.get('rss_per_conn') or 0) / 1024, '.2f')} KiB",
        ),
    )
    row(
        "presence change -> monitor p99 < 100 ms",
        lambda r: _check(
            figure(r, "presence_p99_ms"),
            lambda v: v < 100,
            f"{fmt(figure(r, 'presence_p99_ms'), '.1f')} ms at {fmt(figure(r, 'processed_rate'))}/s",
        ),
    )
    row(
        "storm: every client in, no reset, < 5 s",
        lambda r: _check(
            r.get("storm"),
            lambda s: s["connected"] == s["requested"] and s["seconds"] < 5,
            _storm_text(r.get("storm")),
        ),
    )
    return rows


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "?"


def _div(a, b):
    return a / b if a is not None and b else None


def _storm_text(storm: dict | None) -> str:
    if not storm:
        return ""
    return f"{storm['connected']:,}/{storm['requested']:,} in {storm['seconds']:.2f} s, {_failures(storm.get('failures'))} failed"


# -- the markdown summary --------------------------------------------------------------------------


def host_info(root: Path) -> dict:
    """Where the numbers were taken: CPU, kernel, Python, git revision of ``root``."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "spidi_core", "spidi_server"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", None
    try:
        from spidi_core import HAVE_EXTENSIONS
    except ImportError:
        HAVE_EXTENSIONS = None  # noqa: N806
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_rev": rev,
        "server_code_modified": dirty,  # uncommitted changes under spidi_core/ or spidi_server/
        "spidi_extensions_built": HAVE_EXTENSIONS,
    }


def markdown_table(header: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """A GitHub markdown table (pipes in cells escaped)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([cell(label), *(cell(v) for v in values)]) + " |" for label, values in rows]
    return lines


def markdown_summary(doc: dict) -> str:
    """The short markdown summary of a results document (committed as the run's evidence)."""
    cfg = doc.get("config", {})
    host = doc.get("host", {})
    runs = doc.get("runs", {})
    stamp = doc.get("timestamp", "")
    date = (
        f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"
        if len(stamp) >= 15
        else stamp
    )
    modified = (
        " (with uncommitted changes under spidi_core/ or spidi_server/)"
        if host.get("server_code_modified")
        else ""
    )
    pinned = (
        f"server tree on CPU {cfg.get('server_cpu')}, generator on CPU {cfg.get('gen_cpu')}"
        if cfg.get("pin")
        else "not pinned"
    )
    if cfg.get("storm"):
        mode = f"storm {cfg['storm']}: {cfg.get('connections'):,} clients, {cfg.get('connect_concurrency'):,} in flight"
    else:
        # A find-max step lasts --step-seconds, not --duration.
        seconds = cfg.get("step_seconds") if cfg.get("find_max") else cfg.get("duration")
        mode = "find-max ramp (per step)" if cfg.get("find_max") else "fixed rate"
        mode = (
            f"{cfg.get('connections', 0):,} connections in {cfg.get('rooms')} rooms "
            f"({cfg.get('connect_concurrency')} connecting at once), {cfg.get('rate', 0):,.0f} heartbeats/s "
            f"for {seconds} s after {cfg.get('warmup')} s warm-up, {mode}"
        )
    lines = [
        f"# Heartbeat load: {doc.get('label', '')}",
        "",
        f"- Date: {date} UTC",
        f"- Machine: {host.get('cpu_model') or '?'}, {host.get('cpus')} CPUs, kernel {host.get('kernel')}, "
        f"Python {host.get('python')}; Spidi extensions built: {host.get('spidi_extensions_built')}",
        f"- Load average (1/5/15 min) at start / end: {_load(host.get('loadavg_start'))} / "
        f"{_load(host.get('loadavg_end'))}",
        f"- Code: `{host.get('git_rev') or '?'}`{modified}",
        f"- Command: `{doc.get('command', '')}`",
        f"- Scenario: {mode}; {pinned}",
        f"- Results JSON (not committed): `{doc.get('json_name', '')}`",
    ]
    failures = doc.get("failures") or {}
    for kind, why in failures.items():
        parts = [ln.strip() for ln in (why or "").splitlines() if ln.strip()]
        lines.append(
            f"- **{kind} did not run**: {' / '.join(parts[:1] + parts[-1:] if len(parts) > 1 else parts)[:400]}"
        )
    if runs:
        lines += ["", "## Figures", ""]
        lines += markdown_table(["figure", *runs], figure_rows(runs, bool(cfg.get("find_max"))))
    comparison = doc.get("ratios") or ratios(runs)
    if comparison:
        lines += ["", f"## Ratios (server / reference; {FLOOR} is the floor)", ""]
        lines += markdown_table(*ratio_rows(comparison))
    targets = target_rows(doc)
    if targets:
        spidi = [k for k in runs if k.startswith("spidi")]
        lines += ["", "## Issue 15 targets", ""]
        lines += markdown_table(["target", *spidi], targets)
    return "\n".join(lines) + "\n"
