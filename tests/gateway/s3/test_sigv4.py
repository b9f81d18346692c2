"""sigv4.verify against AWS's published examples and against requests botocore itself signs."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch
from urllib.parse import quote, urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import sigv4
from gateway.s3.errors import S3Error, render
from gateway.s3.sigv4 import SigV4Verifier

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EMPTY = sigv4.EMPTY_SHA256
SECRETS = {AK: SK, "OTHERKEY": "other-secret"}


@dataclass
class Wire:
    """A request as the ASGI endpoint sees it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    url: str = field(default="", repr=False)

    def verify(self, now: datetime = NOW, verifier: SigV4Verifier | None = None) -> sigv4.AuthResult:
        verifier = verifier or SigV4Verifier(SECRETS.get)
        return verifier.verify(self.method, self.path, self.query, self.headers, now)

    def with_headers(self, **changes: str) -> Wire:
        return replace(self, headers={**self.headers, **{k.replace("_", "-"): v for k, v in changes.items()}})


def wire_from(method: str, url: str, headers: Any, body: bytes = b"") -> Wire:
    """As the endpoint will: header bytes through header_dict, path and query as sent."""
    parts = urlsplit(url)
    raw = [(k.encode(), v if isinstance(v, bytes) else v.encode("latin-1")) for k, v in headers.items()]
    lowered = sigv4.header_dict(raw)
    lowered.setdefault("host", parts.netloc)
    return Wire(method, parts.path, parts.query, lowered, body, url)


def sign(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    when: datetime = NOW,
    presign: int | None = None,
    secret: str = SK,
    region: str = "us-east-1",
    context: dict[str, Any] | None = None,
) -> Wire:
    """Sign with botocore's own S3 signers, at `when`."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    request.context.update(context or {})
    credentials = Credentials(AK, secret)
    signer = (
        S3SigV4Auth(credentials, "s3", region)
        if presign is None
        else S3SigV4QueryAuth(credentials, "s3", region, expires=presign)
    )
    with patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    prepared = request.prepare()
    return wire_from(method, prepared.url, prepared.headers, body)


def raises(wire: Wire, code: str, now: datetime = NOW) -> S3Error:
    with pytest.raises(S3Error) as caught:
        wire.verify(now)
    assert caught.value.code == code, caught.value.message
    render(caught.value, "req-1")  # every error must render as XML
    return caught.value


# -- AWS's published examples (sig-v4-header-based-auth.html, sigv4-query-string-auth.html) ------

DOC_HOST = "examplebucket.s3.amazonaws.com"


def doc_header_request(
    method: str, path: str, query: str, extra: dict[str, str], signed: str, signature: str
) -> Wire:
    headers = {"host": DOC_HOST, "x-amz-date": "20130524T000000Z", **extra}
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed},Signature={signature}"
    )
    return Wire(method, path, query, headers)


DOC_EXAMPLES = {
    "get-object": doc_header_request(
        "GET",
        "/test.txt",
        "",
        {"range": "bytes=0-9", "x-amz-content-sha256": EMPTY},
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    "put-object": doc_header_request(
        "PUT",
        "/test%24file.text",
        "",
        {
            "date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        },
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    "list-objects": doc_header_request(
        "GET",
        "/",
        "max-keys=2&prefix=J",
        {"x-amz-content-sha256": EMPTY},
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
    "presigned-get": Wire(
        "GET",
        "/test.txt",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        {"host": DOC_HOST},
    ),
}


@pytest.mark.parametrize("name", DOC_EXAMPLES)
def test_aws_documentation_examples_verify(name: str) -> None:
    result = DOC_EXAMPLES[name].verify(DOC_TIME)
    assert result.access_key == AK
    assert result.chunk_signer is None


def test_documentation_put_verifies_with_the_key_encoded_differently() -> None:
    # `$` sent as is: S3 signs UriEncode("test$file.text") = test%24file.text either way.
    assert replace(DOC_EXAMPLES["put-object"], path="/test$file.text").verify(DOC_TIME).access_key == AK
    assert replace(DOC_EXAMPLES["put-object"], path="/test%24file%2etext").verify(DOC_TIME).access_key == AK


def test_documentation_list_verifies_with_the_query_in_any_order() -> None:
    assert (
        replace(DOC_EXAMPLES["list-objects"], query="prefix=J&max-keys=2").verify(DOC_TIME).access_key == AK
    )


def test_documentation_presigned_url_expires_after_a_day() -> None:
    example = DOC_EXAMPLES["presigned-get"]
    assert example.verify(DOC_TIME + timedelta(seconds=86400)).payload_hash == sigv4.UNSIGNED_PAYLOAD
    err = raises(example, "AccessDenied", DOC_TIME + timedelta(seconds=86401))
    assert err.message == "Request has expired"
    assert err.extra["X-Amz-Expires"] == "86400"


def test_streaming_seed_signature_of_the_documentation_example() -> None:
    # sigv4-streaming.html: PUT examplebucket/chunkObject.txt in 64 KiB chunks.
    wire = doc_header_request(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        {
            "content-encoding": "aws-chunked",
            "content-length": "66824",
            "x-amz-content-sha256": sigv4.STREAMING_PAYLOAD,
            "x-amz-decoded-content-length": "66560",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
        },
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    )
    wire.headers["host"] = "s3.amazonaws.com"
    result = wire.verify(DOC_TIME)
    assert result.payload_hash == sigv4.STREAMING_PAYLOAD
    assert result.streaming
    signer = result.chunk_signer
    assert signer is not None
    assert signer.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert signer.scope == "20130524/us-east-1/s3/aws4_request"
    assert signer.amz_date == "20130524T000000Z"
    assert signer.signing_key == sigv4.derive_signing_key(SK, "20130524", "us-east-1")
    assert SK not in repr(signer)


# -- requests signed by botocore -----------------------------------------------------------------

KEYS = [
    "plain.txt",
    "a b/c+d=e&f.bin",
    "ünïcødé/ключ/鍵.parquet",
    "~tilde!$'()*,;:@[]",
    "percent%2Fnot-a-slash%",
    "dots/../and/./double//slash",
    "trailing/",
    "control\x01\x7fchars",
]


@pytest.mark.parametrize("key", KEYS)
def test_botocore_signed_keys_verify(key: str) -> None:
    url = f"http://hoard.test:8080/bucket/{quote(key, safe='/~')}"
    wire = sign("GET", url)
    assert wire.verify() == sigv4.AuthResult(AK, EMPTY)


@pytest.mark.parametrize(
    "query",
    [
        "list-type=2&prefix=a%20b%2Bc&delimiter=%2F",
        "uploads",
        "uploadId=abc&partNumber=3",
        "tagging=&versionId=v1",
        "prefix=%C3%BC&prefix=a",
        "max-keys=10&start-after=%7E%21%2A",
    ],
)
def test_botocore_signed_queries_verify(query: str) -> None:
    assert sign("GET", f"http://hoard.test/bucket/key?{query}").verify().access_key == AK


@settings(max_examples=60, deadline=None)
@given(
    key=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    value=st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
)
def test_any_key_and_query_value_botocore_signs_verifies(key: str, value: str) -> None:
    url = f"https://hoard.test/bucket/{quote(key, safe='/~')}?prefix={quote(value, safe='~')}&list-type=2"
    assert sign("GET", url).verify().access_key == AK


@pytest.mark.parametrize(
    ("sent", "signed"),
    [
        ("/bucket/a!b'c(d)e*f", "/bucket/a%21b%27c%28d%29e%2Af"),  # sub-delims left unencoded
        ("/bucket/%c3%bc", "/bucket/%C3%BC"),  # lower-case hex
        ("/bucket/%7Etilde%2Dx", "/bucket/~tilde-x"),  # unreserved characters encoded
        ("/bucket/%C3%BC", "/bucket/%C3%BC"),
    ],
)
def test_paths_encoded_differently_from_what_was_signed_verify(sent: str, signed: str) -> None:
    wire = sign("GET", f"http://hoard.test{signed}")
    assert replace(wire, path=sent).verify().access_key == AK


def test_query_sent_with_plus_for_space_verifies() -> None:
    wire = sign("GET", "http://hoard.test/bucket?prefix=a%20b&list-type=2")
    assert replace(wire, query="prefix=a+b&list-type=2").verify().access_key == AK


def test_a_client_that_signs_the_path_exactly_as_sent_verifies() -> None:
    # S3SigV4Auth signs urlsplit(url).path verbatim: here with `+` and a lower-case escape.
    wire = sign("GET", "http://hoard.test/bucket/a+b%c3%bc")
    assert wire.path == "/bucket/a+b%c3%bc"
    assert wire.verify().access_key == AK


def test_date_header_instead_of_x_amz_date() -> None:
    wire = sign("GET", "http://hoard.test/bucket/key", {"Date": "placeholder"})
    assert "x-amz-date" not in wire.headers
    assert wire.verify().access_key == AK
    raises(wire, "RequestTimeTooSkewed", NOW + timedelta(minutes=16))


def test_unsigned_payload_over_https() -> None:
    wire = sign(
        "PUT",
        "https://hoard.test/bucket/key",
        {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
        b"",
        context={"client_config": Config(s3={"payload_signing_enabled": False})},
    )
    assert wire.headers["x-amz-content-sha256"] == sigv4.UNSIGNED_PAYLOAD
    assert wire.verify() == sigv4.AuthResult(AK, sigv4.UNSIGNED_PAYLOAD)


def test_signed_body_hash_is_returned_for_the_body_check() -> None:
    wire = sign("PUT", "http://hoard.test/bucket/key", {}, b"hello")
    assert wire.verify().payload_hash == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_any_region_in_the_scope_is_accepted() -> None:
    wire = sign("GET", "http://hoard.test/bucket/key", region="ap-southeast-7")
    assert "ap-southeast-7/s3/aws4_request" in wire.headers["authorization"]
    assert wire.verify().access_key == AK


def test_anonymous_request_has_no_access_key() -> None:
    wire = Wire("GET", "/bucket/key", "list-type=2", {"host": "hoard.test"})
    assert wire.verify() == sigv4.AuthResult(None, sigv4.UNSIGNED_PAYLOAD)
    assert wire.with_headers(x_amz_content_sha256=EMPTY).verify() == sigv4.AuthResult(None, EMPTY)
    unsigned_trailer = wire.with_headers(x_amz_content_sha256=sigv4.STREAMING_UNSIGNED_TRAILER)
    assert unsigned_trailer.verify().payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER
    raises(wire.with_headers(x_amz_content_sha256=sigv4.STREAMING_PAYLOAD), "InvalidRequest")


def test_signing_keys_are_cached_and_the_cache_is_bounded() -> None:
    calls: list[str] = []

    def secret_for(key: str) -> str | None:
        calls.append(key)
        return SECRETS.get(key)

    verifier = SigV4Verifier(secret_for, key_cache_size=1)
    east = sign("GET", "http://hoard.test/b/k", region="us-east-1")
    west = sign("GET", "http://hoard.test/b/k", region="us-west-2")
    for wire in (east, west, east, west):  # evicting each other must not confuse them
        assert wire.verify(verifier=verifier).access_key == AK
    assert calls == [AK] * 4
    assert len(verifier._keys) == 1


# -- tampering -------------------------------------------------------------------------------------

BASE_URL = "http://hoard.test/bucket/some%20key.bin?partNumber=1&uploadId=xyz"


@pytest.fixture
def signed_put() -> Wire:
    return sign("PUT", BASE_URL, {"x-amz-meta-owner": "alice", "Content-Type": "text/plain"}, b"payload")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda w: replace(w, method="POST"),
        lambda w: replace(w, path="/bucket/some%20key.bim"),
        lambda w: replace(w, path="/bucket/some+key.bin"),
        lambda w: replace(w, path="/other/some%20key.bin"),
        lambda w: replace(w, query="partNumber=2&uploadId=xyz"),
        lambda w: replace(w, query=w.query + "&versionId=1"),
        lambda w: replace(w, query="partNumber=1"),
        lambda w: w.with_headers(x_amz_meta_owner="mallory"),
        lambda w: w.with_headers(content_type="text/html"),
        lambda w: w.with_headers(host="evil.test"),
        lambda w: w.with_headers(x_amz_content_sha256=EMPTY),
        lambda w: w.with_headers(x_amz_content_sha256=sigv4.UNSIGNED_PAYLOAD),
        lambda w: w.with_headers(authorization=w.headers["authorization"][:-1] + "0"),
        lambda w: w.with_headers(authorization=w.headers["authorization"][:-1] + "é"),
        lambda w: w.with_headers(authorization=w.headers["authorization"] + "00"),
        lambda w: replace(w, headers={k: v for k, v in w.headers.items() if k != "content-type"}),
    ],
)
def test_tampered_requests_do_not_match(signed_put: Wire, tamper: Any) -> None:
    assert signed_put.verify().access_key == AK
    err = raises(tamper(signed_put), "SignatureDoesNotMatch")
    assert err.status == 403
    assert err.extra["AWSAccessKeyId"] == AK
    assert err.extra["CanonicalRequest"].startswith(tamper(signed_put).method)


def test_whitespace_in_header_values_is_canonicalised(signed_put: Wire) -> None:
    assert signed_put.with_headers(x_amz_meta_owner="  alice ").verify().access_key == AK


def test_wrong_secret() -> None:
    raises(sign("GET", "http://hoard.test/b/k", secret="not-the-secret"), "SignatureDoesNotMatch")


def test_unknown_access_key(signed_put: Wire) -> None:
    err = raises(
        signed_put.with_headers(authorization=signed_put.headers["authorization"].replace(AK, "NOSUCHKEY")),
        "InvalidAccessKeyId",
    )
    assert err.extra == {"AWSAccessKeyId": "NOSUCHKEY"}


def test_unsigned_amz_header_is_refused(signed_put: Wire) -> None:
    err = raises(signed_put.with_headers(x_amz_copy_source="/bucket/secret"), "AccessDenied")
    assert err.extra == {"HeadersNotSigned": "x-amz-copy-source"}


@pytest.mark.parametrize(("minutes", "ok"), [(-14, True), (14, True), (-16, False), (16, False)])
def test_clock_skew(signed_put: Wire, minutes: int, ok: bool) -> None:
    now = NOW + timedelta(minutes=minutes)
    if ok:
        assert signed_put.verify(now).access_key == AK
    else:
        err = raises(signed_put, "RequestTimeTooSkewed", now)
        assert err.extra["RequestTime"] == "20260301T120000Z"


def test_naive_now_is_utc(signed_put: Wire) -> None:
    assert signed_put.verify(NOW.replace(tzinfo=None)).access_key == AK


# -- malformed requests ----------------------------------------------------------------------------

SCOPE = f"{AK}/20260301/us-east-1/s3/aws4_request"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("AWS4-HMAC-SHA256 Credential=abc", "AuthorizationHeaderMalformed"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host", "AuthorizationHeaderMalformed"),
        (
            "AWS4-HMAC-SHA256 Credential=AK/2026/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            "AuthorizationHeaderMalformed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20260301/us-east-1/s3, SignedHeaders=host, Signature=0",
            "AuthorizationHeaderMalformed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20260301/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
            "AuthorizationHeaderMalformed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20260301/us-east-1/s3/aws5_request, SignedHeaders=host, Signature=0",
            "AuthorizationHeaderMalformed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20260302/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            "AuthorizationHeaderMalformed",
        ),
        (f"AWS {AK}", "InvalidArgument"),  # Signature Version 2 (test_sigv2.py), malformed
        (f"AWS {AK}:frJIUN8DYpKDtOLCwo//yllqDzg=", "SignatureDoesNotMatch"),
        (f"AWS4-ECDSA-P256-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature=0", "InvalidRequest"),
        ("Bearer token", "InvalidArgument"),
    ],
)
def test_malformed_authorization_header(authorization: str, code: str) -> None:
    headers = {"host": "hoard.test", "x-amz-date": "20260301T120000Z", "x-amz-content-sha256": EMPTY}
    raises(Wire("GET", "/b/k", "", {**headers, "authorization": authorization}), code)


def test_missing_or_invalid_content_sha256(signed_put: Wire) -> None:
    missing = replace(
        signed_put, headers={k: v for k, v in signed_put.headers.items() if k != "x-amz-content-sha256"}
    )
    assert raises(missing, "InvalidRequest").message.endswith("x-amz-content-sha256")
    raises(signed_put.with_headers(x_amz_content_sha256="abc"), "InvalidArgument")


def test_missing_or_invalid_date(signed_put: Wire) -> None:
    raises(signed_put.with_headers(x_amz_date="2026-03-01T12:00:00Z"), "AccessDenied")
    raises(signed_put.with_headers(x_amz_date="20261301T120000Z"), "AccessDenied")
    no_date = replace(signed_put, headers={k: v for k, v in signed_put.headers.items() if k != "x-amz-date"})
    raises(no_date, "AccessDenied")
    raises(no_date.with_headers(date="yesterday"), "AccessDenied")


def test_header_and_query_authentication_together(signed_put: Wire) -> None:
    raises(replace(signed_put, query=signed_put.query + "&X-Amz-Signature=00"), "InvalidArgument")


def test_signature_v2_presigned_url_is_verified_as_such() -> None:
    # Signature Version 2 has its own tests (test_sigv2.py); here only that it is routed there.
    wire = Wire("GET", "/b/k", f"AWSAccessKeyId={AK}&Expires=1700000000&Signature=abc%3D", {"host": "h"})
    assert raises(wire, "AccessDenied").message == "Request has expired"


def test_control_characters_in_a_signed_header_still_render_as_xml(signed_put: Wire) -> None:
    err = raises(signed_put.with_headers(x_amz_meta_owner="al\x01ice"), "SignatureDoesNotMatch")
    assert "x-amz-meta-owner:al\x01ice" in err.extra["CanonicalRequest"]  # render() escapes it
    body = render(err, "req-1")
    assert b"<Code>SignatureDoesNotMatch</Code>" in body
    assert b"x-amz-meta-owner:al\\x01ice" in body


# -- presigned URLs --------------------------------------------------------------------------------


def test_presigned_url_verifies_until_it_expires() -> None:
    wire = sign("GET", "http://hoard.test/bucket/a%20key?versionId=3", presign=3600)
    assert "X-Amz-Signature=" in wire.query
    assert wire.verify() == sigv4.AuthResult(AK, sigv4.UNSIGNED_PAYLOAD)
    assert wire.verify(NOW + timedelta(seconds=3600)).access_key == AK
    assert raises(wire, "AccessDenied", NOW + timedelta(seconds=3601)).message == "Request has expired"
    assert raises(wire, "AccessDenied", NOW - timedelta(minutes=16)).message == "Request is not valid yet"


def test_presigned_put_keeps_the_clients_body_hash() -> None:
    wire = sign("PUT", "http://hoard.test/bucket/k", presign=60).with_headers(x_amz_content_sha256=EMPTY)
    assert wire.verify() == sigv4.AuthResult(AK, EMPTY)


def test_presigned_url_may_carry_unsigned_checksum_headers_but_not_others() -> None:
    wire = sign("PUT", "http://hoard.test/bucket/k", presign=60)
    assert wire.with_headers(x_amz_checksum_crc32="AAAAAA==", x_amz_sdk_checksum_algorithm="CRC32").verify()
    err = raises(wire.with_headers(x_amz_acl="public-read"), "AccessDenied")
    assert err.extra == {"HeadersNotSigned": "x-amz-acl"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda q: q.replace("versionId=3", "versionId=4"), "SignatureDoesNotMatch"),
        (lambda q: q + "&response-content-type=text%2Fhtml", "SignatureDoesNotMatch"),
        (lambda q: q.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"), "SignatureDoesNotMatch"),
        (
            lambda q: q.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801"),
            "AuthorizationQueryParametersError",
        ),
        (lambda q: q.replace("X-Amz-Expires=3600", "X-Amz-Expires=-1"), "AuthorizationQueryParametersError"),
        (
            lambda q: q.replace("X-Amz-Expires=3600", "X-Amz-Expires=soon"),
            "AuthorizationQueryParametersError",
        ),
        (
            lambda q: q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
            "AuthorizationQueryParametersError",
        ),
        (
            lambda q: q.replace("X-Amz-Date=20260301T120000Z", "X-Amz-Date=2026"),
            "AuthorizationQueryParametersError",
        ),
        (
            lambda q: q.replace("X-Amz-Date=20260301T120000Z", "X-Amz-Date=20260302T120000Z"),
            "AuthorizationQueryParametersError",
        ),
        (lambda q: q.replace("X-Amz-Date=20260301T120000Z&", ""), "AuthorizationQueryParametersError"),
        (lambda q: q.replace(AK, "NOSUCHKEY"), "InvalidAccessKeyId"),
        (lambda q: q.replace("%2Fs3%2F", "%2Fsqs%2F"), "AuthorizationQueryParametersError"),
    ],
)
def test_tampered_presigned_urls(change: Any, code: str) -> None:
    wire = sign("GET", "http://hoard.test/bucket/a%20key?versionId=3", presign=3600)
    raises(replace(wire, query=change(wire.query)), code)


def test_presigned_url_of_exactly_a_week_is_accepted() -> None:
    wire = sign("GET", "http://hoard.test/bucket/key", presign=604800)
    assert wire.verify().access_key == AK


# -- requests captured from a real botocore client ---------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


_REPLIES = {
    "CreateMultipartUpload": b"<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>",
    "CompleteMultipartUpload": b"<CompleteMultipartUploadResult><ETag>e</ETag></CompleteMultipartUploadResult>",
    "CopyObject": b"<CopyObjectResult><ETag>e</ETag></CopyObjectResult>",
    "GetBucketLocation": b"<LocationConstraint/>",
}


def capture(
    endpoint: str,
    operation: str,
    *,
    signature_version: str | None = None,
    addressing_style: str = "path",
    **params: Any,
) -> Wire:
    """The request botocore's S3 client sends for one call, read off the wire before it leaves."""
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(
            s3={"addressing_style": addressing_style},
            retries={"max_attempts": 1},
            signature_version=signature_version,
        ),
    )
    captured: list[Wire] = []

    def before_send(request: Any, **_: Any) -> Any:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        captured.append(wire_from(request.method, request.url, request.headers, body or b""))
        name = request.context.get("operation_name") or ""
        return AWSResponse(request.url, 200, HTTPHeaders(), _Raw(_REPLIES.get(name, b"")))

    client.meta.events.register("before-send.s3", before_send)
    client.meta.events.register(
        "before-call.s3",
        lambda model, context, **_: context.update(operation_name=model.name),
    )
    getattr(client, operation)(**params)
    (wire,) = captured
    return wire


CLIENT_CALLS = [
    ("put_object", {"Bucket": "b", "Key": "dir/ünï cødé+1.txt", "Body": b"hello world"}),
    ("get_object", {"Bucket": "b", "Key": "a b/c", "Range": "bytes=0-9"}),
    ("head_object", {"Bucket": "b", "Key": "~!$&'()*+,;=:@"}),
    ("list_objects_v2", {"Bucket": "b", "Prefix": "a b+c/ü", "Delimiter": "/", "StartAfter": "x~y"}),
    ("list_objects", {"Bucket": "b", "Marker": "m&n=o"}),
    ("create_multipart_upload", {"Bucket": "b", "Key": "big file"}),
    (
        "upload_part",
        {"Bucket": "b", "Key": "big file", "UploadId": "u 1", "PartNumber": 2, "Body": b"x" * 100},
    ),
    (
        "complete_multipart_upload",
        {
            "Bucket": "b",
            "Key": "big file",
            "UploadId": "u1",
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"e"'}]},
        },
    ),
    ("copy_object", {"Bucket": "b", "Key": "dst key", "CopySource": {"Bucket": "b", "Key": "src ü+key"}}),
    ("delete_objects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b c"}]}}),
    ("delete_object", {"Bucket": "b", "Key": "gone/now"}),
]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://hoard.example.com"])
@pytest.mark.parametrize(("operation", "params"), CLIENT_CALLS, ids=[c[0] for c in CLIENT_CALLS])
def test_requests_from_the_botocore_client_verify(
    endpoint: str, operation: str, params: dict[str, Any]
) -> None:
    wire = capture(endpoint, operation, **params)
    result = wire.verify(datetime.now(UTC))
    assert result.access_key == AK
    assert result.payload_hash == wire.headers["x-amz-content-sha256"]
    with pytest.raises(S3Error):
        SigV4Verifier({AK: "wrong"}.get).verify(
            wire.method, wire.path, wire.query, wire.headers, datetime.now(UTC)
        )


def test_put_over_https_streams_an_unsigned_trailer() -> None:
    wire = capture("https://hoard.example.com", "put_object", Bucket="b", Key="k", Body=b"hello")
    assert wire.headers["x-amz-content-sha256"] == sigv4.STREAMING_UNSIGNED_TRAILER
    assert wire.headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert wire.verify(datetime.now(UTC)).payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER


@pytest.mark.parametrize("method", ["get_object", "put_object"])
def test_presigned_urls_from_the_botocore_client_verify(method: str) -> None:
    client: Any = botocore.session.get_session().create_client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        region_name="eu-west-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    url = client.generate_presigned_url(method, Params={"Bucket": "b", "Key": "a b/ü+c"}, ExpiresIn=300)
    wire = wire_from("GET" if method == "get_object" else "PUT", url, {})
    assert wire.verify(datetime.now(UTC)).access_key == AK
    raises(wire, "AccessDenied", datetime.now(UTC) + timedelta(seconds=301))


def test_module_level_verify() -> None:
    wire = sign("GET", "http://hoard.test/b/k")
    assert sigv4.verify(wire.method, wire.path, wire.query, wire.headers, SECRETS.get, NOW).access_key == AK


def test_header_dict_joins_repeated_headers() -> None:
    raw = [
        (b"Host", b"h"),
        (b"x-amz-meta-a", b" 1 "),
        (b"X-Amz-Meta-A", b"2"),
        (b"x-amz-meta-u", "é".encode("latin-1")),
    ]
    assert sigv4.header_dict(raw) == {"host": "h", "x-amz-meta-a": "1,2", "x-amz-meta-u": "é"}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        ("/b/k", "/b/k"),
        ("/b/a b", "/b/a%20b"),
        ("/b/a%2fb", "/b/a%2Fb"),
        ("/b/%7e", "/b/~"),
        ("/b/a+b", "/b/a%2Bb"),
        ("/b//./../k", "/b//./../k"),
    ],
)
def test_canonical_path(raw: str, canonical: str) -> None:
    assert sigv4.canonical_path(raw) == canonical


def test_canonical_query() -> None:
    assert sigv4.canonical_query("b=2&a=1&a=0&uploads&c=x+y%2a") == "a=0&a=1&b=2&c=x%20y%2A&uploads="
    assert sigv4.canonical_query("X-Amz-Signature=f&a=1", exclude="X-Amz-Signature") == "a=1"
    # The excluded name is matched decoded, however it was encoded; other names are kept.
    assert sigv4.canonical_query("X-Amz-Signatur%65=f&a=1", exclude="X-Amz-Signature") == "a=1"
    assert (
        sigv4.canonical_query("X-Amz-Signature+=f&a=1", exclude="X-Amz-Signature")
        == "X-Amz-Signature%20=f&a=1"
    )
    assert sigv4.canonical_query("X-Amz-Signaturf=f", exclude="X-Amz-Signature") == "X-Amz-Signaturf=f"


def hand_signed(
    method: str, path: str, query: str, headers: dict[str, str], amz_date: str, payload: str
) -> str:
    """A signature computed straight from the documented algorithm, for requests botocore won't make."""
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, query, "".join(f"{n}:{headers[n]}\n" for n in names), ";".join(names), payload]
    )
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
    key = sigv4.derive_signing_key(SK, amz_date[:8], "us-east-1")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def test_date_header_in_another_time_zone() -> None:
    headers = {"host": "hoard.test", "date": "Sun, 01 Mar 2026 14:00:00 +0200", "x-amz-content-sha256": EMPTY}
    signature = hand_signed("GET", "/b/k", "", headers, "20260301T120000Z", EMPTY)
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders=date;host;x-amz-content-sha256,Signature={signature}"
    )
    assert Wire("GET", "/b/k", "", headers).verify().access_key == AK


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (EMPTY, EMPTY),
        (sigv4.STREAMING_UNSIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER),
        (sigv4.STREAMING_PAYLOAD, None),
    ],
)
def test_presigned_url_with_a_payload_hash_in_the_query(payload: str, outcome: str | None) -> None:
    query = (
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256={payload}&X-Amz-Credential={quote(SCOPE, safe='')}"
        "&X-Amz-Date=20260301T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
    )
    signature = hand_signed("PUT", "/b/k", query, {"host": "hoard.test"}, "20260301T120000Z", payload)
    wire = Wire("PUT", "/b/k", f"{query}&X-Amz-Signature={signature}", {"host": "hoard.test"})
    if outcome is None:
        raises(wire, "InvalidRequest")
    else:
        assert wire.verify() == sigv4.AuthResult(AK, outcome)
