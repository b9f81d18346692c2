"""CPU to receive an object over HTTP in Python: aiohttp (as the S3 adapter's direct GETs use it)
against asyncio streams and a buffered protocol, on uvloop as the gateway runs.

    .venv/bin/python bench/recv_cpu.py [--size 1MiB] [--count 512] [--rounds 3]

A cold read through Hoard receives the object from the UFS before it sends or stores a byte, so
this is a floor under a cold read's CPU that no cache logic adds to. nginx serves the objects as
static files and closes every connection after its response, as moto does (so each GET pays a
TCP connect, as a cold read does against moto). Each way GETs every object once with 32 in
flight, and the CPU of this process (user + system) per GET is printed; the ways alternate
within each round, and the median of the rounds is kept.

- **aiohttp**: a ClientSession as `ufs_adapters/s3_get.py` opens it, the body read with
  `content.read(n)` until it is whole and joined, as `S3Adapter.read_head` reads a page;
- **asyncio streams**: `open_connection`, the request written by hand, `read(-1)` to EOF;
- **buffered protocol**: `asyncio.BufferedProtocol`, the kernel writing straight into one
  preallocated buffer per response (`recv_into`): no copy in user space.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, from anywhere

from bench.get_throughput import BUCKET, SIZES, Size, keys_of, make_data, start_nginx
from bench.procs import ensure_tools

IN_FLIGHT = 32


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Into(asyncio.BufferedProtocol):
    """Receives a whole response into one buffer; `done` gets the byte count at close."""

    def __init__(self, capacity: int, done: asyncio.Future[int]) -> None:
        self.view = memoryview(bytearray(capacity))
        self.got = 0
        self.done = done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.got :]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.got)


def _request(host: str, key: str) -> bytes:
    return f"GET /{BUCKET}/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


async def _aiohttp(base: str, keys: list[str], size: int) -> None:
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def one(key: str) -> None:
            async with session.get(f"{base}/{BUCKET}/{key}") as response:
                parts: list[bytes] = []
                got = 0
                while got < size:
                    chunk = await response.content.read(size - got)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                assert len(data) == size, (key, len(data))

        await _bounded(keys, one)


async def _streams(base: str, keys: list[str], size: int) -> None:
    host, port = base.removeprefix("http://").split(":")

    async def one(key: str) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(_request(host, key))
        response = await reader.read(-1)
        writer.close()
        assert len(response) > size, (key, len(response))

    await _bounded(keys, one)


async def _buffered(base: str, keys: list[str], size: int) -> None:
    host, port = base.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    async def one(key: str) -> None:
        done: asyncio.Future[int] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: _Into(size + 4096, done), host, int(port))
        transport.write(_request(host, key))
        got = await done
        transport.close()
        assert got > size, (key, got)

    await _bounded(keys, one)


async def _bounded(keys: list[str], one: Callable[[str], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def gated(key: str) -> None:
        async with gate:
            await one(key)

    await asyncio.gather(*(gated(k) for k in keys))


WAYS: dict[str, Callable[[str, list[str], int], Coroutine[Any, Any, None]]] = {
    "aiohttp": _aiohttp,
    "asyncio streams": _streams,
    "buffered protocol": _buffered,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1MiB", choices=[s.name for s in SIZES])
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base_size = next(s for s in SIZES if s.name == args.size)
    size = Size(base_size.label, base_size.name, base_size.nbytes, args.count)
    nginx, _ = ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="hoard-recv-cpu-"))
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    try:
        make_data(workdir / "data", [size])
        ufs, base = start_nginx(nginx, workdir, workdir / "data", 1, size.name, keepalive="0")
        try:
            keys = keys_of(size)
            for r in range(args.rounds):
                for way, run in WAYS.items():
                    started, wall = cpu_seconds(), time.perf_counter()
                    uvloop.run(run(base, keys, size.nbytes))
                    cpu = (cpu_seconds() - started) / len(keys)
                    rate = len(keys) * size.nbytes / (time.perf_counter() - wall) / 1e6
                    results[way].append((cpu, rate))
                    print(
                        f"round {r + 1} {way}: {cpu * 1e6:,.0f} µs CPU per GET, {rate:,.0f} MB/s", flush=True
                    )
        finally:
            ufs.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.count} GETs of {size.label} from nginx (connection: close), {IN_FLIGHT} in flight, "
          f"uvloop; CPU of this process per GET, median of {args.rounds} rounds")  # fmt: skip
    first = sorted(results["aiohttp"])[len(results["aiohttp"]) // 2][0]
    for way, runs in results.items():
        cpu, rate = sorted(runs)[len(runs) // 2]
        print(f"  {way:>17}  {cpu * 1e6:7,.0f} µs ({cpu / first:.2f}x)  {rate:7,.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
