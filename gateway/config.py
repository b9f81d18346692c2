"""Hoard's configuration: one YAML file, `HOARD_SECTION__KEY` environment overrides, CLI overrides.

Precedence, lowest first: built-in defaults < YAML file < environment < explicit overrides (CLI
flags). The merged tree is validated in one pass into frozen dataclasses; the first problem raises
`ConfigError`, whose message is one line naming the dotted key and the value.

`None` (an empty YAML value) means "not set" everywhere: the default applies. Relative paths
(`cache.dir`, `metastore.dir`, TLS files, `file://` mount URIs) are made absolute against the
working directory at load time, so worker processes and the admin API only ever see absolute ones.

`Config.to_dict()` is the resolved config as plain JSON data and `from_dict()` validates it back;
the CLI hands the resolved config to uvicorn worker processes that way (`HOARD_RESOLVED_CONFIG`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.values import (
    absolute_path,
    check_mount_path,
    exposed,
    normalize_uri,
    parse_duration,
    parse_rate,
    parse_size,
    show,
)

T = TypeVar("T")

RESOLVED_CONFIG_ENV = "HOARD_RESOLVED_CONFIG"
CONFIG_FILE_ENV = "HOARD_CONFIG"
ENV_PREFIX = "HOARD_"

DEFAULT_ACCESS_KEY = "hoard"
DEFAULT_SECRET_KEY = "hoard-secret-key"
DEFAULT_ROOT_URI = "file://./hoard-data"


class ConfigError(ValueError):
    """An invalid setting. `str()` is one line: `config error: <dotted key>: <problem>`."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}" if key else f"config error: {problem}")


# --- the config values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    domain: str | None = None  # enables virtual-host style: <bucket>.<domain>
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class User:
    access_key: str
    secret_key: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class AuthConfig:
    users: tuple[User, ...] = (User(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, admin=True),)
    anonymous: bool = False

    def find(self, access_key: str) -> User | None:
        return next((u for u in self.users if u.access_key == access_key), None)

    @property
    def admin_user(self) -> User | None:
        """The first admin user: the pair the CLI prints and uses by default."""
        return next((u for u in self.users if u.admin), None)


FILTERS = ("immutable", "skipCache", "maxAge")
PRIORITIES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class CacheRule:
    """One row of the cache policy; the first rule whose `path` prefixes a namespace path wins."""

    path: str = "/"
    filter: str | None = None  # one of FILTERS
    max_age: float | None = None  # seconds; only with filter maxAge
    priority: str | None = None  # one of PRIORITIES
    ttl: float | None = None  # seconds
    quota: int | None = None  # bytes


@dataclass(frozen=True, slots=True)
class CacheConfig:
    dir: Path
    size: int = 10 * 1024**3
    reserved: int = 1024**3
    page_size: int = 1024**2
    metadata_ttl: float = 60.0
    read_ahead: int = 16  # pages (cache.settings.CacheSettings.read_ahead)
    rules: tuple[CacheRule, ...] = ()
    fsync: bool = False  # fsync each page file (checksums already catch pages a power cut tore)
    direct_io: bool = True  # write pages with O_DIRECT (cache.settings.CacheSettings.direct_io)
    write_buffer: int = 64 * 1024**2  # fetched bytes waiting for the disk (CacheSettings.write_buffer)
    fill_waits: bool = True  # a full write buffer pauses the fill (False: the page goes uncached)


@dataclass(frozen=True, slots=True)
class Limits:
    """How Hoard treats one UFS (a mount's `limits:`) or all of them (the top-level `ufs:`).
    Unset timeouts and retries fall back to `ufs:`, then to the built-in defaults."""

    bandwidth: int | None = None  # bytes per second, reads and writes
    max_concurrency: int | None = None
    max_requests_per_second: float | None = None
    burst: int | None = None  # bytes; default one second of bandwidth
    retries: int | None = None  # attempts of an idempotent call, the first included
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class MountConfig:
    path: str
    uri: str
    options: Mapping[str, str] = field(default_factory=dict)  # as written; the namespace normalises
    limits: Limits = Limits()

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        assert isinstance(out, dict)
        return out


MEMBERSHIPS = ("static",)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    membership: str = "static"
    workers: tuple[str, ...] = ()
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class MetastoreConfig:
    dir: Path


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    auth: AuthConfig
    cache: CacheConfig
    mounts: tuple[MountConfig, ...]
    cluster: ClusterConfig
    metastore: MetastoreConfig
    ufs: Limits = Limits()  # global: one budget shared by every mount, default timeouts and retries

    @property
    def private_dirs(self) -> dict[str, Path]:
        """The gateway's own directories, by key: no local mount may serve them to S3 clients
        (the metastore holds the UFS credentials of runtime mounts)."""
        return {"cache.dir": self.cache.dir, "metastore.dir": self.metastore.dir}

    def check_private_dirs(self) -> None:
        """ConfigError if a local mount would serve one of `private_dirs`."""
        for mount in self.mounts:
            key = exposed(self.private_dirs, mount.uri)
            if key is not None:
                raise ConfigError(
                    key,
                    f"{show(str(self.private_dirs[key]))} is inside the mount {mount.path} ({mount.uri}) "
                    "or holds it, where S3 clients could read and change it; put it elsewhere",
                )

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready data; `from_dict` reads it back to an equal Config."""
        out = _plain(self)
        assert isinstance(out, dict)
        return out

    @property
    def root_mount(self) -> MountConfig | None:
        return next((m for m in self.mounts if m.path == "/"), None)


def _plain(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- validation ----------------------------------------------------------------------------------


def _parse_flow(value: str) -> object:
    """A string where a mapping or list belongs (from the environment) is YAML flow syntax."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ValueError(f"{show(value)} is not valid YAML ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Reader:
    """Walks one mapping of the raw tree; converters raise ValueError, turned into ConfigError here."""

    def __init__(self, raw: object, key: str, sources: Mapping[str, str]) -> None:
        self.key = key
        self.sources = sources
        if isinstance(raw, str):
            raw = self.wrap(key, _parse_flow, raw)
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise self.error(key, f"{show(raw)} is not a mapping")
        self.raw: Mapping[str, object] = {str(k): v for k, v in raw.items()}
        self.seen: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        # Name the environment variable that set this key or one of its parents, if any.
        probe = key
        while probe:
            if probe in self.sources:
                return ConfigError(key, f"{problem} (from {self.sources[probe]})")
            probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
        # An unknown key or section may have come from a variable that names something below it.
        below = next((v for k, v in self.sources.items() if k.startswith((key + ".", key + "["))), None)
        return ConfigError(key, f"{problem} (from {below})" if below else problem)

    def wrap(self, key: str, conv: Callable[[Any], T], value: object) -> T:
        try:
            return conv(value)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise self.error(key, str(exc)) from None

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, conv: Callable[[Any], T], default: T) -> T:
        self.seen.add(name)
        value = self.raw.get(name)
        return default if value is None else self.wrap(self.sub(name), conv, value)

    def opt(self, name: str, conv: Callable[[Any], T]) -> T | None:
        self.seen.add(name)
        value = self.raw.get(name)
        return None if value is None else self.wrap(self.sub(name), conv, value)

    def req(self, name: str, conv: Callable[[Any], T]) -> T:
        self.seen.add(name)
        value = self.raw.get(name)
        if value is None:
            raise self.error(self.sub(name), "required key is missing")
        return self.wrap(self.sub(name), conv, value)

    def section(self, name: str) -> _Reader:
        self.seen.add(name)
        return _Reader(self.raw.get(name), self.sub(name), self.sources)

    def items(self, name: str) -> Iterator[_Reader]:
        """Readers for each mapping of the list `name` (absent: no items)."""
        self.seen.add(name)
        raw = self.raw.get(name)
        key = self.sub(name)
        if isinstance(raw, str):
            raw = self.wrap(key, _parse_flow, raw)
        if raw is None:
            return
        if not isinstance(raw, list):
            raise self.error(key, f"{show(raw)} is not a list")
        for i, item in enumerate(raw):
            yield _Reader(item, f"{key}[{i}]", self.sources)

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                what = "section" if not self.key else "key"
                known = ", ".join(sorted(self.seen))
                raise self.error(self.sub(name), f"unknown {what} (known: {known})")


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a string (quote it in YAML)")
    if not value.strip():
        raise ValueError(f"{show(value)} must not be empty")
    return value


def _int(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{show(value)} is not an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ValueError(f"{show(value)} is out of range (must be {bound})")
        return value

    return conv


def _positive_float(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{show(value)} is not a number")
    if value <= 0:
        raise ValueError(f"{show(value)} must be positive")
    return float(value)


_BOOLS: Mapping[str, bool] = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(
    ("false", "no", "off", "0"), False
)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ValueError(f"{show(value)} is not a boolean (use true or false)")


def _size(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError(f"{show(value)} is not a size (use e.g. 10GiB)")
    return parse_size(value)


def _positive_size(value: object) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"{show(value)} must be positive")
    return size


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"{show(value)} must be longer than 0")
    return seconds


def _duration(value: object) -> float:
    if not isinstance(value, str | int | float):
        raise ValueError(f"{show(value)} is not a duration (use e.g. 10m, 30s, 500ms)")
    return parse_duration(value)


def _rate(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError(f"{show(value)} is not a rate (use e.g. 100MiB/s)")
    rate = parse_rate(value)
    if rate <= 0:
        raise ValueError(f"{show(value)} must be positive")
    return rate


def _path(value: object) -> Path:
    return absolute_path(_str(value))


def _existing_file(value: object) -> Path:
    path = _path(value)
    if not path.is_file():
        raise ValueError(f"{show(value)} is not a file ({path} does not exist)")
    return path


def _choice(choices: Mapping[str, str]) -> Callable[[object], str]:
    """Case-insensitive choice; returns the canonical spelling."""

    def conv(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return choices[value.strip().lower()]
        names = ", ".join(dict.fromkeys(choices.values()))
        raise ValueError(f"{show(value)} is not one of {names}")

    return conv


def _str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):  # from the environment: `a:8080,b:8080` or `[a:8080, b:8080]`
        value = _parse_flow(value) if value.lstrip().startswith("[") else value.split(",")
    if not isinstance(value, list):
        raise ValueError(f"{show(value)} is not a list")
    return tuple(_str(v).strip() for v in value)


def _options(value: object) -> dict[str, str]:
    if isinstance(value, str):
        value = _parse_flow(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{show(value)} is not a mapping")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, bool):
            out[str(k)] = "true" if v else "false"
        elif isinstance(v, str | int | float):
            out[str(k)] = str(v)
        else:
            raise ValueError(f"option {str(k)!r}: {show(v)} is not a string")
    return out


# Case-insensitive spellings -> the canonical filter name.
_FILTER_NAMES: Mapping[str, str] = {f.lower(): f for f in FILTERS} | {
    "skip_cache": "skipCache",
    "max_age": "maxAge",
}
_PRIORITY_NAMES: Mapping[str, str] = {p: p for p in PRIORITIES} | {"normal": "medium"}
_MEMBERSHIP_NAMES: Mapping[str, str] = {m: m for m in MEMBERSHIPS}


def _rule_path(value: object) -> str:
    path = _str(value)
    if not path.startswith("/"):
        raise ValueError(f"{show(path)} is not a namespace path (use e.g. /s3/imagenet/)")
    return path


# Defaults are read from instances: with slots=True the class attributes are slot descriptors.
_SERVER = ServerConfig()
_AUTH = AuthConfig()
_CACHE = CacheConfig(dir=Path("hoard-cache"))
_CLUSTER = ClusterConfig()


def _build_server(r: _Reader) -> ServerConfig:
    tls_reader = r.section("tls")
    tls = None
    if tls_reader.raw:
        tls = TlsConfig(
            cert=tls_reader.req("cert", _existing_file), key=tls_reader.req("key", _existing_file)
        )
    tls_reader.finish()
    server = ServerConfig(
        host=r.get("host", _str, _SERVER.host),
        port=r.get("port", _int(0, 65535), _SERVER.port),
        workers=r.get("workers", _int(1), _SERVER.workers),
        domain=r.opt("domain", _str),
        tls=tls,
    )
    r.finish()
    return server


def _build_auth(r: _Reader) -> AuthConfig:
    users: list[User] = []
    for u in r.items("users"):
        user = User(u.req("access_key", _str), u.req("secret_key", _str), u.get("admin", _bool, False))
        if any(x.access_key == user.access_key for x in users):
            raise u.error(u.sub("access_key"), f"{show(user.access_key)} is a duplicate")
        users.append(user)
        u.finish()
    if not r.has("users"):
        users = list(_AUTH.users)
    # Shortcut (HOARD_AUTH__ACCESS_KEY / HOARD_AUTH__SECRET_KEY): one admin user replaces the list.
    access_key, secret_key = r.opt("access_key", _str), r.opt("secret_key", _str)
    if access_key is not None or secret_key is not None:
        users = [User(access_key or DEFAULT_ACCESS_KEY, secret_key or DEFAULT_SECRET_KEY, admin=True)]
    anonymous = r.get("anonymous", _bool, False)
    if not users and not anonymous:
        raise r.error(r.sub("users"), "is empty and anonymous access is off: nobody could use the gateway")
    r.finish()
    return AuthConfig(users=tuple(users), anonymous=anonymous)


def _build_rule(r: _Reader) -> CacheRule:
    rule = CacheRule(
        path=r.get("path", _rule_path, "/"),
        filter=r.opt("filter", _choice(_FILTER_NAMES)),
        max_age=r.opt("max_age", _duration),
        priority=r.opt("priority", _choice(_PRIORITY_NAMES)),
        ttl=r.opt("ttl", _duration),
        quota=r.opt("quota", _size),
    )
    if rule.max_age is not None and rule.filter is None:
        rule = CacheRule(rule.path, "maxAge", rule.max_age, rule.priority, rule.ttl, rule.quota)
    if rule.filter == "maxAge" and rule.max_age is None:
        raise r.error(r.sub("max_age"), "is required with filter maxAge (use e.g. max_age: 5m)")
    if rule.filter != "maxAge" and rule.max_age is not None:
        raise r.error(r.sub("max_age"), f"is only used with filter maxAge, not {rule.filter}")
    r.finish()
    return rule


def _build_cache(r: _Reader) -> CacheConfig:
    cache = CacheConfig(
        dir=r.get("dir", _path, absolute_path("./hoard-cache")),
        size=r.get("size", _positive_size, _CACHE.size),
        reserved=r.get("reserved", _size, _CACHE.reserved),
        page_size=r.get("page_size", _positive_size, _CACHE.page_size),
        metadata_ttl=r.get("metadata_ttl", _duration, _CACHE.metadata_ttl),
        read_ahead=r.get("read_ahead", _int(0), _CACHE.read_ahead),
        rules=tuple(_build_rule(rule) for rule in r.items("rules")),
        fsync=r.get("fsync", _bool, _CACHE.fsync),
        direct_io=r.get("direct_io", _bool, _CACHE.direct_io),
        write_buffer=r.get("write_buffer", _positive_size, _CACHE.write_buffer),
        fill_waits=r.get("fill_waits", _bool, _CACHE.fill_waits),
    )
    if cache.page_size > cache.size:
        raise r.error(r.sub("page_size"), f"{cache.page_size} is larger than cache.size ({cache.size} bytes)")
    r.finish()
    return cache


def _build_limits(r: _Reader) -> Limits:
    limits = Limits(
        bandwidth=r.opt("bandwidth", _rate),
        burst=r.opt("burst", _positive_size),
        max_concurrency=r.opt("max_concurrency", _int(1)),
        max_requests_per_second=r.opt("max_requests_per_second", _positive_float),
        retries=r.opt("retries", _int(1)),
        connect_timeout=r.opt("connect_timeout", _positive_duration),
        first_byte_timeout=r.opt("first_byte_timeout", _positive_duration),
        idle_timeout=r.opt("idle_timeout", _positive_duration),
    )
    r.finish()
    return limits


def _build_mounts(r: _Reader) -> tuple[MountConfig, ...]:
    if not r.has("mounts"):
        r.seen.add("mounts")
        return (MountConfig("/", normalize_uri(DEFAULT_ROOT_URI)),)
    return _mount_list(r, "mounts")


def _mount_list(r: _Reader, name: str) -> tuple[MountConfig, ...]:
    mounts: list[MountConfig] = []
    for m in r.items(name):
        mount = MountConfig(
            path=m.req("path", check_mount_path),
            uri=m.req("uri", normalize_uri),
            options=m.get("options", _options, {}),
            limits=_build_limits(m.section("limits")),
        )
        if any(x.path == mount.path for x in mounts):
            raise m.error(m.sub("path"), f"{show(mount.path)} is mounted twice")
        mounts.append(mount)
        m.finish()
    return tuple(mounts)


def parse_mounts(data: object, key: str = "mounts") -> tuple[MountConfig, ...]:
    """Validate a list of mount mappings (the `mounts` section shape); raises ConfigError naming `key`."""
    return _mount_list(_Reader({key: data}, "", {}), key)


def _build_cluster(r: _Reader) -> ClusterConfig:
    cluster = ClusterConfig(
        membership=r.get("membership", _choice(_MEMBERSHIP_NAMES), _CLUSTER.membership),
        workers=r.get("workers", _str_list, _CLUSTER.workers),
        replicas=r.get("replicas", _int(1), _CLUSTER.replicas),
    )
    r.finish()
    return cluster


def _build(raw: object, sources: Mapping[str, str]) -> Config:
    top = _Reader(raw, "", sources)
    metastore = top.section("metastore")
    config = Config(
        server=_build_server(top.section("server")),
        auth=_build_auth(top.section("auth")),
        cache=_build_cache(top.section("cache")),
        mounts=_build_mounts(top),
        cluster=_build_cluster(top.section("cluster")),
        metastore=MetastoreConfig(dir=metastore.get("dir", _path, absolute_path("./hoard-meta"))),
        ufs=_build_limits(top.section("ufs")),
    )
    metastore.finish()
    top.finish()
    return config


# --- merging the layers --------------------------------------------------------------------------


def _display(segments: list[str]) -> str:
    out = ""
    for s in segments:
        out += f"[{s}]" if s.isdigit() else (f".{s}" if out else s)
    return out


def _set(tree: dict[str, Any], segments: list[str], value: object) -> None:
    """Set `value` at `segments` in the raw tree; digit segments index (or append to) lists."""
    node: Any = tree
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        here = _display(segments[: i + 1])
        if isinstance(node, list):
            if not seg.isdigit() or int(seg) > len(node):
                raise ConfigError(here, f"{seg!r} is not an index of a list of {len(node)}")
            if int(seg) == len(node):
                node.append({})
            key: Any = int(seg)
        elif isinstance(node, dict):
            key = seg
        else:
            raise ConfigError(_display(segments[:i]), f"{show(node)} is not a mapping")
        if last:
            node[key] = value
        else:
            child = node[key] if (isinstance(node, list) or key in node) else None
            if child is None:
                child = [] if segments[i + 1].isdigit() else {}
                node[key] = child
            node = child


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read: {_one_line(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), f"the top level must be a mapping of sections, not {type(data).__name__}"
        )
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """`HOARD_SECTION__KEY[__SUBKEY...]` variables as {dotted key: value}, e.g. {"server.port": "9000"}."""
    out: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        segments = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(segments):
            raise ConfigError(name, "is not of the form HOARD_SECTION__KEY")
        out[".".join(segments)] = environ[name]
    return out


def load(path: Path | None, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults < YAML file < `HOARD_SECTION__KEY` environment < `overrides` ({"server.port": 9000}).

    Override keys are dotted (digits index lists: "mounts.0.uri"); None values are skipped, so the
    CLI can pass its flags unfiltered. Raises ConfigError.
    """
    tree = _read_file(path) if path is not None else {}
    sources: dict[str, str] = {}
    for dotted, value in env_overrides(environ).items():
        segments = dotted.split(".")
        _set(tree, segments, value)
        sources[_display(segments)] = ENV_PREFIX + "__".join(s.upper() for s in segments)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(tree, dotted.split("."), value)
    return _build(tree, sources)


def from_dict(data: Mapping[str, Any]) -> Config:
    """Validate plain data (as from `Config.to_dict()` or a parsed YAML file) into a Config."""
    return _build(data, {})


def from_env(environ: Mapping[str, str]) -> Config:
    """The config a uvicorn worker runs with: `HOARD_RESOLVED_CONFIG` (JSON, set by `hoard serve`).

    Without it (uvicorn started by hand), load `$HOARD_CONFIG` if set, then the environment.
    """
    resolved = environ.get(RESOLVED_CONFIG_ENV)
    if resolved is None:
        file = environ.get(CONFIG_FILE_ENV)
        return load(Path(file) if file else None, environ)
    try:
        data = json.loads(resolved)
    except json.JSONDecodeError as exc:
        raise ConfigError(RESOLVED_CONFIG_ENV, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(RESOLVED_CONFIG_ENV, "is not a JSON object")
    return from_dict(data)


def to_env(config: Config) -> str:
    """The value of `HOARD_RESOLVED_CONFIG` for `config`."""
    return json.dumps(config.to_dict(), separators=(",", ":"))
