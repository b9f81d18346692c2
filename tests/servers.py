"""Real servers for tests: moto in server mode on loopback, started as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def wait_workers(url: str, count: int, timeout: float = 60.0) -> set[int]:
    """Ask Hoard's `url` (/_hoard/ready) on a fresh connection each time until `count` workers
    have answered (its `worker` field); their pids. A worker still starting gets no connections,
    so a client that connects before then has all its connections on the others. Empty: a Hoard
    older than the field (bench/cold_cpu.py runs old revisions). RuntimeError after `timeout`."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(seen)} of {count} answered {url}")
        try:
            worker = httpx.get(url, timeout=5.0).json().get("worker")
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if worker is None:
            return set()
        seen.add(int(worker))
    return seen


@contextmanager
def moto_server(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start `moto_server` on a free loopback port; yields its endpoint URL. `env` adds to (or
    overrides) the server's environment, e.g. MOTO_RECORDER_FILEPATH for its request recorder."""
    port = free_port()
    server_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc=proc)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
