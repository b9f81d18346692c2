"""GET throughput through Hoard and through nginx serving the same files, in one run.

    .venv/bin/python bench/get_throughput.py [--duration 10] [--connections 32] [--workers 1,2] [--quick]

Makes objects of 4 KiB, 1 MiB and 64 MiB in a temporary directory, serves it with nginx (static files,
sendfile) and with `hoard serve` (the directory as the root mount, bucket `bench`), and loads each with
wrk: the same connections and threads, a Lua script cycling through every object of one size. Hoard's
requests are presigned GET URLs made by boto3, so each one is signed and verified as a client's would
be. For each server and size it prints the rate, and the server's CPU time (user + system, master and
every child process, from /proc) per request and per GB received by wrk. Installs nginx and wrk with
apt-get when they are missing (as root). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import httpx
from awscrt.checksums import XXHash
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` as a package, from anywhere

from bench.procs import (
    CLK_TCK,
    Server,
    busiest_other,
    children_cpu_seconds,
    cpu_delta,
    cpu_model,
    ensure_tools,
    free_port,
    hoard_argv,
    hoard_revision,
    log,
    machine_ticks,
    snapshot,
    subtree,
    tool_version,
)
from bench.profiles import py_spy

HERE = Path(__file__).resolve().parent
BUCKET = "bench"
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret-key-not-for-production"
REGION = "us-east-1"
PRESIGN_EXPIRES = 7 * 24 * 3600  # SigV4's longest
MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    label: str
    name: str  # directory under the bucket
    nbytes: int
    count: int

    @property
    def by_requests(self) -> bool:
        """Small objects are rated in requests/s, large ones in MB/s."""
        return self.nbytes < MIB


SIZES = (
    Size("4 KiB", "4KiB", 4096, 1000),
    Size("1 MiB", "1MiB", MIB, 64),
    Size("64 MiB", "64MiB", 64 * MIB, 4),
)
QUICK_COUNTS = {"4KiB": 200, "1MiB": 16, "64MiB": 2}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Measurement:
    size: Size
    server: str
    wrk: WrkResult
    cpu_seconds: float  # the server's processes
    client_cpu_seconds: float  # wrk
    other_cpu_seconds: float  # every other process on the machine meanwhile
    interrupt_cpu_seconds: float  # irq + softirq time, charged to no process

    @property
    def rate(self) -> float:
        if self.size.by_requests:
            return self.wrk.requests / self.wrk.seconds
        return self.wrk.bytes / self.wrk.seconds / 1e6

    @property
    def disturbed(self) -> bool:
        """Other processes took more than a quarter of a core: the numbers are suspect."""
        return self.other_cpu_seconds > 0.25 * self.wrk.seconds

    @property
    def requests(self) -> float:
        """Completed requests; for large objects, bytes received over the object size, so that the
        responses still streaming when wrk stops count for the part that was sent."""
        if self.size.by_requests:
            return float(self.wrk.requests)
        return self.wrk.bytes / self.size.nbytes

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1e-9) * 1e6

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_seconds / max(self.wrk.bytes, 1) * 1e9


# --- data, URLs, wrk -----------------------------------------------------------------------------


def hasher() -> XXHash:
    """What the benchmarks check bytes with: XXH3-128, 0.08 s of CPU per GB on this machine against
    SHA-256's 0.6. The client shares the server's two cores; a check at SHA-256's cost took a
    third of a core from the servers it measured when reading 64 MiB objects at 700 MB/s."""
    return XXHash.new_xxhash3_128()


def digest(data: bytes) -> str:
    h = hasher()
    h.update(data)
    value: bytes = h.finalize()
    return value.hex()


def make_data(root: Path, sizes: Sequence[Size]) -> dict[str, str]:
    """Random objects under root/bench/<size>/; returns {key: digest}."""
    digests: dict[str, str] = {}
    bucket = root / BUCKET
    for size in sizes:
        directory = bucket / size.name
        directory.mkdir(parents=True)
        for i in range(size.count):
            data = os.urandom(size.nbytes)
            key = f"{size.name}/obj-{i:05d}"
            (bucket / key).write_bytes(data)
            digests[key] = digest(data)
    # nginx's workers drop root's privileges: let them read the tree.
    for path in (root.parent, root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return digests


def keys_of(size: Size) -> list[str]:
    return [f"{size.name}/obj-{i:05d}" for i in range(size.count)]


def s3_client(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def presigned_paths(endpoint: str, keys: Sequence[str]) -> list[str]:
    """Path and query of a presigned GET per key, as boto3 makes them for any client."""
    client = s3_client(endpoint)
    paths = []
    for key in keys:
        url = client.generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=PRESIGN_EXPIRES
        )
        parts = urlsplit(url)
        paths.append(f"{parts.path}?{parts.query}")  # exactly as signed: no re-encoding
    return paths


# Each wrk thread loads this script into its own Lua state; `setup` (run in the main state) gives
# each thread an index, so the threads start at different objects and then cycle through all of them.
_LUA = string.Template(
    """\
local paths = {}
for line in io.lines("${paths_file}") do paths[#paths + 1] = line end
local threads = ${threads}
local created = 0

function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
end

local i = 0
function init(args)
  i = math.floor((thread_index or 0) * #paths / threads)
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
)

_RESULT = re.compile(r"^WRK_RESULT (.*)$", re.M)


def write_lua(directory: Path, name: str, paths: Sequence[str], threads: int) -> Path:
    paths_file = directory / f"{name}.paths"
    paths_file.write_text("".join(p + "\n" for p in paths))
    script = directory / f"{name}.lua"
    script.write_text(_LUA.substitute(paths_file=paths_file, threads=threads))
    return script


@dataclass(frozen=True)
class Load:
    wrk: str
    connections: int
    threads: int

    def argv(self, base_url: str, script: Path, seconds: int) -> list[str]:
        return [
            self.wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds}s",
            "--timeout",
            "60s",  # a 64 MiB response shared by 32 connections takes seconds
            "-s",
            str(script),
            base_url,
        ]

    def run(self, base_url: str, script: Path, seconds: int) -> WrkResult:
        argv = self.argv(base_url, script, seconds)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 90)
        match = _RESULT.search(out.stdout)
        if out.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({out.returncode}): {shlex.join(argv)}\n{out.stdout}{out.stderr}")
        fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
        return WrkResult(
            requests=fields["requests"],
            bytes=fields["bytes"],
            seconds=fields["duration_us"] / 1e6,
            errors={k: fields[k] for k in ("connect", "read", "write", "status", "timeout") if fields[k]},
            p50_ms=fields["p50_us"] / 1e3,
            p99_ms=fields["p99_us"] / 1e3,
        )


def verify(
    base_url: str, paths: Sequence[str], keys: Sequence[str], digests: dict[str, str], who: str
) -> None:
    """GET each path once and compare with the file's bytes; stops the run on the first mismatch."""
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for path, key in zip(paths, keys, strict=True):
            try:
                response = client.get(path)
            except httpx.TransportError as exc:
                raise RuntimeError(f"{who}: GET {key} failed: {exc!r}") from exc
            if response.status_code != 200:
                raise RuntimeError(f"{who}: GET {key} answered {response.status_code}: {response.text[:300]}")
            if digest(response.content) != digests[key]:
                raise RuntimeError(
                    f"{who}: GET {key} returned {len(response.content)} bytes that differ from the file"
                )


# --- the servers ---------------------------------------------------------------------------------


def start_nginx(
    nginx: str, workdir: Path, data: Path, workers: int, probe: str, keepalive: str = "75s"
) -> tuple[Server, str]:
    """nginx serving `data` as static files; `keepalive` "0" closes every connection after its
    response, as moto does."""
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    template = string.Template((HERE / "nginx.conf.tmpl").read_text())
    conf.write_text(
        template.substitute(workers=workers, prefix=prefix, port=port, root=data, keepalive=keepalive)
    )
    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    server = Server(f"nginx ({workers} workers)", argv, prefix / "stdout.log")
    base = f"http://127.0.0.1:{port}"
    server.wait_http(f"{base}/{BUCKET}/{probe}/obj-00000")
    return server, base


def start_hoard(workdir: Path, data: Path, workers: int) -> tuple[Server, str]:
    home = workdir / f"hoard-w{workers}"
    home.mkdir()
    port = free_port()
    config = home / "hoard.yaml"
    config.write_text(
        f"""\
server: {{host: 127.0.0.1, port: {port}, workers: {workers}}}
auth:
  users: [{{access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY}, admin: true}}]
cache: {{dir: "{home / "cache"}", size: 4GiB}}
metastore: {{dir: "{home / "meta"}"}}
mounts:
  - {{path: /, uri: "file://{data}"}}
"""
    )
    prefix, env = hoard_argv()
    argv = [*prefix, "serve", "--config", str(config)]
    server = Server(f"Hoard ({workers} worker{'s' if workers > 1 else ''})", argv, home / "stdout.log", env)
    base = f"http://127.0.0.1:{port}"
    server.wait_http(f"{base}/_hoard/ready", timeout=60.0)
    return server, base


# --- profiling (optional) ---


def profile_hoard(server: Server, load: Load, base: str, script: Path, seconds: int, out: Path) -> str:
    """py-spy on every Hoard process during one more (unmeasured) wrk run; returns the top frames.

    py-spy pauses the processes for each sample, so this run's rate is not a measurement."""
    return py_spy(server, out, lambda: load.run(base, script, seconds))


# --- the run -------------------------------------------------------------------------------------


def fmt_rate(m: Measurement) -> str:
    return f"{m.rate:,.0f} req/s" if m.size.by_requests else f"{m.rate:,.0f} MB/s"


def table(results: Sequence[Measurement]) -> str:
    rows = [("size", "server", "rate", "CPU µs/request", "CPU s/GB", "ratio Hoard/nginx")]
    for m in results:
        ratio = ""
        base = next((b for b in results if b.size == m.size and b.server.startswith("nginx")), None)
        if base is not None and m is not base:
            ratio = f"rate {m.rate / base.rate:.2f}x, CPU/req {m.cpu_us_per_request / base.cpu_us_per_request:.1f}x"
        flag = " (!)" if m.wrk.errors or m.disturbed else ""
        rows.append(
            (
                m.size.label,
                m.server + flag,
                fmt_rate(m),
                f"{m.cpu_us_per_request:,.0f}",
                f"{m.cpu_s_per_gb:,.2f}",
                ratio,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(results: Sequence[Measurement]) -> str:
    lines = []
    for m in results:
        errors = ", ".join(f"{k} {v}" for k, v in m.wrk.errors.items()) or "none"
        lines.append(
            f"  {m.size.label:>6}  {m.server:<18} {m.wrk.requests:>9,} requests in {m.wrk.seconds:.1f}s, "
            f"{m.wrk.bytes / 1e6:,.0f} MB, latency p50 {m.wrk.p50_ms:.1f} ms p99 {m.wrk.p99_ms:.1f} ms, "
            f"CPU: server {100 * m.cpu_seconds / m.wrk.seconds:.0f}%, wrk {100 * m.client_cpu_seconds / m.wrk.seconds:.0f}%, "
            f"interrupts {100 * m.interrupt_cpu_seconds / m.wrk.seconds:.0f}%, "
            f"others {100 * m.other_cpu_seconds / m.wrk.seconds:.0f}%; errors: {errors}"
        )
    return "\n".join(lines)


def measure_once(
    server: Server, base: str, size: Size, script: Path, load: Load, seconds: int
) -> Measurement:
    before, machine, client = snapshot(), machine_ticks(), children_cpu_seconds()
    result = load.run(base, script, seconds)
    after, client = snapshot(), children_cpu_seconds() - client
    busy, interrupts = (b - a for a, b in zip(machine, machine_ticks(), strict=True))
    if not server.alive():
        raise RuntimeError(f"{server.name} died during the {size.label} run:\n{server.log_tail()}")
    pids = subtree(before, server.proc.pid) | subtree(after, server.proc.pid)
    cpu = cpu_delta(before, after, pids)
    other = max(0.0, busy / CLK_TCK - cpu - client)
    m = Measurement(size, server.name, result, cpu, client, other, interrupts / CLK_TCK)
    log(f"  {fmt_rate(m)}, {m.cpu_us_per_request:,.0f} µs CPU/request")
    if result.errors:
        log(f"  warning: wrk counted errors: {result.errors}")
    if m.disturbed:
        busiest = busiest_other(before, after, pids | {os.getpid()})
        log(f"  warning: other processes used {100 * other / result.seconds:.0f}% CPU, most: {busiest}")
    return m


def measure_server(
    server: Server,
    base: str,
    sizes: Sequence[Size],
    scripts: dict[str, Path],
    load: Load,
    args: argparse.Namespace,
) -> list[Measurement]:
    results = []
    for size in sizes:
        script = scripts[size.name]
        command = shlex.join(load.argv(base, script, args.duration))
        log(f"{server.name}, {size.label}: warm-up {args.warmup}s, then {command}")
        load.run(base, script, args.warmup)
        tries = [measure_once(server, base, size, script, load, args.duration)]
        while tries[-1].disturbed and len(tries) <= args.retries:
            log("  run again: the machine was busy with other work")
            tries.append(measure_once(server, base, size, script, load, args.duration))
        results.append(min(tries, key=lambda m: m.other_cpu_seconds))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured run (default 10)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of warm-up before each run (default 3)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--workers", default="1,2", help="Hoard worker counts to run, comma-separated (default 1,2)"
    )
    parser.add_argument("--nginx-workers", type=int, default=2, help="nginx worker_processes (default 2)")
    parser.add_argument("--sizes", default="4KiB,1MiB,64MiB", help="which object sizes (default all three)")
    parser.add_argument(
        "--quick", action="store_true", help="a short check that it all works (under a minute)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="runs again a run during which other processes took > 25%% of a core (default 1)",
    )
    parser.add_argument("--profile", action="store_true", help="also py-spy Hoard during one more run")
    parser.add_argument(
        "--profile-size", default="4KiB", help="object size of the profiled run (default 4KiB)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (data, logs, configs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.retries = min(args.duration, 2), min(args.warmup, 1), 0
    try:
        args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: expected numbers such as 1,2")
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    known = {s.name: s for s in SIZES}
    if not names or any(n not in known for n in names):
        parser.error(f"--sizes: choose from {', '.join(known)}")
    args.size_list = [
        Size(s.label, s.name, s.nbytes, QUICK_COUNTS[s.name] if args.quick else s.count)
        for s in SIZES
        if s.name in names
    ]
    if args.duration < 1 or args.warmup < 1 or args.threads < 1 or args.connections < args.threads:
        parser.error("durations must be >= 1 s and --connections >= --threads >= 1")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: at least one count >= 1")
    return args


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` stops its server (SIGINT
    too, since a shell starts a background job with SIGINT ignored)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv])
    nginx, wrk = ensure_tools()
    load = Load(wrk, args.connections, args.threads)
    header = [
        f"command: {command}",
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, Python {platform.python_version()}",
        f"hoard {hoard_revision()}; {tool_version([nginx, '-v'])}; {tool_version([wrk, '-v']).split(' Copyright')[0]}",
        f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        f"load: wrk -t{args.threads} -c{args.connections}, {args.warmup}s warm-up + {args.duration}s per run; "
        + ", ".join(f"{s.count} x {s.label}" for s in args.size_list),
    ]
    started = time.monotonic()
    results: list[Measurement] = []
    profile = ""
    with signals_as_interrupt(), ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="hoard-bench-"))
        if args.keep:
            stack.callback(log, f"kept {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        data = workdir / "data"
        log(f"writing objects under {data}")
        digests = make_data(data, args.size_list)

        # nginx: the same object paths as static files.
        server, base = start_nginx(nginx, workdir, data, args.nginx_workers, args.size_list[0].name)
        stack.callback(server.stop)
        scripts = {}
        for size in args.size_list:
            paths = [f"/{BUCKET}/{key}" for key in keys_of(size)]
            verify(base, paths[:1] + paths[-1:], keys_of(size)[:1] + keys_of(size)[-1:], digests, server.name)
            scripts[size.name] = write_lua(workdir, f"nginx-{size.name}", paths, args.threads)
        results += measure_server(server, base, args.size_list, scripts, load, args)
        server.stop()

        for workers in args.worker_counts:
            server, base = start_hoard(workdir, data, workers)
            stack.callback(server.stop)
            scripts = {}
            for size in args.size_list:
                keys = keys_of(size)
                paths = presigned_paths(base, keys)
                verify(base, paths, keys, digests, server.name)  # every object: also fills the cache
                scripts[size.name] = write_lua(workdir, f"hoard-w{workers}-{size.name}", paths, args.threads)
            results += measure_server(server, base, args.size_list, scripts, load, args)
            if args.profile and workers == max(args.worker_counts) and args.profile_size in scripts:
                profile = profile_hoard(
                    server,
                    load,
                    base,
                    scripts[args.profile_size],
                    args.duration,
                    workdir / f"py-spy-{args.profile_size}.txt",
                )
            server.stop()

    order = {s.name: i for i, s in enumerate(SIZES)}
    results.sort(key=lambda m: order[m.size.name])  # stable: nginx first within a size
    print("\n".join(header))
    print()
    print(table(results))
    print()
    print("MB = 10^6 bytes, GB = 10^9 bytes received by wrk (headers included); CPU = user + system time")
    print("of the server's processes (master and workers) over the measured run; for 1 MiB and 64 MiB a")
    print("request is an object's worth of bytes received, so responses cut off at the end count in part.")
    print("Per run, CPU in % of one core: 'interrupts' (irq + softirq) is mostly loopback TCP, charged")
    print("to neither side; 'others' is every other process, which should be near 0 for a clean run.")
    print("(!) marks a run with wrk errors or one that other processes disturbed (> 25% of a core).")
    print(details(results))
    if profile:
        print()
        print(profile)
    print(f"total time {time.monotonic() - started:.0f}s")
    return 1 if any(m.wrk.errors for m in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
