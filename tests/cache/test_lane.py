from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cache.lane import Lane


async def test_a_burst_is_done_in_batches_by_one_thread_at_a_time() -> None:
    batches: list[list[int]] = []
    inside = most = 0
    lock = threading.Lock()

    def run(items: list[int]) -> list[int | Exception]:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # the rest of the burst queues up meanwhile
        batches.append(items)
        with lock:
            inside -= 1
        return [ValueError(i) if i == 13 else i * 2 for i in items]

    with ThreadPoolExecutor(4) as pool:
        lane: Lane[int, int] = Lane(pool, run, batch_size=16)
        results = await asyncio.gather(*(lane.submit(i) for i in range(40)), return_exceptions=True)
    assert most == 1
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert len(batches) < 10 and max(len(b) for b in batches) <= 16
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [i * 2 for i in range(40) if i != 13]


async def test_a_failing_batch_fails_its_items_and_frees_the_lane() -> None:
    calls = 0

    def run(items: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return [s.upper() for s in items]

    with ThreadPoolExecutor(2) as pool:
        lane: Lane[str, str] = Lane(pool, run, batch_size=8)
        with pytest.raises(RuntimeError, match="bug"):
            await lane.submit("a")
        assert await lane.submit("b") == "B"
    with pytest.raises(RuntimeError):
        lane.submit("c")  # the pool is shut down: refused at once, nothing left queued
    assert lane._queued == [] and not lane._busy
