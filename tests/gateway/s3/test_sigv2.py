"""Signature Version 2 against AWS's published examples and against what botocore's HmacV1Auth and
HmacV1QueryAuth sign, through `SigV4Verifier.verify` as the endpoint calls it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any
from unittest.mock import patch
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from gateway.s3 import sigv2, sigv4
from gateway.s3.errors import S3Error, render
from gateway.s3.sigv4 import SigV4Verifier
from tests.gateway.s3.test_sigv4 import AK, CLIENT_CALLS, KEYS, NOW, SECRETS, SK, Wire, capture, wire_from

UNSIGNED = sigv4.UNSIGNED_PAYLOAD
VHOST = ".hoard.test"


def http_date(when: datetime) -> str:
    return formatdate(when.timestamp(), usegmt=True)


def sign(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    when: datetime = NOW,
    secret: str = SK,
    auth_path: str | None = None,
) -> Wire:
    """Sign with botocore's HmacV1Auth at `when` (it sets the Date header itself)."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    request.auth_path = auth_path
    with patch.object(HmacV1Auth, "_get_date", return_value=http_date(when)):
        HmacV1Auth(Credentials(AK, secret)).add_auth(request)
    prepared = request.prepare()
    return wire_from(method, prepared.url, prepared.headers, body)


def presign(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    send: dict[str, str] | None = None,
    when: datetime = NOW,
    expires: int = 3600,
    secret: str = SK,
) -> Wire:
    """A URL presigned with botocore's HmacV1QueryAuth at `when`, fetched with only `send` headers:
    the signer moves the headers it signed (x-amz-*, Content-Type, Content-MD5) into the URL."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    expires_at = str(int(when.timestamp()) + expires)
    with patch.object(HmacV1QueryAuth, "_get_date", return_value=expires_at):
        HmacV1QueryAuth(Credentials(AK, secret), expires=expires).add_auth(request)
    return wire_from(method, request.prepare().url, send or {})


def verifier(vhost_suffix: str | None = None) -> SigV4Verifier:
    return SigV4Verifier(SECRETS.get, vhost_suffix=vhost_suffix)


def rejects(wire: Wire, code: str, now: datetime = NOW, vhost_suffix: str | None = None) -> S3Error:
    with pytest.raises(S3Error) as caught:
        wire.verify(now, verifier(vhost_suffix))
    assert caught.value.code == code, caught.value.message
    render(caught.value, "req-1")  # every error must render as XML
    return caught.value


def hand_signed(wire: Wire, string_to_sign: str, secret: str = SK) -> Wire:
    """`wire` with an Authorization header over `string_to_sign`, for forms botocore does not make."""
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return wire.with_headers(authorization=f"AWS {AK}:{base64.b64encode(digest).decode()}")


# -- AWS's published examples (RESTAuthentication.html) --------------------------------------------

AWS_HOST = "johnsmith.s3.amazonaws.com"


def doc_request(method: str, target: str, headers: dict[str, str], signature: str | None = None) -> Wire:
    path, _, query = target.partition("?")
    if signature is not None:
        headers = {**headers, "authorization": f"AWS {AK}:{signature}"}
    return Wire(method, path, query, headers)


DOC_EXAMPLES = {
    "object-get": (
        doc_request(
            "GET",
            "/photos/puppy.jpg",
            {"host": AWS_HOST, "date": "Tue, 27 Mar 2007 19:36:42 +0000"},
            "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
        ),
        datetime(2007, 3, 27, 19, 36, 42, tzinfo=UTC),
    ),
    "object-put": (
        doc_request(
            "PUT",
            "/photos/puppy.jpg",
            {
                "host": AWS_HOST,
                "content-type": "image/jpeg",
                "content-length": "94328",
                "date": "Tue, 27 Mar 2007 21:15:45 +0000",
            },
            "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
        ),
        datetime(2007, 3, 27, 21, 15, 45, tzinfo=UTC),
    ),
    "list": (
        doc_request(
            "GET",
            "/?prefix=photos&max-keys=50&marker=puppy",
            {"user-agent": "Mozilla/5.0", "host": AWS_HOST, "date": "Tue, 27 Mar 2007 19:42:41 +0000"},
            "htDYFYduRNen8P9ZfE/s9SuKy0U=",
        ),
        datetime(2007, 3, 27, 19, 42, 41, tzinfo=UTC),
    ),
    "fetch-acl": (
        doc_request(
            "GET",
            "/?acl",
            {"host": AWS_HOST, "date": "Tue, 27 Mar 2007 19:44:46 +0000"},
            "c2WLPFtWHVgbEmeEG93a4cG37dM=",
        ),
        datetime(2007, 3, 27, 19, 44, 46, tzinfo=UTC),
    ),
    "delete-path-style-with-x-amz-date": (
        doc_request(
            "DELETE",
            "/johnsmith/photos/puppy.jpg",
            {
                "user-agent": "dotnet",
                "host": "s3.amazonaws.com",
                "date": "Tue, 27 Mar 2007 21:20:27 +0000",
                "x-amz-date": "Tue, 27 Mar 2007 21:20:26 +0000",
            },
            "lx3byBScXR6KzyMaifNkardMwNk=",
        ),
        datetime(2007, 3, 27, 21, 20, 26, tzinfo=UTC),
    ),
    "query-string": (
        doc_request(
            "GET",
            f"/photos/puppy.jpg?AWSAccessKeyId={AK}&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620",
            {"host": AWS_HOST},
        ),
        datetime(2007, 3, 27, 19, 36, 42, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize("name", DOC_EXAMPLES)
def test_aws_documentation_examples_verify(name: str) -> None:
    wire, when = DOC_EXAMPLES[name]
    assert wire.verify(when, verifier(".s3.amazonaws.com")) == sigv4.AuthResult(AK, UNSIGNED)
    # Path-style addressing is what the verifier assumes without a domain: /photos/puppy.jpg is then
    # another resource than the one signed.
    if wire.headers["host"] == AWS_HOST:
        rejects(wire, "SignatureDoesNotMatch", when)


def test_aws_documentation_upload_to_a_cname_bucket() -> None:
    # The bucket is the whole Host (static.johnsmith.net), which Hoard does not route; the signing
    # functions take it as any bucket. Repeated x-amz-meta-reviewedby headers arrive joined by ",".
    headers = {
        "user-agent": "curl/7.15.5",
        "host": "static.johnsmith.net:8080",
        "date": "Tue, 27 Mar 2007 21:06:08 +0000",
        "x-amz-acl": "public-read",
        "content-type": "application/x-download",
        "content-md5": "4gJE4saaMU4BqNR0kLY+lw==",
        "x-amz-meta-reviewedby": "joe@johnsmith.net,jane@johnsmith.net",
        "x-amz-meta-filechecksum": "0x02661779",
        "x-amz-meta-checksumalgorithm": "crc32",
        "content-disposition": "attachment; filename=database.dat",
        "content-encoding": "gzip",
        "content-length": "5913339",
        "authorization": f"AWS {AK}:ilyl83RwaSoYIEdixDQcA4OnAnc=",
    }
    expected = (
        "PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\n"
        "x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\n"
        "x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n/static.johnsmith.net/db-backup.dat.gz"
    )
    bucket = "static.johnsmith.net"
    assert sigv2.string_to_sign("PUT", "/db-backup.dat.gz", "", headers, bucket=bucket) == expected
    when = datetime(2007, 3, 27, 21, 6, 8, tzinfo=UTC)
    args = ("PUT", "/db-backup.dat.gz", "", headers, SECRETS.get, when)
    assert sigv2.verify_header(*args, bucket=bucket) == AK
    with pytest.raises(S3Error, match="signature"):
        sigv2.verify_header(*args, bucket="static.johnsmith.org")


# -- StringToSign ----------------------------------------------------------------------------------


def test_string_to_sign_layout() -> None:
    headers = {
        "host": "hoard.test",
        "date": "D",
        "content-type": "text/plain",
        "content-md5": "MD5",
        "x-amz-meta-b": "2",
        "x-amz-meta-a": " 1,3 ",
        "x-amz-copy-source": "/b/src",
        "x-not-amz": "ignored",
        "user-agent": "ignored",
    }
    query = "uploadId=u%201+2&partNumber=2&list-type=2&x-id=UploadPart&response-content-type=text%2Fplain&acl"
    assert sigv2.string_to_sign("PUT", "/b/a%20key", query, headers) == (
        "PUT\nMD5\ntext/plain\nD\n"
        "x-amz-copy-source:/b/src\nx-amz-meta-a:1,3\nx-amz-meta-b:2\n"
        "/b/a%20key?acl&partNumber=2&response-content-type=text/plain&uploadId=u 1 2"
    )


@pytest.mark.parametrize(
    ("path", "query", "bucket", "resource"),
    [
        ("", "", None, "/"),
        ("/", "", None, "/"),
        ("/bkt", "", None, "/bkt/"),  # S3 signs a bucket as /bucket/
        ("/bkt/", "", None, "/bkt/"),
        ("/bkt/a%2Fb/./c", "", None, "/bkt/a%2Fb/./c"),  # as sent: not decoded, not normalised
        ("/", "", "bkt", "/bkt/"),
        ("/k", "uploads", "bkt", "/bkt/k?uploads"),
        ("/b/k", "versionId=&tagging", None, "/b/k?tagging&versionId="),
        ("/b/k", "versions&versioning&versionId=1", None, "/b/k?versionId=1&versioning&versions"),
        ("/b/k", "%61cl", None, "/b/k?acl"),  # names are matched decoded, as the endpoint reads them
        ("/b/k", "prefix=a&max-keys=2&encoding-type=url", None, "/b/k"),
    ],
)
def test_canonical_resource(path: str, query: str, bucket: str | None, resource: str) -> None:
    assert sigv2.canonical_resource(path, query, bucket=bucket) == resource


def test_amz_headers_of_query_authentication_include_x_amz_parameters() -> None:
    headers = {"x-amz-meta-a": "1", "host": "h"}
    query = "X-Amz-Security-Token=t%2Bk&x-amz-meta-a=2&x-amz-acl=private&AWSAccessKeyId=k"
    assert sigv2.canonical_amz_headers(headers) == "x-amz-meta-a:1\n"
    assert sigv2.canonical_amz_headers(headers, query) == (
        "x-amz-acl:private\nx-amz-meta-a:1,2\nx-amz-security-token:t+k\n"
    )


def test_folded_header_values_are_unfolded() -> None:
    assert sigv2.canonical_amz_headers({"x-amz-meta-a": "one\r\n  two"}) == "x-amz-meta-a:one two\n"


def test_virtual_host_bucket() -> None:
    assert sigv2.virtual_host_bucket("bkt.hoard.test:8080", VHOST) == "bkt"
    assert sigv2.virtual_host_bucket("BKT.Hoard.Test", VHOST) == "bkt"
    assert sigv2.virtual_host_bucket("hoard.test", VHOST) is None
    assert sigv2.virtual_host_bucket("bkt.other.test", VHOST) is None
    assert sigv2.virtual_host_bucket("bkt.hoard.test", None) is None


# -- requests signed by botocore's HmacV1Auth ---------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_botocore_signed_keys_verify(key: str) -> None:
    wire = sign("GET", f"http://hoard.test:8080/bucket/{quote(key, safe='/~')}")
    assert wire.headers["authorization"].startswith(f"AWS {AK}:")
    assert wire.verify() == sigv4.AuthResult(AK, UNSIGNED)


@pytest.mark.parametrize(
    "query",
    [
        "uploads",
        "uploadId=abc&partNumber=3",
        "uploadId=u%2B1%20%C3%BC&partNumber=3&x-id=UploadPart",
        "tagging",
        "acl",
        "delete",
        "location",
        "versioning",
        "versionId=v%2F1",
        "list-type=2&prefix=a%20b%2Bc&delimiter=%2F",
        "response-content-type=text%2Fplain%3B%20charset%3Dutf-8"
        "&response-content-disposition=attachment%3B%20filename%3D%22%C3%BC%20x.txt%22"
        "&response-cache-control=no-cache&response-expires=Thu%2C%2001%20Dec%201994%2016%3A00%3A00%20GMT"
        "&response-content-language=de&response-content-encoding=gzip",
    ],
)
def test_botocore_signed_sub_resources_verify(query: str) -> None:
    wire = sign("GET", f"http://hoard.test/bucket/a%20key?{query}")
    assert wire.verify().access_key == AK


def test_signed_headers_and_body_hash() -> None:
    headers = {
        "Content-Type": "text/plain",
        "Content-MD5": "XUFAKrxLKna5cZ2REBfFkg==",
        "x-amz-meta-owner": "alice",
        "x-amz-content-sha256": hashlib.sha256(b"hello").hexdigest(),
    }
    wire = sign("PUT", "http://hoard.test/bucket/key", headers, b"hello")
    # V2 does not sign the body: the hash the client sent (signed as an amz header) is the one to check.
    assert wire.verify() == sigv4.AuthResult(AK, headers["x-amz-content-sha256"])


@pytest.mark.parametrize(
    ("content_sha256", "outcome"),
    [
        (sigv4.STREAMING_UNSIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER),
        (UNSIGNED, UNSIGNED),
        (sigv4.STREAMING_PAYLOAD, None),  # chunk signatures need a SigV4 seed signature
        ("not-a-hash", None),
    ],
)
def test_content_sha256_markers(content_sha256: str, outcome: str | None) -> None:
    wire = sign("PUT", "http://hoard.test/bucket/key", {"x-amz-content-sha256": content_sha256})
    if outcome is None:
        rejects(wire, "InvalidRequest" if content_sha256.startswith("STREAMING") else "InvalidArgument")
    else:
        assert wire.verify() == sigv4.AuthResult(AK, outcome)


def test_bucket_path_is_signed_with_a_slash_but_may_be_sent_without() -> None:
    sent = sign("GET", "http://hoard.test/bucket?list-type=2", auth_path="/bucket/")
    assert sent.path == "/bucket"
    assert sent.verify().access_key == AK
    # A client that signs the path exactly as sent is accepted too.
    assert sign("GET", "http://hoard.test/bucket?acl").verify().access_key == AK
    assert sign("GET", "http://hoard.test/bucket/").verify().access_key == AK


def test_virtual_hosted_style_signs_the_bucket() -> None:
    wire = sign("GET", "http://bkt.hoard.test/dir/a%20key?uploadId=u1", auth_path="/bkt/dir/a%20key")
    assert wire.verify(verifier=verifier(VHOST)).access_key == AK
    rejects(wire, "SignatureDoesNotMatch")  # without the domain it is path style: bucket "dir"
    listing = sign("GET", "http://bkt.hoard.test/?prefix=a", auth_path="/bkt/")
    assert listing.verify(verifier=verifier(VHOST)).access_key == AK
    # The bucket comes from the Host header: a request replayed against another bucket fails.
    rejects(listing.with_headers(host="other.hoard.test"), "SignatureDoesNotMatch", vhost_suffix=VHOST)
    path_style = sign("GET", "http://hoard.test/bkt/k")
    assert path_style.verify(verifier=verifier(VHOST)).access_key == AK


@pytest.mark.parametrize("form", ["empty-date", "date-header", "x-amz-date-as-date"])
def test_x_amz_date_in_each_form_signers_use(form: str) -> None:
    old = http_date(NOW - timedelta(hours=2))  # a Date the client could not set: only x-amz-date counts
    wire = Wire("GET", "/b/k", "", {"host": "h", "date": old, "x-amz-date": http_date(NOW)})
    string_to_sign = {
        "empty-date": f"GET\n\n\n\nx-amz-date:{http_date(NOW)}\n/b/k",
        "date-header": f"GET\n\n\n{old}\nx-amz-date:{http_date(NOW)}\n/b/k",
        "x-amz-date-as-date": f"GET\n\n\n{http_date(NOW)}\n/b/k",
    }[form]
    signed = hand_signed(wire, string_to_sign)
    assert signed.verify().access_key == AK
    err = rejects(signed, "RequestTimeTooSkewed", NOW + timedelta(minutes=16))
    assert err.extra["RequestTime"] == http_date(NOW)


def test_botocore_signs_the_date_header_beside_x_amz_date() -> None:
    wire = sign("GET", "http://hoard.test/b/k", {"x-amz-date": http_date(NOW)})
    assert "date" in wire.headers
    assert wire.verify().access_key == AK


def test_x_amz_date_in_iso_form() -> None:
    wire = Wire("GET", "/b/k", "", {"host": "h", "x-amz-date": "20260301T120000Z"})
    assert hand_signed(wire, "GET\n\n\n\nx-amz-date:20260301T120000Z\n/b/k").verify().access_key == AK


# -- tampering and refusals -------------------------------------------------------------------------

BASE_URL = "http://hoard.test/bucket/some%20key.bin?partNumber=1&uploadId=xyz"


@pytest.fixture
def signed_put() -> Wire:
    headers = {
        "x-amz-meta-owner": "alice",
        "Content-Type": "text/plain",
        "Content-MD5": "MNgC+dGnS8kVvgCLLp6P9w==",
    }
    return sign("PUT", BASE_URL, headers, b"payload")


def _without(wire: Wire, name: str) -> Wire:
    return replace(wire, headers={k: v for k, v in wire.headers.items() if k != name})


@pytest.mark.parametrize(
    "tamper",
    [
        lambda w: replace(w, method="POST"),
        lambda w: replace(w, path="/bucket/some%20key.bim"),
        lambda w: replace(w, path="/bucket/some+key.bin"),
        lambda w: replace(w, path="/bucket/some%20Key.bin"),
        lambda w: replace(w, path="/other/some%20key.bin"),
        lambda w: replace(w, query="partNumber=2&uploadId=xyz"),
        lambda w: replace(w, query="partNumber=1&uploadId=xyZ"),
        lambda w: replace(w, query="partNumber=1"),
        lambda w: replace(w, query=w.query + "&versionId=1"),
        lambda w: replace(w, query=w.query + "&acl"),
        lambda w: w.with_headers(x_amz_meta_owner="mallory"),
        lambda w: w.with_headers(x_amz_acl="public-read"),
        lambda w: w.with_headers(content_type="text/html"),
        lambda w: w.with_headers(content_md5="1B2M2Y8AsgTpgAmY7PhCfg=="),
        lambda w: w.with_headers(date=http_date(NOW + timedelta(seconds=1))),
        lambda w: _without(w, "content-type"),
        lambda w: _without(w, "content-md5"),
        lambda w: w.with_headers(authorization=w.headers["authorization"][:-2] + "A="),
        lambda w: w.with_headers(authorization=w.headers["authorization"][:-1] + "é"),
        lambda w: w.with_headers(authorization=w.headers["authorization"] + "AA"),
    ],
)
def test_tampered_requests_do_not_match(signed_put: Wire, tamper: Any) -> None:
    assert signed_put.verify().access_key == AK
    tampered = tamper(signed_put)
    err = rejects(tampered, "SignatureDoesNotMatch")
    assert err.status == 403
    assert err.extra["AWSAccessKeyId"] == AK
    assert err.extra["StringToSign"].startswith(f"{tampered.method}\n")
    assert bytes.fromhex(err.extra["StringToSignBytes"]).decode() == err.extra["StringToSign"]
    assert err.extra["SignatureProvided"] == tampered.headers["authorization"].partition(":")[2]


def test_what_v2_does_not_sign_may_change(signed_put: Wire) -> None:
    # As in S3: the Host header (path style), query parameters that are not sub-resources, and the
    # body (unless Content-MD5 or x-amz-content-sha256 pin it, checked as the body is read).
    assert signed_put.with_headers(host="elsewhere.test").verify().access_key == AK
    assert replace(signed_put, query=signed_put.query + "&x-id=UploadPart").verify().access_key == AK
    assert replace(signed_put, query="uploadId=xyz&partNumber=1").verify().access_key == AK


def test_string_to_sign_in_the_error_shows_what_was_expected(signed_put: Wire) -> None:
    err = rejects(signed_put.with_headers(x_amz_meta_owner="m\x01allory"), "SignatureDoesNotMatch")
    assert err.extra["StringToSign"] == (
        f"PUT\nMNgC+dGnS8kVvgCLLp6P9w==\ntext/plain\n{http_date(NOW)}\n"
        "x-amz-meta-owner:m\x01allory\n/bucket/some%20key.bin?partNumber=1&uploadId=xyz"
    )
    assert " 0a 78 2d 61 6d 7a 2d " in err.extra["StringToSignBytes"]  # "\nx-amz-"
    assert b"x-amz-meta-owner:m\\x01allory\n/bucket/" in render(err, "req-1")


def test_wrong_secret() -> None:
    rejects(sign("GET", "http://hoard.test/b/k", secret="not-the-secret"), "SignatureDoesNotMatch")


def test_unknown_access_key(signed_put: Wire) -> None:
    wire = signed_put.with_headers(authorization=signed_put.headers["authorization"].replace(AK, "NOSUCHKEY"))
    assert rejects(wire, "InvalidAccessKeyId").extra == {"AWSAccessKeyId": "NOSUCHKEY"}


@pytest.mark.parametrize("authorization", ["AWS ", f"AWS {AK}", f"AWS {AK}:", "AWS :c2ln"])
def test_malformed_authorization(authorization: str) -> None:
    wire = Wire("GET", "/b/k", "", {"host": "h", "date": http_date(NOW), "authorization": authorization})
    err = rejects(wire, "InvalidArgument")
    assert err.extra["ArgumentName"] == "Authorization"


@pytest.mark.parametrize(("minutes", "ok"), [(-14, True), (14, True), (-16, False), (16, False)])
def test_clock_skew(signed_put: Wire, minutes: int, ok: bool) -> None:
    now = NOW + timedelta(minutes=minutes)
    if ok:
        assert signed_put.verify(now).access_key == AK
    else:
        err = rejects(signed_put, "RequestTimeTooSkewed", now)
        assert err.extra["RequestTime"] == http_date(NOW)
        assert err.extra["MaxAllowedSkewMilliseconds"] == "900000"


def test_missing_or_invalid_date(signed_put: Wire) -> None:
    message = "AWS authentication requires a valid Date or x-amz-date header"
    assert rejects(_without(signed_put, "date"), "AccessDenied").message == message
    assert rejects(signed_put.with_headers(date="yesterday"), "AccessDenied").message == message
    assert rejects(signed_put.with_headers(x_amz_date="soon"), "AccessDenied").message == message


def test_header_and_query_authentication_together(signed_put: Wire) -> None:
    wire = replace(signed_put, query=signed_put.query + f"&AWSAccessKeyId={AK}&Signature=x&Expires=1")
    rejects(wire, "InvalidArgument")


# -- presigned URLs (HmacV1QueryAuth) -----------------------------------------------------------------


def test_presigned_url_verifies_until_it_expires() -> None:
    wire = presign("GET", "http://hoard.test/bucket/a%20key?versionId=3", expires=3600)
    assert "AWSAccessKeyId=" in wire.query and "Expires=" in wire.query
    assert wire.verify() == sigv4.AuthResult(AK, UNSIGNED)
    assert wire.verify(NOW + timedelta(seconds=3600)).access_key == AK
    assert wire.verify(NOW - timedelta(days=30)).access_key == AK  # V2 URLs only have an end
    err = rejects(wire, "AccessDenied", NOW + timedelta(seconds=3601))
    assert err.message == "Request has expired"
    assert err.extra == {"Expires": "2026-03-01T13:00:00Z", "ServerTime": "2026-03-01T13:00:01Z"}


@pytest.mark.parametrize("key", ["a b/c+d=e&f.bin", "ünïcødé/ключ/鍵.parquet", "plus+plus", "~!$'()*,;:@"])
def test_presigned_keys_with_response_overrides(key: str) -> None:
    query = (
        "response-content-disposition=attachment%3B%20filename%3D%22%C3%BC%2Bx.txt%22"
        "&response-content-type=text%2Fplain"
    )
    wire = presign("GET", f"http://hoard.test/bucket/{quote(key, safe='/~')}?{query}")
    assert wire.verify().access_key == AK
    changed = wire.query.replace("text%2Fplain", "text%2Fhtml")
    rejects(replace(wire, query=changed), "SignatureDoesNotMatch")


def test_presigned_url_carries_signed_amz_headers_in_its_query() -> None:
    wire = presign(
        "PUT",
        "http://hoard.test/bucket/k",
        {"x-amz-acl": "public-read", "Content-Type": "text/plain"},
        send={"Content-Type": "text/plain"},
    )
    assert "x-amz-acl=public-read" in wire.query and "content-type=text%2Fplain" in wire.query
    assert wire.verify().access_key == AK
    rejects(replace(wire, query=wire.query.replace("public-read", "private")), "SignatureDoesNotMatch")
    # Headers are what S3 acts on, so Content-Type must be sent as signed, and an x-amz-* header
    # added by whoever holds the URL breaks the signature.
    rejects(_without(wire, "content-type"), "SignatureDoesNotMatch")
    rejects(wire.with_headers(content_type="text/html"), "SignatureDoesNotMatch")
    rejects(wire.with_headers(x_amz_acl="private"), "SignatureDoesNotMatch")
    rejects(wire.with_headers(x_amz_meta_a="1"), "SignatureDoesNotMatch")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda q: q.replace("versionId=3", "versionId=4"), "SignatureDoesNotMatch"),
        (lambda q: q + "&uploads", "SignatureDoesNotMatch"),
        (lambda q: q + "&response-content-type=text%2Fhtml", "SignatureDoesNotMatch"),
        (lambda q: q.replace("Expires=", "Expires=1"), "SignatureDoesNotMatch"),
        (lambda q: q.replace("Expires=", "Expires=x"), "AccessDenied"),
        (lambda q: q.replace("Expires=", "Foo="), "AccessDenied"),
        (lambda q: q.replace("Signature=", "Foo="), "AccessDenied"),
        (lambda q: q.replace(f"AWSAccessKeyId={AK}", "AWSAccessKeyId=NOSUCHKEY"), "InvalidAccessKeyId"),
        (lambda q: q.replace(f"AWSAccessKeyId={AK}", "AWSAccessKeyId=OTHERKEY"), "SignatureDoesNotMatch"),
        (lambda q: q.replace(f"AWSAccessKeyId={AK}&", ""), "AccessDenied"),
    ],
)
def test_tampered_presigned_urls(change: Any, code: str) -> None:
    wire = presign("GET", "http://hoard.test/bucket/a%20key?versionId=3")
    rejects(replace(wire, query=change(wire.query)), code)


def test_tampered_presigned_path_and_method() -> None:
    wire = presign("GET", "http://hoard.test/bucket/a%20key")
    rejects(replace(wire, path="/bucket/a+key"), "SignatureDoesNotMatch")
    rejects(replace(wire, method="DELETE"), "SignatureDoesNotMatch")
    rejects(presign("GET", "http://hoard.test/b/k", secret="nope"), "SignatureDoesNotMatch")


def test_presigned_signature_with_an_unencoded_plus() -> None:
    for i in range(50):  # find a signature with a "+" in it
        wire = presign("GET", f"http://hoard.test/bucket/k{i}")
        if "%2B" in wire.query:
            break
    else:
        pytest.fail("no signature with a + among 50")
    assert replace(wire, query=wire.query.replace("%2B", "+")).verify().access_key == AK


def test_invalid_expires_message() -> None:
    wire = Wire("GET", "/b/k", f"AWSAccessKeyId={AK}&Signature=x&Expires=-5", {"host": "h"})
    assert rejects(wire, "AccessDenied").message == "Invalid date (should be seconds since epoch): -5"


# -- boto3 and botocore clients ----------------------------------------------------------------------


def _client(signature_version: str | None, addressing_style: str) -> Any:
    config = Config(s3={"addressing_style": addressing_style}, signature_version=signature_version)
    return boto3.client(
        "s3",
        endpoint_url="http://hoard.test:8080",
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=config,
    )


PRESIGN_CALLS = [
    (
        "get_object",
        {
            "Bucket": "bkt",
            "Key": "dir/ünï cødé+1.txt",
            "ResponseContentType": "text/plain; charset=utf-8",
            "ResponseContentDisposition": 'attachment; filename="a b+c.txt"',
            "ResponseCacheControl": "no-cache",
        },
        {},
    ),
    ("head_object", {"Bucket": "bkt", "Key": "a b/c"}, {}),
    (
        "put_object",
        {"Bucket": "bkt", "Key": "k", "ContentType": "text/plain"},
        {"content-type": "text/plain"},
    ),
    ("upload_part", {"Bucket": "bkt", "Key": "big file", "UploadId": "u 1+2", "PartNumber": 3}, {}),
    ("list_objects", {"Bucket": "bkt", "Prefix": "a b"}, {}),
    ("list_objects_v2", {"Bucket": "bkt", "Prefix": "ü"}, {}),
    ("delete_object", {"Bucket": "bkt", "Key": "gone"}, {}),
]
_METHODS = {"put_object": "PUT", "upload_part": "PUT", "delete_object": "DELETE", "head_object": "HEAD"}


@pytest.mark.parametrize("addressing_style", ["path", "virtual"])
@pytest.mark.parametrize("signature_version", ["s3", None])
@pytest.mark.parametrize(("operation", "params", "send"), PRESIGN_CALLS, ids=[c[0] for c in PRESIGN_CALLS])
def test_boto3_presigned_urls_verify(
    signature_version: str | None,
    addressing_style: str,
    operation: str,
    params: dict[str, Any],
    send: dict[str, str],
) -> None:
    client = _client(signature_version, addressing_style)
    url = client.generate_presigned_url(operation, Params=params, ExpiresIn=300)
    if signature_version == "s3":
        assert "AWSAccessKeyId=" in url
    assert (urlsplit(url).hostname == "bkt.hoard.test") == (addressing_style == "virtual")
    wire = wire_from(_METHODS.get(operation, "GET"), url, send)
    now = datetime.now(UTC)
    assert wire.verify(now, verifier(VHOST)).access_key == AK
    assert rejects(wire, "AccessDenied", now + timedelta(seconds=301), VHOST).message == "Request has expired"


V2_CALLS = [
    *CLIENT_CALLS,
    ("get_object", {"Bucket": "b", "Key": "k", "ResponseContentType": "text/plain", "VersionId": "v+1"}),
    ("list_multipart_uploads", {"Bucket": "b", "Prefix": "p"}),
    ("abort_multipart_upload", {"Bucket": "b", "Key": "big file", "UploadId": "u1"}),
    ("put_object_tagging", {"Bucket": "b", "Key": "k", "Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}}),
    ("get_bucket_location", {"Bucket": "b"}),
]


@pytest.mark.parametrize(
    ("endpoint", "addressing_style"),
    [
        ("http://127.0.0.1:9000", "path"),
        ("https://hoard.test", "path"),
        ("http://hoard.test:8080", "virtual"),
    ],
)
@pytest.mark.parametrize(
    ("operation", "params"), V2_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(V2_CALLS)]
)
def test_requests_from_a_botocore_client_signing_v2_verify(
    endpoint: str, addressing_style: str, operation: str, params: dict[str, Any]
) -> None:
    wire = capture(endpoint, operation, signature_version="s3", addressing_style=addressing_style, **params)
    assert wire.headers["authorization"].startswith(f"AWS {AK}:")
    now = datetime.now(UTC)
    result = wire.verify(now, verifier(VHOST))
    assert result == sigv4.AuthResult(AK, wire.headers.get("x-amz-content-sha256", UNSIGNED))
    with pytest.raises(S3Error):
        SigV4Verifier({AK: "wrong"}.get, vhost_suffix=VHOST).verify(
            wire.method, wire.path, wire.query, wire.headers, now
        )
