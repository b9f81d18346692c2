"""aws-chunked decoding: AWS's worked examples, botocore's own encoder, and framing independence."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, CrtCrc32cChecksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import chunked, sigv4
from gateway.s3.checksums import BodyVerifier
from gateway.s3.chunked import AwsChunkedDecoder, decode, decoder_for
from gateway.s3.errors import S3Error
from gateway.s3.sigv4 import AuthResult, ChunkSigner
from tests.gateway.s3.test_sigv4 import AK, SK, capture

# sigv4-streaming.html and sigv4-streaming-trailers.html: 65 KiB of "a" in a 64 KiB and a 1 KiB chunk.
KEY = sigv4.derive_signing_key(SK, "20130524", "us-east-1")
SCOPE = "20130524/us-east-1/s3/aws4_request"
DATA = b"a" * 66560
SIGNER = ChunkSigner(
    KEY, "20130524T000000Z", SCOPE, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
)
TRAILER_SIGNER = ChunkSigner(
    KEY, "20130524T000000Z", SCOPE, "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
)
DOC_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + DATA[:65536]
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + DATA[65536:]
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)
DOC_TRAILER_CHUNKS = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + DATA[:65536]
    + b"\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n"
    + DATA[65536:]
    + b"\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
)
DOC_TRAILERS = (
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n"
)
DOC_TRAILER_BODY = DOC_TRAILER_CHUNKS + DOC_TRAILERS + b"\r\n"


def run(decoder: AwsChunkedDecoder, pieces: Iterable[bytes]) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for piece in pieces:
        for payload in decoder.feed(piece):
            assert isinstance(payload, bytes)
            out += payload
    return bytes(out), dict(decoder.finish())


def split_at(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in zip(points, points[1:], strict=False)]


def failure(decoder: AwsChunkedDecoder, pieces: Iterable[bytes]) -> S3Error:
    with pytest.raises(S3Error) as caught:
        run(decoder, pieces)
    return caught.value


def signed_body(signer: ChunkSigner, chunks: list[bytes], trailers: dict[str, str] | None = None) -> bytes:
    """An encoder written from the documentation, to build bodies the examples do not cover."""
    out, previous = bytearray(), signer.seed_signature
    for chunk in [*chunks, b""]:
        previous = signer.chunk_signature(previous, hashlib.sha256(chunk).hexdigest())
        out += b"%x;chunk-signature=%s\r\n%s" % (len(chunk), previous.encode(), chunk)
        out += b"\r\n" if chunk else b""
    if trailers is None:
        return bytes(out + b"\r\n")
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    out += f"x-amz-trailer-signature:{signer.trailer_signature(previous, trailers)}\r\n\r\n".encode()
    return bytes(out)


# -- the documentation's examples -----------------------------------------------------------------------


def test_documentation_example_decodes() -> None:
    assert run(AwsChunkedDecoder(SIGNER, False, 66560), [DOC_BODY]) == (DATA, {})


def test_documentation_example_with_a_signed_trailer_decodes() -> None:
    decoder = AwsChunkedDecoder(TRAILER_SIGNER, True, 66560)
    assert run(decoder, [DOC_TRAILER_BODY]) == (DATA, {"x-amz-checksum-crc32c": "sOO8/Q=="})
    verifier = BodyVerifier(
        {"x-amz-trailer": "x-amz-checksum-crc32c"}, sigv4.STREAMING_PAYLOAD_TRAILER, md5=False
    )
    verifier.update(DATA)
    verifier.verify(decoder.trailers)
    assert verifier.checksums == {"x-amz-checksum-crc32c": "sOO8/Q=="}


@pytest.mark.parametrize(
    "body",
    [
        DOC_TRAILER_CHUNKS + b"\r\n" + DOC_TRAILERS + b"\r\n",  # a blank line before the trailers
        DOC_TRAILER_CHUNKS + DOC_TRAILERS,  # no blank line after them
    ],
    ids=["blank-line-before", "no-final-crlf"],
)
def test_documentation_trailer_example_in_the_layouts_encoders_use(body: bytes) -> None:
    assert run(AwsChunkedDecoder(TRAILER_SIGNER, True, 66560), [body])[1] == {
        "x-amz-checksum-crc32c": "sOO8/Q=="
    }


def test_the_example_encoder_matches_the_documentation() -> None:
    assert signed_body(SIGNER, [DATA[:65536], DATA[65536:]]) == DOC_BODY
    trailers = {"x-amz-checksum-crc32c": "sOO8/Q=="}
    assert signed_body(TRAILER_SIGNER, [DATA[:65536], DATA[65536:]], trailers) == DOC_TRAILER_BODY


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(DOC_TRAILER_BODY)), max_size=40))
def test_any_framing_of_the_body_decodes_the_same(cuts: list[int]) -> None:
    for signer, trailer, body in ((SIGNER, False, DOC_BODY), (TRAILER_SIGNER, True, DOC_TRAILER_BODY)):
        payload, _ = run(AwsChunkedDecoder(signer, trailer, 66560), split_at(body, cuts))
        assert payload == DATA


def test_one_byte_at_a_time() -> None:
    pieces = [DOC_TRAILER_BODY[i : i + 1] for i in range(len(DOC_TRAILER_BODY))]
    assert run(AwsChunkedDecoder(TRAILER_SIGNER, True, 66560), pieces)[0] == DATA


def test_payload_that_fills_a_message_is_not_copied() -> None:
    decoder = AwsChunkedDecoder(SIGNER, False, 66560)
    head = DOC_BODY.index(b"\r\n") + 2
    decoder.feed(DOC_BODY[:head])
    message = DOC_BODY[head : head + 4096]
    (piece,) = decoder.feed(message)
    assert piece is message


# -- tampering and truncation (signed) --------------------------------------------------------------------


def _flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_flip(DOC_BODY, 100), "SignatureDoesNotMatch"),  # chunk data
        (_flip(DOC_BODY, len(DOC_BODY) - 2000), "SignatureDoesNotMatch"),  # second chunk's data
        (DOC_BODY.replace(b"ad80c730", b"ad80c731"), "SignatureDoesNotMatch"),  # chunk signature
        (DOC_BODY.replace(b"b6c6ea8a", b"b6c6ea8b"), "SignatureDoesNotMatch"),  # final signature
        (DOC_BODY.replace(b";chunk-signature=ad80", b";chunk-signaturX=ad80"), "SignatureDoesNotMatch"),
        (
            DOC_BODY.replace(
                b";chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", b""
            ),
            "IncompleteBody",
        ),
        (DOC_BODY.replace(b"10000;", b"1000g;"), "IncompleteBody"),
        (DOC_BODY.replace(b"10000;", b"0x10000;"), "IncompleteBody"),
        (DOC_BODY.replace(b"10000;", b"ffff;"), "SignatureDoesNotMatch"),  # checked at the chunk's end
        (DOC_BODY.replace(b"\r\n400;", b"\n400;"), "IncompleteBody"),
        (DOC_BODY[:-2], None),  # the final CRLF may be missing at the very end
        (DOC_BODY[:-4], "IncompleteBody"),
        (DOC_BODY[:66000], "IncompleteBody"),
        (DOC_BODY[:65000], "IncompleteBody"),
        (DOC_BODY[: DOC_BODY.index(b"0;chunk-signature=b6")], "IncompleteBody"),
        (b"", "IncompleteBody"),
        (DOC_BODY + b"junk", "InvalidRequest"),
        (DOC_BODY[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n", "MalformedTrailerError"),
    ],
)
def test_tampered_or_truncated_signed_bodies(body: bytes, code: str | None) -> None:
    decoder = AwsChunkedDecoder(SIGNER, False, 66560)
    if code is None:
        assert run(decoder, [body])[0] == DATA
    else:
        err = failure(decoder, split_at(body, [1000, 65600]))
        assert err.code == code, err.message


def test_reordered_chunks_do_not_match() -> None:
    chunks = [b"x" * 8192, b"y" * 8192]
    body = signed_body(SIGNER, chunks)
    swapped = signed_body(SIGNER, chunks[::-1])
    first = body[: body.index(b"\r\n2000;")]
    second = swapped[: swapped.index(b"\r\n2000;")]
    assert failure(AwsChunkedDecoder(SIGNER, False, None), [second + body[len(first) :]]).code == (
        "SignatureDoesNotMatch"
    )


def test_a_broken_stream_stays_broken() -> None:
    decoder = AwsChunkedDecoder(SIGNER, False, 66560)
    with pytest.raises(S3Error):
        decoder.feed(_flip(DOC_BODY, 100))
    with pytest.raises(S3Error, match="chunk 1"):
        decoder.feed(b"more")
    with pytest.raises(S3Error, match="chunk 1"):
        decoder.finish()


def test_decoded_length_is_enforced() -> None:
    err = failure(AwsChunkedDecoder(SIGNER, False, 66561), [DOC_BODY])
    assert (err.code, err.extra) == (
        "IncompleteBody",
        {"NumberBytesExpected": "66561", "NumberBytesProvided": "66560"},
    )
    err = failure(AwsChunkedDecoder(SIGNER, False, 65000), [DOC_BODY])
    assert (err.code, err.extra["NumberBytesProvided"]) == ("IncompleteBody", "65536")


def test_signed_chunks_smaller_than_8_kib_are_refused_unless_last() -> None:
    assert run(AwsChunkedDecoder(SIGNER, False, 8193), [signed_body(SIGNER, [b"x" * 8192, b"y"])])[0]
    err = failure(AwsChunkedDecoder(SIGNER, False, None), [signed_body(SIGNER, [b"x" * 100, b"y" * 8192])])
    assert (err.code, err.status, err.extra) == (
        "InvalidChunkSizeError",
        403,
        {"Chunk": "1", "BadChunkSize": "100"},
    )


def test_an_empty_signed_body() -> None:
    assert run(AwsChunkedDecoder(SIGNER, False, 0), [signed_body(SIGNER, [])]) == (b"", {})


@pytest.mark.parametrize(
    ("trailers", "code"),
    [
        (b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n", "IncompleteBody"),  # no trailer signature
        (
            b"x-amz-checksum-crc32c:sOO8/A==\r\n" + DOC_TRAILERS.split(b"\r\n")[1] + b"\r\n\r\n",
            "SignatureDoesNotMatch",
        ),
        (DOC_TRAILERS + b"x-amz-checksum-sha1:AAAA\r\n\r\n", "MalformedTrailerError"),  # after the signature
        (b"x-amz-checksum-crc32c\r\n" + DOC_TRAILERS + b"\r\n", "MalformedTrailerError"),
        (DOC_TRAILERS[:40], "IncompleteBody"),
        (DOC_TRAILERS.replace(b":d81f82fc", b":\xe9\xff"), "SignatureDoesNotMatch"),
        (b"\r\n\r\n", "IncompleteBody"),
    ],
)
def test_bad_signed_trailers(trailers: bytes, code: str) -> None:
    err = failure(AwsChunkedDecoder(TRAILER_SIGNER, True, 66560), [DOC_TRAILER_CHUNKS + trailers])
    assert err.code == code, err.message


def test_too_many_or_repeated_trailers() -> None:
    many = b"".join(b"x-amz-meta-%d:v\r\n" % i for i in range(chunked.MAX_TRAILERS + 1))
    assert (
        failure(AwsChunkedDecoder(None, True, None), [b"0\r\n" + many + b"\r\n"]).code
        == "MalformedTrailerError"
    )
    twice = b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    assert failure(AwsChunkedDecoder(None, True, None), [b"0\r\n" + twice]).code == "MalformedTrailerError"


def test_overlong_lines_are_refused_without_buffering_them() -> None:
    err = failure(AwsChunkedDecoder(None, False, None), [b"1" * 3000, b"2" * 3000])
    assert err.code == "IncompleteBody"
    assert "longer than" in err.message


# -- the unsigned framing, as botocore encodes it ----------------------------------------------------------


def botocore_body(
    data: bytes, chunk_size: int, checksum: type | None = Crc32Checksum, name: str = "x-amz-checksum-crc32"
) -> bytes:
    return AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=checksum, checksum_name=name, chunk_size=chunk_size
    ).read()


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=5000),
    chunk_size=st.integers(min_value=1, max_value=3000),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_botocore_unsigned_trailer_bodies_decode_in_any_framing(
    data: bytes, chunk_size: int, cuts: list[int]
) -> None:
    body = botocore_body(data, chunk_size)
    decoder = AwsChunkedDecoder(None, True, len(data))
    payload, trailers = run(decoder, split_at(body, cuts))
    assert payload == data
    verifier = BodyVerifier({"x-amz-trailer": "x-amz-checksum-crc32"}, sigv4.STREAMING_UNSIGNED_TRAILER)
    verifier.update(payload)
    verifier.verify(trailers)
    assert verifier.md5_hex == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(
    ("checksum", "name"),
    [(CrtCrc32cChecksum, "x-amz-checksum-crc32c"), (Sha256Checksum, "x-amz-checksum-sha256")],
)
def test_botocore_unsigned_trailer_other_algorithms(checksum: type, name: str) -> None:
    data = bytes(range(256)) * 300
    decoder = AwsChunkedDecoder(None, True, None)
    payload, trailers = run(decoder, [botocore_body(data, 1024 * 1024, checksum, name)])
    verifier = BodyVerifier({"x-amz-trailer": name}, sigv4.STREAMING_UNSIGNED_TRAILER)
    verifier.update(payload)
    verifier.verify(trailers)
    assert list(verifier.checksums) == [name]


def test_botocore_body_without_a_checksum() -> None:
    assert botocore_body(b"abc", 2, None) == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    assert run(AwsChunkedDecoder(None, False, 3), [botocore_body(b"abc", 2, None)]) == (b"abc", {})


def test_a_corrupted_unsigned_body_fails_its_trailing_checksum() -> None:
    body = botocore_body(b"hello world", 4).replace(b"rld", b"RLD")
    decoder = AwsChunkedDecoder(None, True, 11)
    payload, trailers = run(decoder, [body])
    verifier = BodyVerifier({"x-amz-trailer": "x-amz-checksum-crc32"}, sigv4.STREAMING_UNSIGNED_TRAILER)
    verifier.update(payload)
    with pytest.raises(S3Error, match="The CRC32 you specified did not match the calculated checksum."):
        verifier.verify(trailers)


def test_unsigned_framing_ignores_chunk_extensions_and_refuses_trailer_signatures() -> None:
    assert run(AwsChunkedDecoder(None, False, 2), [b"2;ext=1\r\nhi\r\n0\r\n\r\n"])[0] == b"hi"
    err = failure(AwsChunkedDecoder(None, False, None), [b"2\r\nhi!\r\n0\r\n\r\n"])
    assert (err.code, err.message) == (
        "IncompleteBody",
        "The aws-chunked body is malformed: chunk 1 is longer than its declared size.",
    )
    body = b"0\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    assert failure(AwsChunkedDecoder(None, True, 0), [body]).code == "MalformedTrailerError"


# -- choosing a decoder, and the async helper ---------------------------------------------------------------


def test_decoder_for() -> None:
    assert decoder_for(AuthResult(AK, sigv4.UNSIGNED_PAYLOAD), {}) is None
    assert decoder_for(AuthResult(AK, sigv4.EMPTY_SHA256), {"content-encoding": "aws-chunked"}) is None
    assert decoder_for(AuthResult(None, sigv4.STREAMING_UNSIGNED_TRAILER), {}) is not None
    signed = AuthResult(AK, sigv4.STREAMING_PAYLOAD, SIGNER)
    with pytest.raises(S3Error) as caught:
        decoder_for(signed, {})
    assert caught.value.code == "MissingContentLength"
    with pytest.raises(S3Error) as caught:
        decoder_for(signed, {"x-amz-decoded-content-length": "-1"})
    assert caught.value.code == "InvalidArgument"
    decoder = decoder_for(signed, {"x-amz-decoded-content-length": "66560"})
    assert decoder is not None
    assert run(decoder, [DOC_BODY])[0] == DATA


async def _stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_decode_yields_the_payload_and_then_checks_the_end() -> None:
    decoder = AwsChunkedDecoder(TRAILER_SIGNER, True, 66560)
    out = b"".join([p async for p in decode(_stream(split_at(DOC_TRAILER_BODY, [5, 70000])), decoder)])
    assert out == DATA
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    assert decoder.received == 66560

    truncated = decode(_stream([DOC_TRAILER_BODY[:-60]]), AwsChunkedDecoder(TRAILER_SIGNER, True, 66560))
    with pytest.raises(S3Error, match="terminated unexpectedly"):
        async for _ in truncated:
            pass


async def test_a_put_from_the_botocore_client_over_https_end_to_end() -> None:
    from gateway.s3.checksums import verified  # the pipeline the endpoint runs

    data = bytes(range(256)) * 5000
    wire = capture("https://hoard.example.com", "put_object", Bucket="b", Key="big", Body=data)
    auth = wire.verify(datetime.now(UTC))
    decoder = decoder_for(auth, wire.headers)
    assert decoder is not None
    verifier = BodyVerifier(wire.headers, auth.payload_hash)
    body = verified(
        decode(_stream(split_at(wire.body, range(0, len(wire.body), 65536))), decoder),
        verifier,
        lambda: decoder.trailers,
    )
    assert b"".join([p async for p in body]) == data
    assert verifier.md5_hex == hashlib.md5(data).hexdigest()
    assert verifier.checksums.keys() == {"x-amz-checksum-crc32"}
