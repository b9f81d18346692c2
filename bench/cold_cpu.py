"""Hoard's CPU per cold read, with a UFS that costs next to nothing, across revisions of Hoard.

    .venv/bin/python bench/cold_cpu.py [--revs HEAD~1,.] [--size 4KiB] [--count 4000] [--rounds 5]

In bench/cache_throughput.py the UFS is moto, which takes a core of its own per cold read and slows
down whenever anything else runs (its threads share a GIL), so Hoard's own cost per cold read hides
in the noise of moto's. Here the UFS is nginx serving the objects as static files: an S3 mount reads
them with the same signed GETs (nginx ignores the signature, answers Range GETs with a
Content-Range, and gives an ETag), and with `keepalive_timeout 0` it closes every connection after
its response, as moto does, so Hoard pays a connection per cold read as it does against moto.

Each round starts a fresh Hoard (2 workers, empty cache) per revision, with the kernel's page cache
emptied before it (when run as root), reads every object once with 32 connections (the one-pass
client of cache_throughput.py, every byte checked), and records Hoard's CPU (user + system of its
process tree) per request. The revisions alternate within each round, so a machine that drifts
(this VM does, by 20% between minutes) drifts under all of them alike; the medians over the
rounds are compared as ratios to the first revision.

`--revs`: comma-separated git revisions; `.` is the working tree. Each other revision is checked out
with `git worktree` in a temporary directory and run from there (PYTHONPATH), with this venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` as a package, from anywhere

from bench.cache_throughput import COLD, HOARD_WORKERS, start_hoard_s3
from bench.get_throughput import (
    BUCKET,
    SIZES,
    Size,
    keys_of,
    make_data,
    presigned_paths,
    signals_as_interrupt,
    start_nginx,
)
from bench.one_pass import measure_one_pass
from bench.procs import (
    REPO,
    ensure_tools,
    log,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revs", default="HEAD,.", help="git revisions to compare; . is the working tree")
    parser.add_argument("--size", default="4KiB", choices=[s.name for s in SIZES])
    parser.add_argument("--count", type=int, default=0, help="objects (default 4000, 512, 8 by size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    return parser.parse_args(argv)


def checkout(rev: str, into: Path) -> Path:
    """The source tree of `rev`: the working tree for `.`, else a detached worktree under `into`."""
    if rev == ".":
        return REPO
    tree = into / f"rev-{len(list(into.iterdir()))}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)  # fmt: skip
    return tree


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = next(s for s in SIZES if s.name == args.size)
    count = args.count or {"4KiB": 4000, "1MiB": 512, "64MiB": 8}[base.name]
    size = Size(base.label, base.name, base.nbytes, count)
    revs = args.revs.split(",")
    nginx, _ = ensure_tools()
    results: dict[str, list[float]] = {rev: [] for rev in revs}
    with signals_as_interrupt(), ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="hoard-cold-cpu-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        trees_dir = workdir / "trees"
        trees_dir.mkdir()
        trees = {rev: checkout(rev, trees_dir) for rev in revs}
        for tree in trees.values():
            if tree != REPO:
                stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)  # fmt: skip
        log(f"writing {count} objects of {size.label}")
        digests = make_data(workdir / "data", [size])
        ufs, ufs_base = start_nginx(nginx, workdir, workdir / "data", 1, size.name, keepalive="0")
        stack.callback(ufs.stop)
        keys = keys_of(size)
        for r in range(args.rounds):
            for rev in revs:
                os.environ["PYTHONPATH"] = str(trees[rev])
                if os.geteuid() == 0:
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                time.sleep(2)
                home = f"hoard-{r}-{revs.index(rev)}"
                server, hoard = start_hoard_s3(workdir, ufs_base, HOARD_WORKERS, home_name=home)
                try:
                    row = measure_one_pass(
                        server, COLD, hoard, size, presigned_paths(hoard, keys), digests, args.connections
                    )
                finally:
                    server.stop()
                    shutil.rmtree(workdir / home, ignore_errors=True)
                results[rev].append(row.m.cpu_us_per_request)
                print(
                    f"round {r + 1} {rev}: {row.m.cpu_us_per_request:,.0f} µs of Hoard CPU per request",
                    flush=True,
                )
    print(f"\nHoard cold reads of {count} x {size.label} ({BUCKET}), {args.connections} connections, "
          f"UFS nginx static (connection: close); {args.rounds} rounds, revisions alternating")  # fmt: skip
    first = sorted(results[revs[0]])[len(results[revs[0]]) // 2]
    for rev in revs:
        runs = sorted(results[rev])
        median = runs[len(runs) // 2]
        print(f"  {rev:>12}  median {median:,.0f} µs/request ({median / first:.2f}x)  "
              f"runs {', '.join(f'{v:,.0f}' for v in results[rev])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
