"""A lane: work queued from the event loop, done a batch at a time by one thread of a pool.

The page store writes pages through one (store.py, `write_soon`). Whoever queues an item gets a
future; the first item queued while the lane is idle sends one thread to drain the queue, and that
thread takes every item queued, in batches, until none is left, settling each batch's futures
with one call into their event loop. So a burst of N items costs one thread wake-up and N/batch
calls back, and never more than one thread at a time, where N items each sent to the pool cost N
wake-ups, N threads contending for the GIL and N calls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_Outcome = tuple[asyncio.Future[R], R | Exception]


class Lane(Generic[T, R]):
    """Items of type T done by `run_batch` (in a thread of `executor`), at most `batch_size` at a
    time: it returns each item's result, or the exception that item failed with, in order."""

    def __init__(
        self, executor: Executor, run_batch: Callable[[list[T]], list[R | Exception]], batch_size: int
    ) -> None:
        self._executor = executor
        self._run_batch = run_batch
        self._batch_size = batch_size
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False  # a thread is draining the queue
        self._lock = threading.Lock()

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item` (on the event loop); the future gives its result. RuntimeError: the pool is
        shut down."""
        entry = (item, asyncio.get_running_loop().create_future())
        with self._lock:
            self._queued.append(entry)
            if self._busy:
                return entry[1]  # the draining thread takes it with its next batch
            self._busy = True
        try:
            self._executor.submit(self._drain)
        except RuntimeError:
            with self._lock:
                self._queued.remove(entry)
                self._busy = False
            raise
        return entry[1]

    def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while True:
                with self._lock:
                    if not self._queued:
                        self._busy = False
                        return
                    batch = self._queued[: self._batch_size]
                    del self._queued[: self._batch_size]
                results = self._run_batch([item for item, _ in batch])
                _post([(fut, result) for (_, fut), result in zip(batch, results, strict=True)])
        except BaseException as exc:  # a bug in run_batch: fail what it held and what waits
            with self._lock:
                batch += self._queued
                self._queued.clear()
                self._busy = False
            error = exc if isinstance(exc, Exception) else RuntimeError(exc)
            failed: list[_Outcome[R]] = [(fut, error) for _, fut in batch]
            _post(failed)
            raise


def _post(outcomes: list[_Outcome[R]]) -> None:
    """From the lane's thread: settle the futures on their event loops, one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome[R]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, mine)


def _settle(outcomes: list[_Outcome[R]]) -> None:
    """On the event loop."""
    for fut, result in outcomes:
        if fut.done():
            continue
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)
