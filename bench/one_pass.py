"""The one-pass client of the cache benchmarks: every URL of a list read exactly once by
`concurrency` aiohttp connections from this process, every byte checked, with the CPU time of the
server, of its UFS and of the machine meanwhile."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.get_throughput import Measurement, Size, WrkResult, fmt_rate, hasher, keys_of
from bench.procs import CLK_TCK, Server, cpu_delta, log, machine_ticks, snapshot, subtree


@dataclass
class Row:
    m: Measurement
    note: str = ""  # extra detail (moto's CPU during a cold pass, ...)


def rows_of(measurements: Sequence[Measurement]) -> list[Row]:
    return [Row(m) for m in measurements]


async def read_once(
    base: str, paths: Sequence[str], keys: Sequence[str], digests: dict[str, str], concurrency: int
) -> tuple[int, list[float], list[str]]:
    queue = list(zip(paths, keys, strict=True))
    queue.reverse()
    latencies: list[float] = []
    errors: list[str] = []
    total = 0
    # aiohttp, not httpx: httpcore's pool scans every kept-alive connection on each request, which
    # made this client, not the server, the bottleneck against a keep-alive server (3.0 ms of
    # client CPU per 4 KiB GET from Hoard against 1.7 ms from moto, which closes each connection).
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300.0)
    async with aiohttp.ClientSession(
        base, connector=connector, timeout=timeout, auto_decompress=False
    ) as client:

        async def worker() -> None:
            nonlocal total
            while queue:
                path, key = queue.pop()
                t0 = time.perf_counter()
                h = hasher()
                try:
                    async with client.get(path, skip_auto_headers=("Accept-Encoding",)) as response:
                        async for chunk in response.content.iter_any():
                            h.update(chunk)
                            total += len(chunk)
                        status = response.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors.append(f"{key}: {exc!r}")
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{key}: status {status}")
                elif h.finalize().hex() != digests[key]:
                    errors.append(f"{key}: bytes differ")

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(queue)))))
    return total, latencies, errors


def page_cache_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) // 1024
    return -1


def _cpu_waited() -> float | None:
    """Seconds that some runnable task has waited for a core, since boot (PSI, /proc/pressure/cpu;
    None without it). Over a pass, its share of the wall time is how crowded the cores were."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    return int(dict(field.split("=", 1) for field in some)["total"]) / 1e6


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_one_pass(
    server: Server,
    name: str,
    base: str,
    size: Size,
    paths: Sequence[str],
    digests: dict[str, str],
    concurrency: int,
    ufs: Server | None = None,
    drop_caches: bool = False,
) -> Row:
    """GET every path exactly once with `concurrency` concurrent connections; bytes are checked.
    `drop_caches`: empty the kernel's page cache first (see --drop-caches)."""
    keys = keys_of(size)
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    log(f"{name}, {size.label}: one pass over {len(paths)} objects, {concurrency} connections")
    before, machine, client, waited = snapshot(), machine_ticks(), _self_cpu(), _cpu_waited()
    t0 = time.monotonic()
    nbytes, latencies, errors = asyncio.run(read_once(base, paths, keys, digests, concurrency))
    seconds = time.monotonic() - t0
    after, client, waited_after = snapshot(), _self_cpu() - client, _cpu_waited()
    busy, interrupts = (b - a for a, b in zip(machine, machine_ticks(), strict=True))
    if errors:
        raise RuntimeError(f"{name}, {size.label}: {len(errors)} failed reads, first: {errors[0]}")
    pids = subtree(before, server.proc.pid) | subtree(after, server.proc.pid)
    cpu = cpu_delta(before, after, pids)
    ufs_cpu = 0.0
    note = ""
    if ufs is not None:
        ufs_pids = subtree(before, ufs.proc.pid) | subtree(after, ufs.proc.pid)
        ufs_cpu = cpu_delta(before, after, ufs_pids)
        note = f"; moto (UFS) CPU meanwhile {100 * ufs_cpu / seconds:.0f}%"
    if waited is not None and waited_after is not None:
        note += f"; a task waited for a core {100 * (waited_after - waited) / seconds:.0f}% of the time"
    latencies.sort()
    wrk = WrkResult(
        requests=len(latencies),
        bytes=nbytes,  # bodies only (wrk also counts headers)
        seconds=seconds,
        errors={},
        p50_ms=1e3 * latencies[len(latencies) // 2],
        p99_ms=1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    )
    other = max(0.0, busy / CLK_TCK - cpu - client - ufs_cpu)
    m = Measurement(size, name, wrk, cpu, client, other, interrupts / CLK_TCK)
    log(f"  {fmt_rate(m)}, {m.cpu_us_per_request:,.0f} µs CPU/request, all bytes equal")
    return Row(m, note)
