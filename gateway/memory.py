"""How a worker process manages its memory: the C allocator keeps what it freed, and Python's
cyclic garbage collector runs less often.

Page buffers:

A cold read passes every page through a buffer of its own (1 MiB by default), thousands a second. By
default glibc serves blocks this large from mmap until a freed one raises its threshold, and gives
the top of the heap back to the kernel whenever twice that threshold is free, so the next burst of
buffers faults in fresh pages, which the kernel zeroes first: page faults were 17% of Hoard's CPU in
a cold read of 64 MiB objects (`bench/cache_throughput.py --perf-cold 64MiB`), 6% with the limits
below. Memory a worker freed stays its own, up to TRIM_THRESHOLD more than it uses.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 1024 * 1024  # blocks below this come from the heap (glibc's largest value)
TRIM_THRESHOLD = 256 * 1024 * 1024  # free bytes at the heap's top before it is given back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_OVERRIDES = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# Allocations of tracked objects between two collections of the youngest generation (CPython: 700).
GC_YOUNG_THRESHOLD = 20_000


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False where there is no glibc `mallopt` or the
    environment sets the allocator's tunables itself (those win)."""
    if any(name in os.environ for name in _OVERRIDES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: bool = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    if not done:
        log.info("mallopt refused the page-buffer thresholds; freed memory goes back to the kernel")
    return done


def collect_less() -> None:
    """Move everything alive now (the worker's start-up: modules, mounts, the app) out of the
    collector's sight, and collect the youngest generation every GC_YOUNG_THRESHOLD allocations.

    A request allocates hundreds of short-lived tracked objects (frames, dicts, futures), so with
    CPython's 700 the collector ran every few requests and scanned the start-up's objects at every
    older collection: `gc_collect_main` was among the hottest symbols of a cold read (perf, 4 KiB
    objects), and such a read cost 1,567 µs of CPU against 1,488 with this (bench/cold_cpu.py,
    medians of 6 rounds). Page buffers are bytes, which the collector does not track.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
