"""Prometheus metrics with Hoard's own registry (no global default registry).

Label children are resolved once and kept in dicts, so the per-request cost is one dict lookup and
one locked increment rather than prometheus_client's label parsing.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from cache.reader import ObjectCache
from cache.stats import EvictionReason
from gateway.namespace import MountTable
from gateway.ufs import mount_stats

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
        self.requests = Counter(
            "hoard_s3_requests",
            "S3 requests by operation and HTTP status.",
            ["operation", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "hoard_s3_request_duration_seconds",
            "Time to the end of the S3 response, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._requests: dict[tuple[str, int], MetricWrapperBase] = {}
        self._durations: dict[str, Histogram] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        counter = self._requests.get((operation, status))
        if counter is None:
            counter = self._requests[(operation, status)] = self.requests.labels(operation, str(status))
        counter.inc()  # type: ignore[attr-defined]
        hist = self._durations.get(operation)
        if hist is None:
            hist = self._durations[operation] = self.duration.labels(operation)
        hist.observe(seconds)

    def watch_cache(self, cache: ObjectCache) -> None:
        self.registry.register(_CacheCollector(cache))

    def watch_mounts(self, mounts: MountTable) -> None:
        self.registry.register(_UfsCollector(mounts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CacheCollector(Collector):
    """Reads the cache's plain counters at scrape time; the cache itself knows no Prometheus."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        st = self.cache.stats()
        yield CounterMetricFamily("hoard_cache_hits", "Pages served from the cache.", value=st.hits)
        yield CounterMetricFamily(
            "hoard_cache_misses", "Pages that had to come from the UFS.", value=st.misses
        )
        read = CounterMetricFamily(
            "hoard_cache_bytes_read", "Bytes served, by where they came from.", labels=["source"]
        )
        read.add_metric(["cache"], st.bytes_from_cache)
        read.add_metric(["ufs"], st.bytes_from_ufs)
        yield read
        yield GaugeMetricFamily("hoard_cache_used_bytes", "Bytes of pages on disk.", value=st.used)
        yield GaugeMetricFamily(
            "hoard_cache_capacity_bytes", "The cache quota (cache.size).", value=st.capacity
        )
        yield GaugeMetricFamily("hoard_cache_pages", "Pages on disk.", value=st.pages)
        evictions = CounterMetricFamily(
            "hoard_cache_evictions", "Pages evicted, by reason.", labels=["reason"]
        )
        for reason in EvictionReason:
            evictions.add_metric([reason.value], st.evictions.get(reason, 0))
        yield evictions


class _UfsCollector(Collector):
    """Per mount: UFS calls and bytes (Instrumented), throttling (Limited), breaker (Resilient)."""

    def __init__(self, mounts: MountTable) -> None:
        self.mounts = mounts

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "hoard_ufs_requests", "Calls to the under-storage.", labels=["mount", "operation", "outcome"]
        )
        read = CounterMetricFamily(
            "hoard_ufs_bytes_read", "Bytes read from the under-storage.", labels=["mount"]
        )
        throttle = CounterMetricFamily(
            "hoard_ufs_throttle_seconds", "Time calls waited on the mount's limits.", labels=["mount"]
        )
        inflight = GaugeMetricFamily(
            "hoard_ufs_inflight", "UFS calls in flight, open reads included.", labels=["mount"]
        )
        retries = CounterMetricFamily("hoard_ufs_retries", "Retried UFS calls.", labels=["mount"])
        resumes = CounterMetricFamily(
            "hoard_ufs_read_resumes", "Reads resumed after a break.", labels=["mount"]
        )
        breaker = GaugeMetricFamily(
            "hoard_ufs_circuit_open", "1 while the mount's circuit breaker is open.", labels=["mount"]
        )
        for mount in self.mounts.mounts():
            counted, limited, resilient = mount_stats(mount.adapter)
            if counted is not None:
                counts, bytes_read = counted.stats()
                for (operation, outcome), n in sorted(counts.items()):
                    requests.add_metric([mount.path, operation, outcome], n)
                read.add_metric([mount.path], bytes_read)
            if limited is not None:
                throttle.add_metric([mount.path], limited.throttle_seconds)
                inflight.add_metric([mount.path], limited.inflight)
            if resilient is not None:
                retries.add_metric([mount.path], int(resilient["retries"]))
                resumes.add_metric([mount.path], int(resilient["resumes"]))
                breaker.add_metric([mount.path], 1 if resilient["state"] == "open" else 0)
        yield from (requests, read, throttle, inflight, retries, resumes, breaker)
