"""Process and machine figures from /proc for the heartbeat benchmark: CPU and RSS of a server's
process tree, per-CPU busy time, and the kernel's TCP counters that explain slow connects."""

from __future__ import annotations

import contextlib
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/<pid>/stat, clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def server_pids(root: int) -> list[int]:
    """``root`` and its descendants that run Spidi's node code (workers), not Redis, PostgreSQL
    or the history writer: what "server CPU" means in worker mode too."""
    children = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if pid == root or (b"spidi_server" in cmdline and b"history.writer" not in cmdline):
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants: the node, its redis-server, PostgreSQL (postmaster and
    backends) and the history writer, so "server tree CPU" is everything the node runs."""
    children = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def proc_cpu_seconds_with_reaped(pid: int) -> float:
    """utime + stime of ``pid`` plus cutime + cstime: the CPU of its children that ended and
    were waited for (redis-server's AOF rewrite child, a PostgreSQL worker that exited)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def tree_cpu_sample(root: int) -> dict[int, float]:
    """CPU seconds so far of every process of ``root``'s tree, by pid, with each one's reaped
    children's (a child born and gone between two samples is never listed itself)."""
    sample = {}
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):  # ended between listing and reading
            sample[pid] = proc_cpu_seconds_with_reaped(pid)
    return sample


def process_role(pid: int, redis_pid: int | None = None) -> str:
    """What a process of a Spidi server's tree is: "redis", "writer", "postgres" or "node"."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return "node"
    if pid == redis_pid or b"redis-server" in cmdline:
        return "redis"
    if b"history.writer" in cmdline:
        return "writer"
    if b"postgres" in cmdline.split(b"\0", 1)[0]:  # the postmaster's path, or a backend's title
        return "postgres"
    return "node"


def tree_cpu_by_role(
    before: dict[int, float], after: dict[int, float], redis_pid: int | None
) -> dict[str, float]:
    """``tree_cpu_delta`` split by ``process_role`` (the roles read now, at the second sample)."""
    out: dict[str, float] = {}
    for pid, cpu in after.items():
        role = process_role(pid, redis_pid)
        out[role] = out.get(role, 0.0) + cpu - before.get(pid, 0.0)
    return out


def tree_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree spent between two samples. A process born in between counts whole;
    one that ended in between counts through its parent's reaped time (its whole life, so a
    long-lived one would count its time before the first sample too: PostgreSQL backends and
    the writer live as long as the node, redis-server's AOF rewrite children only ~0.2 s)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# Kernel TCP counters that explain slow or failed connects: a full accept queue (overflow, drop)
# makes the client's SYN or ACK go unanswered, and the retransmission comes 1 s later.
KERNEL_TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "SyncookiesSent",
    "TCPReqQFullDrop",
    "TCPTimeouts",
)


def kernel_tcp_counters() -> dict[str, int]:
    """The ``KERNEL_TCP_COUNTERS`` of ``/proc/net/netstat`` (TcpExt; system-wide, so other
    traffic on the machine counts too)."""
    try:
        with open("/proc/net/netstat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return {k: int(table[k]) for k in KERNEL_TCP_COUNTERS if k in table}
    return {}


def cpu_busy_seconds() -> dict[int, float]:
    """Busy seconds so far of every CPU (``/proc/stat``: all but idle and iowait)."""
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return out


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def safe_read(fn, pid: int):
    """``fn(pid)``, or 0 when the process ended between listing and reading."""
    try:
        return fn(pid)
    except (OSError, ValueError, IndexError):
        return 0  # the process ended between listing and reading
