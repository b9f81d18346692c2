"""The `hoard` command: `serve` runs the gateway under uvicorn; the rest are admin REST clients.

Exit codes: 0 success, 1 the gateway refused or could not be reached, 2 bad usage or bad config
(one line on stderr naming the key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import ssl
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.config import (
    CONFIG_FILE_ENV,
    DEFAULT_ACCESS_KEY,
    DEFAULT_ROOT_URI,
    DEFAULT_SECRET_KEY,
    RESOLVED_CONFIG_ENV,
    Config,
    ConfigError,
    from_dict,
    load,
    to_env,
)
from gateway.values import absolute_path, check_mount_path, file_uri, normalize_uri

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ADMIN_PREFIX = "/_hoard/v1/"
REGION = "us-east-1"

Command = Callable[[argparse.Namespace, Mapping[str, str]], int]


def version() -> str:
    try:
        return importlib.metadata.version("hoard")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


# --- serve ---------------------------------------------------------------------------------------


def _as_uri(text: str) -> str:
    """A URI as given, or a local directory path turned into a `file://` URI."""
    return normalize_uri(text) if "://" in text else file_uri(text)


def _mount_flag(spec: str) -> tuple[str, str]:
    path, sep, uri = spec.partition("=")
    if not sep or not uri:
        raise ConfigError("--mount", f"{spec!r} is not /PATH=URI (e.g. /s3=s3://bucket/prefix)")
    try:
        return check_mount_path(path), _as_uri(uri)
    except ValueError as exc:
        raise ConfigError("--mount", str(exc)) from None


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """File (`--config` or `$HOARD_CONFIG`) < environment < flags. `--root` replaces the `/` mount,
    each `--mount /PATH=URI` adds one (or replaces the config's mount at that path)."""
    file = args.config or environ.get(CONFIG_FILE_ENV) or None
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.workers": args.workers,
        "cache.dir": args.cache_dir,
        "cache.size": args.cache_size,
    }
    config = load(Path(file) if file else None, environ, overrides)
    extra: dict[str, str] = {}
    if args.root is not None:
        try:
            extra["/"] = _as_uri(args.root)
        except ValueError as exc:
            raise ConfigError("--root", str(exc)) from None
    for spec in args.mount:
        path, uri = _mount_flag(spec)
        if path in extra:
            raise ConfigError("--mount", f"{path!r} is given twice")
        extra[path] = uri
    if not extra:
        return config
    data = config.to_dict()
    kept = [m for m in data["mounts"] if m["path"] not in extra]
    added = [{"path": p, "uri": u} for p, u in extra.items()]
    data["mounts"] = sorted(kept + added, key=lambda m: str(m["path"]))
    return from_dict(data)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def base_url(config: Config) -> str:
    scheme = "https" if config.server.tls else "http"
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # what a client on this machine connects to
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.server.port}"


def startup_block(config: Config) -> str:
    """What `hoard serve` prints once: where to connect, with which keys, what is mounted."""
    url = base_url(config)
    workers = config.server.workers
    lines = [f"Hoard {version()} serving S3 at {url} ({workers} worker{'s' if workers > 1 else ''})"]
    user = config.auth.admin_user or (config.auth.users[0] if config.auth.users else None)
    if user is not None:
        # Only the built-in default secret is printed: anything else would end up in service logs.
        shown = user.secret_key if user.secret_key == DEFAULT_SECRET_KEY else "(as configured)"
        lines += [f"  access key   {user.access_key}", f"  secret key   {shown}"]
    if config.auth.anonymous:
        lines.append("  anonymous    on: requests without a signature are allowed")
    width = max((len(m.path) for m in config.mounts), default=1)
    for i, mount in enumerate(config.mounts):
        lines.append(f"  {'mounts' if i == 0 else '':<12} {mount.path:<{width}}  {mount.uri}")
    if not config.mounts:
        lines.append("  mounts       (none)")
    lines.append(f"  cache        {config.cache.dir} ({_human(config.cache.size)})")
    lines.append(f"  try          aws --endpoint-url {url} s3 ls")
    return "\n".join(lines)


def _ensure_default_root(config: Config) -> None:
    """The quick start serves ./hoard-data; create it on first run (any other root must exist)."""
    root = config.root_mount
    if root is not None and root.uri == normalize_uri(DEFAULT_ROOT_URI):
        absolute_path(DEFAULT_ROOT_URI[len("file://") :]).mkdir(parents=True, exist_ok=True)


def _writable_dirs(config: Config) -> None:
    """The cache and metastore directories, made if missing and written to once before anything
    starts: a directory that cannot be used (a read-only file system, a path through a file) is
    one line naming its key, not a traceback from every worker's start-up after the banner."""
    for key, path in (("cache.dir", config.cache.dir), ("metastore.dir", config.metastore.dir)):
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".hoard-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(key, f"cannot write to {str(path)!r}: {exc.strerror}") from None


def _openable_mounts(config: Config) -> None:
    """Every config mount's UFS opened (and closed) once before anything starts: one that cannot
    be is one line naming it, where each worker's start-up printed a traceback after the banner
    (and with several workers the gateway then exited 0)."""
    import asyncio

    from gateway.namespace import MountError, MountTable

    try:
        asyncio.run(MountTable.check(config.mounts, config.metastore.dir))
    except MountError as exc:
        raise ConfigError("mounts", str(exc)) from None


def _loadable_tls(config: Config) -> None:
    """The TLS certificate and key loaded once before anything starts: a pair that cannot be
    loaded failed every worker's start-up with a traceback, and with several workers uvicorn
    restarted them without end."""
    tls = config.server.tls
    if tls is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert, tls.key)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(
            "server.tls", f"cannot load {str(tls.cert)!r} with {str(tls.key)!r}: {exc}"
        ) from None


# prometheus_client's multiprocess directory (gateway/metrics.py); named here, not imported, so
# that prometheus_client is first imported after it is set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _fresh_metrics_dir(path: Path) -> Path:
    """prometheus_client's multiprocess files: every worker's metrics, summed at each scrape. A
    previous run's files would add old counts to the new ones, so they go."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)
    return path


def cmd_serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import uvicorn

    from gateway import workers

    config = build_config(args, environ)
    config.check_private_dirs()
    _ensure_default_root(config)
    _writable_dirs(config)
    _loadable_tls(config)
    _openable_mounts(config)
    print(startup_block(config), flush=True)
    # Worker processes (and the single in-process app) read the config back from here.
    os.environ[RESOLVED_CONFIG_ENV] = to_env(config)
    os.environ[MULTIPROC_ENV] = str(_fresh_metrics_dir(config.metastore.dir / "prometheus"))
    tls = config.server.tls
    app = "gateway.app:app_from_env"
    options: dict[str, Any] = {
        "factory": True,
        "host": config.server.host,
        "port": config.server.port,
        "workers": config.server.workers,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,  # uvicorn formats each access line's fields before checking the level
        "server_header": False,  # the S3 endpoint sends its own
        "ssl_certfile": str(tls.cert) if tls else None,
        "ssl_keyfile": str(tls.key) if tls else None,
    }
    if config.server.workers > 1:
        workers.run(uvicorn.Config(app, **options), config.metastore.dir / "workers")
    else:
        uvicorn.run(app, **options)
    return 0


# --- the admin client ----------------------------------------------------------------------------


class AdminError(Exception):
    """The gateway answered with an error, or could not be reached. `str()` is the message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_message(response: httpx.Response) -> str:
    """`{"error": ...}` from the admin API, or an S3 XML error (auth failures), or the raw text."""
    text = response.text.strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    if text.startswith("<"):
        try:
            root = ET.fromstring(text)
            code, message = root.findtext("Code"), root.findtext("Message")
            if code:
                return f"{code}: {message}" if message else code
        except ET.ParseError:
            pass
    first = text.splitlines()[0] if text else response.reason_phrase
    return first[:200]


class AdminClient:
    """Calls `/_hoard/v1/...`, SigV4-signed exactly like an S3 request (service s3, us-east-1)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._signer = S3SigV4Auth(Credentials(access_key, secret_key), "s3", REGION)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: object = None
    ) -> Any:
        """One admin request; returns the decoded JSON body. Raises AdminError."""
        url = self.endpoint + ADMIN_PREFIX + path
        if params:
            # Encoded once, here, as SigV4's canonical query wants it; httpx sends it unchanged.
            url += "?" + "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
        content = b"" if body is None else json.dumps(body).encode()
        headers = {"x-amz-content-sha256": hashlib.sha256(content).hexdigest()}
        if body is not None:
            headers["content-type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=content, headers=headers)
        self._signer.add_auth(request)
        try:
            response = self._http.request(method, url, content=content, headers=dict(request.headers.items()))
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach Hoard at {self.endpoint}: {exc}") from None
        if not response.is_success:
            raise AdminError(_error_message(response), response.status_code)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise AdminError(f"{method} {path}: the gateway sent a response that is not JSON") from None

    def list_mounts(self) -> list[dict[str, Any]]:
        mounts: list[dict[str, Any]] = self.call("GET", "mounts").get("mounts", [])
        return mounts

    def add_mount(self, path: str, uri: str, options: Mapping[str, str]) -> dict[str, Any]:
        mount: dict[str, Any] = self.call(
            "POST", "mounts", body={"path": path, "uri": uri, "options": dict(options)}
        ).get("mount", {})
        return mount

    def remove_mount(self, path: str) -> Any:
        return self.call("DELETE", "mounts", params={"path": path})

    def info(self) -> Any:
        return self.call("GET", "info")

    def load(self, path: str) -> Any:
        return self.call("POST", "load", body={"path": path})

    def load_status(self, path: str) -> Any:
        return self.call("GET", "load", params={"path": path})

    def load_stop(self, path: str) -> Any:
        return self.call("DELETE", "load", params={"path": path})

    def free(self, path: str) -> Any:
        return self.call("POST", "free", body={"path": path})

    def cache_stats(self) -> Any:
        return self.call("GET", "cache/stats")

    def cache_explain(self, path: str) -> Any:
        return self.call("GET", "cache/explain", params={"path": path})


def _q(text: str) -> str:
    return quote(text, safe="-_.~")


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def client_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> AdminClient:
    """Endpoint and credentials: flag, then `HOARD_*`, then `AWS_*`, then the built-in defaults."""
    endpoint = _first(args.endpoint, environ.get("HOARD_ENDPOINT")) or DEFAULT_ENDPOINT
    access_key = _first(
        args.access_key,
        environ.get("HOARD_ACCESS_KEY"),
        environ.get("HOARD_AUTH__ACCESS_KEY"),
        environ.get("AWS_ACCESS_KEY_ID"),
    )
    secret_key = _first(
        args.secret_key,
        environ.get("HOARD_SECRET_KEY"),
        environ.get("HOARD_AUTH__SECRET_KEY"),
        environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    return AdminClient(endpoint, access_key or DEFAULT_ACCESS_KEY, secret_key or DEFAULT_SECRET_KEY)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def mount_table(mounts: Sequence[Mapping[str, Any]]) -> str:
    """`hoard mount list` as aligned columns; options are shown as the gateway sent them (redacted)."""
    rows = [("PATH", "URI", "ORIGIN", "ID", "OPTIONS")]
    for m in mounts:
        options = ",".join(f"{k}={v}" for k, v in sorted(dict(m.get("options") or {}).items()))
        rows.append(
            (
                str(m.get("path", "")),
                str(m.get("uri", "")),
                str(m.get("origin", "")),
                str(m.get("id", "")),
                options,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip() for r in rows
    )


def _options(pairs: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--option", f"{pair!r} is not KEY=VALUE")
        options[key] = value
    return options


def cmd_mount_add(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    options = _options(args.option)
    uri = args.uri if "://" in args.uri else file_uri(args.uri)
    with client_from_args(args, environ) as client:
        mount = client.add_mount(args.path, uri, options)
    print(f"mounted {mount.get('path', args.path)} -> {mount.get('uri', uri)}")
    return 0


def cmd_mount_list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with client_from_args(args, environ) as client:
        mounts = client.list_mounts()
    if args.json:
        _print_json({"mounts": mounts})
    else:
        print(mount_table(mounts))
    return 0


def cmd_mount_remove(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with client_from_args(args, environ) as client:
        client.remove_mount(args.path)
    print(f"unmounted {args.path}")
    return 0


def _json_command(call: Callable[[AdminClient, argparse.Namespace], Any]) -> Command:
    def command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        with client_from_args(args, environ) as client:
            _print_json(call(client, args))
        return 0

    return command


_DONE_STATES = frozenset({"done", "completed", "complete", "succeeded", "failed", "stopped", "cancelled"})


def _progress_line(status: Mapping[str, Any]) -> str:
    state = str(status.get("state", "running"))
    # The gateway reports `bytes_done` (fetched + already cached); `bytes_loaded` is accepted too.
    done = status.get("bytes_done", status.get("bytes_loaded"))
    total = status.get("bytes_total")
    line = state
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        width = 30
        filled = min(width, done * width // total)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done * 100 // total:3d}% {_human(done)} / {_human(total)} {state}"
    elif isinstance(done, int):  # still listing: the total is not known yet
        line = f"{_human(done)} {state}"
    extras = []
    objects, objects_total = status.get("objects_done"), status.get("objects_total")
    if isinstance(objects, int):
        extras.append(f"{objects}/{objects_total if isinstance(objects_total, int) else '?'} objects")
    rate, eta = status.get("rate"), status.get("eta")
    if isinstance(rate, int | float) and rate > 0:
        extras.append(f"{_human(int(rate))}/s")
    if state == "running" and isinstance(eta, int | float):
        extras.append(f"ETA {eta:.0f}s")
    return "  ".join([line, *extras])


def cmd_load(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    words: list[str] = args.words
    if len(words) == 2 and words[0] in ("status", "stop") and words[1].startswith("/"):
        action, path = words
    elif len(words) == 1 and words[0].startswith("/"):
        action, path = "start", words[0]
    else:
        print(
            "usage: hoard load /PATH [--wait] | hoard load status /PATH | hoard load stop /PATH",
            file=sys.stderr,
        )
        return 2
    with client_from_args(args, environ) as client:
        if action == "status":
            _print_json(client.load_status(path))
            return 0
        if action == "stop":
            _print_json(client.load_stop(path))
            return 0
        started = client.load(path)
        if not args.wait:
            _print_json(started)
            return 0
        return _wait_for_load(client, path)


def _wait_for_load(client: AdminClient, path: str, interval: float = 1.0) -> int:
    tty = sys.stderr.isatty()
    last = ""
    try:
        while True:
            status = client.load_status(path)
            line = _progress_line(status) if isinstance(status, Mapping) else str(status)
            if tty:
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
            elif line != last:
                print(line, file=sys.stderr, flush=True)
            last = line
            state = str(status.get("state", "")) if isinstance(status, Mapping) else ""
            if state in _DONE_STATES:
                if tty:
                    print(file=sys.stderr)
                _print_json(status)
                return 0 if state not in ("failed", "stopped", "cancelled") else 1
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\nthe load continues in the gateway; `hoard load stop {path}` stops it", file=sys.stderr)
        return 130


# --- the parser ----------------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top level with real defaults; on each subcommand with SUPPRESS, so the options work on
    # either side of the command name without the subcommand's default hiding the top-level value.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--endpoint",
        default=default,
        help=f"gateway URL (default: $HOARD_ENDPOINT, else {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--access-key",
        default=default,
        help="admin access key (default: $HOARD_ACCESS_KEY, $AWS_ACCESS_KEY_ID, else the built-in key)",
    )
    parser.add_argument(
        "--secret-key",
        default=default,
        help="admin secret key (default: $HOARD_SECRET_KEY, $AWS_SECRET_ACCESS_KEY, else the built-in key)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoard", description="Hoard: an S3-compatible caching gateway.")
    parser.add_argument("--version", action="version", version=f"hoard {version()}")
    _client_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Command, help: str, into: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = into.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        if func is not cmd_serve:
            _client_options(sub, top=False)
        return sub

    serve = command("serve", cmd_serve, "run the gateway")
    serve.add_argument("--config", metavar="FILE", help=f"YAML config file (default: ${CONFIG_FILE_ENV})")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--root", metavar="URI", help="the root mount: a URI or a local directory")
    serve.add_argument(
        "--mount", metavar="/PATH=URI", action="append", default=[], help="add a mount (repeatable)"
    )
    serve.add_argument("--cache-dir", metavar="DIR", help="page cache directory (default ./hoard-cache)")
    serve.add_argument("--cache-size", metavar="SIZE", help="page cache quota, e.g. 10GiB")

    mount = commands.add_parser("mount", help="add, list or remove mounts of a running gateway")
    mounts = mount.add_subparsers(dest="mount_command", metavar="ACTION", required=True)
    add = command("add", cmd_mount_add, "mount a UFS URI at a namespace path", mounts)
    add.add_argument("path", metavar="/PATH")
    add.add_argument("uri", metavar="URI")
    add.add_argument("--option", metavar="K=V", action="append", default=[], help="mount option (repeatable)")
    listing = command("list", cmd_mount_list, "list mounts", mounts)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    remove = command("remove", cmd_mount_remove, "remove a runtime mount", mounts)
    remove.add_argument("path", metavar="/PATH")

    command("info", _json_command(lambda c, a: c.info()), "version, workers and mounts")

    load = command("load", cmd_load, "preload a path into the cache; `load status|stop /PATH`")
    load.add_argument("words", nargs="+", metavar="[status|stop] /PATH")
    load.add_argument("--wait", action="store_true", help="wait for the load, showing progress")

    free = command("free", _json_command(lambda c, a: c.free(a.path)), "evict a path from the cache")
    free.add_argument("path", metavar="/PATH")

    cache = commands.add_parser("cache", help="cache statistics and policy")
    caches = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    command("stats", _json_command(lambda c, a: c.cache_stats()), "used, capacity, pages, hit ratio", caches)
    explain = command(
        "explain", _json_command(lambda c, a: c.cache_explain(a.path)), "which rule applies to a path", caches
    )
    explain.add_argument("path", metavar="/bucket/key")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args, os.environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"hoard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
