"""The S3 adapter's dialect options against a real S3 endpoint that checks what each one changes.

moto verifies no signatures, so the store under test is a Hoard gateway (`start_gateway`: a local
root and a bucket made here): it verifies SigV4 and SigV2 signatures and, with `server.domain`
set, routes virtual-hosted-style requests by their Host header. The adapters talk to it through
`ForwardProxy`, a plain-http forward proxy on loopback that passes each request on with every
header byte for byte (Host included) and records what it saw, so a test asserts what the option
put on the wire while the gateway's answers show it was accepted:

- `signature_version` s3v4 / s3 (SigV2): a subset of the conformance suite passes with each; a
  wrong secret or an unknown key is PermissionDenied with each (straight to the gateway).
- `region`: SigV4 with us-east-1 and eu-west-3, each in the credential scope.
- `addressing_style` virtual: `Host: <bucket>.s3.hoard.test:PORT` and paths without the bucket;
  path: the endpoint's Host and the bucket in the path; auto with an `endpoint_url`: path.
- `endpoint_url`: `http://127.0.0.1:PORT`, `http://s3.hoard.test:PORT`, and one with a path, which
  is kept in front of every request's path (signed by SigV4; SigV2 leaves it out and is refused).

The names under `s3.hoard.test` resolve nowhere and /etc/hosts stays as it is: botocore sends
every request to the proxy (`HTTP_PROXY` in the environment, read when the client is made).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials

from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, Gateway, start_gateway
from tests.ufs_adapters.conformance import CASES, Case, get, list_all, md5, put
from ufs_adapters.base import NotFound, PermissionDenied
from ufs_adapters.s3 import S3Adapter

DOMAIN = "s3.hoard.test"
IO_TIMEOUT = 15.0  # any one read or write of the proxy
IDLE_TIMEOUT = 60.0  # a kept-alive connection with nothing to do
SUBSET = [
    "put_get_roundtrip",
    "byte_ranges",
    "if_match_pins_the_version",
    "unicode_and_odd_keys",
    "copy_keeps_or_replaces_metadata",
    "delete_is_idempotent",
    "list_with_delimiter",
    "list_pagination",
    "multipart_full_cycle",
]
SUBSET_CASES = [c for c in CASES if c.__name__ in SUBSET]
assert len(SUBSET_CASES) == len(SUBSET)


# --- a recording forward proxy ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the proxy got it: `path` is what went on to the gateway (origin-form)."""

    method: str
    target: str
    path: str
    host: str
    authorization: str


class ForwardProxy:
    """A plain-http forward proxy on 127.0.0.1 for the gateway on `port`.

    It takes absolute-form requests (`GET http://b.s3.hoard.test:PORT/k HTTP/1.1`) for 127.0.0.1,
    `domain` or a name under it, on `port` only, and sends each to 127.0.0.1:`port` in origin-form
    (`GET /k HTTP/1.1`) with every header byte for byte as received, Host included. Request bodies
    must have a Content-Length (anything else is answered 502, as are other hosts). Responses are
    piped back unparsed, so 100-continue, keep-alive and HEAD need nothing special. Each client
    connection gets its own upstream connection; every read and write is bounded by a timeout, and
    `aclose` cancels whatever is still running.
    """

    def __init__(self, port: int, domain: str) -> None:
        self.port = port
        self.domain = domain
        self.seen: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def _allowed(self, target: str, host: str) -> bool:
        parts = urlsplit(target)
        name = parts.hostname or ""
        return (
            parts.scheme == "http"
            and parts.port == self.port
            and parts.netloc == host  # the Host header names what the request line names
            and (name in ("127.0.0.1", self.domain) or name.endswith("." + self.domain))
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        pipe: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, TimeoutError):
                    return
                request_line, _, rest = head.partition(b"\r\n")
                method, target, version = request_line.decode("latin-1").split(" ")
                headers: dict[str, str] = {}
                for line in rest.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                netloc = urlsplit(target).netloc
                path = target[len(f"http://{netloc}") :] or "/"
                host = headers.get("host", "")
                self.seen.append(Seen(method, target, path, host, headers.get("authorization", "")))
                if not self._allowed(target, host) or "transfer-encoding" in headers:
                    writer.write(
                        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
                    return
                if up_writer is None:
                    up_reader, up_writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port), IO_TIMEOUT
                    )
                    pipe = asyncio.create_task(self._pipe(up_reader, writer))
                    self._tasks.add(pipe)
                    pipe.add_done_callback(self._tasks.discard)
                up = up_writer
                assert up is not None
                up.write(f"{method} {path} {version}\r\n".encode("latin-1") + rest)
                remaining = int(headers.get("content-length", "0"))
                while remaining > 0:
                    chunk = await asyncio.wait_for(reader.read(min(remaining, 256 * 1024)), IO_TIMEOUT)
                    if not chunk:
                        return
                    up.write(chunk)
                    remaining -= len(chunk)
                    await asyncio.wait_for(up.drain(), IO_TIMEOUT)
                await asyncio.wait_for(up.drain(), IO_TIMEOUT)
        except (OSError, TimeoutError, ValueError):  # ValueError: a request line that is not one
            return
        finally:
            if pipe is not None:
                pipe.cancel()
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await asyncio.wait_for(src.read(256 * 1024), IDLE_TIMEOUT):
                dst.write(data)
                await asyncio.wait_for(dst.drain(), IO_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            dst.close()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("dialects-gw"), extra={"server": {"domain": DOMAIN}})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def port(gateway: Gateway) -> int:
    port = urlsplit(gateway.endpoint).port
    assert port is not None
    return port


@pytest.fixture(scope="module")
def bucket(gateway: Gateway) -> str:
    name = f"dialects-{uuid.uuid4().hex[:8]}"  # DNS-compatible: a virtual-hosted-style name
    gateway.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
async def proxy(port: int) -> AsyncIterator[tuple[ForwardProxy, str]]:
    fp = ForwardProxy(port, DOMAIN)
    url = await fp.start()
    yield fp, url
    await fp.aclose()


async def open_adapter(uri: str, options: dict[str, str], proxy_url: str | None) -> S3Adapter:
    """`S3Adapter.open`, with botocore's proxies taken from an environment holding just `proxy_url`
    (or no proxy at all): botocore reads HTTP_PROXY / NO_PROXY when it makes the client."""
    opts = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "max_attempts": "1", **options}
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
        ):
            mp.delenv(name, raising=False)
        if proxy_url is not None:
            mp.setenv("HTTP_PROXY", proxy_url)
        return await S3Adapter.open(uri, opts)


@dataclass(frozen=True)
class Dialect:
    id: str
    signature_version: str
    region: str
    addressing_style: str
    named_endpoint: bool  # http://s3.hoard.test:PORT rather than http://127.0.0.1:PORT

    def endpoint(self, port: int) -> str:
        return f"http://{DOMAIN if self.named_endpoint else '127.0.0.1'}:{port}"

    def options(self, port: int) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint(port),
            "region": self.region,
            "signature_version": self.signature_version,
            "addressing_style": self.addressing_style,
        }


DIALECTS = [
    Dialect("sigv4-us-east-1-path", "s3v4", "us-east-1", "path", named_endpoint=False),
    Dialect("sigv4-eu-west-3-path", "s3v4", "eu-west-3", "path", named_endpoint=False),
    Dialect("sigv2-path", "s3", "us-east-1", "path", named_endpoint=False),
    Dialect("sigv4-path-named-endpoint", "s3v4", "us-east-1", "path", named_endpoint=True),
    Dialect("sigv4-eu-west-3-virtual", "s3v4", "eu-west-3", "virtual", named_endpoint=True),
    Dialect("sigv2-virtual", "s3", "us-east-1", "virtual", named_endpoint=True),
]


@pytest.fixture(scope="module", params=DIALECTS, ids=lambda d: d.id)
async def dialect_adapter(
    request: pytest.FixtureRequest, proxy: tuple[ForwardProxy, str], port: int, bucket: str
) -> AsyncIterator[tuple[Dialect, S3Adapter]]:
    dialect: Dialect = request.param
    adapter = await open_adapter(f"s3://{bucket}", dialect.options(port), proxy[1])
    yield dialect, adapter
    await adapter.aclose()


def assert_on_the_wire(seen: list[Seen], dialect: Dialect, bucket: str, port: int) -> None:
    """Every request carried what the dialect's options say, and nothing else."""
    assert seen, "no request went through the proxy"
    endpoint_host = urlsplit(dialect.endpoint(port)).netloc
    for s in seen:
        if dialect.addressing_style == "virtual":
            assert s.host == f"{bucket}.{DOMAIN}:{port}", s
            assert not s.path.startswith(f"/{bucket}"), s
        else:
            assert s.host == endpoint_host, s
            assert s.path == f"/{bucket}" or s.path.startswith((f"/{bucket}/", f"/{bucket}?")), s
        if dialect.signature_version == "s3v4":
            assert s.authorization.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"), s
            assert f"/{dialect.region}/s3/aws4_request," in s.authorization, s
        else:
            assert s.authorization.startswith(f"AWS {ACCESS_KEY}:"), s


# --- the conformance subset, per dialect ------------------------------------------------------------


@pytest.mark.parametrize("case", SUBSET_CASES, ids=lambda c: c.__name__)
async def test_dialect_conformance(
    dialect_adapter: tuple[Dialect, S3Adapter],
    proxy: tuple[ForwardProxy, str],
    bucket: str,
    port: int,
    case: Case,
) -> None:
    dialect, opened = dialect_adapter
    fp = proxy[0]
    signed = opened.signed_get
    ufs = S3Adapter(opened.client, bucket, f"{dialect.id}/{uuid.uuid4().hex[:8]}", signed_get=signed)
    first = len(fp.seen)
    before = 0 if signed is None else signed.requests
    await case(ufs)
    assert_on_the_wire(fp.seen[first:], dialect, bucket, port)
    if dialect.signature_version == "s3v4":
        # GETs went out signed by botocore's signer without the SDK (s3_get.py), and the gateway,
        # which verifies every signature, took them all: a refused one would switch it off.
        assert signed is not None and signed.enabled
        reads = case.__name__ not in ("list_with_delimiter", "list_pagination")  # no GETs there
        assert (signed.requests > before) == reads
    else:
        assert signed is None  # SigV2 stores get every GET through the SDK


# --- wrong credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
async def test_wrong_secret_is_permission_denied(
    gateway: Gateway, bucket: str, signature_version: str
) -> None:
    """Straight to the gateway (no proxy): a bad signature is refused for each signature version,
    whatever the operation, and nothing is written."""
    base = {
        "endpoint_url": gateway.endpoint,
        "signature_version": signature_version,
        "addressing_style": "path",
    }
    good = await open_adapter(f"s3://{bucket}/wrong-{signature_version}", base, None)
    bad = await open_adapter(
        f"s3://{bucket}/wrong-{signature_version}", {**base, "secret_access_key": "not-the-secret"}, None
    )
    unknown = await open_adapter(
        f"s3://{bucket}/wrong-{signature_version}", {**base, "access_key_id": "nobody"}, None
    )
    try:
        await put(good, "there", b"there")
        for adapter in (bad, unknown):
            with pytest.raises(PermissionDenied):
                await adapter.stat("there")
            with pytest.raises(PermissionDenied):
                await get(adapter, "there")
            with pytest.raises(PermissionDenied):
                await put(adapter, "written", b"no")
            with pytest.raises(PermissionDenied):
                await list_all(adapter, "")
            with pytest.raises(PermissionDenied):
                await adapter.check()
        with pytest.raises(NotFound):
            await good.stat("written")
        assert await get(good, "there") == b"there"
        if signature_version == "s3v4":
            # The refused direct GETs handed each call to the SDK, which was refused too: the
            # store's answer, not a fault of the direct path, which stays on.
            assert good.signed_get is not None and good.signed_get.enabled
            assert bad.signed_get is not None and bad.signed_get.enabled and bad.signed_get.requests == 2
    finally:
        for adapter in (good, bad, unknown):
            await adapter.aclose()


# --- addressing_style auto --------------------------------------------------------------------------


@pytest.mark.parametrize("named_endpoint", [True, False], ids=["named", "ip"])
async def test_auto_addressing_is_path_with_an_endpoint(
    proxy: tuple[ForwardProxy, str], bucket: str, port: int, named_endpoint: bool
) -> None:
    """`auto` (the default) with an `endpoint_url` is path style, even for a DNS-compatible bucket
    on a named endpoint: botocore forces path style for any custom endpoint unless `virtual` is
    asked for. Hence `addressing_style: virtual` in the README for stores that want it (OSS, COS,
    TOS, BOS); without an endpoint (AWS itself) botocore picks virtual-hosted style."""
    fp, proxy_url = proxy
    dialect = Dialect("auto", "s3v4", "us-east-1", "path", named_endpoint)
    options = dialect.options(port)
    del options["addressing_style"]
    adapter = await open_adapter(f"s3://{bucket}/auto-{named_endpoint}", options, proxy_url)
    first = len(fp.seen)
    try:
        await put(adapter, "k", b"auto")
        assert await get(adapter, "k", 1, 3) == b"ut"
        assert await list_all(adapter, "") == (["k"], [])
        await adapter.check()
    finally:
        await adapter.aclose()
    assert_on_the_wire(fp.seen[first:], dialect, bucket, port)


# --- endpoint_url with a path -----------------------------------------------------------------------


async def test_endpoint_url_with_a_path(
    gateway: Gateway, proxy: tuple[ForwardProxy, str], bucket: str, port: int
) -> None:
    """An endpoint with a path (an S3 API published under `https://host/some/path`) keeps it in
    front of every path, and SigV4 signs it. The gateway serves S3 at its root, so with the endpoint
    `http://127.0.0.1:PORT/<bucket>` and the mount `s3://inner/p`, each request goes to
    `/<bucket>/inner/p/<key>`: the gateway's object `inner/p/<key>` of `<bucket>`. Object operations
    show it (a listing of `inner` would not: the gateway sees an object key there)."""
    fp, proxy_url = proxy
    options = {"endpoint_url": f"{gateway.endpoint}/{bucket}", "addressing_style": "path"}
    adapter = await open_adapter("s3://inner/p", options, proxy_url)
    direct = await open_adapter(f"s3://{bucket}", {"endpoint_url": gateway.endpoint}, None)
    first = len(fp.seen)
    try:
        data = b"behind a path" * 100
        info = await put(adapter, "k", data, content_type="text/plain")
        assert info.etag == md5(data)
        assert (await adapter.stat("k")).size == len(data)
        assert await get(adapter, "k", 7, 13) == data[7:13]
        seen = fp.seen[first:]
        # the gateway really holds it in `<bucket>` under `inner/p/`, as a plain client sees
        assert await get(direct, "inner/p/k") == data
        assert (await direct.stat("inner/p/k")).content_type == "text/plain"
        await adapter.delete("k")
        with pytest.raises(NotFound):
            await direct.stat("inner/p/k")
    finally:
        await adapter.aclose()
        await direct.aclose()
    assert seen and all(s.path.startswith(f"/{bucket}/inner/p/k") for s in seen), seen
    assert all(s.host == f"127.0.0.1:{port}" for s in seen), seen


async def test_sigv2_does_not_sign_the_endpoint_path(gateway: Gateway, bucket: str) -> None:
    """SigV2 is botocore's `HmacV1Auth`, which signs the operation's own path (`/inner/p/k`) and
    not the endpoint's path in front of it, so a store that checks the path as sent (this gateway,
    as S3 does) refuses it. With SigV2, an `endpoint_url` must have no path."""
    options = {
        "endpoint_url": f"{gateway.endpoint}/{bucket}",
        "signature_version": "s3",
        "addressing_style": "path",
    }
    adapter = await open_adapter("s3://inner/p", options, None)
    try:
        with pytest.raises(PermissionDenied, match="SignatureDoesNotMatch"):
            await put(adapter, "k", b"v2")
    finally:
        await adapter.aclose()


async def test_direct_get_refused_where_the_sdk_is_not_turns_itself_off(
    gateway: Gateway, bucket: str
) -> None:
    """A store that refuses the direct GET's request but answers the SDK's (here: the direct path
    signs with a wrong secret, which the gateway's SigV4 check refuses) gets the SDK's answer, and
    from then on every GET goes through the SDK."""
    adapter = await open_adapter(
        f"s3://{bucket}/refused", {"endpoint_url": gateway.endpoint, "addressing_style": "path"}, None
    )
    try:
        await put(adapter, "k", b"right bytes")
        signed = adapter.signed_get
        assert signed is not None and signed.enabled

        async def wrong_secret() -> Any:
            return Credentials(ACCESS_KEY, "not-the-secret").get_frozen_credentials()

        signed._credentials = wrong_secret  # type: ignore[method-assign]
        assert await get(adapter, "k") == b"right bytes"
        assert not signed.enabled and signed.requests == 1
        assert await get(adapter, "k", 6) == b"bytes"  # through the SDK now
        assert signed.requests == 1
    finally:
        await adapter.aclose()
