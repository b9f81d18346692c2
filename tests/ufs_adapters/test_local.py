from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ufs_adapters.conformance import CASES, Case, body, get, list_all, md5, put
from ufs_adapters.base import (
    MIN_PART_SIZE,
    BadDigest,
    InvalidPath,
    NoSuchUpload,
    NotFound,
    NotSupported,
    PreconditionFailed,
    ReadOptions,
    WriteMeta,
)
from ufs_adapters.local import LocalAdapter
from ufs_adapters.local_fs import TempRegistry, open_temp
from ufs_adapters.local_listing import Directories


def supports_user_xattrs(directory: Path) -> bool:
    probe = directory / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.hoard.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def xattrs(tmp_path: Path) -> None:
    """Metadata round trips need user xattrs; say so instead of failing where there are none."""
    if not supports_user_xattrs(tmp_path):
        pytest.skip("the temp file system has no user xattrs")


@pytest.fixture
def ufs(root: Path) -> LocalAdapter:
    return LocalAdapter(root)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.usefixtures("xattrs")
async def test_conformance(ufs: LocalAdapter, case: Case) -> None:
    await case(ufs)


def fallback_etag(path: Path) -> str:
    st = os.stat(path)
    return hashlib.md5(f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}".encode()).hexdigest()


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith(".hoard-tmp-")]


# --- keys never escape the root ---------------------------------------------------------------


BAD_KEYS = [
    "",
    "/abs",
    "//",
    "..",
    "../x",
    "a/../b",
    "a/..",
    "a//b",
    ".",
    "./a",
    "a/./b",
    "a\x00b",
    ".hoard-tmp-1",
    "a/.hoard-dirobj",
    ".hoard-uploads/x",
    "a/.hoard-anything/b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_rejects_keys_that_could_escape(ufs: LocalAdapter, root: Path, key: str) -> None:
    with pytest.raises(InvalidPath):
        await put(ufs, key, b"x")
    with pytest.raises(InvalidPath):
        await ufs.stat(key)
    with pytest.raises(InvalidPath):
        await get(ufs, key)
    with pytest.raises(InvalidPath):
        await ufs.delete(key)
    with pytest.raises(InvalidPath):
        await ufs.create_multipart(key, WriteMeta())
    await put(ufs, "ok", b"ok")
    with pytest.raises(InvalidPath):
        await ufs.copy("ok", key, meta=None)
    assert sorted(p.name for p in root.parent.iterdir()) == ["root"]
    assert [p.name for p in root.iterdir()] == ["ok"]


async def test_symlinks_out_of_the_root_are_refused(ufs: LocalAdapter, root: Path) -> None:
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "link").symlink_to(outside)
    (root / "flink").symlink_to(outside / "secret")
    for key in ("link/secret", "flink"):
        with pytest.raises(InvalidPath):
            await ufs.stat(key)
        with pytest.raises(InvalidPath):
            await get(ufs, key)
    with pytest.raises(InvalidPath):
        await put(ufs, "link/new", b"x")
    with pytest.raises(InvalidPath):
        await ufs.list_objects("link/", delimiter=None, start_after=None, limit=10)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert await list_all(ufs, "") == ([], [])
    assert await list_all(ufs, "", "/") == ([], [])

    # links that stay inside the root are followed
    await put(ufs, "real/x", b"x")
    (root / "inner").symlink_to(root / "real")
    assert await get(ufs, "inner/x") == b"x"
    assert await list_all(ufs, "") == (["inner/x", "real/x"], [])


async def test_symlink_cycles_end(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "d/x", b"x")
    (root / "d" / "loop").symlink_to(root / "d")
    assert await list_all(ufs, "") == (["d/x"], [])


# --- atomic writes ----------------------------------------------------------------------------


async def test_failed_body_keeps_old_object(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "k", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new" * 1000_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ufs.write("k", broken(), size=None, meta=WriteMeta())
    assert await get(ufs, "k") == b"old"
    assert (await ufs.stat("k")).etag == md5(b"old")
    assert leftovers(root) == []


async def test_temporary_files_of_processes_gone_are_removed_at_open(root: Path, tmp_path: Path) -> None:
    """A worker killed in the middle of a PUT left its hidden temporary file in the NAS for good.
    Each temporary file is tracked in the mount's state directory while it is written, and opening
    the mount removes those of processes that are gone (another boot's pids are gone too)."""
    writing = tmp_path / "state" / "writing"
    writing.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace(".", "")
    left = [root / ".hoard-tmp-dead", root / ".hoard-tmp-old-boot"]
    for temp, owner in zip(left, (f"{boot}.{dead.pid}", f"0another0boot.{os.getpid()}"), strict=True):
        temp.write_bytes(b"half an upload")
        os.symlink(temp, writing / f"{owner}.x")
    (root / "precious").write_bytes(b"not a temporary file")
    os.symlink(root / "precious", writing / f"{boot}.{dead.pid}.y")  # only temporary files go
    live = open_temp(str(root), str(root / "live"), TempRegistry(str(writing)))  # still writing
    ufs = await LocalAdapter.open(f"file://{root}", {}, state_dir=tmp_path / "state")
    try:
        assert not any(temp.exists() for temp in left)
        assert os.path.exists(live.path) and (root / "precious").read_bytes() == b"not a temporary file"
        assert os.listdir(writing) == [os.path.basename(live.entry or "")]
        await put(ufs, "k", b"written")  # a write leaves no entry behind
        assert os.listdir(writing) == [os.path.basename(live.entry or "")]
        live.commit()
        assert os.listdir(writing) == [] and (root / "live").read_bytes() == b""
    finally:
        await ufs.aclose()


async def test_cancelled_write_keeps_old_object(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "dir/k", b"old")
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"n" * 3_000_000
        started.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(ufs.write("dir/k", stalled(), size=None, meta=WriteMeta()))
    await started.wait()
    assert len(leftovers(root)) == 1  # the upload in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(root) == []
    assert await get(ufs, "dir/k") == b"old"


async def test_size_mismatch_is_refused(ufs: LocalAdapter, root: Path) -> None:
    with pytest.raises(BadDigest):
        await ufs.write("k", body(b"abc"), size=4, meta=WriteMeta())
    with pytest.raises(NotFound):
        await ufs.stat("k")
    assert leftovers(root) == []


# --- ETags --------------------------------------------------------------------------------------


async def test_preexisting_file_has_a_stable_etag(ufs: LocalAdapter, root: Path) -> None:
    (root / "data").mkdir()
    path = root / "data" / "f.bin"
    path.write_bytes(b"made by someone else")
    expected = fallback_etag(path)
    first, second = await ufs.stat("data/f.bin"), await ufs.stat("data/f.bin")
    assert first.etag == second.etag == expected
    assert (first.content_type, dict(first.metadata), first.size) == (None, {}, 20)
    page = await ufs.list_objects("data/", delimiter="/", start_after=None, limit=10)
    assert [(o.path, o.etag) for o in page.objects] == [("data/f.bin", expected)]
    assert await get(ufs, "data/f.bin", if_match=expected) == b"made by someone else"
    # a copy gets the content hash
    assert (await ufs.copy("data/f.bin", "copy", meta=None)).etag == md5(b"made by someone else")
    assert (await ufs.stat("copy")).etag == md5(b"made by someone else")


@pytest.mark.usefixtures("xattrs")
async def test_file_changed_behind_our_back_falls_back(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "k", b"ours", content_type="text/plain", metadata={"a": "b"})
    assert json.loads(os.getxattr(root / "k", "user.hoard.meta"))["etag"] == md5(b"ours")
    with open(root / "k", "ab") as f:
        f.write(b" and theirs")
    st = await ufs.stat("k")
    assert (st.etag, st.size, st.content_type, dict(st.metadata)) == (fallback_etag(root / "k"), 15, None, {})
    listed = (await ufs.list_objects("", delimiter=None, start_after=None, limit=10)).objects
    assert listed[0].etag == st.etag
    with pytest.raises(PreconditionFailed):
        await get(ufs, "k", if_match=md5(b"ours"))
    assert await get(ufs, "k", if_match=st.etag) == b"ours and theirs"


async def test_without_xattrs_the_fallback_etag_is_used(
    ufs: LocalAdapter, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: Any) -> Any:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    monkeypatch.setattr(os, "getxattr", unsupported)
    info = await put(ufs, "k", b"data", content_type="text/plain")
    assert info.etag == fallback_etag(root / "k") == (await ufs.stat("k")).etag
    assert await get(ufs, "k", if_match=info.etag) == b"data"


@pytest.mark.usefixtures("xattrs")
async def test_metadata_too_large_for_xattrs(ufs: LocalAdapter, root: Path) -> None:
    with pytest.raises(InvalidPath):
        await put(ufs, "k", b"x", metadata={"big": "v" * 70_000})
    assert leftovers(root) == [] and not (root / "k").exists()


# --- layout limits ------------------------------------------------------------------------------


async def test_key_and_key_below_it_cannot_coexist(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "a", b"file a")
    with pytest.raises(InvalidPath, match="'a' is an object"):
        await put(ufs, "a/b", b"x")
    with pytest.raises(InvalidPath):
        await put(ufs, "a/", b"")
    with pytest.raises(InvalidPath):
        await ufs.create_multipart("a/b/c", WriteMeta())
    assert await get(ufs, "a") == b"file a"

    await put(ufs, "x/y", b"y")
    with pytest.raises(InvalidPath, match="holds other keys"):
        await put(ufs, "x", b"x")
    assert await get(ufs, "x/y") == b"y"
    await put(ufs, "x/", b"marker")  # a folder marker coexists with keys below it
    assert await get(ufs, "x/") == b"marker"
    await ufs.delete("x/y")
    await ufs.delete("x/")
    await put(ufs, "x", b"now a file")  # the empty folder made way
    assert await list_all(ufs, "") == (["a", "x"], [])
    assert leftovers(root) == []


async def test_delete_prunes_empty_folders_below_top_level(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "bucket/p/q/r", b"r")
    await ufs.delete("bucket/p/q/r")
    assert sorted(p.name for p in root.iterdir()) == ["bucket"]
    assert list((root / "bucket").iterdir()) == []
    await put(ufs, "bucket/p", b"file where a folder was")
    assert await get(ufs, "bucket/p") == b"file where a folder was"


@pytest.mark.usefixtures("xattrs")
async def test_folder_marker_is_a_hidden_file(ufs: LocalAdapter, root: Path) -> None:
    await put(ufs, "dir/", b"marker body", content_type="text/plain")
    assert (root / "dir" / ".hoard-dirobj").read_bytes() == b"marker body"
    await put(ufs, "dir/x", b"x")
    objects, _ = await list_all(ufs, "")
    assert objects == ["dir/", "dir/x"]
    assert (await ufs.stat("dir/")).content_type == "text/plain"


async def test_empty_folders_are_invisible_below_the_top_level(ufs: LocalAdapter, root: Path) -> None:
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "e2").mkdir()
    (root / "full" / "sub").mkdir(parents=True)
    (root / "full" / "sub" / "f").write_bytes(b"f")
    (root / "full" / "hollow" / "deeper").mkdir(parents=True)
    (root / ".hoard-tmp-stray").write_bytes(b"hidden")
    # Top-level folders are buckets under a root mount: listed even when empty.
    assert await list_all(ufs, "", "/") == ([], ["e2/", "empty/", "full/"])
    assert await list_all(ufs, "") == (["full/sub/f"], [])
    assert await list_all(ufs, "full/", "/") == ([], ["full/sub/"])


async def test_listing_walks_lazily(ufs: LocalAdapter, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(40):
        (root / f"d{i:02}").mkdir()
        (root / f"d{i:02}" / "f").write_bytes(b"f")
    scanned: list[str] = []
    original = Directories.scan

    def counting(self: Directories, path: str) -> Any:
        scanned.append(path)
        return original(self, path)

    monkeypatch.setattr(Directories, "scan", counting)
    page = await ufs.list_objects("", delimiter=None, start_after=None, limit=1)
    assert [o.path for o in page.objects] == ["d00/f"] and page.next_start_after == "d00/f"
    assert len(scanned) <= 3  # the root, d00, and d01 to learn that more follows
    scanned.clear()
    page = await ufs.list_objects("", delimiter=None, start_after="d30/f", limit=2)
    assert [o.path for o in page.objects] == ["d31/f", "d32/f"]
    # the root, d30 (start_after points into it), d31, d32, d33 (more follows): never d00..d29
    assert [os.path.basename(p) for p in scanned] == ["root", "d30", "d31", "d32", "d33"]


async def test_big_folder_pages(ufs: LocalAdapter, root: Path) -> None:
    (root / "big").mkdir()
    names = [f"{i:05}" for i in range(1500)]
    for name in names:
        (root / "big" / name).write_bytes(b"")
    objects, _ = await list_all(ufs, "big/", "/", limit=400)
    assert objects == [f"big/{n}" for n in names]
    await put(ufs, "big/00000a", b"new")  # our own write invalidates the cached listing
    objects, _ = await list_all(ufs, "big/", "/", limit=400)
    assert objects[:3] == ["big/00000", "big/00000a", "big/00001"]


async def test_reads_stream_in_chunks(ufs: LocalAdapter) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    await put(ufs, "big", data)
    chunks = [c async for c in ufs.read("big", ReadOptions())]
    assert len(chunks) == 4 and max(map(len, chunks)) == 1024 * 1024
    assert md5(b"".join(chunks)) == md5(data)


# --- multipart ----------------------------------------------------------------------------------


async def test_part_sizes_are_kept_as_runs_in_the_xattr(ufs: LocalAdapter, root: Path) -> None:
    """complete_multipart keeps the parts' sizes (equal neighbours as one [size, count] run) for
    part_range; an object completed without them (an older Hoard) answers NotSupported."""
    size = MIN_PART_SIZE
    parts = [os.urandom(size), os.urandom(size), os.urandom(size), os.urandom(10)]
    upload_id = await ufs.create_multipart("runs", WriteMeta())
    for number, data in enumerate(parts, 1):
        await ufs.upload_part("runs", upload_id, number, body(data), size=len(data))
    info = await ufs.complete_multipart("runs", upload_id, [(n, md5(d)) for n, d in enumerate(parts, 1)])
    record = json.loads(os.getxattr(root / "runs", "user.hoard.meta"))
    assert record["part_sizes"] == [[size, 3], [10, 1]]
    assert await ufs.part_range("runs", 3, info.etag) == (2 * size, 3 * size)
    assert await ufs.part_range("runs", 4, info.etag) == (3 * size, 3 * size + 10)
    del record["part_sizes"]
    os.setxattr(root / "runs", "user.hoard.meta", json.dumps(record).encode())
    assert (await ufs.stat("runs")).etag == info.etag  # the record still describes the file
    with pytest.raises(NotSupported):
        await ufs.part_range("runs", 1, info.etag)


async def test_multipart_staging_is_hidden_and_paged(ufs: LocalAdapter, root: Path) -> None:
    ids: dict[str, list[str]] = {}
    for path in ["b/x", "b/y", "b/y", "b/z/1", "b/z/2", "c"]:
        upload_id = await ufs.create_multipart(path, WriteMeta())
        await ufs.upload_part(path, upload_id, 1, body(b"part"), size=4)
        ids.setdefault(path, []).append(upload_id)
    assert (root / ".hoard-uploads").is_dir()
    assert await list_all(ufs, "") == ([], [])

    seen = []
    key_marker = id_marker = None
    while True:
        page = await ufs.list_uploads(
            "b/", delimiter="/", key_marker=key_marker, upload_id_marker=id_marker, limit=1
        )
        seen += [(u.path, u.upload_id) for u in page.uploads] + [(p, None) for p in page.common_prefixes]
        if page.next_key_marker is None:
            break
        key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker
    assert seen == [("b/x", ids["b/x"][0]), ("b/y", ids["b/y"][0]), ("b/y", ids["b/y"][1]), ("b/z/", None)]

    for bad in ["../../etc", "short", ids["c"][0] + "/..", ""]:
        with pytest.raises(NoSuchUpload):
            await ufs.list_parts("c", bad, marker=0, limit=10)
    with pytest.raises(NoSuchUpload):  # an id belongs to one key
        await ufs.complete_multipart("b/x", ids["c"][0], [(1, md5(b"part"))])
    with pytest.raises(NoSuchUpload):
        await ufs.complete_multipart("c", "A" * 32, [(1, md5(b"part"))])
    await ufs.abort_multipart("c", ids["c"][0])
    with pytest.raises(NoSuchUpload):
        await ufs.upload_part("c", ids["c"][0], 1, body(b"late"), size=None)


async def test_part_etag_survives_missing_sidecar(ufs: LocalAdapter, root: Path) -> None:
    upload_id = await ufs.create_multipart("k", WriteMeta())
    await ufs.upload_part("k", upload_id, 1, body(b"part one"), size=None)
    (root / ".hoard-uploads" / upload_id / "part-00001.json").unlink()
    parts = (await ufs.list_parts("k", upload_id, marker=0, limit=10)).parts
    assert [p.etag for p in parts] == [md5(b"part one")]
    await ufs.complete_multipart("k", upload_id, [(1, md5(b"part one"))])
    assert not (root / ".hoard-uploads" / upload_id).exists()


async def test_remove_dir_cleans_hidden_files_and_uploads(ufs: LocalAdapter, root: Path) -> None:
    await ufs.make_dir("bkt")
    (root / "bkt" / "sub").mkdir()
    (root / "bkt" / "sub" / ".hoard-tmp-stale").write_bytes(b"half a write")
    upload_id = await ufs.create_multipart("bkt/big", WriteMeta())
    other = await ufs.create_multipart("bkt2/big", WriteMeta())
    await ufs.remove_dir("bkt")
    assert not (root / "bkt").exists()
    with pytest.raises(NoSuchUpload):
        await ufs.list_parts("bkt/big", upload_id, marker=0, limit=1)
    assert (await ufs.list_parts("bkt2/big", other, marker=0, limit=1)).parts == []


# --- opening and health -------------------------------------------------------------------------


async def test_check(ufs: LocalAdapter, root: Path) -> None:
    await ufs.check()
    with pytest.raises(NotFound):
        await LocalAdapter(root / "missing").check()
    (root / "file").write_bytes(b"")
    with pytest.raises(InvalidPath):
        await LocalAdapter(root / "file").check()


async def test_open_uris(root: Path, tmp_path: Path) -> None:
    for uri in (f"file://{root}", f"file://localhost{root}", str(root)):
        adapter = await LocalAdapter.open(uri, {})
        assert adapter.root == str(root)
        await adapter.aclose()
    with pytest.raises(ValueError, match="host"):
        await LocalAdapter.open("file://nas/share", {})
    with pytest.raises(ValueError, match="unknown option 'stagingdir'"):
        await LocalAdapter.open(str(root), {"stagingdir": "x"})
    staged = await LocalAdapter.open(str(root), {"staging_dir": str(tmp_path / "staging"), "alluxio.x": "y"})
    await staged.create_multipart("k", WriteMeta())
    assert len(list((tmp_path / "staging").iterdir())) == 1
