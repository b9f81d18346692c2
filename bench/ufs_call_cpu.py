"""CPU per S3 adapter call, through the SDK (aiobotocore) and through the direct path (s3_get.py).

    .venv/bin/python bench/ufs_call_cpu.py [--calls 300] [--rounds 2]

Starts a moto server on 127.0.0.1, puts one 4 KiB object, and for `direct_get: false` and `true`
in turn times `stat` (HeadObject) and `read_head` (a ranged GetObject of up to 1 MiB) one after the
other, `--calls` times each, on the default asyncio loop. It prints the CPU time of this process
(user + system) per call: the adapter's own cost, moto's excluded. moto closes every connection,
so each call also pays a TCP connect on both paths. The rounds alternate the two settings, so
a disturbed moment does not land on one side only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, from anywhere

from bench.cache_throughput import start_moto
from bench.get_throughput import (
    s3_client,
)
from ufs_adapters.base import WriteMeta
from ufs_adapters.s3 import S3Adapter

BUCKET = "calls"


async def one_body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def measure(endpoint: str, calls: int, rounds: int) -> list[tuple[str, str, float]]:
    options = {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key_id": "t",
        "secret_access_key": "t",
    }
    results = []
    for _ in range(rounds):
        for direct in ("false", "true"):
            adapter = await S3Adapter.open(f"s3://{BUCKET}", {**options, "direct_get": direct})
            try:
                await adapter.write("k", one_body(b"x" * 4096), size=4096, meta=WriteMeta())
                for name in ("stat", "read_head"):
                    started = time.process_time()
                    for _ in range(calls):
                        if name == "stat":
                            await adapter.stat("k")
                        else:
                            await adapter.read_head("k", 1 << 20)
                    results.append((direct, name, (time.process_time() - started) / calls))
            finally:
                await adapter.aclose()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per operation and setting (300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both settings (2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hoard-calls-") as tmp:
        moto, endpoint = start_moto(Path(tmp))
        try:
            s3_client(endpoint).create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
            results = asyncio.run(measure(endpoint, args.calls, args.rounds))
        finally:
            moto.stop()
    print(f"CPU per call of this process (user + system), {args.calls} calls each, moto on 127.0.0.1:")
    print("| call      | through the SDK | direct (s3_get.py) | SDK / direct |")
    print("|-----------|-----------------|--------------------|--------------|")
    for name in ("stat", "read_head"):
        sdk = min(t for d, n, t in results if n == name and d == "false")
        direct = min(t for d, n, t in results if n == name and d == "true")
        print(f"| {name:<9} | {1e6 * sdk:>12,.0f} µs | {1e6 * direct:>15,.0f} µs | {sdk / direct:>11.1f}x |")
    print("(the lowest of the rounds for each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
