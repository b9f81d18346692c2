"""py-spy on a server's process tree while a workload runs, for the benchmarks' --profile options:
the top frames by self and by inclusive time, idle threads left out."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.procs import Server, log, snapshot, subtree

# Leaf frames of a thread with nothing to do: idle thread-pool workers waiting for a job (a busy
# worker's stack goes deeper, into the job).
_IDLE_LEAVES = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "Queue.get (queue.py",
    "_worker (concurrent/futures/thread.py",
    "Connection._recv (multiprocessing/connection.py",  # uvicorn's supervisor pipe: a blocked read
)
# Entry frames every busy sample of their thread has; left out of the inclusive list.
_ENTRY_FRAMES = (
    "<module> (",
    "main (gateway/cli.py",
    "cmd_serve (gateway/cli.py",
    "run (uvicorn/main.py",
    "Server.run (uvicorn/server.py",
    "asyncio_run (uvicorn/_compat.py",
    "Thread._bootstrap",
    "Thread.run (threading.py",
    "WorkerThread.run (anyio",
    "_bootstrap (<frozen",
    "spawn_main (",
    "_main (multiprocessing",
    "BaseProcess._bootstrap",
    "BaseProcess.run",
    "subprocess_started (uvicorn",
)


def py_spy(server: Server, out: Path, drive: Callable[[], object]) -> str:
    """py-spy on `server`'s whole process tree while `drive()` runs; returns the top frames."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        return "--profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped"
    argv = [
        pyspy,
        "record",
        "--pid",
        str(server.proc.pid),
        "--subprocesses",
        "--rate",
        "250",
        "--function",  # one entry per function, not per line
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    log(f"profiling: {shlex.join(argv)}")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let py-spy attach
        drive()
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = spy.communicate(timeout=60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(timeout=10)
    if not out.exists():
        return f"py-spy wrote nothing: {err.strip()[-500:]}"
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        if frames[-1].startswith(_IDLE_LEAVES):
            idle += n
            continue
        busy += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            if not frame.startswith(_ENTRY_FRAMES):
                inclusive[frame] += n
    if busy == 0:
        return f"py-spy recorded no busy samples: {err.strip()[-500:]}"
    lines = [
        f"py-spy, Hoard during one more run: {busy} busy samples ({idle} more of idle threads left out);",
        "a leaf of Runner.run is time in the event loop's own C code (uvloop: polling, socket I/O).",
        "  self time:",
    ]
    lines += [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in self_time.most_common(15)]
    lines.append("  inclusive:")
    shown = [(f, n) for f, n in inclusive.most_common(40) if n < 0.99 * busy]  # not the entry frames
    lines += [f"    {100 * n / busy:5.1f}%  {frame}" for frame, n in shown[:25]]
    return "\n".join(lines)


def perf_during(server: Server, data: Path, what: str, workload: Callable[[], object]) -> str:
    """perf record of `server`'s processes while `workload` runs: time by shared object, the
    system calls and page faults it goes to, and the hottest symbols."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (Debian: apt-get install linux-perf); skipped"
    pids = ",".join(str(p) for p in sorted(subtree(snapshot(), server.proc.pid)))
    argv = [perf, "record", "-g", "-F", "999", "-o", str(data), "-p", pids]
    log(f"perf: {shlex.join(argv)}")
    rec = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let perf attach
        workload()
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait(timeout=10)

    def report(*how: str) -> list[str]:
        out = subprocess.run(
            [perf, "report", "-i", str(data), "--stdio", "-g", "none", *how],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
        return [line.rstrip() for line in out.splitlines() if line.strip() and not line.startswith("#")]

    calls = [
        line
        for line in report("--children", "--sort", "sym")
        if "__x64_sys_" in line or line.endswith("] exc_page_fault")
    ]
    lines = [f"perf, Hoard's workers during {what} (kernel included):"]
    lines += ["  self time by shared object:", *report("--no-children", "--sort", "dso")[:5]]
    lines += ["  system calls and page faults, inclusive:", *calls[:8]]
    lines += ["  self time, hottest symbols:", *report("--no-children", "--sort", "sym")[:14]]
    return "\n".join(lines)
