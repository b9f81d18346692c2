"""Hoard's own HTTP endpoints under /_hoard/: health, readiness, metrics and the admin REST API.

Admin calls are SigV4-signed like S3 requests, by a user with `admin: true`; the body's SHA-256 must
match the signed `x-amz-content-sha256`, so a signed request cannot be replayed with another body.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import parse_mounts
from gateway.namespace import Mount, MountError, MountNotFound
from gateway.s3 import errors
from gateway.s3.errors import S3Error
from gateway.s3.sigv4 import SigV4Verifier
from gateway.services import Services

VERSION = "0.1.0"

Endpoint = Callable[[Request, Services, Any], Awaitable[Response]]


class AdminState:
    """Filled by the app lifespan; routes read the services from here."""

    services: Services | None = None
    verifier: SigV4Verifier | None = None


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _authorize(request: Request, state: AdminState) -> tuple[Services, Any]:
    svc, verifier = state.services, state.verifier
    if svc is None or verifier is None:
        raise S3Error(errors.SERVICE_UNAVAILABLE, "Hoard is starting.")
    headers = {k.lower(): v for k, v in request.headers.items()}
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    auth = verifier.verify(
        request.method,
        bytes(raw_path).decode("latin-1").split("?", 1)[0],
        request.scope.get("query_string", b"").decode("latin-1"),
        headers,
        datetime.now(UTC),
    )
    admins = {u.access_key for u in svc.config.auth.users if u.admin}
    if auth.access_key is None or auth.access_key not in admins:
        raise S3Error(errors.ACCESS_DENIED, "Admin credentials are required.")
    body = await request.body()
    if (
        auth.payload_hash not in ("UNSIGNED-PAYLOAD",)
        and hashlib.sha256(body).hexdigest() != auth.payload_hash
    ):
        raise S3Error(errors.XAMZ_CONTENT_SHA256_MISMATCH)
    payload = json.loads(body) if body else {}
    if not isinstance(payload, dict):
        raise ValueError("the request body must be a JSON object")
    return svc, payload


def _guarded(state: AdminState, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            svc, payload = await _authorize(request, state)
            return await endpoint(request, svc, payload)
        except S3Error as exc:
            rid = "admin"
            return Response(errors.render(exc, rid), status_code=exc.status, media_type="application/xml")
        except MountNotFound as exc:
            return _json_error(404, str(exc))
        except (MountError, ValueError, KeyError) as exc:
            return _json_error(400, str(exc))

    return handle


def _mount_view(svc: Services) -> list[dict[str, Any]]:
    return [m.public_view() for m in svc.mounts.mounts()]


async def list_mounts(request: Request, svc: Services, payload: Any) -> Response:
    return JSONResponse({"mounts": _mount_view(svc)})


async def add_mount(request: Request, svc: Services, payload: Any) -> Response:
    path, uri = payload.get("path"), payload.get("uri")
    if not isinstance(path, str) or not isinstance(uri, str):
        return _json_error(400, "path and uri are required strings")
    options = payload.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        return _json_error(400, "options must be a map of strings")
    limits = None
    if payload.get("limits"):
        # Validated exactly like a config file's mount (one-line errors naming the key).
        limits = parse_mounts([{"path": path, "uri": uri, "limits": payload["limits"]}])[0].limits
    mount = await svc.mounts.add(path, uri, options, limits)
    svc.cache.attach(mount.source)
    return JSONResponse({"mount": mount.public_view()}, status_code=201)


async def remove_mount(request: Request, svc: Services, payload: Any) -> Response:
    path = request.query_params.get("path") or payload.get("path")
    if not path:
        return _json_error(400, "path is required")
    mount = svc.mounts.get(path)
    await svc.mounts.remove(path)
    if mount is not None:
        svc.cache.detach(mount.id)
    return JSONResponse({"removed": path})


async def info(request: Request, svc: Services, payload: Any) -> Response:
    return JSONResponse(
        {"version": VERSION, "workers": svc.config.server.workers, "mounts": _mount_view(svc)}
    )


def _target(svc: Services, path: object) -> tuple[Mount, str]:
    """A namespace path (`/bucket/prefix`) → (mount, UFS path) as S3 requests resolve it."""
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ValueError("path must be a namespace path like /bucket or /bucket/prefix")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError(f"{path!r}: '.' and '..' segments are ambiguous here; name the path without them")
    bucket, _, key = path[1:].partition("/")
    if svc.mounts.resolve_bucket(bucket) is None:
        raise MountNotFound(f"no bucket or mount {bucket!r}")
    return svc.mounts.resolve(bucket, key)


def _job_view(job: dict[str, Any] | None, path: str) -> Response:
    if job is None:
        return _json_error(404, f"no load job for {path}")
    return JSONResponse(job)


async def load_start(request: Request, svc: Services, payload: Any) -> Response:
    mount, prefix = _target(svc, payload.get("path"))
    return JSONResponse(await svc.jobs.start(mount.source, prefix), status_code=202)


async def load_status(request: Request, svc: Services, payload: Any) -> Response:
    mount, prefix = _target(svc, request.query_params.get("path"))
    ns = mount.source.namespace_of(prefix)
    return _job_view(await svc.jobs.status(ns), ns)


async def load_stop(request: Request, svc: Services, payload: Any) -> Response:
    mount, prefix = _target(svc, request.query_params.get("path"))
    ns = mount.source.namespace_of(prefix)
    return _job_view(await svc.jobs.stop(ns), ns)


async def free(request: Request, svc: Services, payload: Any) -> Response:
    mount, prefix = _target(svc, payload.get("path"))
    pages = await svc.cache.free(mount.source, prefix)
    await svc.cache.invalidate_prefix(mount.source, prefix)
    return JSONResponse({"path": payload.get("path"), "pages_freed": pages})


async def cache_stats(request: Request, svc: Services, payload: Any) -> Response:
    """The whole cache: sizes from the shared index, counters summed over every worker (one
    worker's own would depend on which worker answered); metadata entries are this worker's."""
    st = svc.metrics.cache_stats()
    return JSONResponse(
        {
            "capacity": st.capacity,
            "reserved": st.reserved,
            "used": st.used,
            "pages": st.pages,
            "hits": st.hits,
            "misses": st.misses,
            "hit_ratio": st.hit_ratio,
            "bytes_from_cache": st.bytes_from_cache,
            "bytes_from_ufs": st.bytes_from_ufs,
            "evictions": {str(reason): n for reason, n in st.evictions.items()},
            "metadata_entries": st.metadata_entries,
            "page_write_failures": st.page_write_failures,
        }
    )


async def cache_explain(request: Request, svc: Services, payload: Any) -> Response:
    mount, path = _target(svc, request.query_params.get("path"))
    return JSONResponse({"mount": mount.path, **(await svc.cache.explain(mount.source, path))})


def _error_handler(
    spec: errors.ErrorSpec, message: str
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        rid = "admin-" + os.urandom(6).hex()
        err = S3Error(spec, message, resource=request.url.path)
        headers = {"x-amz-request-id": rid}
        return Response(
            errors.render(err, rid), status_code=err.status, media_type="application/xml", headers=headers
        )

    return handle


# Unknown paths and methods under /_hoard/ answer in S3's error format, like everything else.
EXCEPTION_HANDLERS = {
    404: _error_handler(errors.NO_SUCH_KEY, "There is no Hoard endpoint at this path."),
    405: _error_handler(errors.METHOD_NOT_ALLOWED, "This Hoard endpoint does not take this method."),
}


def routes(state: AdminState) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if state.services is None:
            return _json_error(503, "starting")
        # `worker`: which process answered (a client that opens fresh connections until it has
        # seen every worker knows they all accept: bench/cache_throughput.py's wait_workers).
        return JSONResponse(
            {"status": "ready", "mounts": len(state.services.mounts.mounts()), "worker": os.getpid()}
        )

    async def metrics(request: Request) -> Response:
        if state.services is None:
            return _json_error(503, "starting")
        return Response(state.services.metrics.render(), media_type="text/plain; version=0.0.4")

    mounts_get = _guarded(state, list_mounts)
    mounts_post = _guarded(state, add_mount)
    mounts_delete = _guarded(state, remove_mount)
    return [
        Route("/_hoard/health", health),
        Route("/_hoard/ready", ready),
        Route("/_hoard/metrics", metrics),
        Route("/_hoard/v1/mounts", mounts_get, methods=["GET"]),
        Route("/_hoard/v1/mounts", mounts_post, methods=["POST"]),
        Route("/_hoard/v1/mounts", mounts_delete, methods=["DELETE"]),
        Route("/_hoard/v1/info", _guarded(state, info), methods=["GET"]),
        Route("/_hoard/v1/load", _guarded(state, load_start), methods=["POST"]),
        Route("/_hoard/v1/load", _guarded(state, load_status), methods=["GET"]),
        Route("/_hoard/v1/load", _guarded(state, load_stop), methods=["DELETE"]),
        Route("/_hoard/v1/free", _guarded(state, free), methods=["POST"]),
        Route("/_hoard/v1/cache/stats", _guarded(state, cache_stats), methods=["GET"]),
        Route("/_hoard/v1/cache/explain", _guarded(state, cache_explain), methods=["GET"]),
    ]
