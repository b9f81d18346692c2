"""The values a Hoard config spells: sizes (`10GiB`), durations (`1h30m`), rates (`100MiB/s`),
mount paths (`/s3`) and UFS URIs (`file://./data`), parsed and checked. Each parser raises
ValueError with a one-line message naming the value; config.py adds the dotted key."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

RESERVED_BUCKET = "_hoard"  # the bucket of Hoard's own endpoints (/_hoard/...): never a mount


# --- parsers -----------------------------------------------------------------------------------

# GNU coreutils convention (dd, df): a bare letter or an "i" unit is binary, "kB"/"MB"/... decimal.
_SIZE_UNITS: Mapping[str, int] = {
    "": 1,
    "b": 1,
    **{p: 1024**n for n, p in enumerate("kmgtp", 1)},
    **{f"{p}i": 1024**n for n, p in enumerate("kmgtp", 1)},
    **{f"{p}ib": 1024**n for n, p in enumerate("kmgtp", 1)},
    **{f"{p}b": 1000**n for n, p in enumerate("kmgtp", 1)},
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

_DURATION_UNITS: Mapping[str, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def show(value: object) -> str:
    """A value for an error message: repr-like, one line, bounded."""
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_size(value: str | int) -> int:
    """Bytes from `10GiB`, `1MiB`, `10G` (binary), `512KB` (decimal), `1.5GiB` or a plain int."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{show(value)} is not a size (must not be negative)")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip().lower())
        if m and m.group(2) in _SIZE_UNITS:
            return round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"{show(value)} is not a size (use e.g. 10GiB)")


def parse_duration(value: str | float) -> float:
    """Seconds from `500ms`, `30s`, `10m`, `1h`, `7d`, `1w`, compounds like `1h30m`, or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{show(value)} is not a duration (must not be negative)")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER_RE.fullmatch(text):
            return float(text)
        parts = _DURATION_PART_RE.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(f"{show(value)} is not a duration (use e.g. 10m, 30s, 500ms)")


def parse_rate(value: str | int) -> int:
    """Bytes per second from `100MiB/s` or a plain int."""
    if isinstance(value, str) and value.strip().lower().endswith("/s"):
        try:
            return parse_size(value.strip()[:-2])
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    elif isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{show(value)} is not a rate (use e.g. 100MiB/s)")


# --- names in the namespace ----------------------------------------------------------------------

_BUCKET_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?")


def is_bucket_name(name: str) -> bool:
    """S3 bucket naming rules, except that short names (`s3`) are allowed for mount points."""
    if not _BUCKET_RE.fullmatch(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def check_mount_path(path: object) -> str:
    """Return `path` if it is a valid mount path (`/`, `/s3`, `/s3/sub/dir`); else ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{show(path)} is not a mount path (use e.g. /s3)")
    if not path.startswith("/"):
        raise ValueError(f"{show(path)} is not an absolute path (use {show('/' + path.strip('/'))})")
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"{show(path)} must not contain '.' or '..' segments")
    if any(not s.isprintable() for s in segments):
        raise ValueError(f"{show(path)} contains control characters")
    normal = "/" + "/".join(segments)
    if normal != path:
        raise ValueError(f"{show(path)} is not normalised (use {show(normal)})")
    if segments and segments[0] == RESERVED_BUCKET:
        raise ValueError(f"{show(path)} is reserved for Hoard's own endpoints")
    if segments and not is_bucket_name(segments[0]):
        raise ValueError(
            f"{show(path)}: {show(segments[0])} is not a valid bucket name "
            "(lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        )
    return path


def absolute_path(value: str | Path) -> Path:
    """`~` expanded, made absolute against the working directory, normalised (symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(value)))


_URI_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)


def normalize_uri(uri: object) -> str:
    """Lower-case the scheme; make `file://` paths absolute (`file://./data` -> `file:///cwd/data`)."""
    m = _URI_RE.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise ValueError(f"{show(uri)} is not a URI (use e.g. file:///srv/data or s3://bucket/prefix)")
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme != "file":
        return f"{scheme}://{rest}"
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest:
        raise ValueError(f"{show(uri)} names no directory (use e.g. file:///srv/data)")
    return file_uri(unquote(rest))


def local_dir(uri: str) -> Path | None:
    """The directory (its real path) of a `file://` URI as normalize_uri writes it; None for other
    schemes."""
    if not uri.startswith("file://"):
        return None
    return Path(os.path.realpath(unquote(uri[len("file://") :])))


def exposed(private: Mapping[str, Path], uri: str) -> str | None:
    """The name of the first of `private` (name -> directory) that a mount of `uri` would serve to
    S3 clients: the mount's directory is it, holds it, or lies inside it."""
    root = local_dir(uri)
    if root is None:
        return None
    for name, path in private.items():
        real = Path(os.path.realpath(path))
        if real == root or root in real.parents or real in root.parents:
            return name
    return None


def file_uri(path: str | Path) -> str:
    """`file:///abs/path` for a local directory, percent-encoded where needed (`a b` -> `a%20b`)."""
    return absolute_path(path).as_uri()
