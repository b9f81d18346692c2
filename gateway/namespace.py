"""The mount table: which UFS holds a namespace path. Longest prefix wins, by whole segments.

The namespace path of an S3 request is `/bucket/key`. A mount at `/s3` is bucket `s3`; a mount at
`/s3/sub` takes the keys of bucket `s3` under `sub/`; the root mount `/` holds every other bucket as
a top-level directory of its UFS.

Mounts come from the config (fixed for the life of the process) and from the admin API (runtime
mounts). Runtime mounts persist in `<metastore.dir>/mounts.json`; every change is a
read-modify-write of that file under an exclusive file lock, written atomically (temp file, fsync,
rename, fsync of the directory), and only then published. Each uvicorn worker process has its own
table and picks up the others' changes through `reload_if_changed()`, which the app calls about
once a second. Config mounts win over a runtime mount at the same path.

The table is an immutable snapshot (`_Index`) swapped in one assignment, so `resolve()` needs no
lock; changes are serialised by an anyio lock. Adapters of removed mounts are closed after a grace
period, so requests already streaming from them finish.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from cache.keys import Source
from gateway.config import ConfigError, Limits, MountConfig, parse_mounts
from gateway.values import check_mount_path, exposed, normalize_uri
from ufs_adapters.base import NotSupported, UfsAdapter, UfsError
from ufs_adapters.registry import Opener, normalize_options, open_adapter

log = logging.getLogger("hoard.namespace")

MOUNTS_FILE = "mounts.json"
_LOCK_FILE = "mounts.json.lock"
_FILE_VERSION = 1
RETIRE_GRACE = 30.0  # seconds a removed mount's adapter stays open for requests in flight

# Option names whose values never leave the process (admin listing, CLI, logs).
_SECRET_WORDS = ("secret", "token", "password", "credential")
REDACTED = "****"

Origin = Literal["config", "runtime"]


Wrap = Callable[[UfsAdapter, Limits], UfsAdapter]


class MountError(ValueError):
    """A mount cannot be added, removed or opened; the message says why, naming the path."""


class MountNotFound(MountError):
    """The path names no mount (the admin API answers 404, not 400)."""


class NotMounted(LookupError):
    """No mount holds this bucket (and there is no root mount): the bucket does not exist."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.bucket = bucket


def mount_id(path: str) -> str:
    """A stable short id for a mount path, for metrics labels and cache keys."""
    return hashlib.blake2b(path.encode(), digest_size=6).hexdigest()


def is_secret_option(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _masked(name: str, value: str) -> str:
    if is_secret_option(name):
        return REDACTED
    if "accesskey" in name.lower().replace("_", ""):
        # A key id is half a credential: show only the tail of a real-length one, as `aws configure list`.
        return REDACTED + value[-4:] if len(value) >= 16 else REDACTED
    return value


def redact(options: Mapping[str, str]) -> dict[str, str]:
    return {k: _masked(k, v) for k, v in options.items()}


@dataclass(frozen=True, slots=True)
class Mount:
    path: str  # `/`, `/s3`, `/s3/sub/dir`
    uri: str
    options: Mapping[str, str]  # normalised (Hoard names), secrets included
    limits: Limits
    adapter: UfsAdapter
    id: str
    origin: Origin = "config"
    source: Source = field(init=False, compare=False, repr=False)  # this mount as the cache sees it

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Source(self.id, self.path, self.adapter))

    @property
    def is_root(self) -> bool:
        return self.path == "/"

    def public_view(self) -> dict[str, Any]:
        """What the admin API and the CLI show: secrets redacted."""
        return {
            "path": self.path,
            "uri": self.uri,
            "options": redact(self.options),
            "id": self.id,
            "origin": self.origin,
            "limits": {f.name: getattr(self.limits, f.name) for f in fields(self.limits)},
        }

    def config(self) -> MountConfig:
        return MountConfig(self.path, self.uri, dict(self.options), self.limits)


@dataclass(frozen=True, slots=True)
class _Index:
    """One immutable snapshot of the table, built for the lookups requests make."""

    by_path: Mapping[str, Mount]
    root: Mount | None
    # bucket -> (key prefix with trailing "/" or "" for the bucket mount itself, mount), longest first
    by_bucket: Mapping[str, tuple[tuple[str, Mount], ...]]
    buckets: tuple[str, ...]

    @classmethod
    def build(cls, mounts: Mapping[str, Mount]) -> _Index:
        by_bucket: dict[str, list[tuple[str, Mount]]] = {}
        for path, mount in mounts.items():
            if path == "/":
                continue
            bucket, _, rest = path[1:].partition("/")
            by_bucket.setdefault(bucket, []).append((rest + "/" if rest else "", mount))
        return cls(
            by_path=dict(mounts),
            root=mounts.get("/"),
            by_bucket={b: tuple(sorted(ms, key=lambda e: -len(e[0]))) for b, ms in by_bucket.items()},
            buckets=tuple(sorted(by_bucket)),
        )


_EMPTY = _Index({}, None, {}, ())

_FileSig = tuple[int, int, int]  # (st_mtime_ns, st_ino, st_size) of mounts.json


class MountTable:
    """Longest-prefix mount resolution plus the runtime mount lifecycle. Build with `open()`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        opener: Opener | None = None,
        scratch_dir: Path | None = None,
        wrap: Wrap | None = None,
        private: Mapping[str, Path] | None = None,
    ) -> None:
        self._state_dir = state_dir
        # The gateway's own directories (name -> path), which no runtime mount may serve.
        self._private: Mapping[str, Path] = private or {"metastore.dir": state_dir}
        self._scratch_dir = scratch_dir or state_dir / "ufs"
        self._opener: Opener = opener or open_adapter
        self._wrap = wrap
        self._index = _EMPTY
        self._config_paths: frozenset[str] = frozenset()
        self._lock = anyio.Lock()
        self._file_sig: _FileSig | None = None
        self._retired: list[tuple[float, UfsAdapter]] = []

    # --- lookups (hot path: no I/O, no lock) -----------------------------------------------------

    def resolve(self, bucket: str, key: str) -> tuple[Mount, str]:
        """The mount holding `/bucket/key` and the key's UFS path below that mount's root.

        Raises NotMounted when neither a mount nor the root holds the bucket.
        """
        index = self._index
        for prefix, mount in index.by_bucket.get(bucket, ()):
            if key.startswith(prefix):
                return mount, key[len(prefix) :]
        if index.root is None:
            raise NotMounted(bucket)
        return index.root, f"{bucket}/{key}"

    def resolve_bucket(self, bucket: str) -> tuple[Mount, str] | None:
        """For bucket-level operations: (mount, UFS directory): `""` for a mount bucket, `bucket`
        for a directory of the root mount. None without a root mount or a mount at `/bucket`."""
        index = self._index
        entries = index.by_bucket.get(bucket, ())
        if entries and entries[-1][0] == "":
            return entries[-1][1], ""
        if index.root is None:
            return None
        return index.root, bucket

    def mount_buckets(self) -> list[str]:
        """Top-level names of mounts other than the root (`/s3`, and `b` for `/b/x`): these exist as
        buckets beside the root's directories."""
        return list(self._index.buckets)

    def children(self, bucket: str, prefix: str) -> list[Mount]:
        """The nested mounts (not the bucket's own mount) a listing of `bucket` at `prefix` must
        merge, sorted by path: the deepest one whose key prefix contains `prefix` (it serves
        `prefix` itself; a listing descends into it), then every mount whose key prefix starts
        with `prefix` (shown as common prefixes, or descended into without a delimiter)."""
        entries = self._index.by_bucket.get(bucket, ())
        owner = next((m for p, m in entries if p and prefix.startswith(p)), None)
        found = [m for p, m in entries if p and (m is owner or p.startswith(prefix))]
        return sorted(found, key=lambda m: m.path)

    def mounts(self) -> list[Mount]:
        return sorted(self._index.by_path.values(), key=lambda m: m.path)

    def get(self, path: str) -> Mount | None:
        return self._index.by_path.get(path)

    # --- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config_mounts: Sequence[MountConfig],
        state_dir: Path,
        *,
        opener: Opener | None = None,
        scratch_dir: Path | None = None,
        wrap: Wrap | None = None,
        private: Mapping[str, Path] | None = None,
    ) -> MountTable:
        """Open the config mounts (failure is fatal) and the persisted runtime mounts (a failure is
        logged and that mount skipped, so one bad UFS cannot keep the gateway down).

        `state_dir` holds mounts.json. Each adapter gets `<scratch_dir>/<mount id>` as its own
        scratch space (the S3 adapter spools upload parts there); default `<state_dir>/ufs`.
        `opener` replaces `ufs_adapters.registry.open_adapter` (tests); `wrap(adapter, limits)` puts
        the cross-cutting wrappers (limiter, retries, metrics) around each opened adapter.
        `private`: the gateway's own directories, by config key, that `add` refuses to serve
        (default: `state_dir`)."""
        table = cls(state_dir, opener=opener, scratch_dir=scratch_dir, wrap=wrap, private=private)
        table._config_paths = frozenset(m.path for m in config_mounts)
        opened: dict[str, Mount] = {}
        try:
            await anyio.to_thread.run_sync(lambda: state_dir.mkdir(parents=True, exist_ok=True))
            for mc in config_mounts:
                opened[mc.path] = await table._open_mount(mc, "config")
            table._publish(opened)
            sig, entries = await anyio.to_thread.run_sync(table._read_file)
            await table._apply(entries, sig)
        except BaseException:
            table._publish(opened)
            await table.aclose()
            raise
        return table

    @classmethod
    async def check(cls, config_mounts: Sequence[MountConfig], state_dir: Path) -> None:
        """Open and close each config mount's UFS as `open` does: MountError, naming the mount,
        for the first that cannot be opened (no credentials anywhere, a root that does not exist,
        a bad option). `hoard serve` checks before any worker starts."""
        table = cls(state_dir)
        for mc in config_mounts:
            mount = await table._open_mount(mc, "config")
            await _close_quietly(mount.adapter)

    async def add(
        self, path: str, uri: str, options: Mapping[str, str], limits: Limits | None = None
    ) -> Mount:
        """Validate, open, `check()` the UFS, persist, publish. Raises MountError saying why not."""
        try:
            check_mount_path(path)
            uri = normalize_uri(uri)
        except ValueError as exc:
            raise MountError(str(exc)) from None
        if path == "/":
            raise MountError("'/': the root mount is set in the config file (mounts: - path: /)")
        key = exposed(self._private, uri)
        if key is not None:
            raise MountError(
                f"{uri} would serve the gateway's own {key} ({self._private[key]}) to S3 clients"
            )
        await self.reload_if_changed()
        if path in self._index.by_path:
            raise MountError(f"{path!r} is already mounted ({self._index.by_path[path].uri})")
        mount = await self._open_mount(MountConfig(path, uri, dict(options), limits or Limits()), "runtime")
        try:
            await self._check(mount)
            async with self._lock:
                if path in self._index.by_path:
                    raise MountError(f"{path!r} is already mounted ({self._index.by_path[path].uri})")
                sig, entries = await anyio.to_thread.run_sync(self._persist_add, mount)
                await self._apply(entries, sig, opened={path: mount})
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _close_quietly(mount.adapter)
            raise
        log.info("mounted %s -> %s", path, uri)
        return mount

    async def remove(self, path: str) -> None:
        """Unmount a runtime mount: persist, then unpublish; its adapter closes after a grace period."""
        await self.reload_if_changed()
        async with self._lock:
            mount = self._index.by_path.get(path)
            if mount is None:
                raise MountNotFound(f"{path!r} is not mounted")
            if mount.is_root:
                raise MountError("'/': the root mount cannot be removed")
            if mount.origin == "config":
                raise MountError(f"{path!r} is set in the config file; remove it there")
            sig, entries = await anyio.to_thread.run_sync(self._persist_remove, path)
            await self._apply(entries, sig)
        log.info("unmounted %s", path)

    async def reload_if_changed(self) -> bool:
        """Re-read mounts.json if it changed since this table last read or wrote it (another
        worker added or removed a mount). Returns whether the file was re-read. Cheap: one stat."""
        async with self._lock:
            await self._close_retired(time.monotonic())
            sig = await anyio.to_thread.run_sync(self._stat)
            if sig == self._file_sig:
                return False
            try:
                sig, entries = await anyio.to_thread.run_sync(self._read_file)
            except MountError as exc:
                log.error("keeping the current mounts: %s", exc)
                self._file_sig = sig  # log once per change of the file, not every second
                return False
            await self._apply(entries, sig)
            return True

    async def aclose(self) -> None:
        index, self._index = self._index, _EMPTY
        retired, self._retired = self._retired, []
        with anyio.CancelScope(shield=True):
            for mount in index.by_path.values():
                await _close_quietly(mount.adapter)
            for _, adapter in retired:
                await _close_quietly(adapter)

    # --- internals -------------------------------------------------------------------------------

    def _publish(self, mounts: Mapping[str, Mount]) -> None:
        self._index = _Index.build(mounts)

    async def _open_mount(self, mc: MountConfig, origin: Origin) -> Mount:
        try:
            options = normalize_options(mc.options)
            adapter = await self._opener(mc.uri, options, state_dir=self._adapter_state_dir(mc.path))
            if self._wrap is not None:
                adapter = self._wrap(adapter, mc.limits)
        except (ValueError, UfsError) as exc:
            raise MountError(f"{mc.path!r} ({mc.uri}): {_describe(exc)}") from exc
        return Mount(mc.path, mc.uri, options, mc.limits, adapter, mount_id(mc.path), origin)

    def _adapter_state_dir(self, path: str) -> Path:
        return self._scratch_dir / mount_id(path)

    async def _check(self, mount: Mount) -> None:
        try:
            await mount.adapter.check()
        except Exception as exc:
            raise MountError(f"{mount.path!r}: cannot use {mount.uri}: {_describe(exc)}") from exc
        # Alluxio's rule: a mount point must not hide a directory of the mount it sits in.
        parent = self._parent(mount.path)
        if parent is None:
            return
        below = mount.path[len(parent.path) :].lstrip("/")
        try:
            exists = await parent.adapter.is_dir(below)
        except NotSupported:
            return
        except UfsError as exc:
            log.warning("mounting %s: cannot tell whether %s has %r: %s", mount.path, parent.path, below, exc)
            return
        if exists:
            raise MountError(
                f"{mount.path!r}: the mount {parent.path!r} ({parent.uri}) already has a directory "
                f"{below!r} there; mounting would hide it"
            )

    def _parent(self, path: str) -> Mount | None:
        index = self._index
        probe = path
        while probe != "/":
            probe = probe.rpartition("/")[0] or "/"
            if probe in index.by_path:
                return index.by_path[probe]
        return None

    async def _apply(
        self,
        entries: Sequence[MountConfig],
        sig: _FileSig | None,
        *,
        opened: Mapping[str, Mount] | None = None,
    ) -> None:
        """Make the runtime mounts match `entries` (the file's content), reusing unchanged ones."""
        opened = opened or {}
        current = self._index.by_path
        new = {p: m for p, m in current.items() if m.origin == "config"}
        fresh: list[Mount] = []
        try:
            for mc in entries:
                if mc.path in self._config_paths:
                    log.warning("runtime mount %s is shadowed by the config mount at the same path", mc.path)
                elif mc.path in opened:
                    new[mc.path] = opened[mc.path]
                elif (old := current.get(mc.path)) is not None and old.origin == "runtime" and _same(old, mc):
                    new[mc.path] = old
                else:
                    try:
                        new[mc.path] = mount = await self._open_mount(mc, "runtime")
                        fresh.append(mount)
                    except MountError as exc:
                        log.error("skipping runtime mount: %s", exc)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for mount in fresh:
                    await _close_quietly(mount.adapter)
            raise
        self._publish(new)
        self._file_sig = sig
        now = time.monotonic()
        for path, mount in current.items():
            if new.get(path) is not mount:
                self._retired.append((now, mount.adapter))

    async def _close_retired(self, now: float) -> None:
        due = [a for t, a in self._retired if now - t >= RETIRE_GRACE]
        if due:
            self._retired = [(t, a) for t, a in self._retired if now - t < RETIRE_GRACE]
            for adapter in due:
                await _close_quietly(adapter)

    # --- the file (blocking: always called through a worker thread) -----------------------------

    @property
    def _file(self) -> Path:
        return self._state_dir / MOUNTS_FILE

    def _stat(self) -> _FileSig | None:
        try:
            st = self._file.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock across worker processes for a read-modify-write of mounts.json."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_file(self) -> tuple[_FileSig | None, list[MountConfig]]:
        sig = self._stat()
        try:
            text = self._file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, []
        except OSError as exc:
            raise MountError(f"{self._file}: cannot read: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
                raise MountError(f"{self._file}: not a version {_FILE_VERSION} mounts file")
            return sig, list(parse_mounts(data.get("mounts", []), "mounts"))
        except (json.JSONDecodeError, ConfigError) as exc:
            raise MountError(f"{self._file}: {exc}") from exc

    def _write_file(self, entries: Sequence[MountConfig]) -> _FileSig | None:
        data = {"version": _FILE_VERSION, "mounts": [m.to_dict() for m in entries]}
        tmp = self._state_dir / f".{MOUNTS_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        # 0600: the file holds UFS credentials.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self._state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self._stat()

    def _persist_add(self, mount: Mount) -> tuple[_FileSig | None, list[MountConfig]]:
        with self._locked():
            _, entries = self._read_file()
            clash = next((m for m in entries if m.path == mount.path), None)
            if clash is not None:  # another worker got there first
                raise MountError(f"{mount.path!r} is already mounted ({clash.uri})")
            entries.append(mount.config())
            return self._write_file(entries), entries

    def _persist_remove(self, path: str) -> tuple[_FileSig | None, list[MountConfig]]:
        with self._locked():
            _, entries = self._read_file()
            entries = [m for m in entries if m.path != path]
            return self._write_file(entries), entries


def _same(mount: Mount, mc: MountConfig) -> bool:
    try:
        options = normalize_options(mc.options)
    except ValueError:
        return False
    return (mount.uri, dict(mount.options), mount.limits) == (mc.uri, options, mc.limits)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _close_quietly(adapter: UfsAdapter) -> None:
    try:
        await adapter.aclose()
    except Exception:
        log.exception("closing an adapter failed")
