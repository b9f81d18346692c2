"""The S3 ASGI entry: parse → authenticate → resolve → handler → response.

This is the only place that catches exceptions and turns them into S3 error documents; handlers
raise `S3Error` (or let `UfsError`s through) and return `S3Response`s.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from gateway.s3 import errors
from gateway.s3.body import body_stream
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers import HANDLERS
from gateway.s3.operations import Op, resolve
from gateway.s3.responses import XML, Headers, S3Response, Send
from gateway.s3.sigv2 import virtual_host_bucket
from gateway.s3.sigv4 import SigV4Verifier, header_dict
from gateway.services import Services

log = logging.getLogger("hoard.s3")

_ERROR_OP = "Unknown"


class S3Endpoint:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        users = {u.access_key: u.secret_key for u in svc.config.auth.users}
        self.anonymous = svc.config.auth.anonymous
        domain = svc.config.server.domain
        self.vhost_suffix = f".{domain}" if domain else None
        self.verifier = SigV4Verifier(users.get, vhost_suffix=self.vhost_suffix)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(3).hex().upper()

    def _request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):010X}"

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Send) -> None:
        started = time.perf_counter()
        request_id = self._request_id()
        extra: Headers = [(b"x-amz-request-id", request_id.encode()), (b"server", b"Hoard")]
        op_name = _ERROR_OP
        method: str = scope["method"]
        resource = "/"
        status = 500
        req: S3Request | None = None
        response: S3Response | None = None
        try:
            req = self._parse(scope, receive, request_id)
            resource = req.resource
            auth = self.verifier.verify(
                method,
                _raw_path(scope),
                scope.get("query_string", b"").decode("latin-1"),
                req.headers,
                datetime.now(UTC),
            )
            if auth.access_key is None and not self.anonymous:
                raise S3Error(errors.ACCESS_DENIED, resource=resource)
            op = resolve(method, req.bucket, req.key, req.query, req.headers)
            op_name = op.value
            req.set_body_stream(
                body_stream(req, auth, object_checksum=op is not Op.COMPLETE_MULTIPART_UPLOAD)
            )
            response = await HANDLERS[op](req, self.svc)
            status = response.status
            await response.send(send, extra, method == "HEAD")
        except Exception as exc:  # the one place errors become S3 responses
            err = errors.from_exception(exc, resource=resource, request_id=request_id)
            status = err.status
            if response is not None and response.started:
                # Headers are out: the only honest signal left is to abort the connection, so the
                # client sees a short body and never wrong bytes.
                log.warning("aborting %s %s (request %s) mid-response: %r", method, resource, request_id, exc)
                raise
            if _body_held_back(scope, req):
                extra.append((b"connection", b"close"))
            await _send_error(send, err, request_id, extra, method == "HEAD")
        finally:
            self.svc.metrics.observe(op_name, status, time.perf_counter() - started)

    def _parse(self, scope: Mapping[str, Any], receive: Any, request_id: str) -> S3Request:
        headers = header_dict(scope["headers"])
        try:
            path = unquote(_raw_path(scope), errors="strict")
        except UnicodeDecodeError:
            raise S3Error(errors.INVALID_URI) from None
        if "\x00" in path:
            raise S3Error(errors.INVALID_URI)
        bucket, key = _split(path)
        vhost_bucket = virtual_host_bucket(headers.get("host", ""), self.vhost_suffix)
        if vhost_bucket is not None:
            bucket, key = vhost_bucket, path[1:]
        raw_query = scope.get("query_string", b"")
        try:
            query = (
                dict(parse_qsl(raw_query.decode("utf-8"), keep_blank_values=True, errors="strict"))
                if raw_query
                else {}
            )
        except (UnicodeDecodeError, ValueError):
            raise S3Error(errors.INVALID_URI) from None
        return S3Request(scope, receive, scope["method"], bucket, key, query, headers, request_id)


def _body_held_back(scope: Mapping[str, Any], req: S3Request | None) -> bool:
    """Whether the client still holds the body back: it sent `Expect: 100-continue` and waits for
    the 100 Continue that uvicorn writes at the first receive(), which this request never made.
    botocore then keeps the connection without sending the body, and uvicorn, still expecting it,
    read the client's next request as that body (a 400 without a body, or a hang until the
    client's timeout). So the answer closes the connection (RFC 9110, 10.1.1)."""
    if req is not None and req.body_asked:
        return False
    headers = req.headers if req is not None else header_dict(scope["headers"])
    return headers.get("expect", "").lower() == "100-continue"


def _raw_path(scope: Mapping[str, Any]) -> str:
    raw = scope.get("raw_path")
    if raw:
        return bytes(raw).decode("latin-1").split("?", 1)[0]
    return str(scope["path"])


def _split(path: str) -> tuple[str, str]:
    path = path.removeprefix("/")
    bucket, _, key = path.partition("/")
    return bucket, key


async def _send_error(send: Send, err: S3Error, request_id: str, extra: Headers, head: bool) -> None:
    headers: Headers = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    if err.status == 304:
        # RFC 9110: a 304 carries no body.
        await S3Response(304, headers, b"").send(send, extra, True)
        return
    headers.append(XML)
    body = errors.render(err, request_id)
    await S3Response(err.status, headers, body).send(send, extra, head)


__all__ = ["Op", "S3Endpoint"]
