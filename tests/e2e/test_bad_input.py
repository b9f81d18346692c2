"""Bad input gets the right S3 error, never a 500 or a traceback, and nothing on disk changes."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, Gateway

# The cache's bookkeeping: a refused write is still logged for the other workers to forget the
# key (cache/invalidations.py), as the write's `finally` cannot tell a refusal from a failure.
_BOOKKEEPING = ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "invalidations.seq")


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under `root` with its MD5, but the metrics files, which change with
    every request (prometheus_client's multiprocess files, `<metastore>/prometheus`), and the
    cache index's."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.parent.name == "prometheus" and p.suffix == ".db":
            continue
        if p.parent.name == "cache" and p.name in _BOOKKEEPING:
            continue
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.md5(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root)) + "/"] = ""
    return out


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def signed(
    gw: Gateway, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Reply:
    """Send a correctly signed request with any path/body, bypassing boto3's validation. http.client
    sends the path exactly as given (httpx would normalise dot segments)."""
    url = gw.endpoint + path
    req = AWSRequest(
        method,
        url,
        data=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(headers or {})},
    )
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    host, port = gw.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(req.headers.items()))
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def _assert_s3_error(r: Reply | httpx.Response, code: str, status: int) -> None:
    assert r.status_code == status, r.text
    doc = etree.fromstring(r.content)
    assert doc.tag == "Error"
    assert doc.findtext("Code") == code
    assert doc.findtext("RequestId") == r.headers["x-amz-request-id"]
    assert doc.findtext("Message")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    from tests.e2e.conftest import start_gateway

    gateway = start_gateway(tmp_path_factory.mktemp("bad-input"))
    gateway.client().create_bucket(Bucket="victim")
    gateway.client().put_object(Bucket="victim", Key="keep", Body=b"keep")
    (gateway.data_dir.parent / "outside.txt").write_text("secret")
    yield gateway  # type: ignore[misc]
    gateway.stop()


@pytest.mark.parametrize(
    "key",
    [
        "../outside.txt",
        "a/../../outside.txt",
        "..",
        "a/./b",
        "a//b",
        "%2e%2e/outside.txt",
        ".hoard-tmp-x",
        "x/.hoard-uploads/y",
    ],
)
def test_traversal_keys_are_rejected(gw: Gateway, key: str) -> None:
    before = _snapshot(gw.data_dir.parent)
    path = f"/victim/{key}"
    for method, body in (("PUT", b"evil"), ("GET", b""), ("DELETE", b"")):
        r = signed(gw, method, path, body)
        assert r.status_code in (400, 404), (method, key, r.status_code, r.text)
        assert b"<Error>" in r.content
    assert _snapshot(gw.data_dir.parent) == before


def test_symlink_escape_is_rejected(gw: Gateway) -> None:
    link = gw.data_dir / "victim" / "link"
    link.symlink_to(gw.data_dir.parent)
    try:
        r = signed(gw, "GET", "/victim/link/outside.txt")
        assert r.status_code in (400, 403, 404) and b"secret" not in r.content
        r = signed(gw, "PUT", "/victim/link/new.txt", b"evil")
        assert r.status_code in (400, 403, 404)
        assert not (gw.data_dir.parent / "new.txt").exists()
    finally:
        link.unlink()


def test_malformed_xml(gw: Gateway) -> None:
    r = signed(gw, "POST", "/victim?delete", b"<Delete><Object><Key>keep</Key></Object>")
    _assert_s3_error(r, "MalformedXML", 400)
    r = signed(gw, "POST", "/victim/k?uploadId=nope", b"<nonsense/>")
    _assert_s3_error(r, "MalformedXML", 400)
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>'
    r = signed(gw, "POST", "/victim?delete", bomb)
    assert r.status_code in (200, 400)
    assert signed(gw, "GET", "/victim/keep").content == b"keep"


def test_bad_range_and_part_number(gw: Gateway) -> None:
    r = signed(gw, "GET", "/victim/keep", headers={"Range": "bytes=100-200"})
    _assert_s3_error(r, "InvalidRange", 416)
    assert r.headers["content-range"] == "bytes */4"
    r = signed(gw, "GET", "/victim/keep", headers={"Range": "bytes=garbage"})
    assert r.status_code == 200 and r.content == b"keep"
    r = signed(gw, "GET", "/victim/keep?partNumber=0")
    _assert_s3_error(r, "InvalidArgument", 400)


def test_key_too_long(gw: Gateway) -> None:
    r = signed(gw, "PUT", "/victim/" + "k" * 1025, b"x")
    _assert_s3_error(r, "KeyTooLongError", 400)


def test_wrong_payload_hash(gw: Gateway) -> None:
    url = gw.endpoint + "/victim/hash"
    # Signed for the body "xyz" (botocore puts its SHA-256 in x-amz-content-sha256), sent with "abc".
    req = AWSRequest("PUT", url, data=b"xyz")
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    r = httpx.put(url, content=b"abc", headers=dict(req.headers.items()))
    _assert_s3_error(r, "XAmzContentSHA256Mismatch", 400)
    assert signed(gw, "GET", "/victim/hash").status_code == 404


def test_skewed_clock(gw: Gateway) -> None:
    url = gw.endpoint + "/victim/keep"
    req = AWSRequest("GET", url, headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    headers = dict(req.headers.items())
    # Re-sign with a date 20 minutes in the past.
    import datetime as dt
    from unittest import mock

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    with mock.patch("botocore.auth.datetime.datetime") as clock:  # the client's clock, not the server's
        clock.now.return_value = past
        clock.utcnow.return_value = past.replace(tzinfo=None)
        clock.strptime = dt.datetime.strptime
        req = AWSRequest("GET", url, headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    r = httpx.get(url, headers=headers)
    _assert_s3_error(r, "RequestTimeTooSkewed", 403)


def _raw_put(gw: Gateway, path: str, declared: int, sent: bytes) -> None:
    """A signed PUT whose connection closes after `sent` bytes of a `declared`-byte body."""
    url = gw.endpoint + path
    req = AWSRequest(
        "PUT", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": str(declared)}
    )
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    host, port = gw.endpoint.removeprefix("http://").split(":")
    head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode() + sent)
        sock.shutdown(socket.SHUT_WR)
        try:
            sock.recv(65536)
        except OSError:
            pass


def test_truncated_body_leaves_nothing(gw: Gateway) -> None:
    before = _snapshot(gw.data_dir)
    _raw_put(gw, "/victim/truncated", 1_000_000, os.urandom(300_000))
    import time

    for _ in range(50):
        if _snapshot(gw.data_dir) == before:
            break
        time.sleep(0.1)
    assert _snapshot(gw.data_dir) == before
    assert signed(gw, "GET", "/victim/truncated").status_code == 404


def test_oversized_declared_body(gw: Gateway) -> None:
    r = signed(gw, "PUT", "/victim/huge", b"", headers={"x-amz-decoded-content-length": str(6 * 1024**3)})
    assert r.status_code == 400 and b"<Code>EntityTooLarge</Code>" in r.content


def test_anonymous_and_garbage_auth(gw: Gateway) -> None:
    _assert_s3_error(httpx.get(gw.endpoint + "/victim/keep"), "AccessDenied", 403)
    r = httpx.get(gw.endpoint + "/victim/keep", headers={"Authorization": "AWS4-HMAC-SHA256 garbage"})
    _assert_s3_error(r, "AuthorizationHeaderMalformed", 400)
    r = httpx.get(gw.endpoint + "/victim/keep?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x")
    _assert_s3_error(r, "AuthorizationQueryParametersError", 400)


METHODS = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"])
SEGMENT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
QUERY_KEYS = st.sampled_from(
    [
        "uploads",
        "uploadId",
        "partNumber",
        "list-type",
        "delete",
        "prefix",
        "max-keys",
        "continuation-token",
        "marker",
        "delimiter",
        "encoding-type",
        "location",
        "acl",
        "tagging",
        "versionId",
        "x",
        "start-after",
    ]
)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=METHODS,
    bucket=st.one_of(st.just("victim"), st.just("nosuch"), SEGMENT),
    key=st.lists(SEGMENT, max_size=3).map("/".join),
    query=st.dictionaries(
        QUERY_KEYS, st.one_of(st.just(""), SEGMENT, st.integers(-5, 20000).map(str)), max_size=3
    ),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "range",
                "content-md5",
                "x-amz-copy-source",
                "if-match",
                "if-modified-since",
                "content-type",
                "x-amz-checksum-crc32",
                "x-amz-metadata-directive",
                "x-amz-copy-source-range",
                "x-amz-meta-a",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
        max_size=3,
    ),
    body=st.binary(max_size=300),
)
def test_fuzz_never_500(
    gw: Gateway,
    method: str,
    bucket: str,
    key: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    from urllib.parse import quote, urlencode

    path = "/" + quote(bucket, safe="") + ("/" + quote(key, safe="/") if key else "")
    qs = urlencode(query, quote_via=quote)
    full = path + ("?" + qs if qs else "")
    r = signed(gw, method, full, body, headers)
    assert r.status_code < 500 or r.status_code in (501, 503), (method, full, headers, r.status_code, r.text)
    assert "Traceback" not in r.text
    assert "x-amz-request-id" in r.headers
    if r.status_code >= 400 and method != "HEAD":
        doc = etree.fromstring(r.content)
        assert doc.tag == "Error" and doc.findtext("Code") and doc.findtext("RequestId")
    # Nothing but a legitimate write to the victim bucket may change what is stored there.
    if bucket == "victim" and method in ("PUT", "POST", "DELETE"):
        signed(gw, "PUT", "/victim/keep", b"keep")
    else:
        assert signed(gw, "GET", "/victim/keep").content == b"keep"


def test_unique_request_ids(gw: Gateway) -> None:
    ids = {signed(gw, "GET", f"/victim/{uuid.uuid4().hex}").headers["x-amz-request-id"] for _ in range(20)}
    assert len(ids) == 20


def test_unknown_admin_paths_answer_s3_errors(gw: Gateway) -> None:
    r = httpx.get(gw.endpoint + "/_hoard/0")
    _assert_s3_error(r, "NoSuchKey", 404)
    r = httpx.put(gw.endpoint + "/_hoard/health")
    _assert_s3_error(r, "MethodNotAllowed", 405)


def test_an_error_before_the_body_leaves_the_connection_usable(gw: Gateway) -> None:
    """boto3 sends a PUT's body only after a 100 Continue. An error answered before the body was
    asked for must close the connection: the next request on it was read as that body (a 400
    without an S3 error, or a hang until the client's timeout)."""
    s3 = gw.client(read_timeout=10)
    s3.put_object(Bucket="victim", Key="held/below", Body=b"1")
    refused = [
        ("victim", "k" * 1100, "KeyTooLongError"),  # before the handler
        ("no-such-bucket", "k", "NoSuchBucket"),
        ("victim", "held", "XHoardInvalidObjectName"),  # the handler had the body, unread
    ]
    for body in (b"x", os.urandom(100_000)):
        for bucket, key, code in refused:
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
            assert exc.value.response["Error"]["Code"] == code
            assert s3.get_object(Bucket="victim", Key="keep")["Body"].read() == b"keep"
    # Asked for and sent, the body is read as usual, and the connection stays open.
    r = signed(gw, "PUT", "/victim/sent", b"abc", headers={"Expect": "100-continue"})
    assert r.status_code == 200 and "close" not in r.headers.get("connection", "")
