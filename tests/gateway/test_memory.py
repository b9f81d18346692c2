from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gateway.memory import keep_freed_memory

# Rounds of eight 1 MiB buffers made and freed, as a cold read's pages come and go; prints the page
# faults of rounds 2 to 21 (the first one grows the heap either way).
_ROUNDS = textwrap.dedent(
    """
    import resource, sys
    from gateway.memory import keep_freed_memory
    print(keep_freed_memory() if sys.argv[1] == "tuned" else "untuned")
    def burst():
        bufs = [b"x" * (1 << 20) for _ in range(8)]
        del bufs
    burst()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        burst()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_page_buffers_are_reused_not_faulted_in_again() -> None:
    assert _faults("untuned")[1] > 20 * 8 * 100  # glibc's defaults: most of 256 faults per MiB
    said, faults = _faults("tuned")
    assert said == "True"
    assert faults < 100


def test_the_environment_s_allocator_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    said, faults = _faults("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert said == "False" and faults > 20 * 8 * 100


# Collections of the youngest generation while 100,000 dicts are made and kept (the collector counts
# tracked objects made and not yet freed, as requests in flight hold them); and how many start-up
# objects were frozen out of its way.
_COLLECTIONS = textwrap.dedent(
    """
    import gc, sys
    from gateway.memory import collect_less
    if sys.argv[1] == "tuned":
        collect_less()
    before = gc.get_stats()[0]["collections"]
    kept = [{"i": i} for i in range(100_000)]
    print(gc.get_stats()[0]["collections"] - before, gc.get_freeze_count())
    """
)


def test_collect_less_freezes_start_up_and_collects_young_objects_less_often() -> None:
    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _COLLECTIONS, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return int(out[0]), int(out[1])

    default, tuned = run("default"), run("tuned")
    assert default[0] >= 100 and default[1] == 0  # CPython's 700: one collection per 700 objects
    assert tuned[0] <= 10 and tuned[1] > 1000
