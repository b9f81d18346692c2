"""gateway/workers.py in one process: the sockets it binds and the slots workers claim."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uvicorn.config import STARTUP_FAILURE

from gateway import workers


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    socks = workers.listen("127.0.0.1", 0, 3)
    yield socks
    for s in socks:
        s.close()


def test_listen_binds_every_socket_to_one_port(sockets: list[socket.socket]) -> None:
    ports = {s.getsockname() for s in sockets}
    assert len(ports) == 1 and next(iter(ports))[1] != 0
    assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
    assert all(s.get_inheritable() for s in sockets)


@pytest.mark.parametrize("reuseport", [False, True])  # True: another gateway's worker sockets
def test_listen_refuses_a_port_another_server_holds(reuseport: bool) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuseport))
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            workers.listen("127.0.0.1", other.getsockname()[1], 2)


def test_each_claim_takes_the_next_free_slot_then_all(sockets: list[socket.socket], tmp_path: Path) -> None:
    held = len(workers._held)
    try:
        # Each claim opens the lock file anew, as another worker process would: the locks exclude.
        assert workers.claim(sockets, tmp_path / "slots") == [sockets[0]]
        assert workers.claim(sockets, tmp_path / "slots") == [sockets[1]]
        assert workers.claim(sockets, tmp_path / "slots") == [sockets[2]]
        assert workers.claim(sockets, tmp_path / "slots") == sockets  # all taken: accept from all
        os.close(workers._held.pop(held + 1))  # slot 1's worker dies: the kernel drops its lock
        assert workers.claim(sockets, tmp_path / "slots") == [sockets[1]]
    finally:
        while len(workers._held) > held:
            os.close(workers._held.pop())


async def failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose start-up fails, for the supervisor test below (imported by its workers)."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "this app never starts"})


def test_a_worker_that_fails_to_start_fails_the_gateway(tmp_path: Path) -> None:
    """uvicorn's supervisor stops when a worker fails to start and returned as from a clean stop:
    `hoard serve --workers 2` exited 0 when it never served."""
    script = (
        "import sys, uvicorn; from pathlib import Path; from gateway import workers; "
        "workers.run(uvicorn.Config('tests.gateway.test_workers:failing_app', host='127.0.0.1', "
        "port=0, workers=2, lifespan='on', log_level='critical'), Path(sys.argv[1]))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "slots")], cwd=root, capture_output=True, timeout=60
    )
    assert done.returncode == STARTUP_FAILURE, done.stderr.decode()
