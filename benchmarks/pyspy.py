"""py-spy for the heartbeat benchmark: attach to a server for a phase, summarize the profile."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def py_spy_path() -> str | None:
    """py-spy next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def summarize_profile(raw: Path, top: int = 15) -> dict:
    """Top functions by self and total samples from py-spy's raw (collapsed stacks) output."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        self_samples[frames[-1]] += count
        for name in set(frames):
            total_samples[name] += count
    packages: Counter[str] = Counter()
    for name, n in self_samples.items():
        path = name[name.rfind("(") + 1 : -1]
        if "spidi_server/" in path or "spidi_core/" in path:
            group = path[path.find("spidi_") :]
        elif "asyncio/runners.py" in path:
            group = "event loop (uvloop, C)"
        else:
            group = path.split("/")[0] if "/" in path else path
        packages[group] += n
    return {
        "samples": samples,
        "by_package": [(name, n, n / samples * 100) for name, n in packages.most_common(top)]
        if samples
        else [],
        "self": [(name, n, n / samples * 100) for name, n in self_samples.most_common(top)]
        if samples
        else [],
        "total": [(name, n, n / samples * 100) for name, n in total_samples.most_common(top)]
        if samples
        else [],
    }


class PySpy:
    """``py-spy record`` attached to the server from ``start`` until ``stop`` (SIGINT)."""

    def __init__(self, pid: int, out: Path):
        self.pid = pid
        self.out = out  # JSON: the collapsed stacks (a .json name keeps it out of git, like the results)
        self.raw = Path(tempfile.mkdtemp(prefix="spidi-pyspy-")) / "profile.txt"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> bool:
        """Attach; False when py-spy is missing."""
        tool = py_spy_path()
        if tool is None:
            print("  py-spy not found: pip install py-spy", flush=True)
            shutil.rmtree(self.raw.parent, ignore_errors=True)
            return False
        argv = [
            tool,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(self.raw),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(0.5)  # let it attach
        return True

    async def stop(self) -> dict | None:
        """Detach, write the profile, and return its summary."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.to_thread(self.proc.communicate, timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.raw.exists():
            print(f"  py-spy failed ({self.proc.returncode}): {err.decode(errors='replace').strip()[-300:]}")
            return None
        summary = summarize_profile(self.raw)
        lines = self.raw.read_text(errors="replace").splitlines()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(
            json.dumps({"format": "py-spy raw (collapsed stacks)", "pid": self.pid, "lines": lines})
        )
        shutil.rmtree(self.raw.parent, ignore_errors=True)
        summary["file"] = str(self.out)
        return summary


def print_profile(kind: str, phase: str, profile: dict, top: int = 12) -> None:
    """The top functions and packages of a py-spy profile by self time."""
    print(f"\npy-spy, {kind}, {phase}: {profile['samples']} samples of busy time (250/s), {profile['file']}")
    print(f"  {'self %':>7}  function")
    for name, _, pct in profile["self"][:top]:
        print(f"  {pct:7.1f}  {name}")
    print(f"  {'self %':>7}  package / module")
    for name, _, pct in profile["by_package"][:8]:
        print(f"  {pct:7.1f}  {name}")
