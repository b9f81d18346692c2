"""Prometheus metrics with Hoard's own registry (no global default registry).

The cache and the UFS stack keep plain counters and know no Prometheus; `sync` copies them into
real metrics (counters by their increase since the last sync, gauges by value), once a second and
before every scrape. With several uvicorn workers, `hoard serve` points PROMETHEUS_MULTIPROC_DIR at
`<metastore>/prometheus` before the workers start, so prometheus_client keeps every metric in files
there and a scrape answered by any worker adds up all of them (its multiprocess mode); a worker's
own numbers are at most a second old in another worker's answer.

Label children are resolved once and kept in dicts, so the per-request cost is one dict lookup and
one locked increment rather than prometheus_client's label parsing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from cache.reader import ObjectCache
from cache.stats import CacheStats, EvictionReason
from gateway.namespace import MountTable
from gateway.ufs import mount_stats

SYNC_INTERVAL = 1.0  # seconds between copies of the cache's and the UFS stack's counters

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus_client picks file-backed values at import when PROMETHEUS_MULTIPROC_DIR is set.
        self.multiprocess = values.ValueClass is not values.MutexValue
        reg = self.registry
        self.requests = Counter(
            "hoard_s3_requests",
            "S3 requests by operation and HTTP status.",
            ["operation", "status"],
            registry=reg,
        )
        self.duration = Histogram(
            "hoard_s3_request_duration_seconds",
            "Time to the end of the S3 response, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.cache_hits = Counter("hoard_cache_hits", "Pages served from the cache.", registry=reg)
        self.cache_misses = Counter(
            "hoard_cache_misses", "Pages that had to come from the UFS.", registry=reg
        )
        self.cache_bytes = Counter(
            "hoard_cache_bytes_read", "Bytes served, by where they came from.", ["source"], registry=reg
        )
        self.evictions = Counter(
            "hoard_cache_evictions", "Pages evicted, by reason.", ["reason"], registry=reg
        )
        self.write_failures = Counter(
            "hoard_cache_page_write_failures",
            "Pages fetched but not stored: their write failed (a full or failing disk).",
            registry=reg,
        )
        # The same numbers in every worker (the shared index's totals): the latest one set wins.
        self.cache_used = Gauge(
            "hoard_cache_used_bytes", "Bytes of pages on disk.", registry=reg, multiprocess_mode="mostrecent"
        )
        self.cache_capacity = Gauge(
            "hoard_cache_capacity_bytes",
            "The cache quota (cache.size).",
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.cache_pages = Gauge(
            "hoard_cache_pages", "Pages on disk.", registry=reg, multiprocess_mode="mostrecent"
        )
        self.ufs_requests = Counter(
            "hoard_ufs_requests",
            "Calls to the under-storage.",
            ["mount", "operation", "outcome"],
            registry=reg,
        )
        self.ufs_bytes = Counter(
            "hoard_ufs_bytes_read", "Bytes read from the under-storage.", ["mount"], registry=reg
        )
        self.ufs_throttle = Counter(
            "hoard_ufs_throttle_seconds", "Time calls waited on the mount's limits.", ["mount"], registry=reg
        )
        self.ufs_retries = Counter("hoard_ufs_retries", "Retried UFS calls.", ["mount"], registry=reg)
        self.ufs_resumes = Counter(
            "hoard_ufs_read_resumes", "Reads resumed after a break.", ["mount"], registry=reg
        )
        self.ufs_inflight = Gauge(
            "hoard_ufs_inflight",
            "UFS calls in flight, open reads included.",
            ["mount"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.ufs_circuit_open = Gauge(
            "hoard_ufs_circuit_open",
            "1 while the mount's circuit breaker is open.",
            ["mount"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self._requests: dict[tuple[str, int], MetricWrapperBase] = {}
        self._durations: dict[str, Histogram] = {}
        self._cache: ObjectCache | None = None
        self._mounts: MountTable | None = None
        self._pushed: dict[Hashable, float] = {}  # what sync() has added to each counter child

    def observe(self, operation: str, status: int, seconds: float) -> None:
        counter = self._requests.get((operation, status))
        if counter is None:
            counter = self._requests[(operation, status)] = self.requests.labels(operation, str(status))
        counter.inc()  # type: ignore[attr-defined]
        hist = self._durations.get(operation)
        if hist is None:
            hist = self._durations[operation] = self.duration.labels(operation)
        hist.observe(seconds)

    def cache_stats(self) -> CacheStats:
        """The watched cache's stats with its counters summed over every worker process, as a
        scrape reports them: this worker's as of now, the others' as of their last sync (at most
        SYNC_INTERVAL ago). A worker's own CacheStats count only the requests it served."""
        assert self._cache is not None, "watch_cache first"
        own = self._cache.stats()
        self.sync()
        totals: dict[tuple[str, str], float] = {}
        for family in self._every_worker().collect():
            for sample in family.samples:
                if sample.name.startswith("hoard_cache_") and sample.name.endswith("_total"):
                    label = next(iter(sample.labels.values()), "")  # these have one label at most
                    totals[(sample.name, label)] = totals.get((sample.name, label), 0.0) + sample.value

        def total(name: str, label: str = "") -> int:
            return int(totals.get((f"hoard_cache_{name}_total", label), 0))

        return dataclasses.replace(
            own,
            hits=total("hits"),
            misses=total("misses"),
            bytes_from_cache=total("bytes_read", "cache"),
            bytes_from_ufs=total("bytes_read", "ufs"),
            evictions={r: total("evictions", r.value) for r in EvictionReason},
            page_write_failures=total("page_write_failures"),
        )

    def watch_cache(self, cache: ObjectCache) -> None:
        self._cache = cache

    def watch_mounts(self, mounts: MountTable) -> None:
        self._mounts = mounts

    def render(self) -> bytes:
        self.sync()
        return generate_latest(self._every_worker())

    def _every_worker(self) -> CollectorRegistry:
        """Every worker's metrics, added up (multiprocess mode), or this process's own."""
        if not self.multiprocess:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    async def run(self) -> None:
        """Copy the counters every SYNC_INTERVAL, so other workers' scrapes see them (cancel to stop)."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            self.sync()

    def close(self) -> None:
        """At worker exit: drop this process's live gauges (inflight, breaker) from the sums."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def sync(self) -> None:
        """Bring the metrics up to the cache's and the UFS stack's own counters."""
        cache = self._cache
        if cache is not None:
            st = cache.stats()
            self._add(self.cache_hits, (), st.hits)
            self._add(self.cache_misses, (), st.misses)
            self._add(self.cache_bytes, ("cache",), st.bytes_from_cache)
            self._add(self.cache_bytes, ("ufs",), st.bytes_from_ufs)
            for reason in EvictionReason:
                self._add(self.evictions, (reason.value,), st.evictions.get(reason, 0))
            self._add(self.write_failures, (), st.page_write_failures)
            self.cache_used.set(st.used)
            self.cache_capacity.set(st.capacity)
            self.cache_pages.set(st.pages)
        if self._mounts is None:
            return
        for mount in self._mounts.mounts():
            name = mount.path
            counted, limited, resilient = mount_stats(mount.adapter)
            if counted is not None:
                counts, bytes_read = counted.stats()
                for (operation, outcome), n in counts.items():
                    self._add(self.ufs_requests, (name, operation, outcome), n, mount.adapter)
                self._add(self.ufs_bytes, (name,), bytes_read, mount.adapter)
            if limited is not None:
                self._add(self.ufs_throttle, (name,), limited.throttle_seconds, mount.adapter)
                self.ufs_inflight.labels(name).set(limited.inflight)
            if resilient is not None:
                self._add(self.ufs_retries, (name,), int(resilient["retries"]), mount.adapter)
                self._add(self.ufs_resumes, (name,), int(resilient["resumes"]), mount.adapter)
                self.ufs_circuit_open.labels(name).set(1 if resilient["state"] == "open" else 0)

    def _add(self, counter: Counter, labels: tuple[str, ...], total: float, source: object = None) -> None:
        """Add to `counter` what `total` (a running count kept by `source`) grew since last time.
        A new source under the same labels (a mount added again) starts from zero."""
        key = (id(counter), labels, id(source))
        grown = total - self._pushed.get(key, 0.0)
        if grown < 0:  # the source restarted its count
            grown = total
        child = counter.labels(*labels) if labels else counter  # made at 0 if new: exported as 0
        if grown:
            child.inc(grown)
        self._pushed[key] = total
