"""Retries, timeouts, resumable reads and a circuit breaker around any adapter.

`Resilient(inner)` implements the same protocol as the adapter it wraps, so it stacks with the
other wrappers (`Instrumented`, the limiter). The policy lives on the instance; nothing is global.

What is retried. Idempotent calls (stat, list_objects, list_parts, list_uploads, is_dir, delete,
abort_multipart, check, read) are retried on `Unavailable` (throttled or not) and on the timeouts
below, up to `RetryPolicy.attempts` tries, sleeping a full-jitter exponential backoff in between
(AWS's "full jitter": uniform in [0, min(max_delay, base_delay * 2**n))). Writes (write,
upload_part, complete_multipart, create_multipart, copy, make_dir, remove_dir) are tried once: by
the time an adapter fails, it has consumed the body (the S3 adapter reads a whole part before its
first request), and a completed-but-unacknowledged create or complete cannot be told apart from
one that never ran. The client that sent the write still holds its body and retries it itself.

Timeouts. A unary call must answer within `connect_timeout + first_byte_timeout`; a read must
deliver its first chunk within that, then each further chunk within `idle_timeout`. Writes get no
overall bound here (a body may arrive slowly from its client); the adapter's own socket timeouts
cover them. `connect_timeout` is also the value to give the adapter's own connect option.

Reads resume. A read that breaks in the middle (Unavailable, a timeout, a reset connection) goes
on from the byte it reached, with `if_match` pinned to the ETag. Without `opts.if_match`, the read
first stats the object and pins that ETag from the first byte on. A resume that finds another
version (PreconditionFailed, or NotFound because it was deleted) raises PreconditionFailed: the
caller gets an error and never a mix of two versions. A break after progress starts the count of
failed tries afresh, so a long read survives many scattered breaks but not a dead UFS.

The circuit breaker. `BreakerPolicy.failures` consecutive failures (non-throttled Unavailable and
timeouts) within `window` seconds open it. While open, every call fails at once with
`Unavailable(retry_after=...)`, the seconds left of the `cooldown`. Then it is half-open: one call
is let through as a probe while the others still fail fast; its success closes the circuit, its
failure opens it for another cooldown. A read's probe is settled by its first chunk; a write is
never the probe itself (it could run for minutes): a stat of its path is sent first instead. Any
answer from the UFS counts as success, throttling and NotFound included: the limiter deals with
throttling, and an overloaded UFS that answers 503 is not down.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from ._util import log
from .base import (
    ListPage,
    NoSuchUpload,
    NotFound,
    ObjectInfo,
    PartInfo,
    PartsPage,
    PreconditionFailed,
    ReadOptions,
    UfsAdapter,
    UfsError,
    Unavailable,
    UploadsPage,
    WriteMeta,
    aclose_stream,
)

T = TypeVar("T")

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries and timeouts (seconds) of one wrapped adapter; `attempts` counts the first try."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 30.0
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts is {self.attempts}; it counts the first try, so >= 1")
        for name in ("base_delay", "max_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} is {getattr(self, name)}; expected >= 0")
        for name in ("connect_timeout", "first_byte_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RetryPolicy.{name} is {getattr(self, name)}; expected > 0")

    @property
    def answer_timeout(self) -> float:
        """Bound on a unary call or a read's first chunk: connecting plus waiting for the answer."""
        return self.connect_timeout + self.first_byte_timeout

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Sleep before retry number `retry` (0-based): full jitter over the exponential cap."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """`failures` consecutive failures within `window` seconds open the circuit for `cooldown`."""

    failures: int = 5
    window: float = 10.0
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.window <= 0 or self.cooldown <= 0:
            raise ValueError(f"BreakerPolicy needs failures >= 1 and positive window and cooldown: {self}")


class CircuitBreaker:
    """The state machine alone, on an injectable clock.

    A call asks `admit()` (which raises when the circuit is open) and reports exactly one of
    `success`, `failure` or `release` (neither: cancelled, a bug) with the probe flag it got.
    """

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._streak: deque[float] = deque(maxlen=policy.failures)  # times of the latest failures
        self.consecutive_failures = 0
        self._open = False
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # times the circuit opened
        self.rejected = 0  # calls failed fast

    @property
    def state(self) -> State:
        if not self._open:
            return "closed"
        if self._probing or self._clock() >= self._opened_at + self.policy.cooldown:
            return "half_open"
        return "open"

    def admit(self, path: str) -> bool:
        """Let a call through (True if it is the half-open probe) or raise Unavailable."""
        if not self._open:
            return False
        wait = self._opened_at + self.policy.cooldown - self._clock()
        if wait <= 0 and not self._probing:
            self._probing = True
            return True
        self.rejected += 1
        if wait <= 0:  # a probe is out; its answer is due within the call timeouts
            wait = min(1.0, self.policy.cooldown)
            detail = "circuit half-open: a probe is in flight"
        else:
            detail = f"circuit open after {self.consecutive_failures} consecutive failures"
        raise Unavailable(path, f"{detail}; retry in {wait:.2f}s", retry_after=wait)

    def success(self, probe: bool) -> None:
        if probe:
            self._probing = False
        if self._open:
            log.info("UFS circuit closed: the UFS answers again")
        self._open = False
        self._streak.clear()
        self.consecutive_failures = 0

    def failure(self, probe: bool) -> None:
        now = self._clock()
        self.consecutive_failures += 1
        if probe:
            self._probing = False
            self._trip(now)
            return
        if self._open:
            return  # a call admitted before the circuit opened; the cooldown stands
        self._streak.append(now)
        if len(self._streak) == self.policy.failures and now - self._streak[0] <= self.policy.window:
            self._trip(now)

    def release(self, probe: bool) -> None:
        if probe:
            self._probing = False

    def _trip(self, now: float) -> None:
        self._open = True
        self._opened_at = now
        self._streak.clear()
        self.opened += 1
        log.warning(
            "UFS circuit open after %d consecutive failures; failing fast for %.1fs",
            self.consecutive_failures,
            self.policy.cooldown,
        )


class _Timeout(Exception):
    """A timeout of this wrapper's own, told apart from anything the inner adapter raises."""


def _is_failure(exc: BaseException) -> bool:
    """Whether an error says the UFS is down (as opposed to: it answered, or we were cancelled)."""
    return isinstance(exc, Unavailable) and not exc.throttled


class Resilient:
    """Retries, timeouts, resumable reads and a circuit breaker around `inner`."""

    def __init__(
        self,
        inner: UfsAdapter,
        policy: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.policy = policy or RetryPolicy()
        self.breaker = CircuitBreaker(breaker or BreakerPolicy(), clock)
        self._rng = rng or random.Random()
        self.retries = 0  # tries after the first, reads included
        self.resumes = 0  # of those, reads going on after bytes were already delivered
        self.timeouts = 0

    def stats(self) -> dict[str, int | str]:
        b = self.breaker
        return {
            "state": b.state,
            "consecutive_failures": b.consecutive_failures,
            "opened": b.opened,
            "rejected": b.rejected,
            "retries": self.retries,
            "resumes": self.resumes,
            "timeouts": self.timeouts,
        }

    def __repr__(self) -> str:
        return f"Resilient({self.inner!r})"

    # --- plumbing -------------------------------------------------------------------------------

    def _settle(self, probe: bool, exc: BaseException | None) -> None:
        if exc is None or (isinstance(exc, UfsError) and not _is_failure(exc)):
            self.breaker.success(probe)
        elif _is_failure(exc):
            self.breaker.failure(probe)
        else:
            self.breaker.release(probe)

    async def _bounded(self, call: Awaitable[T], seconds: float) -> T:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await call
        except TimeoutError as exc:
            if deadline.expired():
                raise _Timeout(seconds) from exc
            raise

    def _timed_out(self, path: str, what: str, exc: _Timeout) -> Unavailable:
        self.timeouts += 1
        return Unavailable(path, f"{what} within {exc.args[0]:g}s")

    async def _sleep_before(self, retry: int, path: str, exc: UfsError) -> None:
        self.retries += 1
        delay = self.policy.backoff(retry, self._rng)
        log.debug("UFS retry %d of %r in %.3fs after: %s", retry + 1, path, delay, exc)
        await asyncio.sleep(delay)

    async def _idempotent(self, what: str, path: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` under the breaker and the answer timeout, retrying on Unavailable."""
        for retry in range(self.policy.attempts):
            probe = self.breaker.admit(path)  # an open circuit ends the retries too
            try:
                try:
                    result = await self._bounded(call(), self.policy.answer_timeout)
                except _Timeout as exc:
                    raise self._timed_out(path, f"{what}: no answer", exc) from exc
            except BaseException as exc:
                self._settle(probe, exc)
                if not isinstance(exc, Unavailable) or retry + 1 >= self.policy.attempts:
                    raise
                await self._sleep_before(retry, path, exc)
                continue
            self._settle(probe, None)
            return result
        raise AssertionError("unreachable: the last try returns or raises")

    async def _once(self, path: str, call: Callable[[], Awaitable[T]]) -> T:
        """A write: tried once, under the breaker; in half-open, a stat of `path` is the probe."""
        if self.breaker.admit(path):
            try:
                await self._bounded(self.inner.stat(path), self.policy.answer_timeout)
            except _Timeout as exc:
                self.breaker.failure(True)
                raise self._timed_out(path, "probe: no answer", exc) from exc
            except UfsError as exc:
                if _is_failure(exc):
                    self.breaker.failure(True)
                    raise
                # NotFound, throttled...: the UFS answered, which is all the probe asks
            except BaseException:
                self.breaker.release(True)
                raise
            self.breaker.success(True)
        try:
            result = await call()
        except BaseException as exc:
            self._settle(False, exc)
            raise
        self._settle(False, None)
        return result

    # --- reads ----------------------------------------------------------------------------------

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        etag = opts.if_match
        if etag is None:
            etag = (await self.stat(path)).etag  # pin the version from the first byte on
        start, end = max(opts.start, 0), opts.end
        pos = start  # the next byte the caller gets
        failed = 0  # tries in a row that delivered nothing
        while True:
            if end is not None and pos >= end and pos > start:
                return
            resumed = pos > start
            probe = self.breaker.admit(path)
            stream = self.inner.read(path, ReadOptions(pos, end, etag))
            progress = False
            try:
                while True:
                    try:
                        limit = self.policy.idle_timeout if progress else self.policy.answer_timeout
                        chunk = await self._bounded(anext(stream), limit)
                    except StopAsyncIteration:
                        if not progress:
                            self._settle(probe, None)
                        return
                    except _Timeout as exc:
                        what = f"no data after byte {pos}" if progress else "read: no first byte"
                        raise self._timed_out(path, what, exc) from exc
                    if not progress:
                        progress = True
                        self._settle(probe, None)
                        probe = False
                    pos += len(chunk)
                    yield chunk
            except (PreconditionFailed, NotFound) as exc:
                self._settle(probe, exc)
                if not resumed:
                    raise
                raise PreconditionFailed(
                    path, f"the object changed while being read: ETag {etag!r} is gone after byte {pos}"
                ) from exc
            except Unavailable as exc:
                if progress:
                    self.breaker.failure(False)
                else:
                    self._settle(probe, exc)
                failed = 0 if progress else failed + 1
                if failed >= self.policy.attempts:
                    raise
                if pos > start:
                    self.resumes += 1
                await self._sleep_before(max(failed - 1, 0), path, exc)
            except BaseException as exc:
                if not progress:
                    self._settle(probe, exc)
                raise
            finally:
                await aclose_stream(stream)

    # --- idempotent calls -----------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        return await self._idempotent("stat", path, lambda: self.inner.stat(path))

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        return await self._idempotent("stat", path, lambda: self.inner.part_range(path, part_number, etag))

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        return await self._idempotent(
            "read_head", path, lambda: self.inner.read_head(path, length, start=start, more=more, end=end)
        )

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        return await self._idempotent(
            "list",
            prefix,
            lambda: self.inner.list_objects(
                prefix, delimiter=delimiter, start_after=start_after, limit=limit
            ),
        )

    async def delete(self, path: str) -> None:
        await self._idempotent("delete", path, lambda: self.inner.delete(path))

    async def is_dir(self, path: str) -> bool:
        return await self._idempotent("is_dir", path, lambda: self.inner.is_dir(path))

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        tries = 0

        async def abort() -> None:
            nonlocal tries
            tries += 1
            try:
                await self.inner.abort_multipart(path, upload_id)
            except NoSuchUpload:
                if tries == 1:
                    raise
                # an earlier try may have aborted it and lost only the answer

        await self._idempotent("abort_multipart", path, abort)

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        return await self._idempotent(
            "list_parts", path, lambda: self.inner.list_parts(path, upload_id, marker=marker, limit=limit)
        )

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        return await self._idempotent(
            "list_uploads",
            prefix,
            lambda: self.inner.list_uploads(
                prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                upload_id_marker=upload_id_marker,
                limit=limit,
            ),
        )

    async def check(self) -> None:
        await self._idempotent("check", "", self.inner.check)

    # --- writes: tried once ---------------------------------------------------------------------

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        return await self._once(path, lambda: self.inner.write(path, body, size=size, meta=meta))

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        return await self._once(src, lambda: self.inner.copy(src, dst, meta=meta))

    async def make_dir(self, path: str) -> None:
        await self._once(path, lambda: self.inner.make_dir(path))

    async def remove_dir(self, path: str) -> None:
        await self._once(path, lambda: self.inner.remove_dir(path))

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        return await self._once(path, lambda: self.inner.create_multipart(path, meta))

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        return await self._once(
            path, lambda: self.inner.upload_part(path, upload_id, part_number, body, size=size)
        )

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        return await self._once(path, lambda: self.inner.complete_multipart(path, upload_id, parts))

    async def aclose(self) -> None:
        await self.inner.aclose()
