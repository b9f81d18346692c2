from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfg
from gateway.app import cache_settings
from gateway.config import (
    CacheRule,
    ConfigError,
    Limits,
    MountConfig,
    TlsConfig,
    User,
    from_dict,
    from_env,
    load,
)
from gateway.values import check_mount_path, file_uri, normalize_uri, parse_duration, parse_rate, parse_size

GiB = 1024**3
MiB = 1024**2


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hoard.yaml"
    path.write_text(text)
    return path


# --- parsers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GiB", 10 * GiB),
        ("1MiB", MiB),
        ("512KB", 512_000),
        ("512kB", 512_000),
        ("512KiB", 512 * 1024),
        ("10G", 10 * GiB),
        ("10Gi", 10 * GiB),
        ("2TB", 2 * 10**12),
        ("1.5GiB", 3 * GiB // 2),
        ("4096", 4096),
        ("100B", 100),
        (" 1 MiB ", MiB),
        (0, 0),
        (123, 123),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["10XB", "", "GiB", "-1", "1.2.3MiB", "10 Gigs", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", 600.0),
        ("30s", 30.0),
        ("7d", 7 * 86400.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("2w", 14 * 86400.0),
        ("1.5s", 1.5),
        ("45", 45.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["10y", "", "m", "1h 30m", "-5s", "soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100MiB/s", 100 * MiB), ("1GB/s", 10**9), ("2048", 2048), (4096, 4096), ("10 KiB/s", 10240)],
)
def test_parse_rate(text: str | int, expected: int) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["100MiB", "100MiB/m", "fast", "/s"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


@pytest.mark.parametrize("path", ["/", "/s3", "/s3/sub/dir", "/my-data.v2/x y/z"])
def test_check_mount_path_accepts(path: str) -> None:
    assert check_mount_path(path) == path


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("s3", "not an absolute path (use '/s3')"),
        ("/s3/", "not normalised (use '/s3')"),
        ("//s3", "not normalised (use '/s3')"),
        ("/s3//x", "not normalised (use '/s3/x')"),
        ("/s3/../x", "'.' or '..'"),
        ("/_hoard", "reserved"),
        ("/_hoard/x", "reserved"),
        ("/S3", "not a valid bucket name"),
        ("/-s3", "not a valid bucket name"),
        ("/192.168.1.1", "not a valid bucket name"),
        ("/a..b", "not a valid bucket name"),
        ("", "not a mount path"),
    ],
)
def test_check_mount_path_rejects(path: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_mount_path(path)
    assert problem in str(info.value)


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path) -> None:
    c = load(None, {})
    assert (c.server.host, c.server.port, c.server.workers) == ("127.0.0.1", 8080, 1)
    assert c.server.tls is None and c.server.domain is None
    assert c.auth.users == (User("hoard", "hoard-secret-key", admin=True),)
    assert c.auth.anonymous is False
    assert c.cache.dir == tmp_path / "hoard-cache"
    assert (c.cache.size, c.cache.reserved, c.cache.page_size) == (10 * GiB, GiB, MiB)
    assert c.cache.metadata_ttl == 60.0
    assert c.cache.read_ahead == 16
    assert (c.cache.fsync, c.cache.direct_io, c.cache.write_buffer) == (False, True, 64 * MiB)
    assert c.cache.fill_waits is True
    assert c.cache.rules == ()
    assert c.mounts == (MountConfig("/", f"file://{tmp_path}/hoard-data"),)
    assert c.metastore.dir == tmp_path / "hoard-meta"
    assert (c.cluster.membership, c.cluster.workers, c.cluster.replicas) == ("static", (), 1)


def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), {}) == load(None, {})
    assert load(write(tmp_path, "server:\ncache:\nauth:\n"), {}) == load(None, {})


# --- the full shape from DESIGN.md ---------------------------------------------------------------

DESIGN_EXAMPLE = """
server:  {host: 0.0.0.0, port: 9000, workers: 4, domain: s3.example.internal, tls: {cert: c.pem, key: k.pem}}
auth:
  users: [{access_key: hoard, secret_key: change-me, admin: true}, {access_key: reader, secret_key: r}]
  anonymous: false
cache:
  dir: ./hoard-cache
  size: 10GiB            # hard quota of bytes on disk
  reserved: 1GiB
  page_size: 1MiB
  metadata_ttl: 1m
  read_ahead: 8
  direct_io: false
  write_buffer: 256MiB
  fill_waits: false
  rules:                 # first match wins; every field optional
    - {path: /s3/imagenet/, filter: immutable, priority: high, ttl: 7d, quota: 500GiB}
    - {path: /s3/scratch/, filter: skipCache}
    - {path: /s3/logs/, filter: maxAge, max_age: 5m}
    - {}
mounts:
  - {path: /, uri: file:///srv/hoard-data}
  - path: /s3
    uri: s3://my-bucket/datasets
    options: {endpoint_url: "http://127.0.0.1:9000", region: us-east-1, access_key_id: AK, secret_access_key: SK}
    limits: {bandwidth: 100MiB/s, max_concurrency: 64, max_requests_per_second: 1000}
cluster: {membership: static, workers: [a:8080, b:8080], replicas: 2}
metastore: {dir: /var/lib/hoard}
"""


@pytest.fixture
def design_file(tmp_path: Path) -> Path:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    return write(tmp_path, DESIGN_EXAMPLE)


def test_the_cache_gets_the_cache_section(design_file: Path) -> None:
    s = cache_settings(load(design_file, {}).cache)
    assert (s.page_size, s.read_ahead, s.direct_io, s.fsync) == (MiB, 8, False, False)
    assert (s.write_buffer, s.write_slots, s.fill_waits) == (256 * MiB, 256, False)


def test_design_example(design_file: Path, tmp_path: Path) -> None:
    c = load(design_file, {})
    assert c.server.host == "0.0.0.0" and c.server.port == 9000 and c.server.workers == 4
    assert c.server.domain == "s3.example.internal"
    assert c.server.tls == TlsConfig(tmp_path / "c.pem", tmp_path / "k.pem")
    assert c.auth.users == (User("hoard", "change-me", True), User("reader", "r", False))
    assert c.auth.find("reader") == User("reader", "r", False) and c.auth.find("nobody") is None
    assert (c.cache.read_ahead, c.cache.direct_io, c.cache.write_buffer) == (8, False, 256 * MiB)
    assert c.cache.fill_waits is False
    assert c.cache.rules == (
        CacheRule("/s3/imagenet/", "immutable", None, "high", 7 * 86400.0, 500 * GiB),
        CacheRule("/s3/scratch/", "skipCache"),
        CacheRule("/s3/logs/", "maxAge", max_age=300.0),
        CacheRule(),
    )
    root, s3 = c.mounts
    assert root == MountConfig("/", "file:///srv/hoard-data")
    assert s3.uri == "s3://my-bucket/datasets"
    assert s3.options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "region": "us-east-1",
        "access_key_id": "AK",
        "secret_access_key": "SK",
    }
    assert s3.limits == Limits(100 * MiB, 64, 1000.0)
    assert c.cluster.workers == ("a:8080", "b:8080") and c.cluster.replicas == 2
    assert c.metastore.dir == Path("/var/lib/hoard")


def test_round_trip(design_file: Path) -> None:
    c = load(design_file, {})
    data = c.to_dict()
    assert from_dict(json.loads(json.dumps(data))) == c
    assert from_env({cfg.RESOLVED_CONFIG_ENV: cfg.to_env(c)}) == c
    default = load(None, {})
    assert from_dict(default.to_dict()) == default


def test_from_env_without_resolved_config_loads_hoard_config(design_file: Path) -> None:
    assert from_env({"HOARD_CONFIG": str(design_file)}) == load(design_file, {})
    assert from_env({"HOARD_SERVER__PORT": "1234"}).server.port == 1234


def test_relative_paths_become_absolute(tmp_path: Path) -> None:
    c = load(
        write(
            tmp_path,
            "cache: {dir: cache}\nmetastore: {dir: ../meta}\nmounts: [{path: /, uri: 'file://./data'}]",
        ),
        {},
    )
    assert c.cache.dir == tmp_path / "cache"
    assert c.metastore.dir == tmp_path.parent / "meta"
    assert c.mounts[0].uri == f"file://{tmp_path}/data"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///srv/data", "file:///srv/data"),
        ("file://data", "file://{cwd}/data"),
        ("file://localhost/srv", "file:///srv"),
        ("FILE:///srv/./x/../y", "file:///srv/y"),
        ("S3://bucket/prefix", "s3://bucket/prefix"),
    ],
)
def test_normalize_uri(uri: str, expected: str, tmp_path: Path) -> None:
    assert normalize_uri(uri) == expected.format(cwd=tmp_path)


# --- environment and overrides -------------------------------------------------------------------


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "HOARD_SERVER__PORT": "9000",
        "HOARD_SERVER__HOST": "0.0.0.0",
        "HOARD_CACHE__SIZE": "1GiB",
        "HOARD_CACHE__METADATA_TTL": "30s",
        "HOARD_AUTH__ANONYMOUS": "true",
        "HOARD_CLUSTER__WORKERS": "a:1, b:2",
        "HOARD_METASTORE__DIR": "meta",
        "HOARD_ENDPOINT": "http://ignored",  # no "__": not a config key
        "PATH": "/bin",
    }
    c = load(None, env)
    assert c.server.port == 9000 and c.server.host == "0.0.0.0"
    assert c.cache.size == GiB and c.cache.metadata_ttl == 30.0
    assert c.auth.anonymous is True
    assert c.cluster.workers == ("a:1", "b:2")
    assert c.metastore.dir == tmp_path / "meta"


def test_env_beats_file_and_overrides_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 7000, workers: 2}")
    assert load(path, {}).server.port == 7000
    assert load(path, {"HOARD_SERVER__PORT": "8000"}).server.port == 8000
    c = load(path, {"HOARD_SERVER__PORT": "8000"}, {"server.port": 9000, "server.workers": None})
    assert c.server.port == 9000 and c.server.workers == 2  # None: flag not given


def test_env_nested_keys_and_list_indexes(tmp_path: Path) -> None:
    path = write(tmp_path, "mounts: [{path: /, uri: 'file:///a'}, {path: /s3, uri: 's3://b'}]")
    env = {
        "HOARD_MOUNTS__1__OPTIONS__REGION": "eu-west-1",
        "HOARD_MOUNTS__1__LIMITS__BANDWIDTH": "10MiB/s",
        "HOARD_MOUNTS__2__PATH": "/more",
        "HOARD_MOUNTS__2__URI": "s3://c",
    }
    c = load(path, env)
    assert c.mounts[1].options == {"region": "eu-west-1"}
    assert c.mounts[1].limits.bandwidth == 10 * MiB
    assert c.mounts[2] == MountConfig("/more", "s3://c")


def test_env_yaml_flow_values(tmp_path: Path) -> None:
    env = {
        "HOARD_AUTH__USERS": "[{access_key: a, secret_key: b, admin: true}]",
        "HOARD_MOUNTS": "ignored: no double underscore",
        "HOARD_CACHE__RULES": "[{path: /x/, filter: immutable}]",
    }
    c = load(None, env)
    assert c.auth.users == (User("a", "b", True),)
    assert c.cache.rules == (CacheRule("/x/", "immutable"),)


def test_env_user_shortcut_replaces_default_user() -> None:
    c = load(None, {"HOARD_AUTH__ACCESS_KEY": "ak", "HOARD_AUTH__SECRET_KEY": "sk"})
    assert c.auth.users == (User("ak", "sk", admin=True),)
    c = load(None, {"HOARD_AUTH__SECRET_KEY": "only-secret"})
    assert c.auth.users == (User("hoard", "only-secret", admin=True),)


def test_user_shortcut_replaces_configured_users(tmp_path: Path) -> None:
    path = write(tmp_path, "auth: {users: [{access_key: a, secret_key: b}]}")
    assert load(path, {"HOARD_AUTH__ACCESS_KEY": "x"}).auth.users == (User("x", "hoard-secret-key", True),)


def test_mounts_in_file_replace_the_default_root(tmp_path: Path) -> None:
    c = load(write(tmp_path, "mounts: [{path: /s3, uri: 's3://b'}]"), {})
    assert c.mounts == (MountConfig("/s3", "s3://b"),)
    assert c.root_mount is None
    assert load(write(tmp_path, "mounts: []"), {}).mounts == ()


def test_rule_max_age_implies_filter(tmp_path: Path) -> None:
    c = load(write(tmp_path, "cache: {rules: [{path: /l/, max_age: 5m}]}"), {})
    assert c.cache.rules == (CacheRule("/l/", "maxAge", 300.0),)


def test_option_scalars_become_strings(tmp_path: Path) -> None:
    c = load(write(tmp_path, "mounts: [{path: /s3, uri: 's3://b', options: {retries: 3, ssl: false}}]"), {})
    assert c.mounts[0].options == {"retries": "3", "ssl": "false"}


# --- errors: one line, naming the key and the value ----------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("cache: {size: 10XB}", "config error: cache.size: '10XB' is not a size (use e.g. 10GiB)"),
        ("cache: {metadata_ttl: soon}", "config error: cache.metadata_ttl: 'soon' is not a duration"),
        ("cache: {sise: 1GiB}", "config error: cache.sise: unknown key (known: "),
        ("caches: {size: 1GiB}", "config error: caches: unknown section (known: "),
        ("server: {port: http}", "config error: server.port: 'http' is not an integer"),
        (
            "server: {port: 70000}",
            "config error: server.port: 70000 is out of range (must be between 0 and 65535)",
        ),
        ("server: {workers: 0}", "config error: server.workers: 0 is out of range (must be at least 1)"),
        ("server: {port: true}", "config error: server.port: True is not an integer"),
        ("server: {host: 127}", "config error: server.host: 127 is not a string (quote it in YAML)"),
        (
            "server: {tls: {cert: nope.pem, key: nope.pem}}",
            "config error: server.tls.cert: 'nope.pem' is not a file",
        ),
        ("server: {tls: {cert: c.pem}}", "config error: server.tls.cert: 'c.pem' is not a file"),
        ("server: [1, 2]", "config error: server: [1, 2] is not a mapping"),
        (
            "auth: {anonymous: maybe}",
            "config error: auth.anonymous: 'maybe' is not a boolean (use true or false)",
        ),
        (
            "auth: {users: [{access_key: a}]}",
            "config error: auth.users[0].secret_key: required key is missing",
        ),
        (
            "auth: {users: [{access_key: a, secret_key: b}, {access_key: a, secret_key: c}]}",
            "config error: auth.users[1].access_key: 'a' is a duplicate",
        ),
        ("auth: {users: []}", "config error: auth.users: is empty and anonymous access is off"),
        ("auth: {users: {a: b}}", "config error: auth.users: {'a': 'b'} is not a list"),
        (
            "cache: {rules: [{filter: sometimes}]}",
            "config error: cache.rules[0].filter: 'sometimes' is not one of",
        ),
        (
            "cache: {rules: [{filter: maxAge}]}",
            "config error: cache.rules[0].max_age: is required with filter maxAge",
        ),
        (
            "cache: {rules: [{filter: immutable, max_age: 1m}]}",
            "config error: cache.rules[0].max_age: is only used with filter maxAge, not immutable",
        ),
        ("cache: {rules: [{path: s3/}]}", "config error: cache.rules[0].path: 's3/' is not a namespace path"),
        (
            "cache: {rules: [{priority: urgent}]}",
            "config error: cache.rules[0].priority: 'urgent' is not one of",
        ),
        (
            "cache: {size: 1KiB}",
            "config error: cache.page_size: 1048576 is larger than cache.size (1024 bytes)",
        ),
        ("cache: {size: 0}", "config error: cache.size: 0 must be positive"),
        ("cache: {write_buffer: 0}", "config error: cache.write_buffer: 0 must be positive"),
        (
            "mounts: [{path: /s3/, uri: 's3://b'}]",
            "config error: mounts[0].path: '/s3/' is not normalised (use '/s3')",
        ),
        ("mounts: [{path: /_hoard, uri: 's3://b'}]", "config error: mounts[0].path: '/_hoard' is reserved"),
        ("mounts: [{path: /s3, uri: /srv}]", "config error: mounts[0].uri: '/srv' is not a URI"),
        ("mounts: [{uri: 's3://b'}]", "config error: mounts[0].path: required key is missing"),
        (
            "mounts: [{path: /a, uri: 's3://b'}, {path: /a, uri: 's3://c'}]",
            "config error: mounts[1].path: '/a' is mounted twice",
        ),
        (
            "mounts: [{path: /a, uri: 's3://b', limits: {bandwidth: 100MiB}}]",
            "config error: mounts[0].limits.bandwidth: '100MiB' is not a rate (use e.g. 100MiB/s)",
        ),
        (
            "mounts: [{path: /a, uri: 's3://b', limits: {max_concurrency: 0}}]",
            "config error: mounts[0].limits.max_concurrency: 0 is out of range (must be at least 1)",
        ),
        (
            "mounts: [{path: /a, uri: 's3://b', options: {nested: {x: 1}}}]",
            "config error: mounts[0].options: option 'nested': {'x': 1} is not a string",
        ),
        ("cluster: {membership: gossip}", "config error: cluster.membership: 'gossip' is not one of static"),
        ("[1, 2]", "the top level must be a mapping of sections, not list"),
        ("server: {port: 80\n", "invalid YAML at line 2, column 1"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, yaml_text), {})
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("config error: ")
    assert message in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HOARD_CACHE__SIZE": "10XB"},
            "config error: cache.size: '10XB' is not a size (use e.g. 10GiB) (from HOARD_CACHE__SIZE)",
        ),
        (
            {"HOARD_SERVER__PORT": "abc"},
            "config error: server.port: 'abc' is not an integer (from HOARD_SERVER__PORT)",
        ),
        (
            {"HOARD_SERVR__PORT": "1"},
            "config error: servr: unknown section (known: auth, cache, cluster, metastore, mounts, server, ufs) (from HOARD_SERVR__PORT)",
        ),
        (
            {"HOARD_SERVER__PROT": "1"},
            "config error: server.prot: unknown key (known: domain, host, port, tls, workers) (from HOARD_SERVER__PROT)",
        ),
        ({"HOARD_AUTH__ANONYMOUS": "maybe"}, "(from HOARD_AUTH__ANONYMOUS)"),
        (
            {"HOARD_MOUNTS__0__PATH": "/x/"},
            "config error: mounts[0].path: '/x/' is not normalised (use '/x') (from HOARD_MOUNTS__0__PATH)",
        ),
        ({"HOARD_MOUNTS__3__PATH": "/x"}, "config error: mounts[3]: '3' is not an index of a list of 0"),
        (
            {"HOARD_SERVER____PORT": "1"},
            "config error: HOARD_SERVER____PORT: is not of the form HOARD_SECTION__KEY",
        ),
        (
            {"HOARD_AUTH__USERS": "[{access_key: a"},
            "config error: auth.users: '[{access_key: a' is not valid YAML",
        ),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env)
    assert "\n" not in str(info.value)
    assert message in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^config error: /nonexistent/hoard.yaml: no such config file$"):
        load(Path("/nonexistent/hoard.yaml"), {})


def test_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^config error: cache.size: '10XB' is not a size"):
        load(None, {}, {"cache.size": "10XB"})


def test_from_dict_validates() -> None:
    data: dict[str, Any] = load(None, {}).to_dict()
    data["server"]["port"] = "x"
    with pytest.raises(ConfigError, match="server.port: 'x' is not an integer"):
        from_dict(data)


def test_from_env_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="HOARD_RESOLVED_CONFIG: is not valid JSON"):
        from_env({cfg.RESOLVED_CONFIG_ENV: "{"})


def test_parse_mounts() -> None:
    assert cfg.parse_mounts([{"path": "/a", "uri": "s3://b"}]) == (MountConfig("/a", "s3://b"),)
    with pytest.raises(ConfigError, match=r"^config error: mounts\[0\]\.uri: required key is missing$"):
        cfg.parse_mounts([{"path": "/a"}])


def test_file_uris_are_percent_encoded(tmp_path: Path) -> None:
    assert file_uri("a b") == f"file://{tmp_path}/a%20b"
    assert normalize_uri("file:///srv/a%20b") == "file:///srv/a%20b"
    assert normalize_uri("file:///srv/a b") == "file:///srv/a%20b"
