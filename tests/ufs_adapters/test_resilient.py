"""Resilient around the real S3 adapter, with tests/faultproxy.py between it and moto server.

The S3 adapter's own botocore retries are off (`max_attempts: 0`, botocore's count of retries
after the first try), so every retry the proxy sees is Resilient's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from tests.faultproxy import Exchange, FaultProxy
from tests.ufs_adapters.conformance import CASES, Case, get, put
from ufs_adapters.base import (
    NotFound,
    PreconditionFailed,
    ReadOptions,
    UfsAdapter,
    Unavailable,
    WriteMeta,
)
from ufs_adapters.resilient import BreakerPolicy, CircuitBreaker, Resilient, RetryPolicy
from ufs_adapters.s3 import S3Adapter

MiB = 1024 * 1024
FAST = RetryPolicy(
    attempts=4, base_delay=0.01, max_delay=0.05, connect_timeout=1.0, first_byte_timeout=1.0, idle_timeout=0.4
)


@pytest.fixture(scope="module")
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, io_timeout=10.0) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def clean_proxy(proxy: FaultProxy) -> Iterator[None]:
    proxy.clear()
    yield
    proxy.clear()


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Any:
    """Straight to moto: sets objects up and changes them behind the adapter's back."""
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    name = f"hoard-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
async def inner(proxy: FaultProxy, bucket: str) -> AsyncIterator[S3Adapter]:
    options = {
        "endpoint_url": proxy.url,
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "addressing_style": "path",
        "max_attempts": "0",
        "connect_timeout": "1",
    }
    adapter = await S3Adapter.open(f"s3://{bucket}", options)
    yield adapter
    await adapter.aclose()


@pytest.fixture
def ufs(inner: S3Adapter) -> Resilient:
    return Resilient(inner, FAST, BreakerPolicy(failures=5, window=10.0, cooldown=0.5), rng=random.Random(4))


@pytest.fixture
def key() -> str:
    return f"obj-{uuid.uuid4().hex[:8]}"


def upload(s3: Any, bucket: str, key: str, data: bytes) -> str:
    return str(s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]).strip('"')


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def gets(proxy: FaultProxy) -> list[Exchange]:
    return proxy.exchanges("GET")


# --- retries ------------------------------------------------------------------------------------


async def test_slowdown_burst_is_retried(
    ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str, key: str
) -> None:
    data = os.urandom(MiB + 7)
    etag = upload(s3, bucket, key, data)
    proxy.fail_next(3, method=None)
    assert await get(ufs, key, if_match=etag) == data
    assert [e.status for e in gets(proxy)] == [503, 503, 503, 200]
    proxy.fail_next(3, method="HEAD")
    assert (await ufs.stat(key)).etag == etag
    assert ufs.stats()["retries"] == 6

    proxy.fail_next(FAST.attempts, method="HEAD")
    with pytest.raises(Unavailable) as raised:
        await ufs.stat(key)
    assert raised.value.throttled
    # a UFS that answers SlowDown is up: throttling is the limiter's business, not the breaker's
    assert ufs.stats()["state"] == "closed"


async def test_writes_are_tried_once(
    ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str, key: str
) -> None:
    upload(s3, bucket, key, b"old")
    proxy.fail_next(1, method="PUT")
    with pytest.raises(Unavailable):
        await put(ufs, key, b"new")
    assert [e.status for e in proxy.exchanges("PUT")] == [503]
    proxy.fail_next(1, method="POST")
    with pytest.raises(Unavailable):
        await ufs.create_multipart(key, WriteMeta())
    assert len(proxy.exchanges("POST")) == 1
    assert await get(ufs, key) == b"old"
    assert ufs.stats()["retries"] == 0


async def test_first_byte_timeout(ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str, key: str) -> None:
    etag = upload(s3, bucket, key, b"x")
    proxy.stall_next(5.0, after_bytes=None, method="HEAD")  # no response head for 5 s
    started = time.monotonic()
    assert (await ufs.stat(key)).etag == etag
    assert time.monotonic() - started < FAST.answer_timeout + 1.0
    assert ufs.stats()["timeouts"] == 1 and ufs.stats()["retries"] == 1


# --- resumed reads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hard", "start", "end", "pinned"),
    [
        (True, 0, None, True),  # RST: connection reset by peer
        (False, 0, None, True),  # FIN before Content-Length bytes: payload not completed
        (True, 1000, 8 * MiB - 1000, True),  # a range: the resume keeps its end
        (False, 0, None, False),  # no if_match from the caller: the stat's ETag is pinned
    ],
    ids=["reset", "closed", "range", "unpinned"],
)
async def test_broken_body_resumes_from_the_byte_reached(
    ufs: Resilient,
    proxy: FaultProxy,
    s3: Any,
    bucket: str,
    key: str,
    hard: bool,
    start: int,
    end: int | None,
    pinned: bool,
) -> None:
    data = os.urandom(8 * MiB)
    etag = upload(s3, bucket, key, data)
    cut = 3 * MiB + 12345
    proxy.reset_next(cut, hard=hard)
    got = await get(ufs, key, start, end, etag if pinned else None)
    assert md5(got) == md5(data[start:end])

    first, second = gets(proxy)
    assert first.fault is not None and first.body_bytes == cut
    # Where the consumer got to: at most `cut` bytes in (the client drops what it had buffered when
    # the connection fails), never 0.
    resumed_at = second.range_start
    assert resumed_at is not None and start < resumed_at <= start + cut
    assert second.headers["range"] == f"bytes={resumed_at}-{'' if end is None else end - 1}"
    assert first.headers["if-match"] == second.headers["if-match"] == f'"{etag}"'
    assert second.status == 206 and second.body_bytes == len(data[start:end]) - (resumed_at - start)
    assert len(proxy.exchanges("HEAD")) == (0 if pinned else 1)
    assert ufs.stats()["resumes"] == 1


async def test_stalled_body_times_out_and_resumes(
    ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str, key: str
) -> None:
    data = os.urandom(4 * MiB)
    etag = upload(s3, bucket, key, data)
    proxy.stall_next(5.0, after_bytes=MiB)
    started = time.monotonic()
    assert md5(await get(ufs, key, if_match=etag)) == md5(data)
    assert time.monotonic() - started < 3.0  # the idle timeout fired; nobody waited out the stall
    first, second = gets(proxy)
    assert first.fault is not None and first.fault.startswith("stall")
    assert second.range_start == MiB
    assert ufs.stats()["timeouts"] == 1 and ufs.stats()["resumes"] == 1


@pytest.mark.parametrize("change", ["overwrite", "delete"])
async def test_object_changed_before_resume(
    ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str, key: str, change: str
) -> None:
    old, new = os.urandom(8 * MiB), os.urandom(8 * MiB)
    etag = upload(s3, bucket, key, old)
    proxy.reset_next(2 * MiB, hard=False)
    received = bytearray()
    with pytest.raises(PreconditionFailed, match="changed while being read"):
        async for chunk in ufs.read(key, ReadOptions(if_match=etag)):
            if not received:  # the break is coming; the object changes before the resume
                if change == "overwrite":
                    await asyncio.to_thread(upload, s3, bucket, key, new)
                else:
                    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=key)
            received += chunk
    # aiohttp drops what it buffered once the connection fails, so the break may come early
    assert 0 < len(received) <= 2 * MiB and bytes(received) == old[: len(received)]
    first, second = gets(proxy)
    assert second.range_start == len(received) and second.headers["if-match"] == f'"{etag}"'
    assert second.status == (412 if change == "overwrite" else 404)


# --- the circuit breaker ------------------------------------------------------------------------


async def fails_fast(ufs: UfsAdapter, key: str) -> Unavailable:
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        await ufs.stat(key)
    assert time.monotonic() - started < 0.05
    return raised.value


async def test_breaker_opens_when_down_and_recovers(
    inner: S3Adapter, proxy: FaultProxy, s3: Any, bucket: str, key: str
) -> None:
    ufs = Resilient(inner, FAST, BreakerPolicy(failures=3, window=10.0, cooldown=0.4))
    etag = upload(s3, bucket, key, b"data")
    proxy.set_down(True)
    with pytest.raises(Unavailable):
        await ufs.stat(key)  # 3 refused tries open the circuit; the 4th fails fast
    assert ufs.stats()["state"] == "open" and ufs.stats()["opened"] == 1
    refused = proxy.refused

    exc = await fails_fast(ufs, key)
    assert "circuit open" in str(exc) and exc.retry_after is not None and 0 < exc.retry_after <= 0.4
    for call in (get(ufs, key, if_match=etag), put(ufs, key, b"new")):
        with pytest.raises(Unavailable, match="circuit open"):
            await call
    assert proxy.refused == refused  # failing fast sends nothing

    await asyncio.sleep(exc.retry_after)
    with pytest.raises(Unavailable):
        await ufs.stat(key)  # half-open: the probe goes out, fails and opens the circuit again
    # (aiohttp itself may try a reset connection twice, so the probe is 1 or 2 connections)
    assert refused < proxy.refused <= refused + 2 and ufs.stats()["opened"] == 2

    proxy.set_down(False)
    exc = await fails_fast(ufs, key)  # up again, but the cooldown is not over
    assert exc.retry_after is not None
    await asyncio.sleep(exc.retry_after)
    assert (await ufs.stat(key)).etag == etag  # the probe
    assert ufs.stats()["state"] == "closed"
    assert await get(ufs, key, if_match=etag) == b"data"


async def test_write_in_half_open_sends_a_stat_probe_first(
    inner: S3Adapter, proxy: FaultProxy, key: str
) -> None:
    ufs = Resilient(inner, FAST, BreakerPolicy(failures=1, window=10.0, cooldown=0.2))
    proxy.set_down(True)
    with pytest.raises(Unavailable):
        await ufs.stat(key)
    proxy.set_down(False)
    await asyncio.sleep(0.25)
    await put(ufs, key, b"after the outage")
    assert [e.method for e in proxy.exchanges()] == ["HEAD", "PUT"]  # NotFound is an answer
    assert ufs.stats()["state"] == "closed"


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # (a call, so that mypy does not narrow the property between asserts)


def test_breaker_state_machine() -> None:
    now = [0.0]
    breaker = CircuitBreaker(BreakerPolicy(failures=3, window=1.0, cooldown=5.0), clock=lambda: now[0])
    for t in (0.0, 0.8, 1.6):  # three failures, but never three within one second
        now[0] = t
        assert breaker.admit("k") is False
        breaker.failure(False)
    assert state(breaker) == "closed"
    breaker.success(False)
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.failure(False)
    assert state(breaker) == "open"
    with pytest.raises(Unavailable) as raised:
        breaker.admit("k")
    assert raised.value.retry_after == pytest.approx(5.0)

    now[0] += 5.0
    assert state(breaker) == "half_open" and breaker.admit("k") is True  # the one probe
    with pytest.raises(Unavailable, match="probe is in flight"):
        breaker.admit("k")
    breaker.release(True)  # the probe was cancelled: the next call probes instead
    assert breaker.admit("k") is True
    breaker.failure(True)
    assert state(breaker) == "open" and breaker.opened == 2
    now[0] += 5.0
    assert breaker.admit("k") is True
    breaker.success(True)
    assert state(breaker) == "closed" and breaker.admit("k") is False and breaker.rejected == 2


def test_retry_policy() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(base_delay=0.1, max_delay=2.0)
    for retry, cap in [(0, 0.1), (1, 0.2), (3, 0.8), (10, 2.0)]:
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and max(delays) > cap / 2
    assert policy.answer_timeout == 35.0
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        RetryPolicy(idle_timeout=0)


# --- a slow but healthy UFS ---------------------------------------------------------------------


async def test_latency_breaks_nothing(ufs: Resilient, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    objects = {f"lat/{i}": os.urandom(100_000 + i) for i in range(8)}
    etags = {k: upload(s3, bucket, k, v) for k, v in objects.items()}
    proxy.latency = 0.1
    reads = await asyncio.gather(*(get(ufs, k, if_match=etags[k]) for k in objects))
    assert reads == list(objects.values())
    page = await ufs.list_objects("lat/", delimiter=None, start_after=None, limit=100)
    assert sorted(o.path for o in page.objects) == sorted(objects)
    assert proxy.max_in_flight >= 2
    assert (ufs.stats()["retries"], ufs.stats()["timeouts"]) == (0, 0)


# --- the wrapper forwards everything --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_conformance(inner: S3Adapter, s3: Any, case: Case) -> None:
    name = f"hoard-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    await case(Resilient(S3Adapter(inner.client, name), FAST))


async def test_not_found_is_not_retried(ufs: Resilient, proxy: FaultProxy, key: str) -> None:
    with pytest.raises(NotFound):
        await ufs.stat(key)
    with pytest.raises(NotFound):
        await get(ufs, key, if_match="0" * 32)
    assert proxy.requests == 2 and ufs.stats()["retries"] == 0


async def test_proxy_counts_concurrency_exactly(inner: S3Adapter, proxy: FaultProxy, key: str) -> None:
    """The limiter's tests trust `max_in_flight`; a request must not outlive its last byte there."""
    gate = asyncio.Semaphore(3)
    proxy.latency = 0.01

    async def one() -> None:
        async with gate:
            with pytest.raises(NotFound):
                await inner.stat(key)

    await asyncio.gather(*(one() for _ in range(60)))
    assert proxy.requests == 60 and proxy.max_in_flight == 3 and proxy.in_flight == 0
