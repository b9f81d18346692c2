"""A slow CompleteMultipartUpload answers 200 at once, keeps the connection alive with whitespace,
then sends the result or an <Error> document in the body; botocore's own parser reads both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import botocore.session
import pytest
from botocore.parsers import RestXMLParser

from gateway.s3.context import S3Request
from gateway.s3.handlers import multipart
from ufs_adapters.base import InvalidPart, ObjectInfo


def _request() -> S3Request:
    return S3Request({}, None, "POST", "bucket", "big.bin", {"uploadId": "u"}, {}, "REQ1")


async def _body(task: asyncio.Future[ObjectInfo]) -> bytes:
    chunks = [chunk async for chunk in multipart._keepalive(_request(), task, "/bucket/big.bin")]
    return b"".join(chunks)


def _parse(body: bytes) -> dict[str, object]:
    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("CompleteMultipartUpload").output_shape
    parsed: dict[str, object] = RestXMLParser().parse(
        {"body": body, "headers": {}, "status_code": 200}, shape
    )
    return parsed


async def _finish_after(delay: float, result: ObjectInfo | BaseException) -> ObjectInfo:
    await asyncio.sleep(delay)
    if isinstance(result, BaseException):
        raise result
    return result


async def test_slow_complete_sends_whitespace_then_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "_KEEPALIVE_EVERY", 0.02)
    info = ObjectInfo("big.bin", 10, "abc-3", datetime.now(UTC))
    body = await _body(asyncio.ensure_future(_finish_after(0.15, info)))
    head, _, rest = body.partition(b"?>\n")
    assert head.startswith(b"<?xml") and rest.startswith(b" ")  # keep-alive bytes came first
    assert rest.count(b" ") >= 3
    assert _parse(body)["ETag"] == '"abc-3"'


async def test_failure_after_the_200_is_an_error_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "_KEEPALIVE_EVERY", 0.02)
    body = await _body(asyncio.ensure_future(_finish_after(0.05, InvalidPart("big.bin"))))
    text = body.decode()
    assert "<Error>" in text and "<Code>InvalidPart</Code>" in text and "<RequestId>REQ1</RequestId>" in text
    # botocore's S3 client turns exactly this into an error (its _handle_200_error looks for <Error>).
    assert text.lstrip().startswith("<?xml") and text.strip().endswith("</Error>")
