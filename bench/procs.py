"""The benchmarks' machinery for tools and processes: nginx, wrk and Hoard found (or installed),
servers started and stopped as process groups, and the CPU time of process trees and of the
machine, from /proc."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- tools ---------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def ensure_tools() -> tuple[str, str]:
    """nginx and wrk, installed from Debian's packages if missing."""
    if not (find_tool("nginx") and find_tool("wrk")):
        if os.geteuid() != 0:
            sys.exit("nginx and wrk are needed: run as root, or `apt-get install -y nginx wrk` first")
        log("installing nginx and wrk (apt-get)")
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq nginx wrk",
            shell=True,
            check=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx is None or wrk is None:
        sys.exit("nginx or wrk is still missing after apt-get install")
    return nginx, wrk


def hoard_argv() -> tuple[list[str], dict[str, str]]:
    """The installed `hoard` beside this Python, else the CLI run from the source tree."""
    script = Path(sys.executable).parent / "hoard"
    if script.exists():
        return [str(script)], {}
    return [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"], {
        "PYTHONPATH": str(REPO)
    }


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def hoard_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return f"{rev}{'+dirty' if dirty else ''}" if rev else "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes and their CPU time ----------------------------------------------------------------


Snapshot = dict[int, tuple[str, int, int]]  # pid: (command name, ppid, utime + stime in ticks)


def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone
    close = raw.rindex(")")  # the command name may hold spaces and parentheses
    fields = raw[close + 2 :].split()
    return raw[raw.index("(") + 1 : close], int(fields[1]), int(fields[11]) + int(fields[12])


def snapshot() -> Snapshot:
    """Every process's CPU time (all its threads), from /proc/<pid>/stat."""
    stats: Snapshot = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def subtree(snap: Snapshot, root: int) -> set[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in snap.items():
        children.setdefault(ppid, []).append(pid)
    tree: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in snap and pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def cpu_delta(before: Snapshot, after: Snapshot, pids: set[int]) -> float:
    """Seconds of CPU that `pids` used between two snapshots; those born in between count from zero."""
    ticks = sum(after[p][2] - (before[p][2] if p in before else 0) for p in pids if p in after)
    return ticks / CLK_TCK


def busiest_other(before: Snapshot, after: Snapshot, exclude: set[int]) -> str:
    """The process outside `exclude` that used the most CPU between the snapshots, for warnings."""
    deltas = {p: after[p][2] - (before[p][2] if p in before else 0) for p in after if p not in exclude}
    if not deltas:
        return "?"
    pid = max(deltas, key=lambda p: deltas[p])
    return f"{after[pid][0]} (pid {pid}, {deltas[pid] / CLK_TCK:.1f}s)"


class Server:
    """A server process in its own session, so that it and its workers stop together."""

    def __init__(self, name: str, argv: list[str], logfile: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self._log: IO[bytes] = logfile.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # The leader is gone; its workers may not be.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()


def machine_ticks() -> tuple[int, int]:
    """(busy, interrupts) CPU ticks of all cores from /proc/stat: busy is user, nice, system and
    steal time; interrupts is irq and softirq time, where much of loopback TCP's work is done
    without being charged to any process."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + steal, irq + softirq


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
