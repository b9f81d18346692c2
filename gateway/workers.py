"""Worker processes that each accept from a listening socket of their own (SO_REUSEPORT).

uvicorn's supervisor binds one socket and every worker accepts from it. On a burst of new
connections the worker whose event loop wakes first accepts the whole backlog (uvloop accepts
until the queue is empty): in ad hoc counts during `bench/cache_throughput.py`'s cold pass of
64 MiB objects, the connections the client opened at once often all went to one worker, whose
core and write lane then did all the work. Here the supervisor (still uvicorn's, restarts and
health checks included) binds one SO_REUSEPORT socket per worker, and the kernel spreads new
connections over them by a hash of their addresses, as nginx's `reuseport` does.

Each worker claims one socket by an exclusive lock on `slot-N.lock` under `lock_dir`, released by
the kernel when the worker dies, so its replacement takes the same socket. Connections that
arrive at a dead worker's socket wait in its backlog (the supervisor keeps it open) for the
replacement: a lost worker delays them, it does not refuse them. A worker that finds every slot
taken (a replacement started before its predecessor stopped: uvicorn's SIGHUP restart) accepts from
all of them, as uvicorn's workers always do.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

log = logging.getLogger("uvicorn.error")

LOCK_DIR_ENV = "HOARD_WORKER_SLOTS"
_held: list[int] = []  # a worker's slot lock: never closed, the kernel releases it at exit


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets bound to (host, port) with SO_REUSEPORT, inheritable (for the workers).
    Port 0: the port the kernel picks for the first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SO_REUSEPORT lets every process of this user bind the port: a second gateway started on it
    # would silently take half of the new connections. A socket without it cannot bind a port
    # anyone holds, so one is bound (and closed) first: a port in use is refused, as uvicorn's
    # own bind refuses it.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def claim(sockets: list[socket.socket], lock_dir: Path) -> list[socket.socket]:
    """In a worker: the socket of the first free slot (its lock held for the worker's life), or
    all of them if every slot is taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, sock in enumerate(sockets):
        fd = os.open(lock_dir / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        return [sock]
    return sockets


class SlotProcess(multiprocess.Process):
    """A uvicorn worker that serves the socket of the slot it claims."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover (child)
        if sockets and len(sockets) > 1:
            sockets = claim(sockets, Path(os.environ[LOCK_DIR_ENV]))
        super().target(sockets)


def run(config: uvicorn.Config, lock_dir: Path) -> None:
    """Serve `config` (an import string app, config.workers > 1) with a socket per worker."""
    try:
        sockets = listen(config.host, config.port, config.workers)
    except OSError as exc:  # as uvicorn's own bind: the port is taken, the address not ours
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        raise SystemExit(STARTUP_FAILURE) from exc
    os.environ[LOCK_DIR_ENV] = str(lock_dir)  # the workers inherit the environment
    # uvicorn's supervisor makes its workers as `Process(config, sockets)` of its module: they are
    # SlotProcess here (in this process only, the supervisor; tests/e2e/test_workers.py fails if a
    # uvicorn release stops making workers that way).
    multiprocess.Process = SlotProcess  # type: ignore[misc]
    supervisor = multiprocess.Multiprocess(config, sockets=sockets)
    try:
        supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        # uvicorn's supervisor stops when a worker fails to start, and returns as from a clean
        # stop: the exit status must say that the gateway never started, as one worker's does.
        raise SystemExit(STARTUP_FAILURE)
