"""The one suite every UfsAdapter passes (run by test_local.py and test_s3.py).

Each case is an async function taking a fresh, empty adapter. Assertions compare bytes and md5s;
S3 order is the UTF-8 byte order of the keys.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ufs_adapters.base import (
    MIN_PART_SIZE,
    AlreadyExists,
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    InvalidPath,
    NoSuchUpload,
    NotEmpty,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    ReadOptions,
    UfsAdapter,
    WriteMeta,
)

Case = Callable[[UfsAdapter], Awaitable[None]]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    CASES.append(fn)
    return fn


# --- helpers --------------------------------------------------------------------------------------


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def aws_multipart_etag(*parts: bytes) -> str:
    """AWS's formula, computed independently of the adapters' helper."""
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def utf8_sorted(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


async def body(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


async def put(
    ufs: UfsAdapter,
    path: str,
    data: bytes,
    *,
    content_type: str | None = None,
    metadata: dict[str, str] | None = None,
) -> ObjectInfo:
    meta = WriteMeta(content_type, metadata or {})
    return await ufs.write(path, body(data), size=len(data), meta=meta)


async def get(
    ufs: UfsAdapter, path: str, start: int = 0, end: int | None = None, if_match: str | None = None
) -> bytes:
    return b"".join([c async for c in ufs.read(path, ReadOptions(start, end, if_match))])


async def list_all(
    ufs: UfsAdapter, prefix: str, delimiter: str | None = None, limit: int = 1000
) -> tuple[list[str], list[str]]:
    """Every object key and common prefix under `prefix`, following pages."""
    objects: list[str] = []
    prefixes: list[str] = []
    after: str | None = None
    for _ in range(10_000):
        page = await ufs.list_objects(prefix, delimiter=delimiter, start_after=after, limit=limit)
        assert len(page.objects) + len(page.common_prefixes) <= limit
        objects += [o.path for o in page.objects]
        prefixes += page.common_prefixes
        if page.next_start_after is None:
            return objects, prefixes
        assert page.next_start_after == max([o.path for o in page.objects[-1:]] + page.common_prefixes[-1:])
        after = page.next_start_after
    raise AssertionError("listing does not end")


async def entries(ufs: UfsAdapter, prefix: str, delimiter: str | None) -> list[str]:
    """Objects and prefixes in the order pages deliver them, one entry per page."""
    out: list[str] = []
    after: str | None = None
    while True:
        page = await ufs.list_objects(prefix, delimiter=delimiter, start_after=after, limit=1)
        out += [o.path for o in page.objects] + page.common_prefixes
        if page.next_start_after is None:
            return out
        after = page.next_start_after


# --- objects ----------------------------------------------------------------------------------------


@case
async def put_get_roundtrip(ufs: UfsAdapter) -> None:
    data = b"hello, hoard"
    info = await put(ufs, "greeting.txt", data, content_type="text/plain", metadata={"color": "blue"})
    assert (info.path, info.size, info.etag) == ("greeting.txt", len(data), md5(data))
    st = await ufs.stat("greeting.txt")
    assert (st.size, st.etag, st.content_type, dict(st.metadata)) == (
        len(data),
        md5(data),
        "text/plain",
        {"color": "blue"},
    )
    assert st.last_modified.tzinfo is not None and st.version == st.etag
    assert await get(ufs, "greeting.txt") == data


@case
async def chunked_body_of_unknown_size(ufs: UfsAdapter) -> None:
    parts = [os.urandom(n) for n in (1, 1000, 70_000, 3, 0, 2 * 1024 * 1024 + 17)]

    async def chunks() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    data = b"".join(parts)
    info = await ufs.write("dir/chunks.bin", chunks(), size=None, meta=WriteMeta())
    assert (info.size, info.etag) == (len(data), md5(data))
    assert md5(await get(ufs, "dir/chunks.bin")) == md5(data)
    # across the 1 MiB read chunk boundary
    mib = 1024 * 1024
    assert await get(ufs, "dir/chunks.bin", mib - 5, mib + 5) == data[mib - 5 : mib + 5]


@case
async def zero_length_object(ufs: UfsAdapter) -> None:
    info = await put(ufs, "empty", b"")
    assert (info.size, info.etag) == (0, md5(b""))
    assert (await ufs.stat("empty")).size == 0
    assert await get(ufs, "empty") == b""
    assert await get(ufs, "empty", 0, 0) == b""
    assert await get(ufs, "empty", 0, 10) == b""


@case
async def read_head_gives_metadata_and_first_bytes(ufs: UfsAdapter) -> None:
    data = bytes(range(256)) * 12
    stored = await put(ufs, "head/obj.bin", data, content_type="text/x-head", metadata={"k": "v"})
    info, first = await ufs.read_head("head/obj.bin", 1000)
    assert first == data[:1000]
    assert (info.size, info.etag, info.content_type, dict(info.metadata)) == (
        len(data),
        stored.etag,
        "text/x-head",
        {"k": "v"},
    )
    info, whole = await ufs.read_head("head/obj.bin", 1 << 20)
    assert whole == data and info.size == len(data)
    # From further in (a read that starts there): the same metadata, those bytes, fewer at the end.
    for start in (1000, len(data) - 10):
        info, part = await ufs.read_head("head/obj.bin", 1000, start=start)
        assert (part, info.size, info.etag) == (data[start : start + 1000], len(data), stored.etag)
    for start in (len(data), len(data) + 5000):  # no bytes from there, and no error
        info, nothing = await ufs.read_head("head/obj.bin", 1000, start=start, more=True)
        assert (nothing, info.size, info.etag) == (b"", len(data), stored.etag)
    await put(ufs, "head/empty", b"")
    info, nothing = await ufs.read_head("head/empty", 4096)
    assert (info.size, nothing) == (0, b"")
    with pytest.raises(NotFound):
        await ufs.read_head("head/absent", 4096)


@case
async def byte_ranges(ufs: UfsAdapter) -> None:
    data = bytes(range(256)) * 4
    await put(ufs, "r.bin", data)
    for start, end in [(0, None), (0, 1), (10, 20), (1000, None), (1000, 5000), (1023, 1024), (5, 5)]:
        assert await get(ufs, "r.bin", start, end) == data[start:end], (start, end)
    for start in (1024, 2000):  # at or past the end: nothing
        assert await get(ufs, "r.bin", start) == b""


@case
async def if_match_pins_the_version(ufs: UfsAdapter) -> None:
    data = b"version one"
    info = await put(ufs, "v", data)
    assert await get(ufs, "v", if_match=info.etag) == data
    assert await get(ufs, "v", 2, 5, if_match=f'"{info.etag}"') == data[2:5]
    with pytest.raises(PreconditionFailed):
        await get(ufs, "v", if_match="0" * 32)
    with pytest.raises(PreconditionFailed):
        await get(ufs, "v", 1, 3, if_match="0" * 32)
    await put(ufs, "v", b"version two")
    with pytest.raises(PreconditionFailed):
        await get(ufs, "v", if_match=info.etag)


@case
async def missing_objects(ufs: UfsAdapter) -> None:
    await put(ufs, "dir/x", b"x")
    for path in ("nope", "dir", "dir/", "dir/x/y", "dir/xx"):
        with pytest.raises(NotFound):
            await ufs.stat(path)
        with pytest.raises(NotFound):
            await get(ufs, path)
    with pytest.raises(NotFound):
        await ufs.copy("nope", "copy", meta=None)


@case
async def overwrite_replaces(ufs: UfsAdapter) -> None:
    await put(ufs, "k", b"first", content_type="text/plain", metadata={"a": "1"})
    await put(ufs, "k", b"second!")
    st = await ufs.stat("k")
    assert (st.size, st.etag, dict(st.metadata)) == (7, md5(b"second!"), {})
    assert await get(ufs, "k") == b"second!"


@case
async def delete_is_idempotent(ufs: UfsAdapter) -> None:
    await put(ufs, "a/b/c", b"c")
    await put(ufs, "a/keep", b"k")
    await ufs.delete("a/b/c")
    with pytest.raises(NotFound):
        await ufs.stat("a/b/c")
    await ufs.delete("a/b/c")
    await ufs.delete("never/was")
    assert await get(ufs, "a/keep") == b"k"
    assert await list_all(ufs, "") == (["a/keep"], [])


@case
async def unicode_and_odd_keys(ufs: UfsAdapter) -> None:
    keys = ["u/z", "u/é", "u/日本", "u/😀", "u/\uff21", "u/a b+c%d=e&f", "u/ü/ß.txt", "u/~!$'()*,;@"]
    for key in keys:
        await put(ufs, key, key.encode())
    for key in keys:
        assert await get(ufs, key) == key.encode()
        assert (await ufs.stat(key)).etag == md5(key.encode())
    assert (await list_all(ufs, "u/"))[0] == utf8_sorted(keys)
    objects, prefixes = await list_all(ufs, "u/", "/")
    assert objects == utf8_sorted([k for k in keys if "/" not in k[2:]]) and prefixes == ["u/ü/"]


@case
async def copy_keeps_or_replaces_metadata(ufs: UfsAdapter) -> None:
    data = b"copy me" * 100
    src = await put(ufs, "src/a.txt", data, content_type="text/plain", metadata={"k": "v"})
    kept = await ufs.copy("src/a.txt", "dst/b.txt", meta=None)
    assert (kept.path, kept.size, kept.etag) == ("dst/b.txt", len(data), src.etag)
    st = await ufs.stat("dst/b.txt")
    assert (st.etag, st.content_type, dict(st.metadata)) == (md5(data), "text/plain", {"k": "v"})
    assert await get(ufs, "dst/b.txt") == data

    replaced = await ufs.copy("src/a.txt", "dst/c.txt", meta=WriteMeta("application/json", {"x": "y"}))
    assert replaced.etag == md5(data)
    st = await ufs.stat("dst/c.txt")
    assert (st.content_type, dict(st.metadata)) == ("application/json", {"x": "y"})
    assert await get(ufs, "dst/c.txt") == data
    assert dict((await ufs.stat("src/a.txt")).metadata) == {"k": "v"}


# --- listing ----------------------------------------------------------------------------------------

TREE = ["a-b", "a.", "a/b", "a/c/d", "a0", "ab", "b", "photos/2024/x.jpg", "phone.txt"]


async def _tree(ufs: UfsAdapter) -> None:
    for key in random.Random(7).sample(TREE, len(TREE)):
        await put(ufs, key, key.encode())


@case
async def list_recursive_in_s3_order(ufs: UfsAdapter) -> None:
    await _tree(ufs)
    page = await ufs.list_objects("", delimiter=None, start_after=None, limit=1000)
    assert [o.path for o in page.objects] == utf8_sorted(TREE)
    assert page.common_prefixes == [] and page.next_start_after is None
    for info in page.objects:  # LIST agrees with HEAD
        st = await ufs.stat(info.path)
        assert (info.size, info.etag) == (st.size, st.etag) == (len(info.path), md5(info.path.encode()))


@case
async def list_with_delimiter(ufs: UfsAdapter) -> None:
    await _tree(ufs)
    assert await list_all(ufs, "", "/") == (["a-b", "a.", "a0", "ab", "b", "phone.txt"], ["a/", "photos/"])
    # `a-b` < `a.` < `a/` < `a0`: prefixes sit between objects in one ordered stream
    assert await entries(ufs, "", "/") == ["a-b", "a.", "a/", "a0", "ab", "b", "phone.txt", "photos/"]
    assert await list_all(ufs, "a/", "/") == (["a/b"], ["a/c/"])
    assert await list_all(ufs, "a", "/") == (["a-b", "a.", "a0", "ab"], ["a/"])
    assert await list_all(ufs, "ph", "/") == (["phone.txt"], ["photos/"])
    assert await list_all(ufs, "ph") == (["phone.txt", "photos/2024/x.jpg"], [])
    assert await list_all(ufs, "a/c/d") == (["a/c/d"], [])
    assert await list_all(ufs, "a/c/d/") == ([], [])
    assert await list_all(ufs, "zzz", "/") == ([], [])
    assert await list_all(ufs, "photos/2024/", "/") == (["photos/2024/x.jpg"], [])


@case
async def list_with_other_delimiter(ufs: UfsAdapter) -> None:
    for key in ["a-1-x", "a-1-y", "a-2", "b"]:
        await put(ufs, key, b"")
    assert await list_all(ufs, "", "-") == (["b"], ["a-"])
    assert await list_all(ufs, "a-", "-") == (["a-2"], ["a-1-"])


@case
async def list_pagination(ufs: UfsAdapter) -> None:
    await _tree(ufs)
    for delimiter in (None, "/"):
        full = await list_all(ufs, "", delimiter)
        for limit in (1, 2, 3, 4):
            assert await list_all(ufs, "", delimiter, limit) == full, (delimiter, limit)
    page = await ufs.list_objects("", delimiter=None, start_after=None, limit=0)
    assert page.objects == [] and page.common_prefixes == []


@case
async def list_start_after(ufs: UfsAdapter) -> None:
    await _tree(ufs)

    async def keys(start_after: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        page = await ufs.list_objects("", delimiter=delimiter, start_after=start_after, limit=100)
        return [o.path for o in page.objects], page.common_prefixes

    assert await keys("a0") == (["ab", "b", "phone.txt", "photos/2024/x.jpg"], [])
    assert await keys("a/b") == (["a/c/d", "a0", "ab", "b", "phone.txt", "photos/2024/x.jpg"], [])
    assert await keys("a") == (utf8_sorted(TREE), [])
    assert await keys("a/", "/") == (["a0", "ab", "b", "phone.txt"], ["photos/"])
    assert await keys("a-b", "/") == (["a.", "a0", "ab", "b", "phone.txt"], ["a/", "photos/"])
    assert await keys("zzz") == ([], [])


@case
async def folder_marker_objects(ufs: UfsAdapter) -> None:
    marker = await put(ufs, "dir/", b"", content_type="application/x-directory")
    await put(ufs, "dir/x", b"x")
    assert marker.etag == md5(b"")
    st = await ufs.stat("dir/")
    assert (st.size, st.etag, st.content_type) == (0, md5(b""), "application/x-directory")
    assert await list_all(ufs, "") == (["dir/", "dir/x"], [])
    assert await list_all(ufs, "", "/") == ([], ["dir/"])
    assert await list_all(ufs, "dir/", "/") == (["dir/", "dir/x"], [])
    await ufs.delete("dir/")
    with pytest.raises(NotFound):
        await ufs.stat("dir/")
    assert await get(ufs, "dir/x") == b"x"


# --- multipart --------------------------------------------------------------------------------------


@case
async def multipart_full_cycle(ufs: UfsAdapter) -> None:
    p1, p2, p3 = os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), os.urandom(1234)
    upload_id = await ufs.create_multipart("big/file.bin", WriteMeta("application/x-test", {"m": "1"}))
    for number, data in [(2, p2), (3, p3), (1, p1)]:
        part = await ufs.upload_part(
            "big/file.bin", upload_id, number, body(data, 256 * 1024), size=len(data)
        )
        assert (part.part_number, part.etag, part.size) == (number, md5(data), len(data))
    listed = await ufs.list_parts("big/file.bin", upload_id, marker=0, limit=1000)
    assert [(p.part_number, p.etag, p.size) for p in listed.parts] == [
        (1, md5(p1), len(p1)),
        (2, md5(p2), len(p2)),
        (3, md5(p3), len(p3)),
    ]
    assert listed.next_marker is None
    uploads = await ufs.list_uploads(
        "big/", delimiter=None, key_marker=None, upload_id_marker=None, limit=100
    )
    assert [(u.path, u.upload_id) for u in uploads.uploads] == [("big/file.bin", upload_id)]

    info = await ufs.complete_multipart(
        "big/file.bin", upload_id, [(1, md5(p1)), (2, f'"{md5(p2)}"'), (3, md5(p3))]
    )
    expected = aws_multipart_etag(p1, p2, p3)
    assert (info.path, info.size, info.etag, info.parts_count) == (
        "big/file.bin",
        len(p1 + p2 + p3),
        expected,
        3,
    )
    st = await ufs.stat("big/file.bin")
    assert (st.etag, st.size, st.content_type, dict(st.metadata), st.parts_count) == (
        expected,
        len(p1 + p2 + p3),
        "application/x-test",
        {"m": "1"},
        3,
    )
    assert md5(await get(ufs, "big/file.bin")) == md5(p1 + p2 + p3)
    edge = MIN_PART_SIZE
    assert await get(ufs, "big/file.bin", edge - 3, edge + 3) == (p1 + p2)[edge - 3 : edge + 3]
    # Where each part lies (GetObject ?partNumber=N); asked again (the S3 adapter remembers it);
    # never for another version.
    spans = [await ufs.part_range("big/file.bin", n, expected) for n in (3, 1, 2, 3)]
    assert spans == [(2 * edge, 2 * edge + 1234), (0, edge), (edge, 2 * edge), (2 * edge, 2 * edge + 1234)]
    with pytest.raises(PreconditionFailed):
        await ufs.part_range("big/file.bin", 2, aws_multipart_etag(p2, p1, p3))
    listing = (await ufs.list_objects("big/", delimiter=None, start_after=None, limit=10)).objects
    assert [(o.path, o.etag) for o in listing] == [("big/file.bin", expected)]
    uploads = await ufs.list_uploads(
        "big/", delimiter=None, key_marker=None, upload_id_marker=None, limit=100
    )
    assert uploads.uploads == []
    with pytest.raises(NoSuchUpload):
        await ufs.list_parts("big/file.bin", upload_id, marker=0, limit=10)


@case
async def multipart_part_retry_replaces(ufs: UfsAdapter) -> None:
    first, second, tail = os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"tail"
    upload_id = await ufs.create_multipart("retry", WriteMeta())
    await ufs.upload_part("retry", upload_id, 1, body(first), size=None)
    await ufs.upload_part("retry", upload_id, 1, body(second), size=None)
    await ufs.upload_part("retry", upload_id, 2, body(tail), size=None)
    parts = (await ufs.list_parts("retry", upload_id, marker=0, limit=10)).parts
    assert [(p.part_number, p.etag) for p in parts] == [(1, md5(second)), (2, md5(tail))]
    with pytest.raises(InvalidPart):
        await ufs.complete_multipart("retry", upload_id, [(1, md5(first)), (2, md5(tail))])
    info = await ufs.complete_multipart("retry", upload_id, [(1, md5(second)), (2, md5(tail))])
    assert info.etag == aws_multipart_etag(second, tail)
    assert md5(await get(ufs, "retry")) == md5(second + tail)


@case
async def multipart_errors(ufs: UfsAdapter) -> None:
    small1, small2 = b"1" * 100, b"2" * 200
    upload_id = await ufs.create_multipart("err", WriteMeta())
    await ufs.upload_part("err", upload_id, 1, body(small1), size=len(small1))
    await ufs.upload_part("err", upload_id, 2, body(small2), size=len(small2))
    with pytest.raises(InvalidPartOrder):
        await ufs.complete_multipart("err", upload_id, [(2, md5(small2)), (1, md5(small1))])
    with pytest.raises(InvalidPart):
        await ufs.complete_multipart("err", upload_id, [(1, md5(small1)), (3, md5(small2))])
    with pytest.raises(InvalidPart):
        await ufs.complete_multipart("err", upload_id, [(1, "f" * 32)])
    with pytest.raises(EntityTooSmall):
        await ufs.complete_multipart("err", upload_id, [(1, md5(small1)), (2, md5(small2))])
    with pytest.raises(NotFound):
        await ufs.stat("err")
    # the failed attempts left the upload usable: a single small last part is fine
    info = await ufs.complete_multipart("err", upload_id, [(2, md5(small2))])
    assert info.etag == aws_multipart_etag(small2)
    assert await get(ufs, "err") == small2

    bogus = "bogusUploadId0000000000000"
    with pytest.raises(NoSuchUpload):
        await ufs.list_parts("err", bogus, marker=0, limit=10)
    with pytest.raises(NoSuchUpload):
        await ufs.abort_multipart("err", bogus)
    aborted = await ufs.create_multipart("gone", WriteMeta())
    await ufs.abort_multipart("gone", aborted)
    with pytest.raises(NoSuchUpload):
        await ufs.list_parts("gone", aborted, marker=0, limit=10)


@case
async def list_parts_pages(ufs: UfsAdapter) -> None:
    upload_id = await ufs.create_multipart("pages", WriteMeta())
    for number in (1, 2, 3):
        await ufs.upload_part("pages", upload_id, number, body(bytes([number]) * 10), size=10)
    first = await ufs.list_parts("pages", upload_id, marker=0, limit=2)
    assert [p.part_number for p in first.parts] == [1, 2] and first.next_marker == 2
    second = await ufs.list_parts("pages", upload_id, marker=2, limit=2)
    assert [p.part_number for p in second.parts] == [3] and second.next_marker is None
    await ufs.abort_multipart("pages", upload_id)


@case
async def list_uploads_by_prefix(ufs: UfsAdapter) -> None:
    a = await ufs.create_multipart("up/a", WriteMeta())
    b = await ufs.create_multipart("up/b", WriteMeta())
    c = await ufs.create_multipart("other/c", WriteMeta())
    page = await ufs.list_uploads("up/", delimiter=None, key_marker=None, upload_id_marker=None, limit=100)
    assert sorted((u.path, u.upload_id) for u in page.uploads) == [("up/a", a), ("up/b", b)]
    assert all(u.initiated.tzinfo is not None for u in page.uploads)
    for path, upload_id in [("up/a", a), ("up/b", b), ("other/c", c)]:
        await ufs.abort_multipart(path, upload_id)
    page = await ufs.list_uploads("up/", delimiter=None, key_marker=None, upload_id_marker=None, limit=100)
    assert page.uploads == []


# --- directories ------------------------------------------------------------------------------------


@case
async def directories(ufs: UfsAdapter) -> None:
    assert await ufs.is_dir("")
    assert not await ufs.is_dir("bkt")
    await ufs.make_dir("bkt")
    assert await ufs.is_dir("bkt")
    with pytest.raises(AlreadyExists):
        await ufs.make_dir("bkt")
    await put(ufs, "bkt/deep/x", b"x")
    with pytest.raises(NotEmpty):
        await ufs.remove_dir("bkt")
    await ufs.delete("bkt/deep/x")
    await ufs.remove_dir("bkt")
    assert not await ufs.is_dir("bkt")
    with pytest.raises(NotFound):
        await ufs.remove_dir("bkt")
    with pytest.raises(InvalidPath):
        await ufs.make_dir("")
    with pytest.raises(InvalidPath):
        await ufs.remove_dir("")
