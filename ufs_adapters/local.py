"""A directory (local disk or NAS mount) as a UFS, scheme `file`.

Keys map to paths below the root; every blocking call runs in a worker thread. Invariants:

- A key never leaves the root: `..`, `.`, empty segments, absolute keys, NUL and names starting
  with `.hoard-` are refused, and so is any path whose realpath (symlinks resolved) is outside.
- Writes are atomic: a temp file `.hoard-tmp-*` in the destination directory is written, fsynced,
  given its metadata and renamed over the key, then the directory is fsynced. A failed or cancelled
  write removes its temp file; readers see the old object or the new one.
- ETag, content type, user metadata, and the size and mtime_ns at write time live in one JSON
  user xattr (`user.hoard.meta`). When the xattr is missing, unsupported, or stale (the file was
  changed behind our back), the ETag is md5(f"{size}-{mtime_ns}-{inode}"): stable, no content read.
- Listing is in S3 order (UTF-8 byte order of keys): each directory is sorted by `name/` for
  folders and `name` for files, walked lazily, and subtrees at or below `start_after` are skipped.

Limits of the layout (a file system is a tree, S3 is flat):
- A key `a` and a key `a/b` cannot coexist; writing one while the other exists raises InvalidPath.
- A key ending in `/` (folder marker) is stored as the directory plus a hidden `.hoard-dirobj`
  file holding its body and metadata, so `dir/` and `dir/x` coexist.
- Deleting an object prunes the directories it leaves empty, except top-level ones (buckets under
  a root mount); folders with no objects are never listed as common prefixes.
- Multipart uploads are staged under `<root>/.hoard-uploads/<upload id>/` (shared by every gateway
  that mounts the same directory); a custom `staging_dir` inside the root must itself be hidden
  (start with `.hoard-`). list_uploads reads every staged upload's record.
- Keys that differ only in case collide on a case-insensitive file system (SMB shares, macOS).
- Without user xattrs (some NAS), content type and user metadata are not kept and every ETag is the
  fallback one. Metadata larger than the file system's xattr limit is refused (InvalidPath).
- Files whose names are not valid UTF-8, special files and symlinks leading out of the root are
  not objects: never listed, never served.
- Directory listings with 1024+ entries are cached by (inode, mtime_ns) and dropped on our own
  changes; a change made behind our back within one file-system timestamp tick of a cached scan
  can stay unseen until the directory changes again.
- remove_dir checks for objects, then removes the folder; an object written into it meanwhile
  stops the removal (NotEmpty) but hidden temp files of in-flight writes are removed with it.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import json
import os
import shutil
import stat as st_mode
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread

from ._util import (
    CHUNK_SIZE,
    check_options,
    check_part_list,
    check_part_number,
    composite_etag,
    unquote_etag,
)
from .base import (
    MIN_PART_SIZE,
    AlreadyExists,
    BadDigest,
    EntityTooSmall,
    InvalidPart,
    InvalidPath,
    ListPage,
    NotEmpty,
    NotFound,
    NotSupported,
    ObjectInfo,
    PartInfo,
    PartsPage,
    PermissionDenied,
    PreconditionFailed,
    ReadOptions,
    UploadsPage,
    WriteMeta,
    read_head_in_two,
)
from .local_fs import (
    DIR_OBJECT,
    HIDDEN_PREFIX,
    NO_XATTRS,
    Key,
    Temp,
    TempRegistry,
    copy_fd,
    fallback_etag,
    fsync_dir,
    mtime,
    open_temp,
    os_error,
    parse_dir,
    parse_key,
    write_all,
)
from .local_listing import Directories
from .local_uploads import Staging

T = TypeVar("T")

UPLOADS_DIR = ".hoard-uploads"
META_XATTR = "user.hoard.meta"
MAX_PART_RUNS = 64  # part sizes kept as at most this many [size, count] runs (xattrs are small)
OPTIONS = ("staging_dir",)

_ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)

# --- the adapter ------------------------------------------------------------------------------


class LocalAdapter:
    """A directory as a UFS. See the module docstring for the layout and its limits."""

    scheme = "file"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        staging_dir: Path | None = None,
        temps: TempRegistry | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._real_root = os.path.realpath(self.root)
        staging = os.path.abspath(staging_dir) if staging_dir else os.path.join(self.root, UPLOADS_DIR)
        self._temps = temps
        self._staging = Staging(staging, temps)
        self._dirs = Directories(self._real_root)

    @classmethod
    async def open(
        cls, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> LocalAdapter:
        """`file:///srv/data`, `/srv/data` or `./data`. Staging stays in the root, so that every
        gateway mounting the same NAS sees the same uploads; `state_dir` keeps the registry of
        the temporary files this gateway writes (local_fs.TempRegistry), and those that processes
        gone since left behind are removed here."""
        opts = check_options("file", options, OPTIONS)
        parts = urlsplit(uri)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"file URI {uri!r} names host {parts.netloc!r}; only local paths work")
            path = unquote(parts.path)
        elif parts.scheme == "":
            path = os.path.expanduser(uri)
        else:
            raise ValueError(f"not a file URI: {uri!r}")
        if not path:
            raise ValueError(f"file URI {uri!r} has no path")
        staging = opts.get("staging_dir")
        temps = None
        if state_dir is not None:
            temps = TempRegistry(str(state_dir / "writing"))
            await anyio.to_thread.run_sync(temps.sweep)
        return cls(path, staging_dir=Path(staging) if staging else None, temps=temps)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LocalAdapter({self.root!r})"

    # --- plumbing -----------------------------------------------------------------------------

    async def _run(self, path: str, fn: Callable[[], T]) -> T:
        """Run blocking file work in a thread; OSErrors become UfsErrors naming `path`."""
        try:
            return await anyio.to_thread.run_sync(fn)
        except OSError as exc:
            raise os_error(path, exc) from exc

    def _fs_path(self, key: str, segments: tuple[str, ...], *tail: str) -> str:
        path = os.path.join(self.root, *segments, *tail)
        if not self._dirs.inside(os.path.realpath(path)):
            raise InvalidPath(key, "the path resolves outside the mount root (symlink)")
        return path

    def _object_path(self, k: Key) -> str:
        return self._fs_path(k.key, k.segments, DIR_OBJECT) if k.marker else self._fs_path(k.key, k.segments)

    # --- metadata -----------------------------------------------------------------------------

    @staticmethod
    def _read_meta(target: int | str, st: os.stat_result) -> dict[str, Any] | None:
        """The stored record if it still describes this file (same size and mtime_ns)."""
        try:
            raw = os.getxattr(target, META_XATTR)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, _ENOATTR, *NO_XATTRS):
                return None
            raise
        try:
            record = json.loads(raw)
            if record["size"] != st.st_size or record["mtime_ns"] != st.st_mtime_ns:
                return None
            if not isinstance(record["etag"], str) or not isinstance(record.get("metadata", {}), dict):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return dict(record)

    @staticmethod
    def _write_meta(key: str, fd: int, st: os.stat_result, record: dict[str, Any]) -> None:
        record = {**record, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        try:
            os.setxattr(fd, META_XATTR, json.dumps(record, separators=(",", ":")).encode())
        except OSError as exc:
            if exc.errno in NO_XATTRS:
                return  # no xattrs on this file system: the stable fallback ETag applies
            if exc.errno in (errno.E2BIG, errno.ERANGE, errno.ENOSPC):
                raise InvalidPath(key, "metadata too large for this file system's xattrs") from exc
            raise

    @classmethod
    def _info(
        cls, key: str, target: int | str, st: os.stat_result
    ) -> tuple[ObjectInfo, dict[str, Any] | None]:
        """(info, the stored record it came from; None: no record, the ETag is the fallback one
        rather than the stored content hash)."""
        record = cls._read_meta(target, st)
        if record is None:
            return ObjectInfo(key, st.st_size, fallback_etag(st), mtime(st.st_mtime_ns)), None
        parts = record.get("parts")
        info = ObjectInfo(
            path=key,
            size=st.st_size,
            etag=record["etag"],
            last_modified=mtime(st.st_mtime_ns),
            content_type=record.get("content_type"),
            metadata={str(k): str(v) for k, v in record.get("metadata", {}).items()},
            parts_count=parts if isinstance(parts, int) else None,
        )
        return info, record

    def _open_object(self, k: Key) -> tuple[int, ObjectInfo, dict[str, Any] | None]:
        # O_NONBLOCK: a FIFO planted under the root must not hang a worker thread.
        fd = os.open(self._object_path(k), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not st_mode.S_ISREG(st.st_mode):
                raise NotFound(k.key, "a folder, not an object")
            info, record = self._info(k.key, fd, st)
        except BaseException:
            os.close(fd)
            raise
        return fd, info, record

    def _stat_sync(self, k: Key) -> ObjectInfo:
        fd, info, _ = self._open_object(k)
        os.close(fd)
        return info

    # --- writing ------------------------------------------------------------------------------

    def _check_ancestors(self, k: Key, *, create: bool) -> None:
        """Every folder on the way must be a directory, never an object file (`a` vs `a/b`)."""
        current = self.root
        for depth, segment in enumerate(k.dir_segments, 1):
            current = os.path.join(current, segment)
            if create:
                try:
                    os.mkdir(current)
                    self._dirs.discard(os.path.dirname(current))
                    continue
                except FileExistsError:
                    pass
            if os.path.exists(current) and not os.path.isdir(current):
                blocker = "/".join(k.dir_segments[:depth])
                raise InvalidPath(
                    k.key,
                    f"key {blocker!r} is an object, so it cannot also be a folder of {k.key!r}: "
                    "a file system mount cannot hold a key and a key below it",
                )
            if not create and not os.path.exists(current):
                return

    def _clear_destination(self, k: Key, dest: str) -> None:
        """A key `a` may replace a directory `a` only if no file at all is left in it."""
        if k.marker or not os.path.isdir(dest):
            return
        if self._remove_empty_tree(dest):
            self._dirs.discard(os.path.dirname(dest))
        else:
            raise InvalidPath(
                k.key,
                f"{k.key + '/'!r} holds other keys, so {k.key!r} cannot be an object too: "
                "a file system mount cannot hold a key and a key below it",
            )

    def _remove_empty_tree(self, path: str) -> bool:
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or not self._remove_empty_tree(entry.path):
                return False
        try:
            os.rmdir(path)
        except OSError:
            return False
        return True

    def _prepare_write(self, k: Key) -> Temp:
        dest = self._object_path(k)
        directory = os.path.dirname(dest)
        for attempt in range(3):
            self._check_ancestors(k, create=True)
            self._clear_destination(k, dest)
            try:
                return open_temp(directory, dest, self._temps)
            except FileNotFoundError:
                if attempt == 2:  # a concurrent delete keeps pruning the directory we made
                    raise
        raise AssertionError("unreachable")

    def _commit(
        self,
        key: str,
        temp: Temp,
        etag: str,
        content_type: str | None,
        metadata: Mapping[str, str],
        parts: int | None,
        expected_size: int | None,
        part_sizes: list[list[int]] | None = None,
    ) -> ObjectInfo:
        """fsync, store metadata, rename over the key, fsync the directory. Ordered for crashes:
        the key only ever names a complete file that already carries its metadata. `part_sizes`:
        a multipart object's part sizes as runs of [size, count] (part_range)."""
        os.fsync(temp.fd)
        st = os.fstat(temp.fd)
        if expected_size is not None and st.st_size != expected_size:
            raise BadDigest(key, f"expected {expected_size} bytes, received {st.st_size}")
        record: dict[str, Any] = {
            "etag": etag,
            "content_type": content_type,
            "metadata": dict(metadata),
            "parts": parts,
        }
        if part_sizes is not None and len(part_sizes) <= MAX_PART_RUNS:
            record["part_sizes"] = part_sizes
        self._write_meta(key, temp.fd, st, record)
        info, _ = self._info(key, temp.fd, st)  # read back: write, HEAD, GET and LIST agree
        temp.commit()
        directory = os.path.dirname(temp.dest)
        fsync_dir(directory)
        self._dirs.discard(directory)
        return info

    async def _pump(self, path: str, body: AsyncIterable[bytes], fd: int, digest: Any) -> None:
        """Copy the body into fd in ~CHUNK_SIZE batches, each written from a worker thread."""
        buf = bytearray()
        async for chunk in body:
            buf += chunk
            if len(buf) >= CHUNK_SIZE:
                await self._run(path, partial(write_all, fd, digest, buf))
                buf = bytearray()
        if buf:
            await self._run(path, partial(write_all, fd, digest, buf))

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        k = parse_key(path)
        temp = await self._run(path, partial(self._prepare_write, k))
        try:
            digest = hashlib.md5()
            await self._pump(path, body, temp.fd, digest)
            commit = partial(
                self._commit, path, temp, digest.hexdigest(), meta.content_type, meta.metadata, None, size
            )
            return await self._run(path, commit)
        except BaseException:
            # Synchronous on purpose: this also runs on cancellation, where awaiting is unreliable.
            temp.discard()
            raise

    # --- reading ------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        k = parse_key(path)
        return await self._run(path, partial(self._stat_sync, k))

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        return await read_head_in_two(self, path, length, start)

    def _part_range_sync(self, k: Key, path: str, part_number: int, etag: str) -> tuple[int, int]:
        fd, info, record = self._open_object(k)
        os.close(fd)
        if info.etag != unquote_etag(etag):
            raise PreconditionFailed(path, f"ETag is {info.etag!r}, not {etag!r}")
        runs = _part_runs(record)
        if runs is None:
            raise NotSupported(path, "the sizes of this object's parts were not kept")
        start, number = 0, 1
        for size, count in runs:
            if part_number < number + count:
                start += (part_number - number) * size
                return start, start + size
            start += size * count
            number += count
        raise InvalidPart(path, f"part {part_number} of {number - 1}")

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        """From the part sizes kept (as runs) in the object's xattr record at its completion."""
        return await self._run(path, partial(self._part_range_sync, parse_key(path), path, part_number, etag))

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        k = parse_key(path)
        fd, info, _ = await self._run(path, partial(self._open_object, k))
        try:
            if opts.if_match is not None and unquote_etag(opts.if_match) != info.etag:
                raise PreconditionFailed(path, f"ETag is {info.etag!r}, not {opts.if_match!r}")
            pos = max(opts.start, 0)
            end = info.size if opts.end is None else min(opts.end, info.size)
            while pos < end:
                data = await self._run(path, partial(os.pread, fd, min(CHUNK_SIZE, end - pos), pos))
                if not data:
                    return  # truncated behind our back
                pos += len(data)
                yield data
        finally:
            os.close(fd)

    # --- listing ------------------------------------------------------------------------------

    def _walk(
        self,
        rel: str,
        path: str,
        prefix: str,
        after: str,
        rollup: bool,
        seen: frozenset[tuple[int, int]],
    ) -> Iterator[tuple[str, str | None]]:
        """Keys > after starting with prefix below directory `rel` (a key prefix, "" or "x/"), in
        S3 order: (key, file path) for objects, (folder key, None) for folders rolled up at `/`."""
        if after > rel and not after.startswith(rel):
            return  # every key here starts with rel, so all sort before start_after
        try:
            listing = self._dirs.scan(path)
        except OSError:
            return
        if listing.ident in seen:
            return  # a symlink cycle
        seen = seen | {listing.ident}
        if rel and listing.has_marker and rel.startswith(prefix) and rel > after:
            yield rel, os.path.join(path, DIR_OBJECT)
        entries = listing.entries
        # Skip straight to the first entry that can matter; a folder whose `name/` is a prefix of
        # a bound sorts before it but may hold keys beyond it, so step back onto it.
        prefix_rel = prefix[len(rel) :] if prefix.startswith(rel) else ""
        after_rel = after[len(rel) :] if after.startswith(rel) else ""
        lo = max(
            bisect.bisect_left(entries, prefix_rel, key=lambda e: e.sort_key),
            bisect.bisect_right(entries, after_rel, key=lambda e: e.sort_key) if after_rel else 0,
        )
        if lo > 0:
            before = entries[lo - 1]
            if before.is_dir and (
                prefix_rel.startswith(before.sort_key) or after_rel.startswith(before.sort_key)
            ):
                lo -= 1
        for index in range(lo, len(entries)):
            entry = entries[index]
            key = rel + entry.sort_key
            if not (key.startswith(prefix) or prefix.startswith(key)):
                if key > prefix:
                    return  # sorted: nothing further can start with prefix
                continue
            if not entry.is_dir:
                if key > after and key.startswith(prefix):
                    yield key, os.path.join(path, entry.name)
                continue
            if key <= after and not after.startswith(key):
                continue  # the whole subtree sorts at or before start_after
            child = os.path.join(path, entry.name)
            if rollup and len(key) > len(prefix):
                # Top-level folders are listed even when empty: under a root mount they are the
                # buckets (never pruned), and ListBuckets reads them from this listing.
                if key > after and (not rel or self._dirs.holds_objects(child)):
                    yield key, None
                continue
            yield from self._walk(key, child, prefix, after, rollup, seen)

    @staticmethod
    def _rollup(
        walk: Iterator[tuple[str, str | None]], prefix: str, delimiter: str, after: str
    ) -> Iterator[tuple[str, str | None]]:
        """Common prefixes for a delimiter other than `/`, over a full recursive walk."""
        last: str | None = None
        for key, path in walk:
            cut = key.find(delimiter, len(prefix))
            if cut < 0:
                yield key, path
                continue
            common = key[: cut + len(delimiter)]
            if common != last and common > after:
                last = common
                yield common, None

    def _list_sync(self, prefix: str, delimiter: str | None, start_after: str | None, limit: int) -> ListPage:
        base_rel = prefix[: prefix.rfind("/") + 1]
        try:
            base_key = parse_dir(base_rel) if base_rel else None
        except InvalidPath:
            return ListPage([], [], None)  # no valid key can start with this prefix
        base = self._fs_path(prefix, base_key.segments) if base_key else self.root
        if limit <= 0 or not os.path.isdir(base):
            return ListPage([], [], None)
        after = start_after or ""
        rollup = delimiter == "/"
        walk = self._walk(base_rel, base, prefix, after, rollup, frozenset())
        if delimiter and not rollup:
            walk = self._rollup(walk, prefix, delimiter, after)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        for key, file in walk:
            if len(objects) + len(prefixes) == limit:
                return ListPage(objects, prefixes, last)
            if file is None:
                prefixes.append(key)
            else:
                try:
                    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue  # deleted since the directory was read
                try:
                    st = os.fstat(fd)
                    if not st_mode.S_ISREG(st.st_mode):
                        continue
                    objects.append(self._info(key, fd, st)[0])
                finally:
                    os.close(fd)
            last = key
        return ListPage(objects, prefixes, None)

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        return await self._run(
            prefix, partial(self._list_sync, prefix, delimiter or None, start_after, limit)
        )

    # --- copy and delete ----------------------------------------------------------------------

    def _copy_sync(self, src: Key, dst: Key, meta: WriteMeta | None) -> ObjectInfo:
        fd, info, record = self._open_object(src)
        try:
            temp = self._prepare_write(dst)
            try:
                part_sizes = None
                if record is not None:  # the stored content hash stays true for a byte-for-byte copy
                    copy_fd(fd, temp.fd, info.size)
                    etag, parts = info.etag, info.parts_count
                    part_sizes = _part_runs(record)
                else:
                    digest = hashlib.md5()
                    offset = 0
                    while data := os.pread(fd, CHUNK_SIZE, offset):
                        write_all(temp.fd, digest, data)
                        offset += len(data)
                    etag, parts = digest.hexdigest(), None
                content_type, metadata = (
                    (info.content_type, info.metadata) if meta is None else (meta.content_type, meta.metadata)
                )
                return self._commit(dst.key, temp, etag, content_type, metadata, parts, None, part_sizes)
            except BaseException:
                temp.discard()
                raise
        finally:
            os.close(fd)

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        src_key, dst_key = parse_key(src), parse_key(dst)
        return await self._run(src, partial(self._copy_sync, src_key, dst_key, meta))

    def _prune(self, segments: tuple[str, ...]) -> None:
        """Remove directories left empty, deepest first; never the root or a top-level folder."""
        segs = list(segments)
        while len(segs) >= 2:
            path = os.path.join(self.root, *segs)
            try:
                os.rmdir(path)
            except OSError:
                return
            self._dirs.discard(os.path.dirname(path))
            segs.pop()

    def _delete_sync(self, k: Key) -> None:
        path = self._object_path(k)
        try:
            if st_mode.S_ISDIR(os.lstat(path).st_mode):
                return  # a folder is not an object
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        self._dirs.discard(os.path.dirname(path))
        self._prune(k.dir_segments)

    async def delete(self, path: str) -> None:
        k = parse_key(path)
        await self._run(path, partial(self._delete_sync, k))

    # --- directories (buckets under a root mount) ---------------------------------------------

    def _make_dir_sync(self, k: Key) -> None:
        path = self._fs_path(k.key, k.segments)
        self._check_ancestors(k, create=False)
        try:
            os.makedirs(path)
        except FileExistsError:
            if os.path.isdir(path):
                raise AlreadyExists(k.key.rstrip("/"), "the folder exists") from None
            raise InvalidPath(k.key.rstrip("/"), "an object has this name") from None
        self._dirs.discard(os.path.dirname(path))

    async def make_dir(self, path: str) -> None:
        k = parse_dir(path)
        await self._run(path, partial(self._make_dir_sync, k))

    def _remove_tree(self, name: str, path: str) -> None:
        """Remove a folder holding no objects: hidden files (temp files) go, an object that
        appeared meanwhile stops the removal with NotEmpty."""
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                self._remove_tree(name, entry.path)
            elif entry.is_file(follow_symlinks=False) and (
                not entry.name.startswith(HIDDEN_PREFIX) or entry.name == DIR_OBJECT
            ):
                raise NotEmpty(name, f"object {entry.name!r} appeared while removing the folder")
            else:
                os.unlink(entry.path)  # temp files, symlinks that are no objects, sockets...
        os.rmdir(path)

    def _remove_dir_sync(self, k: Key) -> None:
        name = k.key.rstrip("/")
        path = self._fs_path(name, k.segments)
        if not os.path.isdir(path):
            raise NotFound(name, "no such folder")
        if self._dirs.holds_objects(path):
            raise NotEmpty(name, "the folder holds objects")
        for upload_id, record in self._staging.records():
            if record["path"].startswith(k.key):
                self._staging.remove(upload_id)
        self._remove_tree(name, path)
        self._dirs.discard(os.path.dirname(path))

    async def remove_dir(self, path: str) -> None:
        k = parse_dir(path)
        await self._run(path, partial(self._remove_dir_sync, k))

    def _is_dir_sync(self, path: str) -> bool:
        if path in ("", "/"):
            return os.path.isdir(self.root)
        k = parse_dir(path)
        return os.path.isdir(self._fs_path(path, k.segments))

    async def is_dir(self, path: str) -> bool:
        return await self._run(path, partial(self._is_dir_sync, path))

    # --- multipart (staged by local_uploads.Staging) -----------------------------------------

    def _create_multipart_sync(self, k: Key, meta: WriteMeta) -> str:
        self._object_path(k)  # containment
        self._check_ancestors(k, create=False)
        return self._staging.create(k.key, meta)

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        k = parse_key(path)
        return await self._run(path, partial(self._create_multipart_sync, k, meta))

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        check_part_number(path, part_number)
        temp = await self._run(path, partial(self._staging.begin_part, path, upload_id, part_number))
        try:
            digest = hashlib.md5()
            await self._pump(path, body, temp.fd, digest)
            commit = partial(self._staging.commit_part, path, temp, part_number, digest.hexdigest(), size)
            return await self._run(path, commit)
        except BaseException:
            temp.discard()
            raise

    def _complete_sync(self, k: Key, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        directory, record = self._staging.load(k.key, upload_id)
        infos: list[PartInfo] = []
        for number, etag in parts:
            info = self._staging.part_info(directory, number)
            if info is None:
                raise InvalidPart(k.key, f"part {number} was not uploaded")
            if info.etag != unquote_etag(etag):
                raise InvalidPart(k.key, f"part {number} has ETag {info.etag!r}, not {etag!r}")
            infos.append(info)
        for info in infos[:-1]:
            if info.size < MIN_PART_SIZE:
                raise EntityTooSmall(
                    k.key,
                    f"part {info.part_number} has {info.size} bytes; all but the last need {MIN_PART_SIZE}",
                )
        temp = self._prepare_write(k)
        try:
            for info in infos:
                with open(self._staging.part_file(directory, info.part_number), "rb") as part:
                    copy_fd(part.fileno(), temp.fd, info.size)
            etag = composite_etag(info.etag for info in infos)
            metadata = record.get("metadata") or {}
            runs: list[list[int]] = []
            for info in infos:
                if runs and runs[-1][0] == info.size:
                    runs[-1][1] += 1
                else:
                    runs.append([info.size, 1])
            result = self._commit(
                k.key, temp, etag, record.get("content_type"), metadata, len(infos), None, runs
            )
        except BaseException:
            temp.discard()
            raise
        shutil.rmtree(directory, ignore_errors=True)
        return result

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        k = parse_key(path)
        check_part_list(path, parts)
        return await self._run(path, partial(self._complete_sync, k, upload_id, list(parts)))

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        await self._run(path, partial(self._staging.abort, path, upload_id))

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        return await self._run(path, partial(self._staging.list_parts, path, upload_id, marker, limit))

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        fn = partial(
            self._staging.list_uploads, prefix, delimiter or None, key_marker or None, upload_id_marker, limit
        )
        return await self._run(prefix, fn)

    # --- health -------------------------------------------------------------------------------

    def _check_sync(self) -> None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise NotFound(self.root, "the mount root does not exist") from None
        if not st_mode.S_ISDIR(st.st_mode):
            raise InvalidPath(self.root, "the mount root is not a directory")
        try:
            os.listdir(self.root)
            temp = open_temp(self.root, "")
            temp.discard()
        except PermissionError as exc:
            raise PermissionDenied(self.root, f"the mount root is not readable and writable: {exc}") from exc

    async def check(self) -> None:
        await self._run(self.root, self._check_sync)


def _part_runs(record: Mapping[str, Any] | None) -> list[list[int]] | None:
    """The [size, count] runs of a record's part sizes, if it has well-formed ones."""
    runs = record.get("part_sizes") if record is not None else None
    if not isinstance(runs, list) or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r) for r in runs
    ):
        return None
    return [[int(size), int(count)] for size, count in runs]
