"""Writes through Hoard, told to every worker process that shares the cache.

Each worker keeps what the UFS said of objects and listings in its own memory (metadata.py),
including that a key does not exist. A write, copy or delete through one worker dropped its own
entries and the shared pages, but another worker went on answering from its memory until the
entry's max age: 404 for a key just written, the old ETag on a HEAD, a listing without the new key.

So a write is also logged in the index (`invalidations`, one row per write, numbered), and the
number of the last one is published in a shared 8-byte file, mapped into every worker. Before a
worker answers from its memory it reads that number (a memory read); when it moved, the worker
reads the new rows and forgets what they name (ObjectCache._sync_invalidations). The row is
committed and the number published before the write is acknowledged, so a read that starts after
the acknowledgement, on any worker, sees the write.
"""

from __future__ import annotations

import mmap
import os

KEEP = 10_000  # rows kept in the log; a worker that missed more forgets all it knows


class Signal:
    """The sequence number of the last logged write, in a shared file mapped into memory."""

    __slots__ = ("_map", "_word")

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)  # zeros; two processes doing this at once both leave 8 bytes
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        # One unsigned 64-bit word, read and written in place: a read (once per stat, on the hit
        # path) allocates nothing but the int.
        self._word = memoryview(self._map).cast("Q")

    def read(self) -> int:
        """Compared for change only: a torn read costs one needless look at the log."""
        return self._word[0]

    def publish(self, seq: int) -> None:
        self._word[0] = seq

    def close(self) -> None:
        self._word.release()
        self._map.close()
