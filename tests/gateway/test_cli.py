from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
import trustme
import uvicorn

from gateway import cli
from gateway.config import RESOLVED_CONFIG_ENV, Config, MountConfig, from_env, load

GiB = 1024**3


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("HOARD_", "AWS_")):
            monkeypatch.delenv(name)
    # `serve` opens its mounts' UFS first: no credentials from this machine, no instance metadata
    # (not loopback) looked for.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def config_of(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    args = cli.build_parser().parse_args(["serve", *argv])
    return cli.build_config(args, environ or {})


# --- serve: flags -> config ----------------------------------------------------------------------


def test_serve_defaults(tmp_path: Path) -> None:
    assert config_of([]) == load(None, {})


def test_serve_flags_override(tmp_path: Path) -> None:
    c = config_of(
        ["--host", "0.0.0.0", "--port", "9000", "--workers", "3", "--cache-dir", "c", "--cache-size", "2GiB"]
    )
    assert (c.server.host, c.server.port, c.server.workers) == ("0.0.0.0", 9000, 3)
    assert c.cache.dir == tmp_path / "c" and c.cache.size == 2 * GiB


def test_serve_flags_beat_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text("server: {port: 7000, workers: 2}\ncache: {size: 5GiB}")
    c = config_of(["--config", "h.yaml", "--port", "9000"], {"HOARD_CACHE__SIZE": "3GiB"})
    assert (c.server.port, c.server.workers, c.cache.size) == (9000, 2, 3 * GiB)


def test_serve_config_from_env_var(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text("server: {port: 7000}")
    assert config_of([], {"HOARD_CONFIG": "h.yaml"}).server.port == 7000


def test_root_and_mount_flags(tmp_path: Path) -> None:
    c = config_of(["--root", "data", "--mount", "/s3=s3://bucket/prefix", "--mount", "/nas=/mnt/nas"])
    assert c.mounts == (
        MountConfig("/", f"file://{tmp_path}/data"),
        MountConfig("/nas", "file:///mnt/nas"),
        MountConfig("/s3", "s3://bucket/prefix"),
    )
    assert config_of(["--root", "s3://b/root"]).mounts == (MountConfig("/", "s3://b/root"),)


def test_mount_flag_replaces_the_config_mount(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text(
        "mounts: [{path: /, uri: 'file:///srv'}, {path: /s3, uri: 's3://old', options: {region: x}}]"
    )
    c = config_of(["--config", "h.yaml", "--mount", "/s3=s3://new"])
    assert c.mounts == (MountConfig("/", "file:///srv"), MountConfig("/s3", "s3://new"))


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hoard serve` must stop before it starts a server."""
    monkeypatch.setattr("uvicorn.run", _never)
    monkeypatch.setattr("gateway.workers.run", _never)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cache-size", "10XB"], "config error: cache.size: '10XB' is not a size (use e.g. 10GiB)"),
        (["--mount", "/s3"], "config error: --mount: '/s3' is not /PATH=URI (e.g. /s3=s3://bucket/prefix)"),
        (["--mount", "s3=s3://b"], "config error: --mount: 's3' is not an absolute path (use '/s3')"),
        (["--mount", "/a=s3://b", "--mount", "/a=s3://c"], "config error: --mount: '/a' is given twice"),
        (["--config", "missing.yaml"], "no such config file"),
        (["--port", "70000"], "config error: server.port: 70000 is out of range"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], no_server: None
) -> None:
    assert cli.main(["serve", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert message in err


def test_bad_env_config_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_server: None
) -> None:
    monkeypatch.setenv("HOARD_SERVER__PORT", "http")
    assert cli.main(["serve"]) == 2
    assert (
        capsys.readouterr().err
        == "config error: server.port: 'http' is not an integer (from HOARD_SERVER__PORT)\n"
    )


@pytest.mark.parametrize(
    ("flag", "env", "key"),
    [("--cache-dir", None, "cache.dir"), (None, "HOARD_METASTORE__DIR", "metastore.dir")],
)
def test_a_directory_that_cannot_be_written_exits_2_before_the_banner(
    flag: str | None,
    env: str | None,
    key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_server: None,
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    unusable = tmp_path / "a-file" / "dir"
    if env is not None:
        monkeypatch.setenv(env, str(unusable))
    assert cli.main(["serve", *([flag, str(unusable)] if flag else [])]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"config error: {key}: cannot write to '{unusable}': Not a directory\n"


def test_the_directories_are_made_and_left_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    monkeypatch.setenv(RESOLVED_CONFIG_ENV, "")
    monkeypatch.setenv(cli.MULTIPROC_ENV, "")
    assert cli.main(["serve", "--cache-dir", str(tmp_path / "new" / "cache")]) == 0
    assert list((tmp_path / "new" / "cache").iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize(
    ("argv", "key", "private"),
    [
        (["--root", "{t}", "--cache-dir", "{t}/cache"], "cache.dir", "{t}/cache"),
        (["--root", "{t}/data", "--cache-dir", "{t}/data/x/cache"], "cache.dir", "{t}/data/x/cache"),
        (["--mount", "/m={t}/meta/sub"], "metastore.dir", "{t}/meta"),  # a mount inside it
    ],
)
def test_a_mount_that_would_serve_the_gateways_own_directories_exits_2(
    argv: list[str],
    key: str,
    private: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_server: None,
) -> None:
    monkeypatch.setenv("HOARD_METASTORE__DIR", str(tmp_path / "meta"))
    assert cli.main(["serve", *(a.format(t=tmp_path) for a in argv)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"config error: {key}: '{private.format(t=tmp_path)}' is inside the mount ")
    assert err.endswith("where S3 clients could read and change it; put it elsewhere\n")


def test_a_config_mount_that_cannot_be_opened_exits_2_before_the_banner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_server: None
) -> None:
    """An S3 mount with no credentials in its options or anywhere the SDK looks: a traceback from
    each worker after the banner, and with two workers an exit status of 0."""
    (tmp_path / "h.yaml").write_text(
        "mounts: [{path: /s3, uri: 's3://b/x', options: {endpoint_url: 'http://127.0.0.1:9'}}]"
    )
    assert cli.main(["serve", "--config", "h.yaml", "--workers", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "config error: mounts: '/s3' (s3://b/x): PermissionDenied: s3://b/x: Unable to locate credentials\n"
    )


def test_a_tls_pair_that_cannot_be_loaded_exits_2_before_the_banner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_server: None
) -> None:
    """Each worker's start-up failed on it, and with two workers uvicorn restarted them forever."""
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    (tmp_path / "h.yaml").write_text("server: {tls: {cert: cert.pem, key: key.pem}}")
    assert cli.main(["serve", "--config", "h.yaml", "--workers", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"config error: server.tls: cannot load '{tmp_path}/cert.pem' with ")


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("no server may be started")


def test_serve_runs_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[uvicorn.Config, Path]] = []
    monkeypatch.setattr("uvicorn.run", _never)  # several workers: a socket each (gateway/workers.py)
    monkeypatch.setattr("gateway.workers.run", lambda config, slots: calls.append((config, slots)))
    monkeypatch.setenv(RESOLVED_CONFIG_ENV, "")  # restored by monkeypatch after the test
    monkeypatch.setenv(cli.MULTIPROC_ENV, "")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")  # the mount's credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    assert cli.main(["serve", "--port", "9100", "--workers", "2", "--mount", "/s3=s3://b"]) == 0
    [(config, slots)] = calls
    assert (config.app, config.factory, config.host, config.port, config.workers) == (
        "gateway.app:app_from_env",
        True,
        "127.0.0.1",
        9100,
        2,
    )
    assert (config.loop, config.http, config.lifespan, config.access_log, config.server_header) == (
        "uvloop",
        "httptools",
        "on",
        False,
        False,
    )
    assert config.log_level == "warning" and config.ssl_certfile is None and config.ssl_keyfile is None
    assert slots == (tmp_path / "hoard-meta").resolve() / "workers"
    metrics_dir = Path(os.environ[cli.MULTIPROC_ENV])  # every worker's metrics, summed per scrape
    assert metrics_dir.is_dir() and metrics_dir.parent == (tmp_path / "hoard-meta").resolve()
    resolved = from_env(os.environ)
    assert resolved.server.port == 9100 and [m.path for m in resolved.mounts] == ["/", "/s3"]
    assert (tmp_path / "hoard-data").is_dir()  # the quick start's root is created
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9100 (2 workers)" in out
    assert "access key   hoard" in out and "secret key   hoard-secret-key" in out
    assert f"file://{tmp_path}/hoard-data" in out and "s3://b" in out


def test_startup_block_hides_configured_secrets(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("c")
    c = load(
        None,
        {
            "HOARD_AUTH__ACCESS_KEY": "ak",
            "HOARD_AUTH__SECRET_KEY": "very-secret",
            "HOARD_SERVER__HOST": "0.0.0.0",
            "HOARD_SERVER__TLS": "{cert: c.pem, key: c.pem}",
        },
    )
    block = cli.startup_block(c)
    assert "very-secret" not in block
    assert "access key   ak" in block
    assert "https://127.0.0.1:8080 (1 worker)" in block


def test_serve_passes_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = trustme.CA().issue_cert("127.0.0.1")  # a pair that loads: serve tries it first
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    (tmp_path / "h.yaml").write_text("server: {tls: {cert: c.pem, key: k.pem}}")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setenv(RESOLVED_CONFIG_ENV, "")
    assert cli.main(["serve", "--config", "h.yaml"]) == 0
    assert calls[0]["ssl_certfile"] == str(tmp_path / "c.pem")
    assert calls[0]["ssl_keyfile"] == str(tmp_path / "k.pem")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["serve", "--port", "x"]) == 2
    assert cli.main(["mount"]) == 2
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["load", "status"]) == 2
    capsys.readouterr()
    assert cli.main(["--version"]) == 0


# --- the admin client ----------------------------------------------------------------------------


def verify_sigv4(request: httpx.Request, secret_key: str) -> str:
    """An independent SigV4 check (what the gateway does): returns the access key or raises."""
    auth = request.headers["authorization"]
    m = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, "
        r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})",
        auth,
    )
    assert m, auth
    access_key, day, region, signed, signature = m.groups()
    body = request.content
    assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    pairs = sorted(
        (quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~"))
        for k, _, v in (p.partition("=") for p in request.url.query.decode().split("&") if p)
    )
    canonical = "\n".join(
        [
            request.method,
            quote(unquote(request.url.raw_path.decode().split("?")[0]), safe="/-_.~"),
            "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{h}:{request.headers[h].strip()}\n" for h in signed.split(";")),
            signed,
            request.headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            request.headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)
    assert region == "us-east-1"
    return access_key


Handler = Callable[[httpx.Request], httpx.Response]


class FakeGateway:
    """A MockTransport that checks every signature and answers from `routes`."""

    def __init__(self, secret_key: str = "hoard-secret-key") -> None:
        self.secret_key = secret_key
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Handler] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        verify_sigv4(request, self.secret_key)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"error": f"no route {request.method} {request.url.path}"})
        return handler(request)

    def client(self, endpoint: str = "http://gw:8080", access_key: str = "hoard") -> cli.AdminClient:
        return cli.AdminClient(
            endpoint, access_key, self.secret_key, transport=httpx.MockTransport(self.handle)
        )


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGateway]:
    fake = FakeGateway()
    transport = httpx.MockTransport(fake.handle)
    original = cli.AdminClient

    class Patched(original):  # type: ignore[valid-type,misc]
        def __init__(self, endpoint: str, access_key: str, secret_key: str, **kw: Any) -> None:
            super().__init__(endpoint, access_key, secret_key, transport=transport)

    monkeypatch.setattr(cli, "AdminClient", Patched)
    yield fake


MOUNTS = [
    {"path": "/", "uri": "file:///srv/data", "options": {}, "id": "aaa", "origin": "config"},
    {
        "path": "/s3",
        "uri": "s3://b/p",
        "options": {"region": "us-east-1", "secret_access_key": "****"},
        "id": "bbb",
        "origin": "runtime",
    },
]


def test_signed_requests_with_query_and_body() -> None:
    fake = FakeGateway()
    fake.routes[("DELETE", "/_hoard/v1/mounts")] = lambda r: httpx.Response(200, json={"removed": "/s3 x"})
    fake.routes[("POST", "/_hoard/v1/mounts")] = lambda r: httpx.Response(
        201, json={"mount": json.loads(r.content)}
    )
    with fake.client() as client:
        assert client.remove_mount("/s3 x/ü+&=") == {"removed": "/s3 x"}
        assert client.add_mount("/s3", "s3://b", {"region": "x"}) == {
            "path": "/s3",
            "uri": "s3://b",
            "options": {"region": "x"},
        }
    delete, post = fake.requests
    assert delete.url.params["path"] == "/s3 x/ü+&="
    assert post.headers["content-type"] == "application/json"


def test_wrong_secret_is_detectable() -> None:
    fake = FakeGateway()
    client = cli.AdminClient("http://gw", "hoard", "wrong", transport=httpx.MockTransport(fake.handle))
    with pytest.raises(AssertionError):
        client.info()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(400, json={"error": "'/s3' is already mounted (s3://b)"}),
            "'/s3' is already mounted (s3://b)",
        ),
        (
            httpx.Response(
                403,
                text="<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code><Message>nope</Message></Error>",
            ),
            "SignatureDoesNotMatch: nope",
        ),
        (httpx.Response(502, text="Bad gateway\nmore"), "Bad gateway"),
        (httpx.Response(500), "Internal Server Error"),
    ],
)
def test_errors(response: httpx.Response, message: str) -> None:
    fake = FakeGateway()
    fake.routes[("GET", "/_hoard/v1/info")] = lambda r: response
    with fake.client() as client, pytest.raises(cli.AdminError) as info:
        client.info()
    assert str(info.value) == message
    assert info.value.status == response.status_code


def test_unreachable_gateway() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = cli.AdminClient("http://gw:1", "a", "b", transport=httpx.MockTransport(refuse))
    with pytest.raises(cli.AdminError, match=r"^cannot reach Hoard at http://gw:1: connection refused$"):
        client.info()


def _args(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, ("http://127.0.0.1:8080", "hoard", "hoard-secret-key")),
        ([], {"HOARD_ENDPOINT": "http://e:1"}, ("http://e:1", "hoard", "hoard-secret-key")),
        (
            [],
            {
                "AWS_ACCESS_KEY_ID": "aws",
                "AWS_SECRET_ACCESS_KEY": "awss",
                "HOARD_ACCESS_KEY": "h",
                "HOARD_SECRET_KEY": "hs",
            },
            ("http://127.0.0.1:8080", "h", "hs"),
        ),
        (
            [],
            {"AWS_ACCESS_KEY_ID": "aws", "AWS_SECRET_ACCESS_KEY": "awss"},
            ("http://127.0.0.1:8080", "aws", "awss"),
        ),
        (
            ["--endpoint", "http://f:2", "--access-key", "k", "--secret-key", "s"],
            {"HOARD_ACCESS_KEY": "h"},
            ("http://f:2", "k", "s"),
        ),
    ],
)
def test_client_settings(argv: list[str], environ: dict[str, str], expected: tuple[str, str, str]) -> None:
    for args in (_args(*argv, "info"), _args("info", *argv)):  # options before or after the command
        client = cli.client_from_args(args, environ)
        assert (
            client.endpoint,
            client._signer.credentials.access_key,
            client._signer.credentials.secret_key,
        ) == expected
        client.close()


def test_mount_list_table(gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.routes[("GET", "/_hoard/v1/mounts")] = lambda r: httpx.Response(200, json={"mounts": MOUNTS})
    assert cli.main(["mount", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PATH", "URI", "ORIGIN", "ID", "OPTIONS"]
    assert lines[1].split() == ["/", "file:///srv/data", "config", "aaa"]
    assert lines[2].split() == [
        "/s3",
        "s3://b/p",
        "runtime",
        "bbb",
        "region=us-east-1,secret_access_key=****",
    ]
    assert cli.main(["mount", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"mounts": MOUNTS}


def test_mount_add_and_remove(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def add(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(201, json={"mount": {**body, "id": "x"}})

    gateway.routes[("POST", "/_hoard/v1/mounts")] = add
    gateway.routes[("DELETE", "/_hoard/v1/mounts")] = lambda r: httpx.Response(200, json={"removed": "/s3"})
    argv = ["mount", "add", "/s3", "s3://b/p", "--option", "region=eu", "--option", "s3a.secretKey=a=b"]
    assert cli.main(argv) == 0
    assert json.loads(gateway.requests[-1].content) == {
        "path": "/s3",
        "uri": "s3://b/p",
        "options": {"region": "eu", "s3a.secretKey": "a=b"},
    }
    assert capsys.readouterr().out == "mounted /s3 -> s3://b/p\n"
    assert cli.main(["mount", "add", "/nas", "nas-dir"]) == 0
    assert json.loads(gateway.requests[-1].content)["uri"] == f"file://{tmp_path}/nas-dir"
    capsys.readouterr()
    assert cli.main(["mount", "remove", "/s3"]) == 0
    assert gateway.requests[-1].url.params["path"] == "/s3"
    assert capsys.readouterr().out == "unmounted /s3\n"


def test_admin_error_exits_1(gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.routes[("POST", "/_hoard/v1/mounts")] = lambda r: httpx.Response(
        400, json={"error": "'/s3': cannot use s3://b: PermissionDenied: b: AccessDenied"}
    )
    assert cli.main(["mount", "add", "/s3", "s3://b"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "hoard: '/s3': cannot use s3://b: PermissionDenied: b: AccessDenied\n"
    assert cli.main(["mount", "add", "/s3", "s3://b", "--option", "novalue"]) == 2


@pytest.mark.parametrize(
    ("argv", "method", "path", "params", "body"),
    [
        (["info"], "GET", "/_hoard/v1/info", {}, None),
        (["load", "/s3/imagenet"], "POST", "/_hoard/v1/load", {}, {"path": "/s3/imagenet"}),
        (["load", "status", "/s3/x"], "GET", "/_hoard/v1/load", {"path": "/s3/x"}, None),
        (["load", "stop", "/s3/x"], "DELETE", "/_hoard/v1/load", {"path": "/s3/x"}, None),
        (["free", "/s3/x"], "POST", "/_hoard/v1/free", {}, {"path": "/s3/x"}),
        (["cache", "stats"], "GET", "/_hoard/v1/cache/stats", {}, None),
        (
            ["cache", "explain", "/s3/a/b.jpg"],
            "GET",
            "/_hoard/v1/cache/explain",
            {"path": "/s3/a/b.jpg"},
            None,
        ),
    ],
)
def test_json_commands(
    gateway: FakeGateway,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    method: str,
    path: str,
    params: dict[str, str],
    body: Any,
) -> None:
    gateway.routes[(method, path)] = lambda r: httpx.Response(200, json={"ok": True})
    assert cli.main(argv) == 0
    [request] = gateway.requests
    assert (request.method, request.url.path, dict(request.url.params)) == (method, path, params)
    assert (json.loads(request.content) if request.content else None) == body
    assert json.loads(capsys.readouterr().out) == {"ok": True}


def test_load_wait_polls_until_done(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter(
        [
            {"state": "running", "bytes_loaded": 0, "bytes_total": 4 * GiB},
            {"state": "running", "bytes_loaded": GiB, "bytes_total": 4 * GiB},
            {"state": "done", "bytes_loaded": 4 * GiB, "bytes_total": 4 * GiB},
        ]
    )
    gateway.routes[("POST", "/_hoard/v1/load")] = lambda r: httpx.Response(202, json={"state": "running"})
    gateway.routes[("GET", "/_hoard/v1/load")] = lambda r: httpx.Response(200, json=next(states))
    monkeypatch.setattr("gateway.cli.time.sleep", lambda s: None)
    assert cli.main(["load", "/s3/x", "--wait"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "done"
    assert " 25% 1 GiB / 4 GiB running" in err
    assert "100% 4 GiB / 4 GiB done" in err
