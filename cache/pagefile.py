"""Page files: one page on disk, its format, and how it is written and read (the index is
store.py's; this is the part diskcache calls its `Disk`).

A file is HEADER + data: magic, CRC-32C and length of the data, and the time it was stored. It is
written under a temporary name beside its final one (`<name>.<pid>.<tid>.tmp`), which the store
renames into place inside its index transaction.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from typing import cast

from awscrt.checksums import crc32c

from ufs_adapters._util import process_alive

log = logging.getLogger(__name__)

# magic, CRC-32C of the data, length of the data, store time (unix seconds). CRC-32C because the
# CPU computes it (awscrt: ~20 µs per MiB against zlib.crc32's ~250 µs), and every hit verifies it.
HEADER = struct.Struct("<4sIId")
MAGIC = b"HPG2"  # HPG1 pages (zlib CRC-32) fail the magic check and are dropped as corrupt
# Pages are read on the event loop when the kernel has them in its page cache: a few µs of syscalls
# (and ~50 µs of copy per MiB) against a thread hop and the GIL hand-offs around it, which left a
# 1 MiB-hit worker idle a third of the time. Pages up to INLINE_MAX are read with one pread; larger
# ones with preadv(RWF_NOWAIT), which fails rather than wait for the disk. Anything unusual on that
# path (a page on disk only, a bad header, a short file) is redone in a thread (`read_checked`).
INLINE_MAX = 64 * 1024
NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux; elsewhere large pages always go through the thread
SLOW = object()  # read_inline: not here, go to a thread
DIRECT = getattr(os, "O_DIRECT", 0)
DIRECT_ALIGN = 4096  # O_DIRECT buffers, offsets and lengths: a multiple of any disk's block size
TMP_MAX_AGE = 600.0  # a temporary file this old belongs to a writer that died
TMP_SUFFIX = ".tmp"  # a page file being written: <name>.<pid>.<tid>.tmp


class PageFiles:
    """The page files under `pages_dir`, pages/ab/<name>: where each lives, how it is written
    (O_DIRECT for pages over INLINE_MAX when `direct_io`) and how it is read and checked."""

    def __init__(self, pages_dir: str, page_size: int, direct_io: bool) -> None:
        self.pages_dir = pages_dir
        self.page_size = page_size
        self.direct_io = direct_io and bool(DIRECT)
        self._local = threading.local()  # per writing thread: _write_direct's aligned buffer
        self._made_dirs: set[str] = set()
        self._inline_head = bytearray(HEADER.size)  # read_inline's, reused (event loop only)
        self._inline_extra = bytearray(1)

    def file_of(self, name: str) -> str:
        return os.path.join(self.pages_dir, name[:2], name)

    # -- reads

    def read_inline(self, name: str, length: int, ttl: float | None, now: float) -> object:
        """The common case of `read_checked` without its slow branches: a whole page stored less
        than `ttl` before `now` (bytes) or no file (None). Corrupt, expired, unreadable or
        not-in-memory pages give SLOW, and the store's threaded path reads or drops them."""
        try:
            fd = os.open(self.file_of(name), os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            return SLOW
        try:
            if length <= INLINE_MAX:
                buf = os.pread(fd, HEADER.size + length + 1, 0)
                got = len(buf)
                head: bytes | bytearray = buf
                data = buf[HEADER.size :]
            else:
                # Into the page's own buffer, no copy; the extra byte tells a longer file. The
                # header and extra buffers are shared: this runs on the event loop only, and the
                # header is unpacked before anything else can run.
                head, body = self._inline_head, bytearray(length)
                got = os.preadv(fd, [head, body, self._inline_extra], 0, NOWAIT)
                data = cast(bytes, body)  # bytearray is what the ASGI server writes
        except OSError:  # EAGAIN (not in memory) among them
            return SLOW
        finally:
            os.close(fd)
        if got != HEADER.size + length:
            return SLOW
        store_time = _stored_at(head, data, length)
        if store_time is None or (ttl is not None and store_time + ttl <= now):
            return SLOW
        return data

    def read_checked(self, name: str, length: int) -> tuple[bytes | None, int, float]:
        """(data, inode, store time) of a whole page file: header magic, length `length`, file
        size and CRC-32C all agree. Data None: no file or an unreadable one (inode -1), or a file
        that fails the checks (its inode, for the store to drop it if it is still that file)."""
        try:
            fd = os.open(self.file_of(name), os.O_RDONLY)
        except FileNotFoundError:
            return None, -1, 0.0
        except OSError as exc:  # EIO, EMFILE...: not proof of a bad page; serve from the UFS
            log.warning("cache page %s unreadable: %r", name, exc)
            return None, -1, 0.0
        try:
            st = os.fstat(fd)
            head = bytearray(HEADER.size)
            body = bytearray(length)
            # One syscall, and the data lands in its own buffer: no copy of a 1 MiB page.
            got = os.preadv(fd, [head, body], 0)
        except OSError as exc:
            log.warning("cache page %s unreadable: %r", name, exc)
            return None, -1, 0.0
        finally:
            os.close(fd)
        # bytearray is what the ASGI server writes and what slicing yields; typed as bytes.
        data = cast(bytes, body)
        store_time = _stored_at(head, data, length) if got == HEADER.size + length == st.st_size else None
        if store_time is None:
            return None, st.st_ino, 0.0
        return data, st.st_ino, store_time

    # -- writes

    def write_tmp(self, name: str, data: bytes, now: float, fsync: bool) -> str:
        """The page's temporary file beside its final one, written (and fsynced if asked): its path."""
        final = self.file_of(name)
        parent = os.path.dirname(final)
        if parent not in self._made_dirs:
            os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)
        tmp = f"{final}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}"
        head = HEADER.pack(MAGIC, crc32c(data), len(data), now)
        try:
            # Small pages are written through the page cache: the copy is cheap for them, and a
            # hit reads them with a pread on the event loop, which must find them in memory.
            fd, direct = self._open_tmp(tmp, self.direct_io and len(data) > INLINE_MAX)
            try:
                if direct:
                    self._write_direct(fd, head, data)
                else:
                    _write_all(fd, head, data)
                if fsync:
                    os.fsync(fd)  # the data is durable before any row can point at it
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _open_tmp(self, tmp: str, direct: bool) -> tuple[int, bool]:
        """The page's temporary file, open for O_DIRECT writes if `direct` and the file system
        takes them; and whether it is."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        if direct:
            try:
                return os.open(tmp, flags | DIRECT, 0o644), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._no_direct_io(exc)  # tmpfs before Linux 6.6, for one, refuses it at open
        return os.open(tmp, flags, 0o644), False

    def _no_direct_io(self, exc: OSError) -> None:
        if self.direct_io:
            self.direct_io = False
            log.warning("cache directory %s refuses O_DIRECT (%s): page writes go through the page cache",
                        self.pages_dir, exc.strerror)  # fmt: skip

    def _write_direct(self, fd: int, head: bytes, data: bytes) -> None:
        """The page's whole blocks in one O_DIRECT write from this thread's aligned buffer, the
        bytes of its last, partial block in a buffered one: the data goes from the buffer to the
        disk, neither copied into the kernel's page cache nor taking its memory, and no block has to
        be read back (as cutting a padded file to its length would). A file system that refuses
        O_DIRECT gets the whole page buffered."""
        size = len(head) + len(data)
        aligned = size - size % DIRECT_ALIGN
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:  # mmap memory is page-aligned, as O_DIRECT needs
            buf = self._local.buf = mmap.mmap(-1, max(size, HEADER.size + self.page_size))
        view = memoryview(buf)
        view[: len(head)] = head
        view[len(head) : size] = data
        written = 0
        try:
            written = os.write(fd, view[:aligned])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._no_direct_io(exc)
        if written < size:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~DIRECT)
            while written < size:
                written += os.pwrite(fd, view[written:size], written)

    # -- the directory

    def make_dirs(self) -> None:
        """Every directory a page can go to (pages/00 ... pages/ff: names are hex), made when the
        store opens, so a fresh cache's first fills make none. Each is an inode allocation, which
        perf put at 0.5-4.3% of Hoard's CPU in a cold pass of 64 MiB objects (bench/README.md)."""
        for i in range(256):
            parent = os.path.join(self.pages_dir, f"{i:02x}")
            os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)

    def names_sorted(self, now: float) -> Iterator[str]:
        """Page file names in order; temporary files of dead writers are removed on the way."""
        for top in sorted(os.listdir(self.pages_dir)):
            top_dir = os.path.join(self.pages_dir, top)
            if os.path.isdir(top_dir):
                for name in sorted(os.listdir(top_dir)):
                    if name.endswith(TMP_SUFFIX):
                        remove_if_dead(os.path.join(top_dir, name), name, now)
                    else:
                        yield name


def _stored_at(head: bytes | bytearray, data: bytes, length: int) -> float | None:
    """The store time in a page's header if the header and `data` are that page, whole: the
    magic, the length `length` and the CRC-32C of the data agree; else None."""
    magic, crc, stored_length, stored = HEADER.unpack_from(head)
    if magic != MAGIC or stored_length != length or crc32c(data) != crc:
        return None
    store_time: float = stored  # a double ("d")
    return store_time


def _write_all(fd: int, head: bytes, data: bytes) -> None:
    written = os.writev(fd, [head, data])
    total = len(head) + len(data)
    if written < total:  # short writes are rare (signals, full disk); finish from a view
        view = memoryview(head + data)
        while written < total:
            written += os.write(fd, view[written:])


def remove_if_dead(path: str, name: str, now: float) -> None:
    """Remove a temporary page file whose writer died (or that is older than any write takes)."""
    with contextlib.suppress(OSError):
        if now - os.stat(path).st_mtime > TMP_MAX_AGE or not _pid_alive(name):
            os.unlink(path)


def _pid_alive(tmp_name: str) -> bool:
    """Whether the writer of a temporary file (`<name>.<pid>.<tid>`) still runs."""
    try:
        pid = int(tmp_name.split(".")[1])
    except (IndexError, ValueError):
        return False
    return pid == os.getpid() or process_alive(pid)
