"""gateway/workers.py in one process: the sockets it binds and the slots workers claim."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

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
