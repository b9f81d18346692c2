"""The cache's knobs as one value; gateway/config.py builds it from `cache:` in the YAML."""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Rule

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Sizes in bytes, durations in seconds."""

    dir: str
    size: int  # hard quota of page bytes (headers included) on disk
    reserved: int = 0  # bytes left free on the file system
    page_size: int = MiB
    metadata_ttl: float = 60.0
    rules: tuple[Rule, ...] = ()
    read_ahead: int = 16  # pages fetched ahead of a sequential reader (one max_merge window)
    max_merge: int = 16  # most pages one UFS request fills
    cull_limit: int = 16  # most pages one insert may evict
    # fsync page files before their row. Off by default: a page lost or torn by a power cut fails
    # its CRC-32C/length check on read and is dropped and refetched, so fsync buys no correctness,
    # and it was the largest single cost of a cold read (a quarter of the busy samples, py-spy).
    fsync: bool = False
    # Write page files with O_DIRECT (store.py): the bytes go from Hoard's buffer to the disk, not
    # through the kernel's page cache. A cold fill then costs a third less CPU per byte (no copy
    # into, and no allocation of, page-cache memory: bench/README.md) and does not push hot pages
    # out of memory; the first hit of a page reads it from the disk.
    direct_io: bool = True
    threads: int = 8  # threads reading pages that are not in memory (the index has its own two)
    # Bytes of fetched pages that may wait for the write lane (per worker). A fill that finds it
    # full waits, which pauses its UFS stream and with it the reads that wait for its next pages:
    # with 8 pages (the old bound) one slow disk write stalled every cold stream of a worker
    # (64 MiB objects read cold: 0.34-0.48x moto direct against 0.47-0.60x, README).
    write_buffer: int = 64 * MiB
    # When the write buffer is full: True makes the fill wait (its UFS stream pauses, every page
    # gets cached); False serves the page without storing it, so cold reads never wait for a cache
    # disk slower than the UFS.
    fill_waits: bool = True
    max_metadata_entries: int = 100_000
    max_list_pages: int = 1_000
    sweep_interval: float = 10.0  # maintenance period: TTL expiry, stale sweep, watermark eviction
    evict_high: float = 0.95  # background eviction starts above this fraction of `size` ...
    evict_low: float = 0.90  # ... and stops at this one, so inserts rarely have to evict
    stale_batch: int = 100  # objects revalidated per mount per sweep

    def __post_init__(self) -> None:
        for name in (
            "size",
            "reserved",
            "cull_limit",
            "max_metadata_entries",
            "max_list_pages",
            "stale_batch",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"cache.{name} {getattr(self, name)} must not be negative")
        for name in ("page_size", "max_merge", "threads", "write_buffer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"cache.{name} {getattr(self, name)} must be positive")
        if self.read_ahead < 0:
            raise ValueError(f"cache.read_ahead {self.read_ahead} must not be negative")
        if not 0 < self.evict_low <= self.evict_high <= 1:
            raise ValueError(
                f"cache.evict_low {self.evict_low} and evict_high {self.evict_high} need 0 < low <= high <= 1"
            )

    @property
    def write_slots(self) -> int:
        """Pages the write buffer holds (at least one)."""
        return max(1, self.write_buffer // self.page_size)
