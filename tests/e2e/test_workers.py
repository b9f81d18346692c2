"""Worker processes, each with a listening socket of its own (gateway/workers.py): a burst of new
connections is spread over the workers, a killed worker's connections wait for its replacement
instead of failing, and the cache's stats are the whole gateway's whichever worker answers."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from gateway.cli import AdminClient
from tests.e2e.cache_env import wait_until
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, Gateway, start_gateway
from tests.servers import wait_workers


def _worker_of(sock: socket.socket) -> int:
    """The pid of the worker that accepted `sock`, from /_hoard/ready asked on it."""
    sock.sendall(b"GET /_hoard/ready HTTP/1.1\r\nHost: hoard\r\n\r\n")
    reply = b""
    while b"}" not in reply:
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return int(json.loads(body)["worker"])


def _burst(gw: Gateway, n: int) -> Counter[int]:
    """Open `n` connections at once, then ask each which worker holds it."""
    port = int(gw.endpoint.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30.0) for _ in range(n)]
    try:
        return Counter(_worker_of(s) for s in socks)
    finally:
        for s in socks:
            s.close()


def test_a_burst_of_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    try:
        workers = wait_workers(f"{gw.endpoint}/_hoard/ready", 2)
        for _ in range(3):
            # With one shared socket the first worker to wake took the whole burst (16 of 16 in
            # most cold passes of bench/cache_throughput.py). By a hash of the addresses, each
            # worker gets some: all 32 on one is a 2^-31 chance.
            spread = _burst(gw, 32)
            assert set(spread) == workers, spread
            assert sum(spread.values()) == 32
        assert sorted(p.name for p in (gw.config_path.parent / "meta" / "workers").iterdir()) == [
            "slot-0.lock",
            "slot-1.lock",
        ]
    finally:
        gw.stop()


def test_a_killed_workers_connections_wait_for_its_replacement(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    try:
        s3 = gw.client()
        s3.create_bucket(Bucket="killed")
        body = os.urandom(100_000)
        s3.put_object(Bucket="killed", Key="obj", Body=body)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "killed", "Key": "obj"})
        victim, survivor = sorted(wait_workers(f"{gw.endpoint}/_hoard/ready", 2))
        os.kill(victim, signal.SIGKILL)
        # Right away, before the supervisor has replaced it: every read on a new connection gets
        # its bytes, those hashed to the dead worker's socket once its replacement takes that
        # socket over (12 reads all hashed to the survivor: a 2^-12 chance).
        for _ in range(12):
            got = httpx.get(url, timeout=60.0)  # a fresh connection each
            assert got.status_code == 200 and got.content == body
        workers = wait_workers(f"{gw.endpoint}/_hoard/ready", 2)
        assert survivor in workers and victim not in workers
    finally:
        gw.stop()


def test_cache_stats_add_up_every_workers_reads_whichever_worker_answers(tmp_path: Path) -> None:
    """20 reads on 20 connections (so both workers serve some; all on one is a 2^-19 chance) of
    10 one-page objects: every answer of the admin API, from either worker, counts all 20 pages
    and all 10 stored. Before, each worker answered with the reads it had served itself."""
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    try:
        wait_workers(f"{gw.endpoint}/_hoard/ready", 2)
        s3 = gw.client()
        s3.create_bucket(Bucket="stats")
        bodies = {f"o{i}": os.urandom(50_000 + i) for i in range(10)}
        for key, body in bodies.items():
            s3.put_object(Bucket="stats", Key=key, Body=body)
        urls = {
            k: s3.generate_presigned_url("get_object", Params={"Bucket": "stats", "Key": k}) for k in bodies
        }
        for _ in range(2):
            for key, url in urls.items():
                got = httpx.get(url, timeout=30.0)  # a fresh connection each
                assert got.status_code == 200 and got.content == bodies[key]
        total = sum(len(b) for b in bodies.values())

        def stats() -> dict[str, Any]:
            with AdminClient(gw.endpoint, ACCESS_KEY, SECRET_KEY) as admin:  # a fresh connection
                result: dict[str, Any] = admin.cache_stats()
            return result

        wait_until(lambda: stats()["hits"] + stats()["misses"] == 20, "every worker's counts")
        for _ in range(8):
            st = stats()
            assert st["hits"] + st["misses"] == 20 and st["misses"] >= 10, st
            assert st["bytes_from_cache"] + st["bytes_from_ufs"] == 2 * total, st
            assert st["pages"] == 10 and st["used"] > total, st
    finally:
        gw.stop()


def _one_connection_per_worker(gw: Gateway, workers: set[int]) -> dict[int, http.client.HTTPConnection]:
    """A kept-alive connection held by each worker (found by opening a burst and asking)."""
    port = int(gw.endpoint.rsplit(":", 1)[1])
    held: dict[int, http.client.HTTPConnection] = {}
    for _ in range(10):
        for sock in [socket.create_connection(("127.0.0.1", port), timeout=30.0) for _ in range(8)]:
            worker = _worker_of(sock)
            if worker in held:
                sock.close()
                continue
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)
            conn.sock = sock
            held[worker] = conn
        if set(held) == workers:
            return held
    for conn in held.values():
        conn.close()
    raise AssertionError(f"no connection to each of {workers}: {set(held)}")


def test_a_write_through_one_worker_is_seen_by_the_other_at_once(tmp_path: Path) -> None:
    """Each worker keeps stat and list answers in its own memory. A write through one worker
    dropped only that worker's: the other answered 404 for the key just written, the old ETag
    for an object just overwritten and a listing without the new key, for up to the metadata
    max age (a minute by default). S3 reads after writes are consistent."""
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    conns: dict[int, http.client.HTTPConnection] = {}
    try:
        conns = _one_connection_per_worker(gw, wait_workers(f"{gw.endpoint}/_hoard/ready", 2))
        a, b = conns.values()
        s3 = gw.client()
        s3.create_bucket(Bucket="rws")
        s3.put_object(Bucket="rws", Key="dir/old", Body=b"old")
        s3.put_object(Bucket="rws", Key="dir/gone", Body=b"gone")

        def ask(
            conn: http.client.HTTPConnection, method: str, op: str, body: bytes = b"", **params: Any
        ) -> tuple[int, bytes, str]:
            url = s3.generate_presigned_url(op, Params={"Bucket": "rws", **params})
            conn.request(method, url.removeprefix(gw.endpoint), body=body or None)
            reply = conn.getresponse()
            return reply.status, reply.read(), reply.getheader("ETag") or ""

        def listed(conn: http.client.HTTPConnection) -> list[str]:
            status, xml, _ = ask(conn, "GET", "list_objects_v2", Prefix="dir/")
            assert status == 200
            return [k.decode() for k in re.findall(rb"<Key>([^<]*)</Key>", xml)]

        for conn in (a, b):  # what each worker now holds in memory
            assert ask(conn, "HEAD", "head_object", Key="dir/new")[0] == 404
            assert ask(conn, "GET", "get_object", Key="dir/old")[1] == b"old"
            assert ask(conn, "HEAD", "head_object", Key="dir/gone")[0] == 200
            assert listed(conn) == ["dir/gone", "dir/old"]
        assert ask(a, "PUT", "put_object", b"new", Key="dir/new")[0] == 200
        status, _, etag = ask(a, "PUT", "put_object", b"old, rewritten", Key="dir/old")
        assert status == 200
        assert ask(a, "DELETE", "delete_object", Key="dir/gone")[0] == 204

        assert ask(b, "GET", "get_object", Key="dir/new")[:2] == (200, b"new")
        assert ask(b, "HEAD", "head_object", Key="dir/old")[::2] == (200, etag)
        assert ask(b, "GET", "get_object", Key="dir/old")[1] == b"old, rewritten"
        assert ask(b, "HEAD", "head_object", Key="dir/gone")[0] == 404
        assert listed(b) == ["dir/new", "dir/old"]
    finally:
        for conn in conns.values():
            conn.close()
        gw.stop()


def test_a_worker_killed_in_the_middle_of_a_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Its hidden temporary file, as large as the upload so far, stayed in the mount for good.
    The worker that replaces it removes it as it opens the mount."""
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    try:
        workers = wait_workers(f"{gw.endpoint}/_hoard/ready", 2)
        s3 = gw.client()
        s3.create_bucket(Bucket="killed")
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "killed", "Key": "big"})
        port = int(gw.endpoint.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30.0) as sock:
            host = gw.endpoint.removeprefix("http://")  # signed into the URL
            head = f"PUT {url.removeprefix(gw.endpoint)} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {64 << 20}\r\n\r\n"
            sock.sendall(head.encode() + os.urandom(8 << 20))  # an eighth of it, then nothing

            def writer() -> int | None:
                for pid in workers:
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            if ".hoard-tmp-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                                return pid
                return None

            wait_until(lambda: writer() is not None, "the PUT's temporary file open in a worker")
            os.kill(writer() or 0, signal.SIGKILL)
        temps = lambda: list((gw.data_dir / "killed").glob(".hoard-tmp-*"))  # noqa: E731
        assert temps()  # left by the killed worker, until its replacement opens the mount
        wait_workers(f"{gw.endpoint}/_hoard/ready", 2)
        wait_until(lambda: not temps(), "the killed worker's temporary file removed")
        assert s3.list_objects_v2(Bucket="killed").get("KeyCount") == 0
    finally:
        gw.stop()
