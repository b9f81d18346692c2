"""Body integrity: algorithm vectors, botocore as an oracle, and S3's rules for the headers."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import sigv4
from gateway.s3.checksums import ALGORITHMS, BodyVerifier, algorithm_for, checksum_of, verified
from gateway.s3.errors import S3Error, render
from tests.gateway.s3.test_sigv4 import capture

CHECK = b"123456789"  # the conventional check input for CRCs
VECTORS = {
    "CRC32": "cbf43926",
    "CRC32C": "e3069283",
    "CRC64NVME": "ae8b14860a799888",
    "SHA1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "SHA256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
    "SHA512": hashlib.sha512(CHECK).hexdigest(),
}
EMPTY_VECTORS = {  # xxHash's published digests of the empty input, seed 0
    "XXHASH64": "ef46db3751d8e999",
    "XXHASH3": "2d06800538d394c2",
    "XXHASH128": "99aa06d3014798d86001c324468d497f",
}
BODY = b"Welcome to Amazon S3."
BODY_MD5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


def b64(algorithm: str, data: bytes = BODY) -> str:
    return checksum_of(ALGORITHMS[algorithm], data)


def check(
    headers: dict[str, str],
    payload_hash: str = sigv4.UNSIGNED_PAYLOAD,
    body: bytes = BODY,
    trailers: dict[str, str] | None = None,
    **options: bool,
) -> BodyVerifier:
    verifier = BodyVerifier(headers, payload_hash, **options)
    for i in range(0, len(body), 5):
        verifier.update(body[i : i + 5])
    verifier.verify(trailers)
    return verifier


def refused(
    code: str,
    headers: dict[str, str],
    payload_hash: str = sigv4.UNSIGNED_PAYLOAD,
    trailers: dict[str, str] | None = None,
    body: bytes = BODY,
) -> S3Error:
    with pytest.raises(S3Error) as caught:
        verifier = BodyVerifier(headers, payload_hash)
        verifier.update(body)
        verifier.verify(trailers)
    assert caught.value.code == code, caught.value.message
    render(caught.value, "req-1")
    return caught.value


@pytest.mark.parametrize("name", VECTORS)
def test_check_vectors(name: str) -> None:
    hasher = ALGORITHMS[name].new()
    hasher.update(CHECK[:4])
    hasher.update(CHECK[4:])
    assert hasher.digest().hex() == VECTORS[name]
    assert len(hasher.digest()) == ALGORITHMS[name].size


@pytest.mark.parametrize("name", EMPTY_VECTORS)
def test_xxhash_vectors(name: str) -> None:
    hasher = ALGORITHMS[name].new()
    assert hasher.digest().hex() == EMPTY_VECTORS[name]
    assert hasher.digest().hex() == EMPTY_VECTORS[name]  # finalize() is called once


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.integers(min_value=0, max_value=3000))
def test_every_algorithm_agrees_with_botocore(data: bytes, cut: int) -> None:
    for name, algorithm in ALGORITHMS.items():
        oracle = vars(httpchecksum)["_CHECKSUM_CLS"][name.lower()]()
        oracle.update(data)
        hasher = algorithm.new()
        hasher.update(data[:cut])
        hasher.update(data[cut:])
        assert base64.b64encode(hasher.digest()).decode() == oracle.b64digest(), name
        assert algorithm_for(algorithm.header) is algorithm


def test_no_integrity_headers_still_gives_the_md5() -> None:
    verifier = check({})
    assert verifier.md5_hex == hashlib.md5(BODY).hexdigest()
    assert verifier.size == len(BODY)
    assert verifier.algorithm is None
    assert verifier.checksums == {}
    assert check({}, md5=False).md5_hex is None


# -- Content-MD5 ---------------------------------------------------------------------------------------


def test_content_md5() -> None:
    assert check({"content-md5": BODY_MD5}, md5=False).md5_hex == hashlib.md5(BODY).hexdigest()
    err = refused("BadDigest", {"content-md5": base64.b64encode(hashlib.md5(b"other").digest()).decode()})
    assert err.message == "The Content-MD5 you specified did not match what we received."
    assert err.extra["CalculatedDigest"] == BODY_MD5


@pytest.mark.parametrize(
    "value", ["", "abc", "!!!!", base64.b64encode(b"x" * 15).decode(), BODY_MD5[:-2], BODY_MD5 + "=="]
)
def test_malformed_content_md5(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        BodyVerifier({"content-md5": value}, sigv4.UNSIGNED_PAYLOAD)
    assert caught.value.code == "InvalidDigest"


# -- x-amz-checksum-* -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALGORITHMS)
def test_checksum_header_for_each_algorithm(name: str) -> None:
    header = ALGORITHMS[name].header
    verifier = check({header: b64(name), "x-amz-sdk-checksum-algorithm": name.lower()})
    assert verifier.algorithm == name
    assert verifier.checksums == {header: b64(name)}
    err = refused("BadDigest", {header: b64(name, b"other")})
    assert err.message == f"The {name} you specified did not match the calculated checksum."


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"x-amz-checksum-crc32": "AAAA"}, "Value for x-amz-checksum-crc32 header is invalid."),
        ({"x-amz-checksum-crc32": "not base64"}, "Value for x-amz-checksum-crc32 header is invalid."),
        (
            {"x-amz-checksum-md4": "AAAAAA=="},
            "The algorithm type you specified in x-amz-checksum- header is invalid.",
        ),
        (
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": b64("SHA1")},
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        ),
        (
            {"x-amz-sdk-checksum-algorithm": "CRC32"},
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found.",
        ),
        (
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "SHA1"},
            "Value for x-amz-sdk-checksum-algorithm header is invalid.",
        ),
        (
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "MD5"},
            "Value for x-amz-sdk-checksum-algorithm header is invalid.",
        ),
        (
            {"x-amz-trailer": "x-amz-checksum-md5"},
            "The value specified in the x-amz-trailer header is not supported",
        ),
        (
            {"x-amz-trailer": "x-amz-checksum-crc32,x-amz-checksum-sha1"},
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        ),
        (
            {"x-amz-trailer": "x-amz-checksum-crc32", "x-amz-checksum-sha1": b64("SHA1")},
            "Expecting a single x-amz-checksum- header",
        ),
    ],
)
def test_invalid_checksum_headers(headers: dict[str, str], message: str) -> None:
    with pytest.raises(S3Error) as caught:
        BodyVerifier(headers, sigv4.STREAMING_UNSIGNED_TRAILER)
    assert (caught.value.code, caught.value.message) == ("InvalidRequest", message)


def test_headers_that_name_modes_are_not_checksums() -> None:
    headers = {
        "x-amz-checksum-type": "FULL_OBJECT",
        "x-amz-checksum-algorithm": "CRC32",
        "x-amz-checksum-mode": "ENABLED",
    }
    assert check(headers).algorithm is None


def test_complete_multipart_upload_headers_describe_the_object_not_the_body() -> None:
    headers = {"x-amz-checksum-crc32": "composite-3", "content-md5": BODY_MD5}
    assert check(headers, object_checksum=False).algorithm is None
    refused("InvalidRequest", headers)


# -- trailers -------------------------------------------------------------------------------------------------


TRAILER = {"x-amz-trailer": "x-amz-checksum-crc32c"}


def test_trailing_checksum() -> None:
    trailers = {"x-amz-checksum-crc32c": b64("CRC32C")}
    verifier = check(TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER, trailers=trailers)
    assert verifier.checksums == trailers
    err = refused(
        "BadDigest", TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER, {"x-amz-checksum-crc32c": b64("CRC32C", b"x")}
    )
    assert err.message == "The CRC32C you specified did not match the calculated checksum."


@pytest.mark.parametrize(
    ("headers", "trailers", "code"),
    [
        (TRAILER, {}, "MalformedTrailerError"),  # declared, never sent
        (TRAILER, {"x-amz-checksum-crc32": "AAAAAA=="}, "MalformedTrailerError"),  # not the one declared
        ({}, {"x-amz-checksum-crc32": "AAAAAA=="}, "MalformedTrailerError"),  # not declared at all
        (TRAILER, {"x-amz-checksum-crc32c": "AAAA"}, "InvalidRequest"),
    ],
)
def test_bad_trailers(headers: dict[str, str], trailers: dict[str, str], code: str) -> None:
    err = refused(code, headers, sigv4.STREAMING_UNSIGNED_TRAILER, trailers)
    if code == "InvalidRequest":
        assert err.message == "Value for x-amz-checksum-crc32c trailing header is invalid."


def test_a_trailer_needs_a_streaming_body() -> None:
    with pytest.raises(S3Error) as caught:
        BodyVerifier(TRAILER, sigv4.UNSIGNED_PAYLOAD)
    assert caught.value.code == "MalformedTrailerError"


# -- x-amz-content-sha256 and length ---------------------------------------------------------------------------


def test_signed_payload_hash() -> None:
    check({}, BODY_SHA256)
    check({}, BODY_SHA256.upper())
    err = refused("XAmzContentSHA256Mismatch", {}, sigv4.EMPTY_SHA256)
    assert err.extra == {
        "ClientComputedContentSHA256": sigv4.EMPTY_SHA256,
        "S3ComputedContentSHA256": BODY_SHA256,
    }


def test_the_payload_hash_is_checked_before_the_checksum() -> None:
    refused("XAmzContentSHA256Mismatch", {"x-amz-checksum-crc32": b64("CRC32", b"x")}, sigv4.EMPTY_SHA256)


def test_content_length_is_checked_unless_the_body_is_aws_chunked() -> None:
    err = refused("IncompleteBody", {"content-length": "30"})
    assert err.extra == {"NumberBytesExpected": "30", "NumberBytesProvided": str(len(BODY))}
    check(
        {"content-length": "30", "x-amz-decoded-content-length": str(len(BODY))},
        sigv4.STREAMING_UNSIGNED_TRAILER,
    )


# -- the streaming helper, and bodies botocore sends ------------------------------------------------------------


async def _stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_verified_checks_after_the_last_piece() -> None:
    good = BodyVerifier({"content-md5": BODY_MD5}, sigv4.UNSIGNED_PAYLOAD)
    assert b"".join([p async for p in verified(_stream([BODY[:3], BODY[3:]]), good)]) == BODY

    bad = BodyVerifier({"content-md5": BODY_MD5}, sigv4.UNSIGNED_PAYLOAD)
    seen = []
    with pytest.raises(S3Error, match="Content-MD5"):
        async for piece in verified(_stream([BODY[:3], b"tampered"]), bad):
            seen.append(piece)
    assert seen == [BODY[:3], b"tampered"]  # the consumer's loop never ends normally


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("put_object", {"Bucket": "b", "Key": "k", "Body": BODY}),
        ("put_object", {"Bucket": "b", "Key": "k", "Body": BODY, "ChecksumAlgorithm": "SHA256"}),
        ("put_object", {"Bucket": "b", "Key": "k", "Body": BODY, "ContentMD5": BODY_MD5}),
        ("upload_part", {"Bucket": "b", "Key": "k", "UploadId": "u", "PartNumber": 1, "Body": BODY}),
        ("delete_objects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "a"}]}}),
    ],
)
def test_bodies_from_the_botocore_client_over_http_verify(operation: str, params: dict[str, Any]) -> None:
    wire = capture("http://127.0.0.1:9000", operation, **params)
    auth = wire.verify(datetime.now(UTC))
    verifier = check(wire.headers, auth.payload_hash, wire.body)
    assert verifier.md5_hex == hashlib.md5(wire.body).hexdigest()
    assert verifier.checksums  # botocore always sends one now
    with pytest.raises(S3Error):
        check(wire.headers, auth.payload_hash, wire.body[:-1] + b"!")
