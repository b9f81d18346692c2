"""The cost of one cache hit's lookup: diskcache against Hoard's page store, on the same disk.

    .venv/bin/python bench/hit_lookup.py [--pages 2000] [--size 4096] [--reads 20000]

Why cache/index.py is SQLite of our own rather than diskcache (the design card's default): this
prints what a hit costs each way, in one process, one after the other, with the same page bytes:

- diskcache `Cache.get` with `eviction_policy="least-recently-used"` (LRU needs the access time,
  which diskcache writes on every get) and with `"none"` (a plain lookup, no eviction order);
- Hoard's hit path, `PageStore.read_soon`: open the page file named by the key, one pread, check
  magic, length and CRC-32C; no index query at all (the LRU order is batched off the hit path).

Pages are read in a random order, `--reads` times, after one warm-up pass; the figure is wall time
per read (the process does nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import diskcache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, from anywhere

from cache.keys import PageKey
from cache.store import PageMeta, PageStore
from ufs_adapters.base import ObjectInfo


def time_diskcache(directory: str, policy: str, pages: list[bytes], order: list[int]) -> float:
    cache = diskcache.Cache(directory, eviction_policy=policy, size_limit=1 << 40)
    try:
        for i, page in enumerate(pages):
            cache.set(("m", f"obj{i}", "etag", 0), page)
        for i in order[: len(pages)]:  # warm-up
            cache.get(("m", f"obj{i}", "etag", 0))
        started = time.perf_counter()
        for i in order:
            if cache.get(("m", f"obj{i}", "etag", 0)) is None:
                raise RuntimeError("diskcache lost a page")
        return (time.perf_counter() - started) / len(order)
    finally:
        cache.close()


async def time_store(directory: str, pages: list[bytes], order: list[int]) -> float:
    size = len(pages[0])
    store = await PageStore.open(directory, capacity=1 << 40, page_size=size)
    try:
        info = ObjectInfo(path="obj", size=size, etag="etag", last_modified=datetime.now(UTC))
        meta = PageMeta("/m/obj", 1, None, None, None, info, 0.0, None)
        keys = [PageKey("m", f"obj{i}", "etag", 0) for i in range(len(pages))]
        for key, page in zip(keys, pages, strict=True):
            await store.write(key, page, meta)
        for i in order[: len(pages)]:  # warm-up
            await store.read_soon(keys[i], size, None)
        started = time.perf_counter()
        for i in order:
            if await store.read_soon(keys[i], size, None) is None:
                raise RuntimeError("the store lost a page")
        return (time.perf_counter() - started) / len(order)
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000, help="pages stored (2000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per page (4096)")
    parser.add_argument("--reads", type=int, default=20000, help="timed reads (20000)")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    pages = [os.urandom(args.size) for _ in range(args.pages)]
    order = [rng.randrange(args.pages) for _ in range(args.reads)]
    with tempfile.TemporaryDirectory(prefix="hoard-hit-lookup-") as tmp:
        rows = [
            (
                "diskcache Cache.get, LRU eviction",
                time_diskcache(f"{tmp}/lru", "least-recently-used", pages, order),
            ),
            ("diskcache Cache.get, no eviction", time_diskcache(f"{tmp}/none", "none", pages, order)),
            ("Hoard PageStore.read_soon", asyncio.run(time_store(f"{tmp}/store", pages, order))),
        ]
    print(f"{args.reads} random reads of {args.pages} pages of {args.size} bytes, one process:")
    print("| lookup                            | µs per hit |")
    print("|-----------------------------------|------------|")
    for name, seconds in rows:
        print(f"| {name:<33} | {1e6 * seconds:>10.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
