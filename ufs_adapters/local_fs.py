"""File-system primitives of the local adapter (local.py): keys checked against what a path may
hold, OSError translated by errno, temporary files that become their destination, copies and
directory fsyncs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._util import CHUNK_SIZE, process_alive
from .base import (
    AlreadyExists,
    InvalidPath,
    NotEmpty,
    NotFound,
    PermissionDenied,
    UfsError,
    Unavailable,
)

HIDDEN_PREFIX = ".hoard-"  # reserved: never a key segment, never listed
TMP_PREFIX = ".hoard-tmp-"
DIR_OBJECT = ".hoard-dirobj"  # body and metadata of the folder-marker key `dir/`
NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})  # a file system without user xattrs says so

# OSError -> UfsError, by errno; anything else becomes a plain UfsError (an internal error above).
_ERRNO_ERRORS: Mapping[int, type[UfsError]] = {
    errno.ENOENT: NotFound,
    errno.ENOTDIR: NotFound,  # a path through a file: that object does not exist
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENAMETOOLONG: InvalidPath,
    errno.ELOOP: InvalidPath,
    errno.EISDIR: InvalidPath,
    errno.EINVAL: InvalidPath,
    errno.EEXIST: AlreadyExists,
    errno.ENOTEMPTY: NotEmpty,
    errno.ENOSPC: Unavailable,
    errno.EDQUOT: Unavailable,
    errno.EIO: Unavailable,
    errno.ESTALE: Unavailable,
    errno.ETIMEDOUT: Unavailable,
    errno.EBUSY: Unavailable,
    errno.EAGAIN: Unavailable,
    errno.EMFILE: Unavailable,
    errno.ENFILE: Unavailable,
}


def os_error(path: str, exc: OSError) -> UfsError:
    cls = _ERRNO_ERRORS.get(exc.errno or 0, UfsError)
    return cls(path, exc.strerror or str(exc))


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """A checked key: its segments, and whether it is a folder marker (`dir/`)."""

    key: str
    segments: tuple[str, ...]
    marker: bool

    @property
    def dir_segments(self) -> tuple[str, ...]:
        """Segments of the directory that holds the object's file."""
        return self.segments if self.marker else self.segments[:-1]


def check_segment(key: str, segment: str) -> None:
    if segment in ("", ".", ".."):
        raise InvalidPath(key, f"segment {segment!r} is not allowed in a key on a file system mount")
    if segment.startswith(HIDDEN_PREFIX):
        raise InvalidPath(key, f"names starting with {HIDDEN_PREFIX!r} are reserved by Hoard")


def parse_key(key: str) -> Key:
    if not key:
        raise InvalidPath(key, "empty key")
    if "\x00" in key:
        raise InvalidPath(key, "NUL in key")
    if key.startswith("/"):
        raise InvalidPath(key, "absolute key")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(key, "key is not valid UTF-8") from None
    marker = key.endswith("/")
    segments = tuple((key[:-1] if marker else key).split("/"))
    for segment in segments:
        check_segment(key, segment)
    return Key(key, segments, marker)


def parse_dir(path: str) -> Key:
    """A directory path (`bucket` or `a/b`, one trailing slash allowed) as a marker-shaped key."""
    return parse_key(path if path.endswith("/") else path + "/")


def mtime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def fallback_etag(st: os.stat_result) -> str:
    return hashlib.md5(f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}".encode()).hexdigest()


def write_all(fd: int, digest: Any, data: bytes | bytearray | memoryview) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_fd(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes from src's offset 0 to dst's position; in-kernel where the OS can."""
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src, dst, size - offset, offset)
            if n == 0:
                break
            offset += n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    while offset < size:  # no copy_file_range here: plain read/write from where it stopped
        data = os.pread(src, min(CHUNK_SIZE, size - offset), offset)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(data)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some NAS file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF, *NO_XATTRS):
            raise
    finally:
        os.close(fd)


@dataclass(slots=True)
class Temp:
    """An open temp file that becomes `dest` on `commit()`; `discard()` is safe to call repeatedly.
    `entry`: its entry in a TempRegistry, removed once the file is in place or gone."""

    fd: int
    path: str
    dest: str
    entry: str | None = None

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def commit(self) -> None:
        """Close the file and rename it over `dest`: a reader sees the old file or the whole new."""
        self.close()
        os.replace(self.path, self.dest)
        self._untrack()

    def discard(self) -> None:
        try:
            self.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._untrack()

    def _untrack(self) -> None:
        if self.entry is not None:
            entry, self.entry = self.entry, None
            with contextlib.suppress(OSError):
                os.unlink(entry)


class TempRegistry:
    """The temporary files this gateway's processes are writing, so that the next start removes
    those of a process that died before it renamed or removed them: a worker killed in the middle
    of a PUT left a hidden file as large as the upload so far in the NAS for good (nothing walks
    a NAS looking for them). One symlink per file in `directory` (the mount's directory in the
    metastore), named `<boot id>.<pid>.<random>`, made before the file and removed after it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._prefix = f"{_boot_id()}.{os.getpid()}."

    def track(self, path: str) -> str:
        entry = os.path.join(self.directory, self._prefix + secrets.token_hex(8))
        try:
            os.symlink(path, entry)
        except FileNotFoundError:
            os.makedirs(self.directory, exist_ok=True)
            os.symlink(path, entry)
        return entry

    def sweep(self) -> None:
        """Remove the files (and entries) of processes that are gone."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        boot = _boot_id()
        for name in names:
            entry_boot, _, rest = name.partition(".")
            pid = rest.partition(".")[0]
            if entry_boot == boot and pid.isdigit() and process_alive(int(pid)):
                continue
            entry = os.path.join(self.directory, name)
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if os.path.basename(target).startswith(TMP_PREFIX):  # never anything else
                    os.unlink(target)
            with contextlib.suppress(OSError):
                os.unlink(entry)


def _boot_id() -> str:
    """This boot of the machine: a pid of an earlier boot names no process of this one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace(".", "")
    except OSError:
        return "0"


def open_temp(directory: str, dest: str, registry: TempRegistry | None = None) -> Temp:
    while True:
        path = os.path.join(directory, TMP_PREFIX + secrets.token_hex(8))
        entry = registry.track(path) if registry is not None else None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except BaseException as exc:
            if entry is not None:
                with contextlib.suppress(OSError):
                    os.unlink(entry)
            if isinstance(exc, FileExistsError):
                continue
            raise
        return Temp(fd, path, dest, entry)
