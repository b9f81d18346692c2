"""Limiter: bandwidth, concurrency and request-rate limits around any UfsAdapter.

`Limited` implements the adapter protocol around an inner adapter (like object_store's LimitStore)
and draws on shared `Budget`s: one per mount, shared by every request of that mount, and optionally
one global budget shared by every mount of the worker (Alluxio's UFS bandwidth limiter).

What a call holds, and when:
- a concurrency permit, from admission until the call returns; a read holds it until its stream
  is exhausted, fails or is closed (LimitStore's PermitWrapper). Callers must close streams they
  abandon, and must not make a second call on a mount whose only permit their open stream holds.
- one request token, at admission, after the permit (so requests start at the paced rate).
- byte tokens as the body streams: a read waits before yielding each chunk, a write before
  handing each chunk of its body to the inner adapter. Chunks longer than the burst are split,
  so nothing ever passes in a burst larger than `burst`.
Admission takes the mount budget before the global one, always in that order, so callers of two
mounts never wait on each other in a cycle.

Waiting is FIFO without queues of data: a token bucket lends tokens (it goes into debt) and each
caller sleeps until the tokens ahead of it have refilled; permits are handed over in arrival
order. Memory is one future or timer per waiting coroutine, plus the one chunk a paced reader
holds while it waits.

Adaptive: a throttling error (`Unavailable(throttled=True)`: 503 SlowDown, 429, Throttling) from
the inner adapter cuts the mount's request rate, and successes bring it back (see `Backoff`). The
global budget does not adapt: one throttling UFS must not slow the others down.

With no limit configured, a call does no locking and no awaiting beyond the inner call itself;
it only counts itself in flight.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ufs_adapters.base import (
    ListPage,
    ObjectInfo,
    PartInfo,
    PartsPage,
    ReadOptions,
    UfsAdapter,
    Unavailable,
    UploadsPage,
    WriteMeta,
)

T = TypeVar("T")

# The request bucket holds one second of the rate (at least one request), like the default burst
# of the byte bucket: a quiet mount may start that many requests at once.
REQUEST_BURST_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The limits of one budget; None means unlimited."""

    bandwidth: int | None = None  # bytes/s, reads and writes together
    burst: int | None = None  # bytes; default: one second of bandwidth
    max_concurrency: int | None = None  # calls in flight, a read until its stream ends
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        for name in ("bandwidth", "burst", "max_concurrency", "max_requests_per_second"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ValueError(f"limit {name!r} must be a positive number, not {value!r}")
        if self.burst is not None and self.bandwidth is None:
            raise ValueError(f"limit 'burst' ({self.burst}) needs a 'bandwidth'")

    @property
    def unlimited(self) -> bool:
        return (
            self.bandwidth is None and self.max_concurrency is None and self.max_requests_per_second is None
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """AIMD on the request rate of a mount whose UFS throttles.

    A throttling error cuts the rate to `factor` × itself, never below `floor`. Errors from requests
    sent before the last cut report the congestion that cut already answered, so they do not cut
    again: one cut per round trip, as TCP does. Each second in which requests succeed then adds
    `recovery` × the ceiling (time between successes counts up to one second), so with the defaults
    a halved mount is back at its ceiling after ~10 s of successes. The ceiling is
    `max_requests_per_second`; with none configured it is the rate observed when the throttling
    began, and climbing back to it lifts the limit altogether.
    """

    factor: float = 0.5
    floor: float = 1.0  # requests/s
    recovery: float = 0.05  # fraction of the ceiling regained per second of successful requests

    def __post_init__(self) -> None:
        if not (0 < self.factor < 1 and self.floor > 0 and self.recovery > 0):
            raise ValueError(f"backoff needs 0 < factor < 1, floor > 0 and recovery > 0, not {self}")


@dataclass(frozen=True, slots=True)
class LimiterStats:
    throttle_seconds: float  # total time callers spent waiting on this budget (a counter)
    inflight: int  # calls admitted and not yet finished, open read streams included
    effective_rps: float | None  # the request rate in force now; None when unlimited


class _Bucket:
    """A token bucket that lends: `reserve` takes the tokens at once, going into debt, and returns
    how long to wait before using them. Debt orders the waiters first come, first served with no
    queue: each sleeps until the tokens reserved ahead of it have refilled."""

    __slots__ = ("_stamp", "_ticket", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float, *, tokens: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity if tokens is None else tokens
        self._stamp = now
        self._ticket = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, amount: float, now: float) -> tuple[float, int]:
        """Take `amount` (at most the capacity); returns (seconds to wait, ticket for `cancel`)."""
        self._refill(now)
        self._tokens -= amount
        self._ticket += 1
        return (-self._tokens / self.rate if self._tokens < 0 else 0.0), self._ticket

    def cancel(self, amount: float, ticket: int, now: float) -> None:
        """Give back a reservation its waiter gave up on. Only the latest one: the waits of later
        reservations were computed with it as debt, and returning it would let a newcomer go at
        the same moment as them (a burst above capacity). Otherwise the tokens are lost."""
        if ticket == self._ticket:
            self._refill(now)
            self._tokens = min(self.capacity, self._tokens + amount)

    def retune(self, rate: float, capacity: float, now: float, *, drain: bool = False) -> None:
        """Change the rate from now on; `drain` drops the saved-up burst (debt is kept)."""
        self._refill(now)
        self.rate, self.capacity = rate, capacity
        self._tokens = min(self._tokens, 0.0 if drain else capacity)


class _Permits:
    """A FIFO semaphore: `release` hands the permit straight to the oldest waiter, so a newcomer
    cannot overtake the queue."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self._free > 0:  # free permits and waiters never coexist: release hands over
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            elif waiter in self._waiters:  # a release may have dropped it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


def _request_capacity(rate: float) -> float:
    return max(1.0, rate * REQUEST_BURST_SECONDS)


class Budget:
    """Limits shared by every call drawing on them: a mount's requests, or every mount.

    Create one per mount and at most one global one per worker; `Limited` wrappers take them.
    Single event loop: the state is plain attributes, changed between awaits.
    """

    def __init__(self, spec: LimitSpec | None = None, *, backoff: Backoff | None = None) -> None:
        self.spec = spec = spec or LimitSpec()
        self.backoff = backoff or Backoff()
        now = time.monotonic()
        self.burst = None if spec.bandwidth is None else spec.burst or spec.bandwidth
        self._bytes = None if spec.bandwidth is None else _Bucket(spec.bandwidth, self.burst or 0, now)
        self._permits = None if spec.max_concurrency is None else _Permits(spec.max_concurrency)
        rps = spec.max_requests_per_second
        self._requests = None if rps is None else _Bucket(rps, _request_capacity(rps), now)
        self._ceiling = rps  # what AIMD recovers to; None while the rate is unlimited
        self._last_cut = -math.inf
        self._last_raise = now
        # request starts in the current and the previous ~1 s window: the observed rate, from
        # which AIMD starts when no rate is configured
        self._window_start = now
        self._window_count = 0
        self._previous_rate = 0.0
        self._throttle_seconds = 0.0
        self._inflight = 0

    def stats(self) -> LimiterStats:
        rps = None if self._requests is None else self._requests.rate
        return LimiterStats(self._throttle_seconds, self._inflight, rps)

    # --- used by Limited ---------------------------------------------------------------------------

    @property
    def _admits_freely(self) -> bool:
        return self._permits is None and self._requests is None

    async def _admit(self) -> None:
        """Wait for a concurrency permit, then for a request token."""
        permits = self._permits
        if permits is not None and not permits.try_take():
            began = time.monotonic()
            try:
                await permits.take()
            finally:
                self._throttle_seconds += time.monotonic() - began
        requests = self._requests
        if requests is not None:
            try:
                await self._pay(requests, 1)
            except BaseException:
                if permits is not None:
                    permits.release()
                raise

    def _abandon(self) -> None:
        """Undo `_admit` for a call that never started (a later budget refused it)."""
        if self._permits is not None:
            self._permits.release()

    def _start(self, now: float) -> None:
        self._inflight += 1
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._previous_rate = self._window_count / elapsed
            self._window_start, self._window_count = now, 0
        self._window_count += 1

    def _finish(self) -> None:
        self._inflight -= 1
        if self._permits is not None:
            self._permits.release()

    async def _charge(self, amount: int) -> None:
        """Wait until `amount` bytes (at most `burst`) may pass."""
        if self._bytes is not None:
            await self._pay(self._bytes, amount)

    async def _pay(self, bucket: _Bucket, amount: float) -> None:
        began = time.monotonic()
        delay, ticket = bucket.reserve(amount, began)
        if delay <= 0.0:
            return
        try:
            await asyncio.sleep(delay)
        except BaseException:
            bucket.cancel(amount, ticket, time.monotonic())
            raise
        finally:
            self._throttle_seconds += time.monotonic() - began

    def _observed_rate(self, now: float) -> float:
        # a partial window counts as a whole second: under-estimate rather than over-estimate
        return max(self._previous_rate, self._window_count / max(1.0, now - self._window_start))

    def _throttled(self, started: float) -> None:
        """Multiplicative decrease, for a throttling error of a request started at `started`."""
        if started < self._last_cut:
            return  # sent at the old rate: this congestion was already answered
        now = time.monotonic()
        floor, factor = self.backoff.floor, self.backoff.factor
        requests = self._requests
        if requests is None:
            self._ceiling = max(floor, self._observed_rate(now))
            rate = max(floor, self._ceiling * factor)
            self._requests = _Bucket(rate, _request_capacity(rate), now, tokens=0.0)
        else:
            rate = max(floor, requests.rate * factor)
            requests.retune(rate, _request_capacity(rate), now, drain=True)
        self._last_cut = self._last_raise = now

    def _succeeded(self) -> None:
        """Additive increase, up to the ceiling; back to unlimited if nothing was configured."""
        requests, ceiling = self._requests, self._ceiling
        if requests is None or ceiling is None:
            return
        if requests.rate >= ceiling:
            # Already at the ceiling (a cut that the floor stopped leaves it there: a mount that
            # saw <= `floor` req/s): an unconfigured rate is lifted, as when climbing back to it.
            if self.spec.max_requests_per_second is None:
                self._requests = self._ceiling = None
            return
        now = time.monotonic()
        rate = requests.rate + ceiling * self.backoff.recovery * min(1.0, now - self._last_raise)
        self._last_raise = now
        if rate < ceiling:
            requests.retune(rate, _request_capacity(rate), now)
        elif self.spec.max_requests_per_second is None:
            self._requests = self._ceiling = None
        else:
            requests.retune(ceiling, _request_capacity(ceiling), now)


def _split(chunk: bytes, size: int) -> Iterator[bytes]:
    if len(chunk) <= size:
        yield chunk
    else:
        for i in range(0, len(chunk), size):
            yield chunk[i : i + size]


class Limited:
    """`inner` with the limits of `mount_budget` and, if given, of `global_budget` as well."""

    def __init__(self, inner: UfsAdapter, mount_budget: Budget, global_budget: Budget | None = None) -> None:
        if global_budget is mount_budget:
            raise ValueError("the global budget must not be the mount's own budget")
        self.inner = inner
        self.scheme = inner.scheme
        self.budget = mount_budget
        self.global_budget = global_budget
        self._budgets = (mount_budget,) if global_budget is None else (mount_budget, global_budget)
        self._paying = tuple(b for b in self._budgets if b.burst is not None)
        self._piece = min((b.burst for b in self._budgets if b.burst is not None), default=None)

    def stats(self) -> LimiterStats:
        """The mount budget's numbers (the global budget reports its own)."""
        return self.budget.stats()

    # --- admission -----------------------------------------------------------------------------

    def _admits_freely(self) -> bool:
        g = self.global_budget
        return self.budget._admits_freely and (g is None or g._admits_freely)

    def _start(self) -> float:
        now = time.monotonic()
        for budget in self._budgets:
            budget._start(now)
        return now

    async def _admit(self) -> float:
        admitted: list[Budget] = []
        try:
            for budget in self._budgets:
                await budget._admit()
                admitted.append(budget)
        except BaseException:
            for budget in admitted:
                budget._abandon()
            raise
        return self._start()

    def _finish(self) -> None:
        for budget in self._budgets:
            budget._finish()

    async def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._admits_freely():  # fast path: nothing to wait for
            started = self._start()
        else:
            try:
                started = await self._admit()
            except BaseException:
                call.close()  # never started: no "never awaited" warning
                raise
        try:
            result = await call
        except Unavailable as exc:
            if exc.throttled:
                self.budget._throttled(started)
            raise
        finally:
            self._finish()
        self.budget._succeeded()
        return result

    # --- bytes ---------------------------------------------------------------------------------

    async def _pay(self, amount: int) -> None:
        for budget in self._paying:
            await budget._charge(amount)

    def _paced(self, body: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
        return body if self._piece is None else self._paced_body(body, self._piece)

    async def _paced_body(self, body: AsyncIterable[bytes], piece: int) -> AsyncIterator[bytes]:
        async for chunk in body:
            for part in _split(chunk, piece):
                await self._pay(len(part))
                yield part

    # --- the protocol --------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        return await self._run(self.inner.stat(path))

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        return await self._run(self.inner.part_range(path, part_number, etag))

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        info, data = await self._run(self.inner.read_head(path, length, start=start, more=more, end=end))
        piece = self._piece
        if piece is not None:
            for part in _split(data, piece):
                await self._pay(len(part))
        return info, data

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        started = self._start() if self._admits_freely() else await self._admit()
        try:
            stream = self.inner.read(path, opts)
            try:
                piece = self._piece
                if piece is None:
                    async for chunk in stream:
                        yield chunk
                else:
                    async for chunk in stream:
                        for part in _split(chunk, piece):
                            await self._pay(len(part))
                            yield part
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        except Unavailable as exc:
            if exc.throttled:
                self.budget._throttled(started)
            raise
        finally:
            self._finish()
        self.budget._succeeded()

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        return await self._run(
            self.inner.list_objects(prefix, delimiter=delimiter, start_after=start_after, limit=limit)
        )

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        return await self._run(self.inner.write(path, self._paced(body), size=size, meta=meta))

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        # server-side: the bytes do not pass through this worker, so only the request is limited
        return await self._run(self.inner.copy(src, dst, meta=meta))

    async def delete(self, path: str) -> None:
        await self._run(self.inner.delete(path))

    async def make_dir(self, path: str) -> None:
        await self._run(self.inner.make_dir(path))

    async def remove_dir(self, path: str) -> None:
        await self._run(self.inner.remove_dir(path))

    async def is_dir(self, path: str) -> bool:
        return await self._run(self.inner.is_dir(path))

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        return await self._run(self.inner.create_multipart(path, meta))

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        return await self._run(
            self.inner.upload_part(path, upload_id, part_number, self._paced(body), size=size)
        )

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        return await self._run(self.inner.complete_multipart(path, upload_id, parts))

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        await self._run(self.inner.abort_multipart(path, upload_id))

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        return await self._run(self.inner.list_parts(path, upload_id, marker=marker, limit=limit))

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        return await self._run(
            self.inner.list_uploads(
                prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                upload_id_marker=upload_id_marker,
                limit=limit,
            )
        )

    async def check(self) -> None:
        await self._run(self.inner.check())

    async def aclose(self) -> None:
        await self.inner.aclose()  # the budgets are shared: they outlive any one mount
