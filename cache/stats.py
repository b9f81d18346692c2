"""Plain numbers the cache exposes; the gateway turns them into headers and Prometheus metrics."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal


class EvictionReason(enum.StrEnum):
    CAPACITY = "capacity"  # the cache (size or reserved free space) needed room
    TTL = "ttl"  # the page's rule TTL passed
    QUOTA = "quota"  # the page's directory went over its quota
    FREE = "free"  # `hoard free`
    STALE = "stale"  # the object changed or was written/deleted through Hoard
    CORRUPT = "corrupt"  # checksum, length or header mismatch on read


@dataclass(slots=True)
class ReadStats:
    """Where the bytes of one read came from. Owned by one request; the cache only adds to it."""

    bytes_from_cache: int = 0
    bytes_from_ufs: int = 0
    # Pages this read gets from fills in flight, not from disk (a live view kept by the reader):
    # such a page may reach the disk before the response's X-Cache is decided.
    in_flight: Collection[int] = ()

    @property
    def outcome(self) -> Literal["HIT", "MISS", "PARTIAL"]:
        """HIT when no byte came from the UFS (including empty reads), MISS when none came from
        the cache, PARTIAL otherwise."""
        if not self.bytes_from_ufs:
            return "HIT"
        return "PARTIAL" if self.bytes_from_cache else "MISS"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot. Hits and misses count pages served (a page waited for while another request
    fetched it counts as a miss); bytes count what reads returned to callers."""

    capacity: int
    reserved: int
    used: int
    pages: int
    hits: int
    misses: int
    bytes_from_cache: int
    bytes_from_ufs: int
    evictions: Mapping[EvictionReason, int] = field(default_factory=dict)
    metadata_entries: int = 0
    page_write_failures: int = 0  # pages fetched but not stored: their write failed (a full disk, say)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
