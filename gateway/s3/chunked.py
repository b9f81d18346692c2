"""Incremental decoding of aws-chunked request bodies (`Content-Encoding: aws-chunked`).

Three framings share one grammar (sigv4-streaming.html, sigv4-streaming-trailers.html):

    chunk    = hex-size [";chunk-signature=" sig] CRLF data CRLF     (signed: sig required)
    last     = "0" [";chunk-signature=" sig] CRLF
    trailers = *(name ":" value CRLF) CRLF                          (x-amz-trailer-signature last)

`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` signs every chunk; `...-PAYLOAD-TRAILER` also signs the
trailers; `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (what boto3 and the aws CLI send over TLS by default)
signs nothing and carries its checksum in a trailer.

The decoder is fed whatever the ASGI receive loop hands it. Payload comes back as the caller's own
`bytes` when a message holds nothing but payload, else as one slice: payload is copied at most once
and never accumulated. Only header and trailer lines are buffered, and they are bounded.

A chunk is returned before the signature that covers it has been seen (it may come in the same
message or a later one), as with any streaming upload: the body is trustworthy only once `finish()`
has returned. Writers must not commit before that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from types import MappingProxyType

from gateway.s3.errors import (
    INCOMPLETE_BODY,
    INVALID_ARGUMENT,
    INVALID_CHUNK_SIZE,
    INVALID_REQUEST,
    MALFORMED_TRAILER,
    MISSING_CONTENT_LENGTH,
    SIGNATURE_DOES_NOT_MATCH,
    S3Error,
)
from gateway.s3.sigv4 import EMPTY_SHA256, STREAMING, AuthResult, ChunkSigner

MIN_SIGNED_CHUNK = 8192  # "Chunk size must be at least 8 KB", except the last (sigv4-streaming.html)
MAX_LINE = 4096  # a chunk header is ~90 bytes; a trailer line a few dozen
MAX_TRAILERS = 16
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_CHUNK_SIGNATURE = re.compile(rb"chunk-signature=([0-9a-f]{64})")
_TRUNCATED = "The request body terminated unexpectedly"

# Decoder states.
_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class AwsChunkedDecoder:
    """Decodes one aws-chunked body. `signer` is None for the unsigned framing; `trailer_expected`
    when the framing carries trailers (`...-TRAILER`); `decoded_length` is
    `x-amz-decoded-content-length`, checked when given."""

    __slots__ = (
        "_blank_seen",
        "_chunk_sha",
        "_chunks",
        "_decoded_length",
        "_error",
        "_line",
        "_pending_signature",
        "_previous_signature",
        "_previous_size",
        "_received",
        "_remaining",
        "_signer",
        "_state",
        "_trailer_expected",
        "_trailer_signature",
        "_trailers",
    )

    def __init__(
        self, signer: ChunkSigner | None, trailer_expected: bool, decoded_length: int | None
    ) -> None:
        self._signer = signer
        self._trailer_expected = trailer_expected
        self._decoded_length = decoded_length
        self._state = _HEADER
        self._line = bytearray()  # a header or trailer line split across messages
        self._remaining = 0  # payload bytes left in the current chunk
        self._received = 0  # payload bytes so far
        self._chunks = 0
        self._previous_size: int | None = None
        self._chunk_sha = hashlib.sha256()
        self._pending_signature = ""  # the current chunk's claimed signature
        self._previous_signature = signer.seed_signature if signer is not None else ""
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self._blank_seen = False
        self._error: S3Error | None = None

    @property
    def trailers(self) -> Mapping[str, str]:
        """Trailing headers (lower-case names, the trailer signature left out); final after finish()."""
        return MappingProxyType(self._trailers)

    @property
    def received(self) -> int:
        return self._received

    def feed(self, data: bytes) -> list[bytes]:
        """Consume the next piece of the encoded body; return the payload it contained."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except S3Error as exc:
            self._error = exc  # a broken stream stays broken
            raise

    def finish(self) -> Mapping[str, str]:
        """Declare the end of the body; raise unless it ended where the encoding says it must."""
        if self._error is not None:
            raise self._error
        if self._state == _TRAILER and not self._line:
            # Tolerated at the very end: a missing final CRLF after the last chunk or trailer line.
            self._end_trailers()
        if self._state != _DONE:
            self._error = S3Error(INCOMPLETE_BODY, _TRUNCATED)
            raise self._error
        if self._decoded_length is not None and self._received != self._decoded_length:
            self._error = self._length_error(self._received)
            raise self._error
        return self.trailers

    def _feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                piece = data if take == end else data[pos : pos + take]
                out.append(piece)
                if self._signer is not None:
                    self._chunk_sha.update(piece)
                pos += take
                self._remaining -= take
                self._received += take
                if self._remaining == 0:
                    self._end_chunk()
                continue
            if self._state == _DONE:
                raise S3Error(INVALID_REQUEST, "Unexpected data after the end of the aws-chunked body.")
            line, pos = self._take_line(data, pos, end)
            if line is None:
                break
            if self._state == _HEADER:
                self._on_header(line)
            elif self._state == _DATA_END:
                if line:
                    raise self._malformed(f"chunk {self._chunks} is longer than its declared size")
                self._state = _HEADER
            else:
                self._on_trailer(line)
        return out

    def _take_line(self, data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line without its CRLF, or None (and all of `data` buffered)."""
        limit = min(end, pos + MAX_LINE + 2 - len(self._line))
        newline = data.find(b"\n", pos, limit)
        if newline < 0:
            if limit < end:
                raise self._malformed(f"a line longer than {MAX_LINE} bytes after chunk {self._chunks}")
            self._line += data[pos:end]
            return None, end
        if self._line:
            self._line += data[pos : newline + 1]
            line = bytes(self._line)
            self._line.clear()
        else:
            line = data[pos : newline + 1]
        if not line.endswith(b"\r\n"):
            raise self._malformed(f"a line after chunk {self._chunks} does not end with CRLF")
        return line[:-2], newline + 1

    def _on_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _SIZE.fullmatch(size_text):
            raise self._malformed(f"chunk {self._chunks + 1} header {line[:80]!r} has no hex size")
        size = int(size_text, 16)
        self._chunks += 1
        if self._signer is not None:
            if not extension:
                raise S3Error(INCOMPLETE_BODY, f"Chunk {self._chunks} has no chunk-signature.")
            match = _CHUNK_SIGNATURE.fullmatch(extension.strip())
            if match is None:
                raise S3Error(
                    SIGNATURE_DOES_NOT_MATCH, f"Chunk {self._chunks} has a malformed chunk-signature."
                )
            self._pending_signature = match.group(1).decode()
            if self._previous_size is not None and self._previous_size < MIN_SIGNED_CHUNK and size:
                raise S3Error(
                    INVALID_CHUNK_SIZE,
                    extra={"Chunk": str(self._chunks - 1), "BadChunkSize": str(self._previous_size)},
                )
        if self._decoded_length is not None and self._received + size > self._decoded_length:
            raise self._length_error(self._received + size)
        self._previous_size = size
        if size == 0:
            if self._signer is not None:
                self._check_chunk_signature(EMPTY_SHA256)
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _end_chunk(self) -> None:
        if self._signer is not None:
            self._check_chunk_signature(self._chunk_sha.hexdigest())
            self._chunk_sha = hashlib.sha256()
        self._state = _DATA_END

    def _check_chunk_signature(self, chunk_sha256: str) -> None:
        assert self._signer is not None
        expected = self._signer.chunk_signature(self._previous_signature, chunk_sha256)
        if not hmac.compare_digest(expected, self._pending_signature):
            raise S3Error(
                SIGNATURE_DOES_NOT_MATCH,
                f"The signature of chunk {self._chunks} does not match; check your key and signing method.",
            )
        self._previous_signature = expected

    def _on_trailer(self, line: bytes) -> None:
        if not line:
            if self._trailer_expected and not self._trailers and not self._blank_seen:
                # Some encoders (and the AWS documentation's example) put a blank line between the
                # last chunk and the trailers; a second one, or one after a trailer, ends them.
                self._blank_seen = True
                return
            self._end_trailers()
            return
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.strip().decode("latin-1").lower()
        value = raw_value.strip().decode("latin-1")
        if not colon or not name or not self._trailer_expected or self._trailer_signature is not None:
            raise S3Error(MALFORMED_TRAILER)
        if name == TRAILER_SIGNATURE:
            if self._signer is None:
                raise S3Error(MALFORMED_TRAILER)
            self._trailer_signature = value
        elif name in self._trailers or len(self._trailers) >= MAX_TRAILERS:
            raise S3Error(MALFORMED_TRAILER)
        else:
            self._trailers[name] = value

    def _end_trailers(self) -> None:
        if self._signer is not None and self._trailer_expected:
            if self._trailer_signature is None:
                raise S3Error(INCOMPLETE_BODY, "The trailing headers are missing x-amz-trailer-signature.")
            expected = self._signer.trailer_signature(self._previous_signature, self._trailers)
            if not hmac.compare_digest(expected.encode(), self._trailer_signature.encode("latin-1")):
                raise S3Error(
                    SIGNATURE_DOES_NOT_MATCH,
                    "The signature of the trailing headers does not match; check your key and signing method.",
                )
        self._state = _DONE

    def _length_error(self, provided: int) -> S3Error:
        return S3Error(
            INCOMPLETE_BODY,
            "You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header.",
            extra={"NumberBytesExpected": str(self._decoded_length), "NumberBytesProvided": str(provided)},
        )

    def _malformed(self, detail: str) -> S3Error:
        return S3Error(INCOMPLETE_BODY, f"The aws-chunked body is malformed: {detail}.")


def decoder_for(auth: AuthResult, headers: Mapping[str, str]) -> AwsChunkedDecoder | None:
    """The decoder a request's body needs, or None when it is not aws-chunked.

    `x-amz-content-sha256` decides, as on S3 (Content-Encoding is advisory). The signed framings
    must declare `x-amz-decoded-content-length`; the unsigned one may omit it, as botocore does for
    a body of unknown length.
    """
    if auth.payload_hash not in STREAMING:
        return None
    raw = headers.get("x-amz-decoded-content-length")
    length = None
    if raw is not None:
        if not raw.isascii() or not raw.isdigit():
            raise S3Error(
                INVALID_ARGUMENT,
                extra={"ArgumentName": "x-amz-decoded-content-length", "ArgumentValue": raw},
            )
        length = int(raw)
    elif auth.chunk_signer is not None:
        raise S3Error(
            MISSING_CONTENT_LENGTH, "You must provide the x-amz-decoded-content-length HTTP header."
        )
    return AwsChunkedDecoder(auth.chunk_signer, auth.payload_hash.endswith("-TRAILER"), length)


async def decode(stream: AsyncIterable[bytes], decoder: AwsChunkedDecoder) -> AsyncIterator[bytes]:
    """The payload of an aws-chunked stream. It ends by calling `decoder.finish()`, so a truncated
    or tampered body raises S3Error from the consumer's `async for`, never ends cleanly; the
    trailers are then in `decoder.trailers`."""
    async for data in stream:
        for piece in decoder.feed(data):
            yield piece
    decoder.finish()
