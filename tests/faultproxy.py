"""A fault-injecting HTTP/1.1 proxy on loopback, for tests that put a misbehaving network between
Hoard (or the S3 adapter) and moto server.

    with FaultProxy(moto_endpoint) as proxy:
        adapter = await S3Adapter.open("s3://b", {"endpoint_url": proxy.url, "max_attempts": "0", ...})
        proxy.fail_next(3)                        # the next 3 requests get 503 SlowDown
        proxy.reset_next(after_bytes=3 * MiB)     # the next GET's connection is reset mid-body
        proxy.stall_next(2.0, after_bytes=MiB)    # the next GET's body pauses for 2 s
        proxy.latency = 0.05                      # every request waits 50 ms first
        proxy.set_down(True)                      # every connection is reset, live ones too
        proxy.exchanges()                         # what was asked and what happened, in order

The proxy runs its own event loop in a daemon thread, so it keeps working while the test's loop
is blocked, and the controls are plain thread-safe calls. It parses just enough HTTP to see each
request on a keep-alive connection: the request line and headers, Content-Length and chunked
bodies (both ways), `Expect: 100-continue`, and responses without a body (HEAD, 1xx, 204, 304).
Each client connection gets its own upstream connection, and the two close together.

Two things clients do on their own: botocore retries unless `max_attempts` is "0" (it counts
retries, not tries), and aiohttp sends an idempotent request (GET, HEAD, PUT, DELETE) a second time
when a kept-alive connection is reset under it, so a reset or "down" may cost two requests.

Bounded by construction: it listens on 127.0.0.1 only, every read, write and pause is bounded by
`io_timeout` (or the stall asked for), and `stop()` cancels whatever is still running.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

PIECE = 64 * 1024
HEAD_LIMIT = 1024 * 1024
NO_BODY_STATUSES = frozenset({204, 304})

FaultKind = Literal["fail", "reset", "stall"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the proxy saw. `headers` has lower-case names; `body_bytes` counts the response
    body bytes that went to the client; `fault` names what the proxy did to it, if anything."""

    method: str
    target: str
    headers: dict[str, str]
    status: int | None  # None when no response head reached the client
    fault: str | None
    body_bytes: int

    @property
    def range_start(self) -> int | None:
        """First byte of a `Range: bytes=N-...` request; None without a Range header."""
        value = self.headers.get("range", "")
        if not value.startswith("bytes="):
            return None
        first = value[len("bytes=") :].split("-", 1)[0]
        return int(first) if first.isdigit() else None


@dataclass(slots=True)
class _Fault:
    kind: FaultKind
    remaining: int
    method: str | None  # None matches any method
    after_bytes: int | None = None  # reset/stall: response body bytes sent first; None = before the head
    seconds: float = 0.0  # stall
    hard: bool = True  # reset: RST (True) or a clean FIN (False)
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."


@dataclass(slots=True)
class _Record:
    method: str
    target: str
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None
    body_bytes: int = 0
    done: bool = False  # the last response byte was handed to the socket

    def freeze(self) -> Exchange:
        return Exchange(
            self.method, self.target, dict(self.headers), self.status, self.fault, self.body_bytes
        )


@dataclass(slots=True)
class _Head:
    first_line: str
    headers: list[tuple[str, str]]
    raw: bytes

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def has_token(self, name: str, token: str) -> bool:
        return any(
            token in (t.strip().lower() for t in value.split(","))
            for key, value in self.headers
            if key.lower() == name
        )


class _Closed(Exception):
    """The peer went away, or a fault ended the connection on purpose."""


@dataclass(slots=True, eq=False)
class _Conn:
    """One client connection and the upstream connection that serves it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    up_reader: asyncio.StreamReader | None = None
    up_writer: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[object]] = field(default_factory=set)

    def abort(self, hard: bool = True) -> None:
        if hard:
            _abort(self.writer)
        else:
            self.writer.close()
        if self.up_writer is not None:
            _abort(self.up_writer)
            self.up_reader = self.up_writer = None


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), dropping anything unsent: a "connection reset by peer"."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    """An HTTP/1.1 proxy to `upstream` (`http://host:port`) that injects faults on request."""

    def __init__(self, upstream: str, *, io_timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._down = False
        self._records: list[_Record] = []
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._refused = 0
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # reported to start() if it happens before ready
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"fault proxy did not start: {failure}")
        return self

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed in between
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- controls (any thread) ------------------------------------------------------------------

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, seconds)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        code: str = "SlowDown",
        message: str = "Please reduce your request rate.",
        method: str | None = None,
    ) -> None:
        """Answer the next `n` requests (of `method`, if given) with an S3 error, without asking
        upstream. The request body is read and dropped, and the connection stays open."""
        self._add(_Fault("fail", n, method, status=status, code=code, message=message))

    def reset_next(
        self, after_bytes: int, *, count: int = 1, hard: bool = True, method: str | None = "GET"
    ) -> None:
        """Forward `after_bytes` bytes of the next `count` response bodies, then cut the connection:
        with RST when `hard` (bytes still unsent are lost, as with a real reset), else with FIN."""
        self._add(_Fault("reset", count, method, after_bytes=after_bytes, hard=hard))

    def stall_next(
        self, seconds: float, *, after_bytes: int | None = 0, count: int = 1, method: str | None = "GET"
    ) -> None:
        """Pause the next `count` responses for `seconds` after `after_bytes` body bytes, then go on.
        `after_bytes=None` pauses before the response head (a first-byte stall)."""
        self._add(_Fault("stall", count, method, after_bytes=after_bytes, seconds=seconds))

    @property
    def down(self) -> bool:
        with self._lock:
            return self._down

    def set_down(self, down: bool) -> None:
        """Down: live connections are reset now and new ones are reset on accept (the client sees
        "connection reset"); up again: connections are served. Returns once that holds. Call it
        from any thread but the proxy's own."""
        with self._lock:
            self._down = down
        if down and self._loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._abort_all(), self._loop)
            future.result(timeout=10)

    def clear(self) -> None:
        """Back to a clean proxy: no faults, no latency, up, no records, counters at zero (except
        that requests of an earlier test still running stay in `in_flight`)."""
        with self._lock:
            self._faults.clear()
            self._latency = 0.0
            self._down = False
            self._records.clear()
            self._requests = self._refused = 0
            self._max_in_flight = self._in_flight

    def reset_counters(self) -> None:
        """Forget the records and counters (faults and modes stay)."""
        with self._lock:
            self._records.clear()
            self._requests = self._refused = 0
            self._max_in_flight = self._in_flight

    # --- observations (any thread) --------------------------------------------------------------

    def exchanges(self, method: str | None = None) -> list[Exchange]:
        """Requests seen so far, oldest first (those still running show what happened so far)."""
        with self._lock:
            return [r.freeze() for r in self._records if method is None or r.method == method]

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Most requests in progress at once (head received, response not yet fully sent)."""
        with self._lock:
            return self._max_in_flight

    @property
    def refused(self) -> int:
        """Connections reset on accept while down."""
        with self._lock:
            return self._refused

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def _add(self, fault: _Fault) -> None:
        if fault.remaining > 0:
            with self._lock:
                self._faults.append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is None or fault.method == method:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @contextmanager
    def _counted(self, record: _Record) -> Iterator[None]:
        with self._lock:
            self._records.append(record)
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            self._finish(record)

    def _finish(self, record: _Record) -> None:
        """The request is no longer in flight. Called just before its last byte is written: the
        client, in another thread, may act on that byte at once (count in_flight, send its next
        request on another connection), and must find this request finished already."""
        with self._lock:
            if not record.done:
                record.done = True
                self._in_flight -= 1

    # --- the server (proxy thread) --------------------------------------------------------------

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            tasks = [t for conn in self._conns for t in conn.tasks]
            await self._abort_all()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)

    async def _abort_all(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            with self._lock:
                self._refused += 1
            _abort(writer)
            return
        conn = _Conn(reader, writer)
        task = asyncio.current_task()
        assert task is not None
        conn.tasks.add(task)
        self._conns.add(conn)
        try:
            while await self._one_request(conn):
                pass
        except (
            _Closed,
            OSError,
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the peer went away, broke the protocol or was too slow; a fault cut it
        finally:
            self._conns.discard(conn)
            conn.abort(hard=False)

    def _bounded(self) -> asyncio.Timeout:
        return asyncio.timeout(self.io_timeout)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the proxy stops."""
        if seconds > 0 and self._stopping is not None:
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except TimeoutError:
                return
            raise _Closed("stopping")

    async def _stall(self, conn: _Conn, seconds: float) -> None:
        """Hold a response for `seconds`, but give up as soon as the client has gone."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if conn.reader.at_eof() or conn.reader.exception() is not None:
                raise _Closed("the client left during a stall")
            await self._pause(min(left, 0.02))

    async def _read_head(self, reader: asyncio.StreamReader) -> _Head | None:
        try:
            async with self._bounded():
                raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return None  # a clean close between requests
        lines = raw.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        return _Head(lines[0], headers, raw)

    async def _one_request(self, conn: _Conn) -> bool:
        """Serve one request on `conn`; False when the connection is to be closed."""
        head = await self._read_head(conn.reader)
        if head is None:
            return False
        method, target, _version = (head.first_line.split(" ", 2) + ["", ""])[:3]
        record = _Record(method, target, {k.lower(): v for k, v in head.headers})
        with self._counted(record):
            await self._pause(self.latency)
            fault = self._take_fault(method)
            if fault is not None and fault.kind == "fail":
                record.fault = f"fail {fault.status} {fault.code}"
                return await self._answer_error(conn, head, method, record, fault)
            return await self._forward(conn, head, method, record, fault)

    # --- injected errors ------------------------------------------------------------------------

    async def _answer_error(
        self, conn: _Conn, head: _Head, method: str, record: _Record, fault: _Fault
    ) -> bool:
        expects = head.has_token("expect", "100-continue")
        if not expects:  # read and drop the body so the connection stays usable
            async for _ in self._request_body(conn.reader, head):
                pass  # dropped
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
            "<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
        ).encode()
        lines = [
            f"HTTP/1.1 {fault.status} {fault.code}",
            "Content-Type: application/xml",
            f"Content-Length: {len(body)}",
            "x-amz-request-id: faultproxy",
            # Without the body, the connection cannot be reused: the client may still send it.
            "Connection: close" if expects else "Connection: keep-alive",
        ]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if method != "HEAD":
            payload += body
        # The record is complete before the client can see the answer, so tests can read it at once.
        record.status = fault.status
        record.body_bytes = 0 if method == "HEAD" else len(body)
        self._finish(record)
        conn.writer.write(payload)
        async with self._bounded():
            await conn.writer.drain()
        return not expects

    # --- forwarding -----------------------------------------------------------------------------

    async def _upstream(self, conn: _Conn) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if conn.up_reader is None or conn.up_writer is None or conn.up_reader.at_eof():
            if conn.up_writer is not None:
                conn.up_writer.close()
            async with self._bounded():
                conn.up_reader, conn.up_writer = await asyncio.open_connection(
                    *self.upstream, limit=HEAD_LIMIT
                )
        return conn.up_reader, conn.up_writer

    async def _forward(
        self, conn: _Conn, head: _Head, method: str, record: _Record, fault: _Fault | None
    ) -> bool:
        up_reader, up_writer = await self._upstream(conn)
        up_writer.write(head.raw)
        # The body goes up while the response is awaited: a client that sent `Expect:
        # 100-continue` waits for the upstream's 100 before it sends the body.
        sender = asyncio.create_task(self._send_body(conn.reader, head, up_writer))
        answer = asyncio.create_task(self._final_head(conn, up_reader))
        conn.tasks |= {sender, answer}
        refused_early = False
        try:
            await asyncio.wait({sender, answer}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and sender.exception() is not None:
                raise _Closed(f"request body: {sender.exception()!r}")
            response = await answer
            if head.has_token("expect", "100-continue") and not sender.done():
                refused_early = True  # answered before the body: the client may never send it
            else:
                async with self._bounded():
                    await sender
        finally:
            for task in (sender, answer):
                task.cancel()
                conn.tasks.discard(task)
        if fault is not None and fault.kind == "stall" and fault.after_bytes is None:
            record.fault = f"stall {fault.seconds}s before the head"
            await self._stall(conn, fault.seconds)
            fault = None
        status = _status(response)
        record.status = status
        framed = await self._copy_response(conn, response, method, status, up_reader, record, fault)
        if (
            refused_early
            or not framed
            or response.has_token("connection", "close")
            or head.has_token("connection", "close")
        ):
            return False
        return not response.first_line.startswith("HTTP/1.0") or response.has_token(
            "connection", "keep-alive"
        )

    async def _final_head(self, conn: _Conn, up_reader: asyncio.StreamReader) -> _Head:
        """The upstream's final response head; 1xx heads (100 Continue) go to the client on the way."""
        while True:
            response = await self._read_head(up_reader)
            if response is None:
                raise _Closed("upstream closed before responding")
            if _status(response) // 100 != 1:
                return response
            conn.writer.write(response.raw)

    async def _send_body(
        self, reader: asyncio.StreamReader, head: _Head, up_writer: asyncio.StreamWriter
    ) -> None:
        async with self._bounded():
            await up_writer.drain()
        async for piece, _ in self._request_body(reader, head):
            up_writer.write(piece)
            async with self._bounded():
                await up_writer.drain()

    def _request_body(self, reader: asyncio.StreamReader, head: _Head) -> AsyncIterator[tuple[bytes, bool]]:
        if head.has_token("transfer-encoding", "chunked"):
            return self._chunked(reader)
        return self._sized(reader, int(head.get("content-length") or 0))

    async def _copy_response(
        self,
        conn: _Conn,
        response: _Head,
        method: str,
        status: int,
        up_reader: asyncio.StreamReader,
        record: _Record,
        fault: _Fault | None,
    ) -> bool:
        """Forward the response body; False when it was delimited by the upstream closing."""
        if method == "HEAD" or status in NO_BODY_STATUSES:
            pieces: AsyncIterator[tuple[bytes, bool]] | None = None
        elif response.has_token("transfer-encoding", "chunked"):
            pieces = self._chunked(up_reader)
        elif response.get("content-length") is not None:
            length = int(response.get("content-length") or 0)
            pieces = self._sized(up_reader, length) if length else None
        else:
            pieces = self._until_eof(up_reader)
        if pieces is None:
            self._finish(record)
        conn.writer.write(response.raw)
        if pieces is None:
            async with self._bounded():
                await conn.writer.drain()
            return True
        async for piece, last in pieces:
            if fault is not None and fault.after_bytes is not None:
                room = fault.after_bytes - record.body_bytes
                if room < len(piece):
                    await self._send(conn, piece[: max(room, 0)], record, last=False)
                    piece = piece[max(room, 0) :]
                    if fault.kind == "reset":
                        await self._cut(conn, record, fault)
                    record.fault = f"stall {fault.seconds}s after {record.body_bytes} bytes"
                    await self._stall(conn, fault.seconds)
                    fault = None
            await self._send(conn, piece, record, last=last)
        return not (
            response.get("content-length") is None and not response.has_token("transfer-encoding", "chunked")
        )

    async def _send(self, conn: _Conn, data: bytes, record: _Record, *, last: bool) -> None:
        record.body_bytes += len(data)
        if last:
            self._finish(record)
        conn.writer.write(data)
        async with self._bounded():
            await conn.writer.drain()

    async def _cut(self, conn: _Conn, record: _Record, fault: _Fault) -> None:
        record.fault = f"{'reset' if fault.hard else 'closed'} after {record.body_bytes} bytes"
        # What was sent leaves the process first (a RST may still drop what the kernel holds).
        async with self._bounded():
            while conn.writer.transport.get_write_buffer_size():
                await asyncio.sleep(0.001)
        conn.abort(hard=fault.hard)
        raise _Closed(record.fault)

    # --- body framings --------------------------------------------------------------------------

    # Each yields (raw bytes, whether they end the body).

    async def _sized(self, reader: asyncio.StreamReader, length: int) -> AsyncIterator[tuple[bytes, bool]]:
        left = length
        while left > 0:
            async with self._bounded():
                piece = await reader.read(min(left, PIECE))
            if not piece:
                raise _Closed(f"body ended {left} bytes early")
            left -= len(piece)
            yield piece, left == 0

    async def _chunked(self, reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, bool]]:
        """Raw chunked framing, passed through as it is (sizes, extensions and trailers)."""
        while True:
            async with self._bounded():
                line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            yield line, False
            if size == 0:
                while True:
                    async with self._bounded():
                        trailer = await reader.readuntil(b"\r\n")
                    yield trailer, trailer == b"\r\n"
                    if trailer == b"\r\n":
                        return
            async with self._bounded():
                data = await reader.readexactly(size + 2)
            yield data, False

    async def _until_eof(self, reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, bool]]:
        while True:
            async with self._bounded():
                piece = await reader.read(PIECE)
            if not piece:
                return
            yield piece, False  # the end shows only when the upstream closes


def _status(head: _Head) -> int:
    parts = head.first_line.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
