"""Cache throughput: Hoard (cold and hits) over an S3 mount on moto, vs moto direct and nginx, in one run.

    .venv/bin/python bench/cache_throughput.py [--duration 8] [--warmup 2] [--quick] [--keep]

Makes objects of 4 KiB, 1 MiB and 64 MiB, writes them to a temporary directory and uploads the same
bytes to a moto server (`python -m moto.server`, started here on 127.0.0.1). Then, for each size:

- direct UFS: moto itself, loaded by wrk cycling presigned GET URLs (moto does not check signatures,
  the URLs are signed all the same), and read once per object by the one-pass client (below);
- Hoard cold: `hoard serve` (2 workers) with an S3 mount of that moto bucket and an empty cache, read
  by the one-pass client: every object exactly once, so every request is a miss;
- Hoard hits: the same objects again, now cached, wrk cycling presigned URLs;
- nginx static: nginx serving the same bytes as files (bench/get_throughput.py's nginx);
- nginx proxy_cache cold: nginx with proxy_cache in front of the same moto, key $uri (the presigned
  query does not defeat the cache), starting empty, read by the one-pass client: the cold read of
  the peer a user would pick instead, and what a cache in C costs on this machine;
- nginx proxy_cache: the same nginx, now warm, wrk cycling presigned URLs.

The one-pass client: 32 asyncio tasks in this Python process (aiohttp, one connection each) that share
the list of presigned URLs and GET each URL once, hashing the bytes (so it also checks every byte of
every cold read); the rate is bytes (or objects) over the wall time of the pass. wrk cannot read a
list exactly once, and a cold read must not repeat an object. Hoard cold is compared with moto read by
the same one-pass client, not with wrk.

With `--busy-control`, moto is read directly once more per size beside busy loops that take the
share of a core Hoard took in its cold pass: moto serves from one GIL and slows down whenever
anything else runs, so this row is the rate a gateway that cost nothing but that CPU would get.

The details of each one-pass run give the share of its wall time in which some runnable task
waited for a core (Linux's pressure stall information, /proc/pressure/cpu): how crowded the two
cores were, which a UFS serving from one GIL feels directly.

Server CPU comes from /proc (user + system of the server's whole process tree), as in
bench/get_throughput.py, whose functions this script imports. For Hoard cold the CPU column is
Hoard's only; moto's CPU during that pass is printed in the details.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` as a package, from anywhere

from bench.get_throughput import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    SIZES,
    Load,
    Size,
    fmt_rate,
    keys_of,
    make_data,
    measure_server,
    presigned_paths,
    s3_client,
    signals_as_interrupt,
    start_nginx,
    verify,
    write_lua,
)
from bench.one_pass import Row, measure_one_pass, page_cache_mib, read_once, rows_of
from bench.procs import (
    Server,
    cpu_delta,
    cpu_model,
    ensure_tools,
    free_port,
    hoard_argv,
    hoard_revision,
    log,
    snapshot,
    tool_version,
)
from bench.profiles import perf_during, py_spy
from tests.faultproxy import FaultProxy
from tests.servers import wait_workers

COUNTS = {"4KiB": 4000, "1MiB": 1024, "64MiB": 16}  # a cold pass of each lasts seconds, not one
QUICK_COUNTS = {"4KiB": 300, "1MiB": 16, "64MiB": 2}
HOARD_WORKERS = 2

DIRECT_WRK = "direct UFS (moto), wrk"
DIRECT_ONCE = "direct UFS (moto), 1 pass"
COLD = "Hoard cold, 1 pass"
HITS = "Hoard hits"
NGINX_STATIC = "nginx static"
NGINX_PROXY = "nginx proxy_cache"
NGINX_PROXY_COLD = "nginx proxy_cache cold, 1 pass"
DIRECT_BUSY = "direct UFS beside a busy loop, 1 pass"
ORDER = (NGINX_STATIC, NGINX_PROXY, HITS, DIRECT_WRK, DIRECT_ONCE, NGINX_PROXY_COLD, COLD, DIRECT_BUSY)
RATIO_BASE = {HITS: NGINX_STATIC, COLD: DIRECT_ONCE, NGINX_PROXY_COLD: DIRECT_ONCE, DIRECT_BUSY: DIRECT_ONCE}
# A process that takes a share of a core (argv[1]): it spins while its CPU time is behind that share
# of the time since it started, else sleeps 1 ms (--busy-control).
_BUSY_LOOP = """
import sys, time
share, wall0, cpu0 = float(sys.argv[1]), time.monotonic(), time.process_time()
while True:
    if time.process_time() - cpu0 < share * (time.monotonic() - wall0):
        for _ in range(2000):
            pass
    else:
        time.sleep(0.001)
"""


# --- servers -------------------------------------------------------------------------------------


def start_moto(workdir: Path) -> tuple[Server, str]:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    server = Server("moto", argv, workdir / "moto.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(server, f"{base}/moto-api/", 60.0)
    return server, base


def upload(endpoint: str, data: Path, sizes: Sequence[Size]) -> None:
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    keys = [k for s in sizes for k in keys_of(s)]
    log(f"uploading {len(keys)} objects to moto")

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=(data / BUCKET / key).read_bytes())  # type: ignore[attr-defined]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


def start_hoard_s3(workdir: Path, moto: str, workers: int, home_name: str = "hoard") -> tuple[Server, str]:
    """Hoard with bucket `bench` mounted from moto's bucket `bench`, and an empty cache."""
    home = workdir / home_name
    home.mkdir()
    port = free_port()
    config = home / "hoard.yaml"
    # metadata_ttl 1h: the objects do not change during the run, so a hit does not revalidate with
    # moto (the default maxAge is the metadata TTL); a data set being read for training is the same.
    config.write_text(
        f"""\
server: {{host: 127.0.0.1, port: {port}, workers: {workers}}}
auth:
  users: [{{access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY}, admin: true}}]
cache: {{dir: "{home / "cache"}", size: 4GiB, reserved: 0, metadata_ttl: 1h}}
metastore: {{dir: "{home / "meta"}"}}
mounts:
  - path: /{BUCKET}
    uri: s3://{BUCKET}
    options: {{endpoint_url: "{moto}", region: us-east-1, access_key_id: testing, secret_access_key: testing}}
"""
    )
    prefix, env = hoard_argv()
    argv = [*prefix, "serve", "--config", str(config)]
    server = Server(f"Hoard ({workers} workers)", argv, home / "stdout.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(server, f"{base}/_hoard/ready", 60.0)
    try:  # a pass whose connections one worker holds would measure one process
        wait_workers(f"{base}/_hoard/ready", workers)
    except RuntimeError:
        server.stop()
        raise
    return server, base


_PROXY_CONF = string.Template(
    """\
# nginx proxy_cache in front of moto, for bench/cache_throughput.py.
daemon off;
master_process on;
worker_processes ${workers};
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    types {}
    default_type application/octet-stream;

    client_body_temp_path ${prefix}/client_body;
    proxy_temp_path ${prefix}/proxy;
    fastcgi_temp_path ${prefix}/fastcgi;
    uwsgi_temp_path ${prefix}/uwsgi;
    scgi_temp_path ${prefix}/scgi;

    proxy_cache_path ${prefix}/cache levels=1:2 keys_zone=bench:16m max_size=4g inactive=1h use_temp_path=off;

    upstream moto {
        server ${upstream};
        keepalive 32;
    }

    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass http://moto;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host ${upstream};
            proxy_cache bench;
            proxy_cache_key $$uri;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires;
            proxy_read_timeout 300s;
            add_header X-Cache-Status $$upstream_cache_status;
        }
    }
}
"""
)


def start_nginx_proxy(nginx: str, workdir: Path, moto: str, workers: int) -> tuple[Server, str]:
    prefix = workdir / "nginx-proxy"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        _PROXY_CONF.substitute(workers=workers, prefix=prefix, port=port, upstream=moto.split("://", 1)[1])
    )
    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    server = Server(NGINX_PROXY, argv, prefix / "stdout.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(server, f"{base}/", 30.0, any_status=True)
    return server, base


def wait_ready(server: Server, url: str, timeout: float, any_status: bool = False) -> None:
    """Wait for the server to answer (200, or any status); a server that never does is stopped."""
    try:
        if not any_status:
            server.wait_http(url, timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while True:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
            try:
                httpx.get(url, timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not answer {url}:\n{server.log_tail()}") from None
                time.sleep(0.1)
    except BaseException:
        server.stop()
        raise


def expect_header(base: str, path: str, header: str, value: str, who: str) -> None:
    """One GET of an object must say it came from the cache."""
    with httpx.Client(base_url=base, timeout=120.0) as client:
        got = client.get(path).headers.get(header, "")
    if got.upper() != value:
        raise RuntimeError(f"{who}: expected {header}: {value} on a warm read, got {got!r}")


def profile_cold(workdir: Path, moto: str, size: Size, digests: dict[str, str], concurrency: int) -> str:
    """py-spy on a fresh Hoard (empty cache) during one cold pass over `size`'s objects."""
    server, base = start_hoard_s3(workdir, moto, HOARD_WORKERS, home_name="hoard-profiled")
    try:
        keys = keys_of(size)
        paths = presigned_paths(base, keys)
        return py_spy(
            server,
            workdir / f"py-spy-cold-{size.name}.txt",
            lambda: asyncio.run(read_once(base, paths, keys, digests, concurrency)),
        )
    finally:
        server.stop()


def perf_cold(workdir: Path, moto: str, size: Size, digests: dict[str, str], concurrency: int) -> str:
    """perf (the kernel included, which py-spy cannot see) on a fresh Hoard's worker processes
    during one cold pass over `size`'s objects."""
    server, base = start_hoard_s3(workdir, moto, HOARD_WORKERS, home_name="hoard-perf")
    try:
        keys = keys_of(size)
        return perf_during(
            server,
            workdir / f"perf-cold-{size.name}.data",
            f"one more cold pass of {size.label} objects",
            lambda: asyncio.run(read_once(base, presigned_paths(base, keys), keys, digests, concurrency)),
        )
    finally:
        server.stop()


def perf_hits(
    server: Server, base: str, workdir: Path, size: Size, script: Path, load: Load, seconds: int
) -> str:
    """perf on Hoard's worker processes during one more (unmeasured) wrk run of `size`'s hits."""
    argv = load.argv(base, script, seconds)
    return perf_during(
        server,
        workdir / f"perf-hits-{size.name}.data",
        f"{seconds} s more of wrk on {size.label} hits",
        lambda: subprocess.run(argv, capture_output=True, check=True, timeout=seconds + 120),
    )


# --- report --------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    out = [("size", "server", "rate", "CPU µs/request", "CPU s/GB", "ratio")]
    for row in rows:
        m = row.m
        ratio = ""
        base_name = RATIO_BASE.get(m.server)
        base = next((r.m for r in rows if r.m.size == m.size and r.m.server == base_name), None)
        if base is not None:
            ratio = f"{m.rate / base.rate:.2f}x {base_name}"
        flag = " (!)" if m.wrk.errors or m.disturbed else ""
        out.append(
            (
                m.size.label,
                m.server + flag,
                fmt_rate(m),
                f"{m.cpu_us_per_request:,.0f}",
                f"{m.cpu_s_per_gb:,.2f}",
                ratio,
            )
        )
    widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in out]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> str:
    lines = []
    for row in rows:
        m = row.m
        errors = ", ".join(f"{k} {v}" for k, v in m.wrk.errors.items()) or "none"
        lines.append(
            f"  {m.size.label:>6}  {m.server:<30} {m.wrk.requests:>8,} requests in {m.wrk.seconds:.1f}s, "
            f"{m.wrk.bytes / 1e6:,.0f} MB, p50 {m.wrk.p50_ms:.1f} ms p99 {m.wrk.p99_ms:.1f} ms, "
            f"CPU: server {100 * m.cpu_seconds / m.wrk.seconds:.0f}%, "
            f"client {100 * m.client_cpu_seconds / m.wrk.seconds:.0f}%, "
            f"interrupts {100 * m.interrupt_cpu_seconds / m.wrk.seconds:.0f}%, "
            f"others {100 * m.other_cpu_seconds / m.wrk.seconds:.0f}%{row.note}; errors: {errors}"
        )
    return "\n".join(lines)


def cpu_bounds(rows: Sequence[Row], cores: int, target: float = 0.9) -> str:
    """How far the machine's cores let a cold pass go, were CPU the only limit: the direct pass
    spent C_d of CPU per object over all processes (moto, the client, interrupts, the rest), the
    server C_s; a pass at ratio r of the direct rate R needs r * R * (C_d + C_s) of `cores`, so
    r <= cores / (R * (C_d + C_s)), and `target` leaves the server cores / (target * R) - C_d.
    An estimate: it takes moto's and the client's CPU per object in the cold pass to be the direct
    pass's, and the scheduler to pack the cores full, which it does not (moto's threads share a GIL
    and need one core at a time); and a direct pass slowed by something else costs more CPU per
    object, which lowers the estimate, so a cold pass can come out above it."""
    lines = []
    for row in rows:
        m = row.m
        direct = next((r.m for r in rows if r.m.size == m.size and r.m.server == DIRECT_ONCE), None)
        if direct is None or RATIO_BASE.get(m.server) != DIRECT_ONCE or m.server == DIRECT_BUSY:
            continue
        total = direct.cpu_seconds + direct.client_cpu_seconds + direct.interrupt_cpu_seconds
        c_direct = (total + direct.other_cpu_seconds) / direct.requests
        c_server = m.cpu_seconds / m.requests
        rate = direct.requests / direct.wrk.seconds
        bound = cores / (rate * (c_direct + c_server))
        allowed = cores / (target * rate) - c_direct
        lines.append(
            f"  {m.size.label:>6}  {m.server:<30} CPU allows ~{bound:.2f}x (measured {m.rate / direct.rate:.2f}x): "
            f"{cores} cores / ({rate:,.1f} objects/s x ({1e6 * c_direct:,.0f} + {1e6 * c_server:,.0f} µs)); "
            f"{target}x would leave it {1e6 * allowed:,.0f} µs per object"
            + ("" if allowed > 0 else " (none: the direct pass alone fills the cores)")
        )
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=8, help="seconds of each wrk run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="connections, wrk and one-pass (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--nginx-workers", type=int, default=2, help="nginx worker_processes (default 2)")
    parser.add_argument("--retries", type=int, default=0, help="repeat a wrk run disturbed by others (0)")
    parser.add_argument("--quick", action="store_true", help="fewer objects, 2 s runs: checks that it works")
    parser.add_argument("--sizes", default="4KiB,1MiB,64MiB", help="which object sizes (default all three)")
    parser.add_argument(
        "--ufs-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="put a proxy that delays every UFS request this long in front of moto (default 0)",
    )
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="only the one-pass runs (moto direct, nginx proxy_cache cold, Hoard cold): no wrk",
    )
    parser.add_argument(
        "--profile-cold",
        metavar="SIZE",
        choices=[s.name for s in SIZES],
        help="also py-spy a fresh Hoard during one more (unmeasured) cold pass of that size",
    )
    parser.add_argument(
        "--perf-cold",
        metavar="SIZE",
        choices=[s.name for s in SIZES],
        help="also perf (kernel included) a fresh Hoard during one more cold pass of that size",
    )
    parser.add_argument(
        "--perf-hits",
        metavar="SIZE",
        choices=[s.name for s in SIZES],
        help="also perf Hoard's workers during one more wrk run of that size's hits",
    )
    parser.add_argument(
        "--busy-control",
        action="store_true",
        help="after Hoard cold, read moto directly once more beside busy loops taking as much CPU as "
        "Hoard took: the rate a gateway whose CPU is all it costs would get",
    )
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="empty the kernel's page cache before each one-pass run (root; see bench/README.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 2), 1
    counts = QUICK_COUNTS if args.quick else COUNTS
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    if not names or any(n not in counts for n in names):
        parser.error(f"--sizes: choose from {', '.join(counts)}")
    args.size_list = [Size(s.label, s.name, s.nbytes, counts[s.name]) for s in SIZES if s.name in names]
    for option, size_name in (("--profile-cold", args.profile_cold), ("--perf-cold", args.perf_cold)):
        if size_name and size_name not in names:
            parser.error(f"{option}: that size is not among --sizes")
    if args.duration < 1 or args.warmup < 1 or args.connections < args.threads:
        parser.error("durations must be >= 1 s and --connections >= --threads")
    return args


def busy_controls(
    moto: Server, moto_base: str, cold: Sequence[Row], digests: dict[str, str], args: argparse.Namespace
) -> list[Row]:
    """Per size, moto read directly once more while busy loops (one per core's worth) take the CPU
    share Hoard took in its cold pass. moto serves from one GIL, and anything else running slows
    it; this row is the rate a gateway costing only that CPU would get, against which Hoard's
    cold rate shows what else (its pipeline, its waits) it loses."""
    rows: list[Row] = []
    moto.name = "moto"
    for row in cold:
        share = row.m.cpu_seconds / row.m.wrk.seconds  # cores
        loops = max(1, math.ceil(share))
        hogs = [
            subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, f"{share / loops:.3f}"]) for _ in range(loops)
        ]
        try:
            time.sleep(0.5)
            size = row.m.size
            paths = presigned_paths(moto_base, keys_of(size))
            before = snapshot()
            done = measure_one_pass(
                moto, DIRECT_BUSY, moto_base, size, paths, digests, args.connections, None, args.drop_caches
            )
            busy = cpu_delta(before, snapshot(), {hog.pid for hog in hogs})
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        m = replace(done.m, other_cpu_seconds=max(0.0, done.m.other_cpu_seconds - busy))  # not a disturbance
        note = f"; busy loops {100 * busy / m.wrk.seconds:.0f}% of a core (Hoard took {100 * share:.0f}%)"
        note += done.note
        rows.append(Row(m, note))
    return rows


def cold_passes(
    server: Server,
    name: str,
    base: str,
    moto: Server,
    workdir: Path,
    digests: dict[str, str],
    args: argparse.Namespace,
    hit_header: str,
) -> tuple[list[Row], dict[str, Path]]:
    """One pass per size through a caching server that starts empty (every read a miss, every
    byte checked), then proof that it now hits (`hit_header: HIT`, the first and last object read
    again and compared). Returns the rows and the wrk scripts for its hits."""
    rows: list[Row] = []
    scripts: dict[str, Path] = {}
    for size in args.size_list:
        keys = keys_of(size)
        paths = presigned_paths(base, keys)
        rows.append(
            measure_one_pass(
                server, name, base, size, paths, digests, args.connections, moto, args.drop_caches
            )
        )
        verify(base, [paths[0], paths[-1]], [keys[0], keys[-1]], digests, f"{server.name} (warm)")
        expect_header(base, paths[0], hit_header, "HIT", server.name)
        prefix = name.split()[0].lower()  # nginx, hoard
        scripts[size.name] = write_lua(workdir, f"{prefix}-{size.name}", paths, args.threads)
    return rows, scripts


def wrk_scripts(
    workdir: Path,
    tag: str,
    base: str,
    sizes: Sequence[Size],
    threads: int,
    presign: bool,
    digests: dict[str, str],
    who: str,
) -> dict[str, Path]:
    """A wrk script per size; checks the first and last object's bytes once (correctness)."""
    scripts = {}
    for size in sizes:
        keys = keys_of(size)
        paths = presigned_paths(base, keys) if presign else [f"/{BUCKET}/{k}" for k in keys]
        verify(base, [paths[0], paths[-1]], [keys[0], keys[-1]], digests, who)
        scripts[size.name] = write_lua(workdir, f"{tag}-{size.name}", paths, threads)
    return scripts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv])
    nginx, wrk = ensure_tools()
    load = Load(wrk, args.connections, args.threads)
    sizes: list[Size] = args.size_list
    header = [
        f"command: {command}",
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, Python {platform.python_version()}",
        f"hoard {hoard_revision()} ({HOARD_WORKERS} workers); {tool_version([nginx, '-v'])}; "
        f"{tool_version([wrk, '-v']).split(' Copyright')[0]}; moto {tool_version([sys.executable, '-c', 'import moto; print(moto.__version__)'])}",
        f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
        f"page cache {page_cache_mib():,} MiB{', dropped before each one-pass run' if args.drop_caches else ''}",
        f"load: wrk -t{args.threads} -c{args.connections}, {args.warmup}s warm-up + {args.duration}s per run; "
        f"one pass: {args.connections} connections; " + ", ".join(f"{s.count} x {s.label}" for s in sizes),
        f"UFS: moto{f' behind a proxy adding {1e3 * args.ufs_latency:.0f} ms to every request' if args.ufs_latency else ''}; "
        "Hoard's settings from the environment: "
        + (", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("HOARD_")) or "none"),
    ]
    started = time.monotonic()
    rows: list[Row] = []
    with signals_as_interrupt(), ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="hoard-cache-bench-"))
        if args.keep:
            stack.callback(log, f"kept {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        data = workdir / "data"
        log(f"writing objects under {data}")
        digests = make_data(data, sizes)

        moto, moto_endpoint = start_moto(workdir)
        stack.callback(moto.stop)
        upload(moto_endpoint, data, sizes)
        moto_base = moto_endpoint  # where every reader of the UFS goes: moto, or the proxy below
        if args.ufs_latency:
            # A UFS farther away than loopback: every request (direct, nginx's, Hoard's) first
            # waits this long in a proxy (tests/faultproxy.py, in a thread of this process).
            proxy = FaultProxy(moto_endpoint).start()
            stack.callback(proxy.stop)
            proxy.latency = args.ufs_latency
            moto_base = proxy.url

        if not args.cold_only:
            # nginx static: the same bytes as files.
            server, base = start_nginx(nginx, workdir, data, args.nginx_workers, sizes[0].name)
            stack.callback(server.stop)
            server.name = NGINX_STATIC
            scripts = wrk_scripts(workdir, "static", base, sizes, args.threads, False, digests, server.name)
            rows += rows_of(measure_server(server, base, sizes, scripts, load, args))
            server.stop()

        # nginx proxy_cache in front of moto, starting empty: one pass per size (every read a miss,
        # every byte checked), which also warms it; then hits with wrk.
        server, base = start_nginx_proxy(nginx, workdir, moto_base, args.nginx_workers)
        stack.callback(server.stop)
        cold, scripts = cold_passes(
            server, NGINX_PROXY_COLD, base, moto, workdir, digests, args, "X-Cache-Status"
        )
        rows += cold
        if not args.cold_only:
            rows += rows_of(measure_server(server, base, sizes, scripts, load, args))
        server.stop()

        # moto directly: wrk cycling, then one pass per size.
        if not args.cold_only:
            moto.name = DIRECT_WRK
            scripts = wrk_scripts(workdir, "moto", moto_base, sizes, args.threads, True, digests, "moto")
            rows += rows_of(measure_server(moto, moto_base, sizes, scripts, load, args))
        moto.name = "moto"
        for size in sizes:
            paths = presigned_paths(moto_base, keys_of(size))
            rows.append(
                measure_one_pass(
                    moto,
                    DIRECT_ONCE,
                    moto_base,
                    size,
                    paths,
                    digests,
                    args.connections,
                    None,
                    args.drop_caches,
                )
            )

        # Hoard: an empty cache; one pass per size (every read a miss), then hits with wrk.
        server, base = start_hoard_s3(workdir, moto_base, HOARD_WORKERS)
        stack.callback(server.stop)
        cold, scripts = cold_passes(server, COLD, base, moto, workdir, digests, args, "X-Cache")
        rows += cold
        if args.busy_control:
            rows += busy_controls(moto, moto_base, cold, digests, args)
        profile = ""
        if not args.cold_only:
            server.name = HITS
            rows += rows_of(measure_server(server, base, sizes, scripts, load, args))
            if args.perf_hits:
                size = next(s for s in sizes if s.name == args.perf_hits)
                profile = perf_hits(server, base, workdir, size, scripts[size.name], load, args.duration)
        server.stop()

        if args.profile_cold:
            size = next(s for s in sizes if s.name == args.profile_cold)
            profile = profile_cold(workdir, moto_base, size, digests, args.connections)
        if args.perf_cold:
            size = next(s for s in sizes if s.name == args.perf_cold)
            profile = "\n".join(
                p for p in (profile, perf_cold(workdir, moto_base, size, digests, args.connections)) if p
            )

    size_order = {s.name: i for i, s in enumerate(SIZES)}
    rows.sort(key=lambda r: (size_order[r.m.size.name], ORDER.index(r.m.server)))
    print("\n".join(header))
    print()
    print(table(rows))
    print()
    print("MB = 10^6 bytes, GB = 10^9 bytes received (wrk: headers included; one pass: bodies only).")
    print("CPU = user + system time of the server's process tree over the run (Hoard cold: Hoard only;")
    print("moto's share is in the details). '1 pass' rows read every object exactly once with 32")
    print("concurrent connections from one Python asyncio process (aiohttp), checking every byte; the")
    print("other rows are wrk cycling presigned URLs. ratio: hits vs nginx static; cold vs direct 1 pass.")
    print("Per run, CPU in % of one core ('client' is wrk or this process; (!) = disturbed or errors):")
    print(details(rows))
    bounds = cpu_bounds(rows, os.cpu_count() or 1)
    if bounds:
        print("What the cores allow each cold ratio, were CPU the only limit (an estimate; CPU per")
        print("object: the direct pass's, all processes, + the server's own):")
        print(bounds)
    if profile:
        print(profile)
    print(f"total time {time.monotonic() - started:.0f}s")
    return 1 if any(r.m.wrk.errors for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
