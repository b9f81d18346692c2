"""The limiter around real adapters: LocalAdapter on a temp dir and S3Adapter on moto server.

Counting and fault injection are wrapper adapters (subclasses of Instrumented), never mocks of
the adapter under test. Timed cases measure wall-clock with time.monotonic and stay near 2 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import boto3  # type: ignore[import-untyped]
import pytest

from tests.azurite import ACCOUNT_KEY as AZURITE_KEY
from tests.ufs_adapters.conformance import CASES, Case, body, get, put
from tests.ufs_adapters.test_local import supports_user_xattrs
from tests.ufs_adapters.test_s3 import options
from ufs_adapters.azure import AzureBlobAdapter
from ufs_adapters.base import NotFound, ObjectInfo, ReadOptions, UfsAdapter, Unavailable, WriteMeta
from ufs_adapters.instrumented import Instrumented
from ufs_adapters.limiter import Backoff, Budget, Limited, LimiterStats, LimitSpec
from ufs_adapters.local import LocalAdapter
from ufs_adapters.s3 import S3Adapter

T = TypeVar("T")
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

# generous limits, so the suite runs at full speed through every code path: admission, request
# tokens, bytes split into pieces smaller than the adapters' 1 MiB chunks, and a global budget
BUSY = LimitSpec(bandwidth=1 * GiB, burst=256 * KiB, max_concurrency=2, max_requests_per_second=2000)
BUSY_GLOBAL = LimitSpec(bandwidth=2 * GiB, burst=384 * KiB, max_concurrency=4)


def limited(inner: UfsAdapter, spec: LimitSpec, global_spec: LimitSpec | None = None, **kw: Any) -> Limited:
    return Limited(inner, Budget(spec, **kw), None if global_spec is None else Budget(global_spec))


def stream(ufs: UfsAdapter, path: str) -> AsyncGenerator[bytes, None]:
    """A read to hold open and close by hand (adapters' reads are async generators)."""
    return cast(AsyncGenerator[bytes, None], ufs.read(path, ReadOptions()))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- wrapper adapters -----------------------------------------------------------------------------


class Inflight(Instrumented):
    """Counts the calls in progress at the wrapped adapter (a read until its stream ends), the
    peak, and when each call started."""

    def __init__(self, inner: UfsAdapter) -> None:
        super().__init__(inner)
        self.current = self.peak = 0
        self.starts: list[float] = []

    def _enter(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)
        self.starts.append(time.monotonic())

    async def _count(self, operation: str, call: Awaitable[T]) -> T:
        self._enter()
        try:
            return await super()._count(operation, call)
        finally:
            self.current -= 1

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        self._enter()
        chunks = cast(AsyncGenerator[bytes, None], super().read(path, opts))
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
            self.current -= 1


class SlowDown(Instrumented):
    """A UFS that answers the next `fail` calls with 503 SlowDown after `delay` seconds."""

    def __init__(self, inner: UfsAdapter, delay: float = 0.0) -> None:
        super().__init__(inner)
        self.fail = 0
        self.delay = delay

    async def _count(self, operation: str, call: Awaitable[T]) -> T:
        if self.fail > 0:
            self.fail -= 1
            if isinstance(call, Coroutine):
                call.close()
            await asyncio.sleep(self.delay)
            raise Unavailable(operation, "SlowDown", throttled=True)
        return await super()._count(operation, call)


class BodyChunks(Instrumented):
    """Records the sizes of the body chunks a write hands to the wrapped adapter."""

    def __init__(self, inner: UfsAdapter) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        async def recorded() -> AsyncIterator[bytes]:
            async for chunk in body:
                self.sizes.append(len(chunk))
                yield chunk

        return await super().write(path, recorded(), size=size, meta=meta)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def local(root: Path) -> LocalAdapter:
    return LocalAdapter(root)


def make_file(root: Path, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return data


@pytest.fixture(scope="module")
def s3_bucket(moto_endpoint: str) -> str:
    name = f"hoard-limiter-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
async def s3_opened(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[S3Adapter]:
    adapter = await S3Adapter.open(f"s3://{s3_bucket}", options(moto_endpoint))
    yield adapter
    await adapter.aclose()


@pytest.fixture
def xattrs(tmp_path: Path) -> None:
    if not supports_user_xattrs(tmp_path):
        pytest.skip("the temp file system has no user xattrs")


# --- conformance --------------------------------------------------------------------------------------

LOCAL_LIMITS = {"unlimited": (LimitSpec(), None), "busy": (BUSY, BUSY_GLOBAL)}


@pytest.mark.parametrize("limits", LOCAL_LIMITS.values(), ids=LOCAL_LIMITS.keys())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.usefixtures("xattrs")
async def test_conformance_local(
    local: LocalAdapter, limits: tuple[LimitSpec, LimitSpec | None], case: Case
) -> None:
    ufs = limited(local, *limits)
    await case(ufs)
    assert ufs.stats().inflight == 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_conformance_s3(s3_opened: S3Adapter, s3_bucket: str, case: Case) -> None:
    inner = S3Adapter(s3_opened.client, s3_bucket, f"limited/{uuid.uuid4().hex[:8]}")
    ufs = limited(inner, BUSY, BUSY_GLOBAL)
    await case(ufs)
    assert ufs.stats().inflight == 0


@pytest.fixture(scope="module")
async def azure_opened(azurite_endpoint: str) -> AsyncIterator[AzureBlobAdapter]:
    adapter = await AzureBlobAdapter.open(
        "wasbs://hoard-limited@devstoreaccount1.blob.core.windows.net/",
        {"endpoint_url": azurite_endpoint, "account_key": AZURITE_KEY},
    )
    await adapter.client.create_container("hoard-limited")
    yield adapter
    await adapter.aclose()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_conformance_azure(azure_opened: AzureBlobAdapter, case: Case) -> None:
    inner = AzureBlobAdapter(azure_opened.client, "hoard-limited", f"limited/{uuid.uuid4().hex[:8]}")
    ufs = limited(inner, BUSY, BUSY_GLOBAL)
    await case(ufs)
    assert ufs.stats().inflight == 0


# --- bandwidth ----------------------------------------------------------------------------------------


async def test_bandwidth_paces_a_reader(root: Path, local: LocalAdapter) -> None:
    rate, burst = 10 * MiB, 1 * MiB
    data = make_file(root, "big", 20 * MiB)
    ufs = limited(local, LimitSpec(bandwidth=rate, burst=burst))
    began = time.monotonic()
    received = bytearray()
    for_burst_check: list[tuple[float, int]] = []
    async for chunk in ufs.read("big", ReadOptions()):
        received += chunk
        for_burst_check.append((time.monotonic(), len(received)))
    elapsed = time.monotonic() - began
    assert md5(bytes(received)) == md5(data)
    assert 1.8 <= elapsed <= 2.6, elapsed
    # never ahead of the bucket: what arrived by t fits in the burst plus what refilled since
    for t, total in for_burst_check:
        assert total <= burst + rate * (t - began) + 64 * KiB, (t - began, total)
    stats = ufs.stats()
    assert stats.inflight == 0 and 1.5 <= stats.throttle_seconds <= elapsed


async def test_bandwidth_is_shared_by_concurrent_readers(root: Path, local: LocalAdapter) -> None:
    files = {f"f{i}": make_file(root, f"f{i}", 5 * MiB) for i in range(4)}
    ufs = limited(local, LimitSpec(bandwidth=10 * MiB, burst=1 * MiB))
    began = time.monotonic()

    async def read(name: str) -> float:
        assert md5(await get(ufs, name)) == md5(files[name])
        return time.monotonic() - began

    finished = await asyncio.gather(*(read(name) for name in files))
    elapsed = time.monotonic() - began
    assert 1.8 <= elapsed <= 2.6, elapsed  # 20 MiB at 10 MiB/s, not 5 MiB at 10 MiB/s each
    assert min(finished) >= 0.6 * elapsed, finished  # served in turn: nobody runs ahead, nobody starves
    stats = ufs.stats()
    assert stats.inflight == 0 and stats.throttle_seconds >= 4 * 1.0


async def test_global_budget_is_shared_by_mounts(tmp_path: Path) -> None:
    shared = Budget(LimitSpec(bandwidth=10 * MiB, burst=1 * MiB))
    mounts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        mounts.append(Limited(LocalAdapter(tmp_path / name), Budget(), shared))
    data = os.urandom(5 * MiB)
    began = time.monotonic()
    await asyncio.gather(*(put(m, "obj", data) for m in mounts))
    elapsed = time.monotonic() - began
    assert 0.8 <= elapsed <= 1.4, elapsed  # 10 MiB written at 10 MiB/s with 1 MiB up front
    assert all((tmp_path / name / "obj").read_bytes() == data for name in ("a", "b"))
    assert shared.stats().throttle_seconds > 0.5 and shared.stats().inflight == 0
    assert all(m.stats() == LimiterStats(0.0, 0, None) for m in mounts)


async def test_chunks_longer_than_the_burst_are_split(root: Path, local: LocalAdapter) -> None:
    data = make_file(root, "x", 3 * MiB + 5)
    recording = BodyChunks(local)
    ufs = limited(recording, LimitSpec(bandwidth=GiB, burst=300_000), LimitSpec(bandwidth=GiB, burst=MiB))
    chunks = [c async for c in ufs.read("x", ReadOptions())]
    assert b"".join(chunks) == data and max(map(len, chunks)) == 300_000
    info = await ufs.write("y", body(data, 2 * MiB), size=len(data), meta=WriteMeta())
    assert info.etag == md5(data) and (root / "y").read_bytes() == data
    assert max(recording.sizes) == 300_000 and sum(recording.sizes) == len(data)


# --- concurrency --------------------------------------------------------------------------------------


async def test_concurrency_is_never_exceeded(root: Path, local: LocalAdapter) -> None:
    make_file(root, "obj", 2 * MiB + 1)
    counting = Inflight(local)

    async def load(ufs: UfsAdapter) -> None:
        await asyncio.gather(
            *(get(ufs, "obj") for _ in range(50)),
            *(ufs.stat("obj") for _ in range(10)),
            *(put(ufs, f"w{i}", b"w" * 1000) for i in range(5)),
        )

    await load(counting)
    assert counting.peak > 3  # unlimited, this load overlaps: the check below can fail

    counting.peak = 0
    ufs = Limited(counting, Budget(LimitSpec(max_concurrency=3)))
    await load(ufs)
    assert counting.peak == 3 and counting.current == 0
    assert ufs.stats().inflight == 0 and ufs.stats().throttle_seconds > 0


async def test_a_read_holds_its_permit_until_the_stream_ends(root: Path, local: LocalAdapter) -> None:
    data = make_file(root, "obj", 2 * MiB)
    shared = Budget(LimitSpec(max_concurrency=5))
    ufs = Limited(local, Budget(LimitSpec(max_concurrency=1)), shared)
    held = stream(ufs, "obj")
    assert len(await anext(held)) == MiB
    assert ufs.stats().inflight == shared.stats().inflight == 1

    waiting = asyncio.create_task(get(ufs, "obj"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()  # gives up its place in the queue
    with pytest.raises(asyncio.CancelledError):
        await waiting

    queued = asyncio.create_task(get(ufs, "obj"))
    await asyncio.sleep(0.05)
    assert not queued.done()
    await held.aclose()  # hands the permit on
    assert await asyncio.wait_for(queued, 2) == data
    assert ufs.stats().inflight == shared.stats().inflight == 0

    with pytest.raises(NotFound):  # a failed call gives its permit back too
        await get(ufs, "missing")
    assert await asyncio.wait_for(ufs.stat("obj"), 2)
    assert ufs.stats().inflight == 0 and ufs.stats().throttle_seconds > 0.05


async def test_waiters_are_served_in_arrival_order(root: Path, local: LocalAdapter) -> None:
    make_file(root, "obj", 10)
    ufs = limited(local, LimitSpec(max_concurrency=1))
    order: list[int] = []

    async def stat(i: int) -> None:
        await ufs.stat("obj")
        order.append(i)

    holder = stream(ufs, "obj")
    await anext(holder)
    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(stat(i)))
        await asyncio.sleep(0)  # each reaches the queue before the next one starts
    await holder.aclose()
    await asyncio.gather(*tasks)
    assert order == list(range(20))


# --- request rate and AIMD ------------------------------------------------------------------------------


def within_bucket(starts: list[float], rate: float, capacity: float) -> Iterator[tuple[int, int]]:
    """Pairs (i, j) of starts where more requests began in [t_i, t_j] than the bucket allows."""
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            if j - i + 1 > capacity + rate * (starts[j] - starts[i]) + 1:
                yield i, j


async def test_request_rate(root: Path, local: LocalAdapter) -> None:
    make_file(root, "obj", 10)
    counting = Inflight(local)
    ufs = Limited(counting, Budget(LimitSpec(max_requests_per_second=100)))
    began = time.monotonic()
    await asyncio.gather(*(ufs.stat("obj") for _ in range(160)))
    elapsed = time.monotonic() - began
    assert 0.55 <= elapsed <= 0.9, elapsed  # 100 at once (1 s of burst), then 60 at 100/s
    assert list(within_bucket(sorted(counting.starts), 100, 100)) == []
    assert ufs.stats().effective_rps == 100


async def test_aimd_backs_off_on_throttling_and_recovers(root: Path, local: LocalAdapter) -> None:
    make_file(root, "obj", 10)
    ufs_ = SlowDown(local, delay=0.05)
    ufs = limited(ufs_, LimitSpec(max_requests_per_second=100), backoff=Backoff(0.5, floor=20, recovery=1.0))

    async def stat() -> bool:
        try:
            await ufs.stat("obj")
        except Unavailable as exc:
            assert exc.throttled
            return False
        return True

    ufs_.fail = 10  # ten requests in flight together all get SlowDown: one congestion, one cut
    assert await asyncio.gather(*(stat() for _ in range(10))) == [False] * 10
    assert ufs.stats().effective_rps == 50
    ufs_.fail = 1
    assert not await stat()
    assert ufs.stats().effective_rps == 25
    ufs_.fail = 1
    assert not await stat()
    assert ufs.stats().effective_rps == 20  # the floor, not 12.5

    began = time.monotonic()
    while time.monotonic() - began < 0.3:
        assert await stat()
    rps = ufs.stats().effective_rps
    assert rps is not None and 35 <= rps <= 70, rps  # +100 req/s per second of success
    while (rps := ufs.stats().effective_rps) != 100:
        assert rps is not None and time.monotonic() - began < 2.0
        assert await stat()
    assert ufs.stats().inflight == 0 and ufs.stats().throttle_seconds > 0


async def test_aimd_without_a_configured_rate(root: Path, local: LocalAdapter) -> None:
    make_file(root, "obj", 10)
    ufs_ = SlowDown(local)
    ufs = limited(ufs_, LimitSpec(), backoff=Backoff(recovery=5.0))
    for _ in range(50):
        await ufs.stat("obj")
    assert ufs.stats().effective_rps is None and ufs._admits_freely()

    ufs_.fail = 1
    with pytest.raises(Unavailable):
        await ufs.stat("obj")
    rps = ufs.stats().effective_rps
    assert rps is not None and 10 <= rps <= 26, rps  # half the ~51 req/s observed so far
    assert not ufs._admits_freely()

    began = time.monotonic()
    while ufs.stats().effective_rps is not None:  # recovered to the observed rate: unlimited again
        assert time.monotonic() - began < 2.0
        await ufs.stat("obj")
    assert ufs._admits_freely() and ufs.stats().inflight == 0


async def test_aimd_without_a_configured_rate_on_a_quiet_mount(root: Path, local: LocalAdapter) -> None:
    """A SlowDown on a mount that saw <= 1 req/s: the cut stops at the floor, at the ceiling
    already; the next success lifts the limit instead of leaving the mount at 1 req/s for good."""
    make_file(root, "obj", 10)
    ufs_ = SlowDown(local)
    ufs = limited(ufs_, LimitSpec())
    ufs_.fail = 1
    with pytest.raises(Unavailable):
        await ufs.stat("obj")
    assert ufs.stats().effective_rps == 1.0
    await ufs.stat("obj")
    assert ufs.stats().effective_rps is None and ufs._admits_freely()


# --- the fast path and the spec ------------------------------------------------------------------------


async def test_unlimited_takes_the_fast_path(
    root: Path, local: LocalAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_file(root, "obj", 3 * MiB)
    ufs = Limited(local, Budget(), Budget())

    async def never(self: Budget) -> None:
        raise AssertionError("an unlimited budget was awaited")

    monkeypatch.setattr(Budget, "_admit", never)
    held = stream(ufs, "obj")
    assert await anext(held) == data[:MiB]
    assert ufs.stats() == LimiterStats(0.0, 1, None)
    await held.aclose()
    assert await get(ufs, "obj") == data and (await put(ufs, "o2", data)).etag == md5(data)
    assert ufs.stats() == ufs.global_budget.stats() == LimiterStats(0.0, 0, None)  # type: ignore[union-attr]


def test_spec_is_checked() -> None:
    with pytest.raises(ValueError, match="'bandwidth' must be a positive number, not 0"):
        LimitSpec(bandwidth=0)
    with pytest.raises(ValueError, match="'max_requests_per_second' must be a positive number, not -1"):
        LimitSpec(max_requests_per_second=-1)
    with pytest.raises(ValueError, match="'burst' \\(10\\) needs a 'bandwidth'"):
        LimitSpec(burst=10)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=1.5)
    budget = Budget(LimitSpec(bandwidth=100))
    assert budget.burst == 100 and budget.stats() == LimiterStats(0.0, 0, None)
    with pytest.raises(ValueError, match="global budget"):
        Limited(LocalAdapter("/nonexistent"), budget, budget)
