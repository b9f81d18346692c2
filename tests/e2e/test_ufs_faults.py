"""The under-storage misbehaving, end to end: a real gateway subprocess whose S3 mount talks to a
dedicated moto server through the fault-injecting proxy (tests/faultproxy.py).

Faults (added latency, 503 SlowDown bursts, connections reset mid-body, stalled bodies) must never
cost a client its bytes, and a UFS that is really down must cost it a clean, fast 503; the limits
of a mount (bandwidth, concurrency) must hold as seen from outside: timed at the client, counted
at the proxy, and with the gateway's memory bounded while hundreds of clients wait. Clients are
boto3 with retries off, or httpx with presigned URLs; bodies are compared by SHA-256.

Reads that must reach the UFS go to keys under `skip/` (a skipCache rule) or to fresh keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.e2e.cache_env import Hoard, KiB, MiB, Moto, blob, get, put_many, s3_mount, sha
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, small_file_system, start_gateway
from tests.faultproxy import FaultProxy
from tests.servers import moto_server

SKIP_RULES = [{"path": "/s3/skip/", "filter": "skipCache"}]


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with moto_server() as endpoint:
        yield Moto(endpoint)


@contextmanager
def hoard_via_proxy(
    tmp: Path, moto: Moto, bucket: str, limits: dict[str, Any]
) -> Iterator[tuple[Hoard, FaultProxy]]:
    """A gateway whose mount /s3 is moto bucket `bucket`, reached through a fresh FaultProxy."""
    moto.new_bucket(bucket)
    with FaultProxy(moto.endpoint, io_timeout=20) as proxy:
        mount = {**s3_mount(proxy.url, bucket), "limits": limits}
        cache = {"reserved": 0, "page_size": "1MiB", "rules": SKIP_RULES}
        gw = start_gateway(tmp, mounts=[mount], extra={"cache": cache})
        try:
            proxy.clear()  # the mount check at startup is not part of any test
            yield Hoard(gw, bucket, tmp), proxy
        finally:
            gw.stop()


def client(h: Hoard, **config: Any) -> Any:
    """boto3 with no retries at all: conftest's s3_client sets `max_attempts: 1`, which botocore
    counts as one retry, and a retried 503 would hide what the gateway answered."""
    cfg = BotoConfig(
        signature_version="s3v4", s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config
    )
    return boto3.client(
        "s3",
        endpoint_url=h.gw.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=cfg,
    )


def presigned(h: Hoard, key: str) -> str:
    url: str = client(h).generate_presigned_url(
        "get_object", Params={"Bucket": "s3", "Key": key}, ExpiresIn=600
    )
    return url


def stream_sha(s3: Any, key: str, **kwargs: Any) -> str:
    """SHA-256 of a GetObject body, read in pieces (no 100 MiB bytes object on the test's side)."""
    body = s3.get_object(Bucket="s3", Key=key, **kwargs)["Body"]
    digest = hashlib.sha256()
    for piece in body.iter_chunks(MiB):
        digest.update(piece)
    return digest.hexdigest()


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (the gateway's workers, if any)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    family, todo = set(), [pid]
    while todo:
        p = todo.pop()
        family.add(p)
        todo.extend(c for c, parent in parents.items() if parent == p and c not in family)
    total = 0
    for p in family:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def circuit_open(h: Hoard) -> bool:
    return h.metrics()[("hoard_ufs_circuit_open", (("mount", "/s3"),))] == 1


def s3_error(response: httpx.Response) -> str:
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.text
    return root.findtext("Code") or ""


# --- 1. faults: correct bytes, or a clean and fast 503 -------------------------------------------

IDLE = 1.0  # the mount's idle timeout (and first-byte timeout, and connect timeout)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, moto: Moto) -> Iterator[tuple[Hoard, FaultProxy]]:
    limits = {
        "idle_timeout": f"{IDLE}s",
        "first_byte_timeout": f"{IDLE}s",
        "connect_timeout": f"{IDLE}s",
        # The ceiling AIMD recovers to after SlowDown, and +5 req/s per second: without one, a
        # mount throttled at a few req/s backs off to the 1 req/s floor and takes ~10 s to recover.
        "max_requests_per_second": 100,
    }
    with hoard_via_proxy(tmp_path_factory.mktemp("faulty"), moto, "faulty-ufs", limits) as pair:
        yield pair


@pytest.fixture
def h(faulty: tuple[Hoard, FaultProxy]) -> Hoard:
    return faulty[0]


@pytest.fixture
def proxy(faulty: tuple[Hoard, FaultProxy]) -> Iterator[FaultProxy]:
    p = faulty[1]
    p.clear()
    yield p
    p.clear()


def test_added_latency(moto: Moto, h: Hoard, proxy: FaultProxy) -> None:
    data = {f"skip/lat-{i}": blob(300 * KiB, f"lat-{i}") for i in range(8)}
    put_many(moto.client(), h.bucket, data)
    proxy.latency = 0.25
    s3 = client(h, max_pool_connections=16)
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        hashes = dict(zip(data, pool.map(lambda k: stream_sha(s3, k), data), strict=True))
    elapsed = time.monotonic() - began
    assert hashes == {k: sha(v) for k, v in data.items()}
    # Each read is a HEAD then a GET, each delayed; the 8 ran side by side.
    assert 0.5 <= elapsed < 3.0, elapsed
    assert len(proxy.exchanges("GET")) == 8


def test_slowdown_bursts_are_retried(moto: Moto, h: Hoard, proxy: FaultProxy) -> None:
    # Three 503 SlowDown in a row (one less than the mount's tries) on the stat or on the GET; a
    # fresh key of a cached prefix has its GET (a page fetch) refused too.
    cases = [("skip/slow-head", "HEAD"), ("skip/slow-get", "GET"), ("fill/slow-get", "GET")]
    data = {key: blob(3 * MiB + i, key) for i, (key, _) in enumerate(cases)}
    put_many(moto.client(), h.bucket, data)
    s3 = client(h)
    for key, method in cases:
        proxy.reset_counters()
        proxy.fail_next(3, method=method)
        assert sha(get(s3, key)[0]) == sha(data[key]), key
        assert proxy.pending_faults == 0
        failed = [e for e in proxy.exchanges() if e.status == 503]
        assert [(e.method, e.fault) for e in failed] == [(method, "fail 503 SlowDown")] * 3
    # Past the bursts, the mount answers at once again.
    proxy.reset_counters()
    assert sha(get(s3, "skip/slow-get")[0]) == sha(data["skip/slow-get"])
    assert [e.status for e in proxy.exchanges()] == [200, 206]


def test_connections_reset_mid_body(moto: Moto, h: Hoard, proxy: FaultProxy) -> None:
    data = {"skip/reset": blob(8 * MiB, "reset"), "fill/reset": blob(8 * MiB, "fill-reset")}
    put_many(moto.client(), h.bucket, data)
    s3 = client(h)
    for key, body in data.items():
        proxy.reset_counters()
        # The first GET and its resume. A cold cached read (fill/) first GETs the whole object for
        # its page 0 and metadata, and the fill goes on with that response: that is the first GET.
        proxy.reset_next(after_bytes=3 * MiB + 17, count=2)
        got, xcache = get(s3, key)
        assert sha(got) == sha(body), key
        assert xcache != "HIT"
        assert proxy.pending_faults == 0
        gets = proxy.exchanges("GET")
        assert [(e.fault or "").split(" ")[0] for e in gets] == ["reset", "reset", ""], gets
        # Each resume went on from where the read broke (at most what the proxy forwarded: a reset
        # drops what the kernel still held), pinned to the version the read began with. (A reset
        # that reaches fill/'s first GET before it has delivered page 0 drops that page with the
        # rest of the kernel's buffer: the metadata GET is then retried whole, as a stat would be.)
        resumed = 0
        for before, after in zip(gets, gets[1:], strict=False):
            if key.startswith("fill/") and after.headers.get("range") == "bytes=0-":
                assert before.headers.get("range") == "bytes=0-" and not after.headers.get("if-match"), gets
                continue
            reached = (before.range_start or 0) + before.body_bytes
            assert (before.range_start or 0) < (after.range_start or 0) <= reached, gets
            assert after.headers.get("if-match"), gets
            resumed += 1
        assert resumed == 2 or key.startswith("fill/"), gets
    # The cached copy, stored from the broken and resumed fetches, is the right one too.
    proxy.reset_counters()
    assert sha(get(s3, "fill/reset")[0]) == sha(data["fill/reset"])


def test_stalled_bodies_time_out_and_resume(moto: Moto, h: Hoard, proxy: FaultProxy) -> None:
    data = {"skip/stall-mid": blob(4 * MiB, "stall-mid"), "skip/stall-head": blob(MiB + 3, "stall-head")}
    put_many(moto.client(), h.bucket, data)
    s3 = client(h)
    for key, after in (("skip/stall-mid", MiB), ("skip/stall-head", None)):
        proxy.reset_counters()
        proxy.stall_next(8.0, after_bytes=after)
        began = time.monotonic()
        assert sha(get(s3, key)[0]) == sha(data[key]), key
        elapsed = time.monotonic() - began
        # One idle (or first-byte: connect + first byte) timeout, then a fresh GET: not the 8 s stall.
        assert IDLE <= elapsed < 2 * IDLE + 2.0, (key, elapsed)
        gets = proxy.exchanges("GET")
        assert (gets[0].fault or "").startswith("stall") and len(gets) == 2, gets
        if after is not None:
            assert 0 < (gets[1].range_start or 0) <= after and gets[1].headers.get("if-match"), gets


def test_object_replaced_before_a_resume_is_an_error_never_a_mix(
    moto: Moto, h: Hoard, proxy: FaultProxy
) -> None:
    old, new = blob(4 * MiB, "old"), blob(4 * MiB, "new")
    ufs = moto.client()
    ufs.put_object(Bucket=h.bucket, Key="datasets/skip/swap", Body=old)
    proxy.stall_next(5.0, after_bytes=MiB)
    received = bytearray()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            with httpx.stream("GET", presigned(h, "skip/swap"), timeout=30) as r:
                assert r.status_code == 200
                for piece in r.iter_bytes():
                    received.extend(piece)
        except httpx.HTTPError as exc:
            failure.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    # While the body stalls (before the idle timeout makes the gateway resume), replace the object.
    deadline = time.monotonic() + 10
    while not any((e.fault or "").startswith("stall") for e in proxy.exchanges("GET")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ufs.put_object(Bucket=h.bucket, Key="datasets/skip/swap", Body=new)
    reader.join(30)
    assert not reader.is_alive()
    # The resume found another ETag: the client's body breaks off; what it got is the old version's.
    assert failure and len(received) < len(old), (failure, len(received))
    assert bytes(received) == old[: len(received)]
    gets = proxy.exchanges("GET")
    assert [e.status for e in gets] == [206, 412] and gets[1].headers.get("if-match"), gets
    assert sha(get(client(h), "skip/swap")[0]) == sha(new)


def test_ufs_down_fails_fast_and_serves_the_cache(moto: Moto, h: Hoard, proxy: FaultProxy) -> None:
    warm, fresh = blob(2 * MiB + 1, "warm"), blob(100 * KiB, "fresh")
    put_many(moto.client(), h.bucket, {"fill/warm": warm, "skip/fresh": fresh})
    s3 = client(h)
    assert get(s3, "fill/warm") == (warm, "MISS")
    h.wait_pages("fill/warm", 3)
    url = presigned(h, "skip/fresh")

    def clean_503(r: httpx.Response) -> None:
        assert r.status_code == 503 and s3_error(r) == "ServiceUnavailable", r.text
        assert r.headers["content-type"].startswith("application/xml")
        assert 1 <= int(r.headers["retry-after"]) <= 5, r.headers  # at most the 5 s cooldown

    proxy.set_down(True)
    with httpx.Client(timeout=30) as http:
        # Each request tries 4 times; 5 failures in a row open the breaker: the second request.
        requests = 0
        while not circuit_open(h):
            assert requests < 2, "the breaker did not open"
            clean_503(http.get(url))
            requests += 1
        took = []
        for _ in range(20):
            began = time.monotonic()
            r = http.get(url)
            took.append(time.monotonic() - began)
            clean_503(r)
        assert max(took) < 0.1, took
        # Cached data of the mount stays readable while it is down.
        for _ in range(3):
            assert get(s3, "fill/warm") == (warm, "HIT")

        # Up again: after the cooldown (as Retry-After says) reads work again.
        proxy.set_down(False)
        deadline = time.monotonic() + 15
        while (r := http.get(url)).status_code != 200:
            assert r.status_code == 503 and s3_error(r) == "ServiceUnavailable", r.text
            assert time.monotonic() < deadline, r.text
            time.sleep(min(0.5, int(r.headers["retry-after"])))
        assert sha(r.content) == sha(fresh)
    assert sha(get(s3, "skip/fresh")[0]) == sha(fresh)
    assert get(s3, "fill/warm") == (warm, "HIT")


# --- 2. bounded queues: 200 clients waiting on a throttled mount ---------------------------------

RSS_BOUND = 64 * MiB  # measured: a few MiB


def test_200_clients_wait_on_a_throttled_mount_in_bounded_memory(tmp_path: Path, moto: Moto) -> None:
    limits = {"bandwidth": "2MiB/s", "max_concurrency": 4}
    with hoard_via_proxy(tmp_path, moto, "queue-ufs", limits) as (h, proxy):
        data = {f"skip/q-{i:03d}": blob(64 * KiB, f"q-{i}") for i in range(200)}
        put_many(moto.client(), h.bucket, data)
        urls = {key: presigned(h, key) for key in data}
        pid = h.gw.proc.pid
        baseline = tree_rss(pid)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(tree_rss(pid))
                stop.wait(0.05)

        async def read_all() -> dict[str, tuple[int, str]]:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(limits=limits, timeout=60) as http:

                async def one(key: str) -> tuple[str, tuple[int, str]]:
                    r = await http.get(urls[key])
                    if r.status_code == 503:
                        return key, (503, s3_error(r))
                    return key, (r.status_code, sha(r.content))

                return dict(await asyncio.gather(*(one(k) for k in data)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.monotonic()
        try:
            results = asyncio.run(read_all())
        finally:
            stop.set()
            sampler.join(5)
        elapsed = time.monotonic() - began

        ok = {k for k, (status, _) in results.items() if status == 200}
        assert all(results[k][1] == sha(data[k]) for k in ok)
        assert all(results[k] == (503, "ServiceUnavailable") for k in set(data) - ok), results
        assert len(ok) == len(data), f"{len(data) - len(ok)} clean 503s"
        # 12.5 MiB at 2 MiB/s (2 MiB of burst): they really waited, and not forever.
        assert 4.5 <= elapsed < 20, elapsed
        assert 1 < proxy.max_in_flight <= 4
        peak = max(samples)
        assert len(samples) > 20 and peak - baseline < RSS_BOUND, (baseline, peak)


# --- 3. bandwidth: 20 MiB/s, shared by the readers of the mount ----------------------------------


def test_bandwidth_limit_holds_and_is_shared(tmp_path: Path, moto: Moto) -> None:
    limits = {"bandwidth": "20MiB/s", "burst": "1MiB"}
    with hoard_via_proxy(tmp_path, moto, "bw-ufs", limits) as (h, proxy):
        big = blob(100 * MiB, "big")
        moto.client().put_object(Bucket=h.bucket, Key="datasets/skip/big", Body=big)
        s3 = client(h, max_pool_connections=8)

        began = time.monotonic()
        assert stream_sha(s3, "skip/big") == sha(big)
        alone = time.monotonic() - began

        quarter = 25 * MiB
        ranges = [(i * quarter, (i + 1) * quarter - 1) for i in range(4)]
        began = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            hashes = list(
                pool.map(lambda r: stream_sha(s3, "skip/big", Range=f"bytes={r[0]}-{r[1]}"), ranges)
            )
        shared = time.monotonic() - began
        assert hashes == [sha(big[a : b + 1]) for a, b in ranges]
        assert 4.5 <= alone <= 6.0, alone
        assert 4.5 <= shared <= 6.0, shared
        assert sum(e.body_bytes for e in proxy.exchanges("GET")) == 200 * MiB  # every byte from the UFS


# --- 4. concurrency: never more than max_concurrency requests at the UFS -------------------------


def test_concurrency_limit_is_never_exceeded_at_the_ufs(tmp_path: Path, moto: Moto) -> None:
    with hoard_via_proxy(tmp_path, moto, "conc-ufs", {"max_concurrency": 3}) as (h, proxy):
        data = {f"skip/c-{i:02d}": blob(256 * KiB, f"c-{i}") for i in range(30)}
        put_many(moto.client(), h.bucket, data)
        proxy.reset_counters()
        proxy.latency = 0.05
        s3 = client(h, max_pool_connections=32)
        with ThreadPoolExecutor(30) as pool:
            hashes = dict(zip(data, pool.map(lambda k: stream_sha(s3, k), data), strict=True))
        assert hashes == {k: sha(v) for k, v in data.items()}
        assert len(proxy.exchanges("GET")) == 30 and proxy.requests >= 60  # a HEAD and a GET each
        assert 1 < proxy.max_in_flight <= 3, proxy.max_in_flight


def test_a_full_file_system_mount_refuses_writes_and_loses_nothing(tmp_path: Path) -> None:
    """A NAS mount whose file system is full (a 4 MiB tmpfs): a PUT, an overwrite and a part that
    do not fit are refused with a 503 S3 error, never a 500; the object they would have replaced
    keeps its bytes, no half-written file is left behind, and the space comes back for the next
    write that fits."""
    with small_file_system(tmp_path / "nas", "4m") as nas:
        (nas / "b").mkdir()
        gw = start_gateway(tmp_path / "gw", mounts=[{"path": "/nas", "uri": f"file://{nas}"}])
        try:
            s3 = gw.client()
            kept = blob(MiB, "kept")
            s3.put_object(Bucket="nas", Key="b/kept", Body=kept)
            too_big = blob(8 * MiB, "too big")
            for key in ("b/new", "b/kept"):
                with pytest.raises(ClientError) as refused:
                    s3.put_object(Bucket="nas", Key=key, Body=too_big)
                assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
                assert "No space left on device" in refused.value.response["Error"]["Message"]
            upload = s3.create_multipart_upload(Bucket="nas", Key="b/parts")["UploadId"]
            with pytest.raises(ClientError) as refused:
                s3.upload_part(Bucket="nas", Key="b/parts", UploadId=upload, PartNumber=1, Body=too_big)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            s3.abort_multipart_upload(Bucket="nas", Key="b/parts", UploadId=upload)

            assert s3.get_object(Bucket="nas", Key="b/kept")["Body"].read() == kept
            with pytest.raises(ClientError) as missing:
                s3.head_object(Bucket="nas", Key="b/new")
            assert missing.value.response["Error"]["Code"] == "404"
            files = sorted(str(p.relative_to(nas)) for p in nas.rglob("*") if p.is_file())
            assert files == ["b/kept"]
            later = blob(MiB, "later")
            s3.put_object(Bucket="nas", Key="b/later", Body=later)
            assert s3.get_object(Bucket="nas", Key="b/later")["Body"].read() == later
            assert "Traceback" not in gw.log_path.read_text()
        finally:
            gw.stop()
