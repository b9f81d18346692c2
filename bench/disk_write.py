"""What a cold fill's page writes cost this machine: 1 MiB writes through the page cache against
O_DIRECT ones (cache.direct_io), one file per page as the cache writes them, CPU per GB of each.

    .venv/bin/python bench/disk_write.py [--dir DIR] [--mib 2000] [--threads 1]

Writes into a temporary directory under DIR (default: the current one, i.e. the disk the cache
would use), removes it afterwards, and prints for each way: MB/s, CPU (user + system of this
process) per GB written, and the average time of one page's write. Buffered first, then O_DIRECT,
then buffered again: a VM may charge the first use of memory (the page cache grows) more than its
reuse, and the two buffered rows show how much.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MIB = 1024 * 1024


def run(directory: Path, mib: int, threads: int, direct: bool) -> tuple[float, float, float]:
    """(MB/s, CPU s per GB, ms per page) of writing `mib` 1 MiB page files."""
    local = threading.local()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)

    def one(i: int) -> float:
        buf = getattr(local, "buf", None)
        if buf is None:  # page-aligned, as O_DIRECT needs; random bytes, written once per thread
            buf = local.buf = mmap.mmap(-1, MIB)
            buf.write(os.urandom(MIB))
        started = time.perf_counter()
        fd = os.open(directory / f"page-{i}", flags, 0o644)
        try:
            os.write(fd, buf)
        finally:
            os.close(fd)
        return time.perf_counter() - started

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        times = list(pool.map(one, range(mib)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    gb = mib * MIB / 1e9
    return gb * 1e3 / wall, cpu / gb, 1e3 * sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to write (default: here)")
    parser.add_argument("--mib", type=int, default=2000, help="pages of 1 MiB per way (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="writers at once (default 1)")
    args = parser.parse_args()
    print(f"{args.mib} x 1 MiB page files, {args.threads} writer(s), under {args.dir}")
    for name, direct in (("buffered", False), ("O_DIRECT", True), ("buffered again", False)):
        work = Path(tempfile.mkdtemp(prefix="hoard-disk-write-", dir=args.dir))
        try:
            rate, cpu, ms = run(work, args.mib, args.threads, direct)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"  {name:<15} {rate:8,.0f} MB/s   CPU {cpu:5.2f} s/GB   {ms:6.2f} ms per page")


if __name__ == "__main__":
    main()
