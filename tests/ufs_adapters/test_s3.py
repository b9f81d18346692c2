from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.servers import free_port
from tests.ufs_adapters.conformance import CASES, Case, aws_multipart_etag, body, get, list_all, md5, put
from ufs_adapters import s3 as s3_module
from ufs_adapters.base import (
    MIN_PART_SIZE,
    BadDigest,
    InvalidPath,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    UfsError,
    Unavailable,
    WriteMeta,
)
from ufs_adapters.s3 import S3Adapter
from ufs_adapters.s3_bodies import span_of
from ufs_adapters.s3_errors import translate_error, translated


def options(endpoint: str) -> dict[str, str]:
    return {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "addressing_style": "path",
    }


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Any:
    return boto3.client("s3", **_boto_kwargs(moto_endpoint))


def _boto_kwargs(endpoint: str) -> dict[str, str]:
    return {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def new_bucket(s3: Any) -> str:
    name = f"hoard-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Iterator[str]:
    """The module's bucket: prefix mounts live in it, next to keys that must stay invisible."""
    name = new_bucket(s3)
    s3.put_object(Bucket=name, Key="some/other", Body=b"outside")
    yield name


@pytest.fixture(scope="module")
async def opened(moto_endpoint: str, bucket: str) -> AsyncIterator[S3Adapter]:
    """One client for the module (opening one costs ~0.3 s); each test mounts its own place with it."""
    adapter = await S3Adapter.open(f"s3://{bucket}", options(moto_endpoint))
    yield adapter
    await adapter.aclose()


@pytest.fixture(params=["bucket", "prefix"])
def ufs(request: pytest.FixtureRequest, opened: S3Adapter, s3: Any, bucket: str) -> S3Adapter:
    """A fresh bucket mounted whole, or a fresh prefix of the module's bucket."""
    if request.param == "bucket":
        return S3Adapter(opened.client, new_bucket(s3))
    prefix = f"some/prefix/{uuid.uuid4().hex[:8]}"
    # a sibling sharing the prefix's characters must not leak into the mount
    s3.put_object(Bucket=bucket, Key=f"{prefix}-sibling/x", Body=b"sibling")
    return S3Adapter(opened.client, bucket, prefix)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_conformance(ufs: S3Adapter, case: Case) -> None:
    await case(ufs)


# --- error translation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected", "throttled"),
    [
        ("NoSuchKey", 404, NotFound, False),
        ("404", 404, NotFound, False),
        ("NoSuchBucket", 404, NotFound, False),
        ("AccessDenied", 403, PermissionDenied, False),
        ("InvalidAccessKeyId", 403, PermissionDenied, False),
        ("SignatureDoesNotMatch", 403, PermissionDenied, False),
        ("PreconditionFailed", 412, PreconditionFailed, False),
        ("412", 412, PreconditionFailed, False),
        ("SlowDown", 503, Unavailable, True),
        ("503", 503, Unavailable, True),
        ("Throttling", 400, Unavailable, True),
        ("TooManyRequests", 429, Unavailable, True),
        ("InternalError", 500, Unavailable, False),
        ("SomethingNew", 404, NotFound, False),  # unknown code: the status decides
        ("SomethingNew", 400, UfsError, False),
    ],
)
def test_error_table(code: str, status: int, expected: type[UfsError], throttled: bool) -> None:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    exc = ClientError(response, "Op")
    with pytest.raises(expected) as raised:
        with translated("some/key"):
            raise exc
    assert type(raised.value) is expected or expected is UfsError
    assert raised.value.__cause__ is exc and raised.value.path == "some/key"
    assert getattr(raised.value, "throttled", False) is throttled


def test_connection_errors_are_unavailable() -> None:
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(translate_error(exc, "k"), Unavailable)


async def test_unreachable_endpoint(tmp_path: Path) -> None:
    opts = {**options(f"http://127.0.0.1:{free_port()}"), "max_attempts": "1", "connect_timeout": "1"}
    adapter = await S3Adapter.open("s3://nowhere", opts)
    try:
        with pytest.raises(Unavailable) as raised:
            await adapter.stat("k")
        assert raised.value.__cause__ is not None
        with pytest.raises(Unavailable):
            await adapter.check()
    finally:
        await adapter.aclose()


# --- mounts -----------------------------------------------------------------------------------------


async def test_check(moto_endpoint: str, bucket: str) -> None:
    good = await S3Adapter.open(f"s3://{bucket}/some/prefix", options(moto_endpoint))
    missing = await S3Adapter.open("s3://no-such-bucket-hoard", options(moto_endpoint))
    try:
        await good.check()
        with pytest.raises(NotFound):
            await missing.check()
        assert not await missing.is_dir("")
    finally:
        await good.aclose()
        await missing.aclose()


async def test_prefix_mount_is_confined(moto_endpoint: str, s3: Any) -> None:
    name = new_bucket(s3)
    for key in ["some/prefix/a", "some/prefix-x/b", "some/other", "some/prefix/"]:
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    adapter = await S3Adapter.open(f"s3://{name}/some/prefix/", options(moto_endpoint))
    try:
        assert await list_all(adapter, "") == (["a"], [])
        assert await list_all(adapter, "", limit=1) == (["a"], [])  # the marker `some/prefix/` is not ours
        assert await list_all(adapter, "", "/") == (["a"], [])
        for key in ("../other", "./a", "a/../../other"):
            with pytest.raises(InvalidPath):
                await adapter.stat(key)
        await put(adapter, "n", b"new")
        assert s3.get_object(Bucket=name, Key="some/prefix/n")["Body"].read() == b"new"
    finally:
        await adapter.aclose()


async def test_alluxio_option_names(moto_endpoint: str, bucket: str) -> None:
    aliases = {
        "s3a.accessKeyId": "testing",
        "s3a.secretKey": "testing",
        "alluxio.underfs.s3.endpoint": moto_endpoint,
        "alluxio.underfs.s3.region": "us-east-1",
        "alluxio.underfs.s3.disable.dns.buckets": "true",
        "alluxio.underfs.s3.inherit.acl": "false",  # foreign and unused: ignored
    }
    adapter = await S3Adapter.open(f"s3://{bucket}", aliases)
    try:
        await adapter.check()
    finally:
        await adapter.aclose()
    with pytest.raises(ValueError, match="unknown option 'endpoint'"):
        await S3Adapter.open(f"s3://{bucket}", {"endpoint": moto_endpoint})
    with pytest.raises(ValueError, match="addressing_style"):
        await S3Adapter.open(f"s3://{bucket}", {"addressing_style": "sideways"})


# --- big bodies -------------------------------------------------------------------------------------


async def test_large_write_goes_multipart(ufs: S3Adapter, s3: Any) -> None:
    ufs.part_size = MIN_PART_SIZE
    data = os.urandom(2 * MIN_PART_SIZE + 1000)
    info = await ufs.write("large", body(data), size=None, meta=WriteMeta("application/x-big", {"a": "b"}))
    parts = [data[:MIN_PART_SIZE], data[MIN_PART_SIZE : 2 * MIN_PART_SIZE], data[2 * MIN_PART_SIZE :]]
    assert (info.etag, info.size, info.parts_count) == (aws_multipart_etag(*parts), len(data), 3)
    st = await ufs.stat("large")
    assert (st.etag, st.content_type, dict(st.metadata)) == (info.etag, "application/x-big", {"a": "b"})
    assert md5(await get(ufs, "large")) == md5(data)
    assert (
        await ufs.list_uploads("", delimiter=None, key_marker=None, upload_id_marker=None, limit=10)
    ).uploads == []
    with pytest.raises(BadDigest):
        await ufs.write("short", body(data), size=len(data) + 1, meta=WriteMeta())
    with pytest.raises(NotFound):
        await ufs.stat("short")


async def test_part_range_adds_up_part_sizes_once_per_version(
    ufs: S3Adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto answers HEAD ?partNumber=N without a Content-Range: the part's place is the sum of
    the sizes before it, each asked once, and a HEAD of the object confirms the version. What was
    learnt is kept: a part asked again, or an earlier one, costs no request."""
    ufs.part_size = MIN_PART_SIZE
    data = os.urandom(3 * MIN_PART_SIZE + 10)
    info = await ufs.write("parts", body(data), size=None, meta=WriteMeta())
    heads: list[int | None] = []
    real = ufs.client.head_object

    async def counted(**kwargs: Any) -> Any:
        heads.append(kwargs.get("PartNumber"))
        return await real(**kwargs)

    monkeypatch.setattr(ufs.client, "head_object", counted)
    edge = MIN_PART_SIZE
    assert await ufs.part_range("parts", 3, info.etag) == (2 * edge, 3 * edge)
    assert heads == [3, 1, 2, None]
    assert await ufs.part_range("parts", 4, info.etag) == (3 * edge, 3 * edge + 10)
    assert heads[4:] == [4, None]  # parts 1-3 known: their sizes are not asked again
    heads.clear()
    for n in (1, 3, 4):
        await ufs.part_range("parts", n, info.etag)
    assert heads == []
    assert span_of("bytes 5-9/20") == (5, 10) and span_of("bytes */20") is None


async def test_cancelled_write_aborts_its_upload(ufs: S3Adapter) -> None:
    ufs.part_size = MIN_PART_SIZE
    await put(ufs, "k", b"old")

    async def stalled() -> AsyncIterator[bytes]:
        yield os.urandom(MIN_PART_SIZE + 1)
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(ufs.write("k", stalled(), size=None, meta=WriteMeta()))
    for _ in range(200):
        page = await ufs.list_uploads("k", delimiter=None, key_marker=None, upload_id_marker=None, limit=10)
        if page.uploads and (await ufs.list_parts("k", page.uploads[0].upload_id, marker=0, limit=1)).parts:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the first part never arrived")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    page = await ufs.list_uploads("k", delimiter=None, key_marker=None, upload_id_marker=None, limit=10)
    assert page.uploads == []
    assert await get(ufs, "k") == b"old"


async def test_spooled_part(ufs: S3Adapter, tmp_path: Path) -> None:
    ufs.part_size = 1024 * 1024  # spool to disk above 1 MiB
    data = os.urandom(MIN_PART_SIZE + 3)
    upload_id = await ufs.create_multipart("spooled", WriteMeta())
    part = await ufs.upload_part("spooled", upload_id, 1, body(data), size=len(data))
    assert part.etag == md5(data)
    await ufs.complete_multipart("spooled", upload_id, [(1, part.etag)])
    assert md5(await get(ufs, "spooled")) == md5(data)


async def test_copy_in_parts(ufs: S3Adapter) -> None:
    ufs.max_copy_size = ufs.copy_part_size = MIN_PART_SIZE
    data = os.urandom(2 * MIN_PART_SIZE + 10)
    await put(ufs, "src", data, content_type="text/plain", metadata={"k": "v"})
    info = await ufs.copy("src", "dst", meta=None)
    assert info.size == len(data) and info.parts_count == 3
    st = await ufs.stat("dst")
    assert (st.content_type, dict(st.metadata)) == ("text/plain", {"k": "v"})
    assert md5(await get(ufs, "dst")) == md5(data)


@pytest.mark.parametrize("direct", ["true", "false"])
async def test_a_read_after_read_head_continues_its_response(
    s3: Any, moto_endpoint: str, direct: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_head(more=True) asks for the whole object; the read of that version from where it
    stopped takes the rest of that response over (no second GET). Any other read makes its own
    request, and a rest nobody takes is closed after HEAD_PARK. Without `more`, nothing waits."""
    monkeypatch.setattr(s3_module, "HEAD_PARK", 0.2)
    bucket = new_bucket(s3)
    ufs = await S3Adapter.open(f"s3://{bucket}", {**options(moto_endpoint), "direct_get": direct})
    try:
        data = os.urandom(3 * 1024 * 1024 + 5)
        await put(ufs, "obj", data)
        assert (ufs.signed_get is not None) == (direct == "true")

        def requests() -> int | None:  # GETs sent by the direct path; the SDK's are not counted
            return ufs.signed_get.requests if ufs.signed_get is not None else None

        before = requests() or 0
        info, head = await ufs.read_head("obj", 1024 * 1024, more=True)
        assert head == data[: 1024 * 1024] and info.size == len(data)
        assert await get(ufs, "obj", 1024 * 1024, None, info.etag) == data[1024 * 1024 :]
        assert requests() in (before + 1, None)  # one GET for both

        # Up to a given end, with the rest of the response closed.
        await ufs.read_head("obj", 1024 * 1024, more=True)
        assert (
            await get(ufs, "obj", 1024 * 1024, 2 * 1024 * 1024, info.etag)
            == data[1024 * 1024 : 2 * 1024 * 1024]
        )
        # Another offset, or no ETag to match, is a request of its own.
        await ufs.read_head("obj", 1024 * 1024, more=True)
        assert await get(ufs, "obj", 1000, 2000, info.etag) == data[1000:2000]
        assert await get(ufs, "obj", 1024 * 1024, 1024 * 1024 + 10) == data[1024 * 1024 : 1024 * 1024 + 10]
        assert requests() in (before + 5, None)
        # Left alone, the rest is closed; a read then makes its own request, of the same bytes.
        await asyncio.sleep(0.5)
        assert not ufs._parked
        assert await get(ufs, "obj", 1024 * 1024, None, info.etag) == data[1024 * 1024 :]
        assert requests() in (before + 6, None)
        # Without `more` the GET asks for the head only: nothing waits, the read is a request.
        await ufs.read_head("obj", 1024 * 1024)
        assert not ufs._parked
        assert await get(ufs, "obj", 1024 * 1024, None, info.etag) == data[1024 * 1024 :]
        assert requests() in (before + 8, None)
        # From further in, up to an end: one GET for the head and the read that continues it.
        mid = requests() or 0
        info, head = await ufs.read_head(
            "obj", 1024 * 1024, start=1024 * 1024, more=True, end=3 * 1024 * 1024
        )
        assert head == data[1024 * 1024 : 2 * 1024 * 1024]
        assert (
            await get(ufs, "obj", 2 * 1024 * 1024, 3 * 1024 * 1024, info.etag)
            == data[2 * 1024 * 1024 : 3 * 1024 * 1024]
        )
        assert requests() in (mid + 1, None) and not ufs._parked
        # An end past the object's: the response (and the continuation) stop at its end.
        await ufs.read_head("obj", 1024 * 1024, start=2 * 1024 * 1024, more=True, end=8 * 1024 * 1024)
        assert await get(ufs, "obj", 3 * 1024 * 1024, None, info.etag) == data[3 * 1024 * 1024 :]
        assert requests() in (mid + 2, None)
        # A small object comes whole: nothing is left to continue.
        await put(ufs, "small", b"tiny")
        assert (await ufs.read_head("small", 1024 * 1024, more=True))[1] == b"tiny" and not ufs._parked
        # A changed object is never continued from the old response.
        info, _ = await ufs.read_head("obj", 1024 * 1024, more=True)
        await put(ufs, "obj", data[::-1])
        with pytest.raises(PreconditionFailed):
            await get(ufs, "obj", 0, 10, info.etag)
    finally:
        await ufs.aclose()
    assert not ufs._parked


async def test_direct_get_answers_as_the_sdk_does(s3: Any, moto_endpoint: str) -> None:
    """GETs and HEADs signed by botocore's signer but sent without the SDK (s3_get.py, on by
    default) give the same bytes, metadata and errors as the SDK's; `direct_get: false` turns them
    off."""
    bucket = new_bucket(s3)
    on = await S3Adapter.open(f"s3://{bucket}/p", options(moto_endpoint))
    off = await S3Adapter.open(f"s3://{bucket}/p", {**options(moto_endpoint), "direct_get": "false"})
    try:
        assert on.signed_get is not None and off.signed_get is None
        data = os.urandom(3000)
        await put(on, "dir/ü k+%.bin", data, content_type="text/x-test", metadata={"color": "blue"})
        for adapter in (on, off):
            assert await get(adapter, "dir/ü k+%.bin") == data
            assert await get(adapter, "dir/ü k+%.bin", 10, 20) == data[10:20]
            assert await get(adapter, "dir/ü k+%.bin", 5000) == b""  # past the end: no bytes
            info, head = await adapter.read_head("dir/ü k+%.bin", 1024)
            assert (head, info.size, info.etag, info.content_type, dict(info.metadata)) == (
                data[:1024],
                3000,
                md5(data),
                "text/x-test",
                {"color": "blue"},
            )
            with pytest.raises(NotFound):
                await get(adapter, "missing")
            with pytest.raises(NotFound):
                await adapter.stat("missing")
            with pytest.raises(PreconditionFailed):
                await get(adapter, "dir/ü k+%.bin", if_match="0" * 32)
        # HEAD (stat) too: the same ObjectInfo, field for field, as the SDK's.
        assert await on.stat("dir/ü k+%.bin") == await off.stat("dir/ü k+%.bin") == info
        assert on.signed_get.enabled and on.signed_get.requests == 8
    finally:
        await on.aclose()
        await off.aclose()
    with pytest.raises(ValueError, match="direct_get"):
        await S3Adapter.open(f"s3://{bucket}", {**options(moto_endpoint), "direct_get": "maybe"})
