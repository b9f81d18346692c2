from __future__ import annotations

import asyncio

from cache.jobs import LoadJobs
from cache.policy import Rule
from tests.cache.helpers import PAGE, Env, payload, read_all


async def test_load_preloads_everything_and_a_rerun_skips_it(env: Env) -> None:
    sizes = [0, 1, PAGE, 3 * PAGE + 5, 20 * PAGE]
    data = {f"ds/f{i:02d}": env.put(f"ds/f{i:02d}", payload(s, seed=i)) for i, s in enumerate(sizes)}
    env.put("elsewhere", payload(PAGE))
    cache = await env.cache()
    jobs = LoadJobs(cache, concurrency=3, clock=env.clock)
    job = jobs.start(env.src, "ds/")
    assert jobs.start(env.src, "ds/") is job  # one job per path
    done = await jobs.wait("/data/ds/")
    assert done is job and job.state == "done"
    total = sum(sizes)
    assert (job.objects_done, job.objects_total, job.bytes_total) == (5, 5, total)
    assert (job.bytes_fetched, job.bytes_skipped, job.errors) == (total, 0, 0)
    status = job.as_dict(env.clock())
    assert status["eta"] == 0.0 and status["bytes_done"] == total
    await cache.drain()

    env.ufs.reset()
    for path, expected in data.items():
        info = await cache.stat(env.src, path)
        got, stats = await read_all(cache, env.src, info)
        assert got == expected and stats.outcome == "HIT"
    assert sum(env.ufs.calls.values()) == 0  # metadata and pages both came from the load

    rerun = jobs.start(env.src, "ds/")
    assert rerun is not job
    await jobs.wait("/data/ds/")
    assert (rerun.bytes_fetched, rerun.bytes_skipped) == (0, total)
    assert env.ufs.calls["read"] == 0
    assert jobs.status("/data/ds/") is rerun


async def test_load_skips_skip_cache_and_counts_errors(env: Env) -> None:
    env.put("d/ok", payload(PAGE))
    env.put("d/skip/x", payload(PAGE))
    cache = await env.cache(rules=(Rule("/data/d/skip", filter="skipCache"),))
    jobs = LoadJobs(cache, clock=env.clock)
    job = jobs.start(env.src, "d/")
    await jobs.wait("/data/d/")
    assert job.state == "done" and job.objects_done == 2 and job.bytes_fetched == PAGE
    assert cache.stats().pages == 1

    missing = jobs.start(env.src, "nothing-here/")
    await jobs.wait("/data/nothing-here/")
    assert missing.state == "done" and missing.objects_total == 0


async def test_stop(env: Env) -> None:
    for i in range(30):
        env.put(f"many/{i:03d}", payload(4 * PAGE, seed=i))
    cache = await env.cache()
    jobs = LoadJobs(cache, concurrency=1, clock=env.clock)
    job = jobs.start(env.src, "many/")
    await asyncio.sleep(0)
    stopped = await jobs.stop("/data/many/")
    assert stopped is job and job.state == "stopped" and job.finished_at is not None
    assert job.objects_done < 30
    await jobs.aclose()
