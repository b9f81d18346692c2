"""Faults of the page cache end to end: damaged page files, a gateway killed during a load, an
unreadable index, a cache far smaller than the objects and a cache directory on a file system that
fills up. Correct
bytes (SHA-256 of whole bodies) every time."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache.keys import PageKey
from tests.e2e.cache_env import (
    UFS_PREFIX,
    Hoard,
    KiB,
    MiB,
    Moto,
    blob,
    get,
    object_reads,
    page_files,
    put_many,
    read_all,
    running_hoard,
    sha,
    start_hoard,
    wait_until,
)
from tests.e2e.conftest import launch, small_file_system
from tests.servers import moto_server

PAGE = 256 * KiB


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    with moto_server(env={"MOTO_RECORDER_FILEPATH": str(recording)}) as endpoint:
        yield Moto(endpoint)


def page_file(h: Hoard, key: str, index: int) -> Path:
    """The file of page `index` of `key` (cache/store.py: pages/ab/<PageKey.name>)."""
    with h.admin() as admin:
        [mount] = [m for m in admin.list_mounts() if m["path"] == "/s3"]
    version = h.explain(key)["version"]
    name = PageKey(mount["id"], key, version, index).name
    return h.cache_dir / "pages" / name[:2] / name


def corrupt_evictions(h: Hoard) -> float:
    return h.metrics()[("hoard_cache_evictions_total", (("reason", "corrupt"),))]


def test_truncated_and_flipped_pages_are_dropped_and_refetched(tmp_path: Path, moto: Moto) -> None:
    with running_hoard(tmp_path, moto, "corrupt-ufs", cache={"page_size": "256KiB"}) as h:
        s3, data = h.s3(), blob(4 * PAGE, "corrupt")
        put_many(moto.client(), h.bucket, {"obj": data})
        assert get(s3, "obj") == (data, "MISS")
        h.wait_pages("obj", 4)
        truncated, flipped = page_file(h, "obj", 1), page_file(h, "obj", 3)
        assert len(page_files(h.cache_dir)) == 4 and truncated.exists() and flipped.exists()
        with truncated.open("r+b") as f:
            f.truncate(PAGE // 2)
        raw = bytearray(flipped.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one bit in the middle of the data
        flipped.write_bytes(bytes(raw))
        before = corrupt_evictions(h)

        with moto.recording() as calls:
            body, _ = get(s3, "obj")
        assert sha(body) == sha(data)
        assert corrupt_evictions(h) == before + 2
        # Exactly the two damaged pages were fetched again, each with its own ranged read.
        ranges = sorted(c.headers["range"] for c in object_reads(calls, h.bucket, "obj") if c.method == "GET")
        assert ranges == [f"bytes={PAGE}-{2 * PAGE - 1}", f"bytes={3 * PAGE}-{4 * PAGE - 1}"]

        h.wait_pages("obj", 4)  # stored again, whole
        with moto.recording() as calls:
            assert get(s3, "obj") == (data, "HIT")
        assert object_reads(calls, h.bucket, "obj") == []
        assert corrupt_evictions(h) == before + 2


def test_sigkill_during_load_restarts_with_a_consistent_cache(tmp_path: Path, moto: Moto) -> None:
    """Many small objects make the load last long enough to be killed half-way through."""
    rnd = random.Random(7)
    data = {f"crash/obj-{i:03d}": blob(rnd.randint(64 * KiB, 256 * KiB), f"crash-{i}") for i in range(160)}
    h = start_hoard(tmp_path, moto, "crash-ufs")
    try:
        put_many(moto.client(), h.bucket, data)
        with h.admin() as admin:
            started = admin.load("/s3/crash/")
            assert started["state"] == "running"
            deadline = time.monotonic() + 30
            while (status := admin.load_status("/s3/crash/"))["objects_done"] < 20:
                assert status["state"] == "running" and time.monotonic() < deadline, status
                time.sleep(0.01)
        h.gw.proc.send_signal(signal.SIGKILL)
        assert h.gw.proc.wait(timeout=10) == -signal.SIGKILL
        assert status["state"] == "running" and status["objects_done"] < len(data)

        h.gw = launch(h.gw.config_path, h.gw.data_dir, int(h.gw.endpoint.rsplit(":", 1)[1]))
        stats = h.stats()
        files = page_files(h.cache_dir)
        # Index and files agree: no row without its file, no file without its row.
        assert stats["pages"] == len(files) and stats["used"] == sum(f.stat().st_size for f in files)
        assert list((h.cache_dir / "pages").rglob("*.tmp")) == []  # the killed writers' files are gone
        assert 0 < stats["pages"] < len(data), stats  # the load was cut short, and what it stored is kept
        cached = {k for k in data if h.pages(k) == 1}  # every object is one page
        assert len(cached) == stats["pages"]

        # The killed job is not reported as running forever, and a new load finishes it,
        # skipping exactly what the first one stored.
        assert h.hoard_json("load", "status", "/s3/crash/")["state"] in ("failed", "stopped")
        out = h.hoard("load", "/s3/crash/", "--wait")
        assert out.returncode == 0, out.stderr
        final = json.loads(out.stdout)
        skipped = sum(len(data[k]) for k in cached)
        assert final["state"] == "done" and final["objects_done"] == len(data)
        assert final["bytes_skipped"] == skipped
        assert final["bytes_fetched"] == sum(len(v) for v in data.values()) - skipped

        with moto.recording() as calls:
            read = read_all(h.s3(), sorted(data))
        assert read == {k: (sha(v), "HIT") for k, v in data.items()}
        assert object_reads(calls, h.bucket, "crash/") == []
    finally:
        h.gw.stop()


def test_a_gateway_whose_cache_index_is_unreadable_starts_with_an_empty_cache(
    tmp_path: Path, moto: Moto
) -> None:
    """The index overwritten on disk while the gateway was down: it starts anyway (the index set
    aside), serves correct bytes from the UFS, and caches them again."""
    data = {f"idx/{i}": blob(300 * KiB, f"idx-{i}") for i in range(6)}
    h = start_hoard(tmp_path, moto, "index-ufs")
    try:
        put_many(moto.client(), h.bucket, data)
        assert read_all(h.s3(), sorted(data)) == {k: (sha(v), "MISS") for k, v in data.items()}
        wait_until(lambda: h.stats()["pages"] == len(data), "the pages stored")
        h.gw.stop()
        index = h.cache_dir / "index.sqlite3"
        index.write_bytes(b"not a database" * 1000)
        h.gw = launch(h.gw.config_path, h.gw.data_dir, int(h.gw.endpoint.rsplit(":", 1)[1]))
        assert (h.cache_dir / "index.sqlite3.corrupt").exists()
        assert h.stats()["pages"] == 0 and page_files(h.cache_dir) == []
        assert read_all(h.s3(), sorted(data)) == {k: (sha(v), "MISS") for k, v in data.items()}
        wait_until(lambda: h.stats()["pages"] == len(data), "the pages stored again")
        assert read_all(h.s3(), sorted(data)) == {k: (sha(v), "HIT") for k, v in data.items()}
    finally:
        h.gw.stop()


def test_a_cache_smaller_than_one_object_keeps_serving_from_the_ufs(tmp_path: Path, moto: Moto) -> None:
    """1 MiB of cache (3 pages) and 4 MiB objects (16 pages): every read evicts, none fails."""
    cache = {"size": "1MiB", "page_size": "256KiB"}
    with running_hoard(tmp_path, moto, "tiny-ufs", cache=cache) as h:
        s3 = h.s3()
        data = {f"big/{i}": blob(4 * MiB, f"tiny-{i}") for i in range(3)}
        put_many(moto.client(), h.bucket, data)
        for _ in range(3):
            for key, body in data.items():
                got, xcache = get(s3, key)
                assert sha(got) == sha(body) and xcache != "HIT"
                got, _ = get(s3, key, Range=f"bytes={3 * MiB - 5}-{3 * MiB + 5}")
                assert got == body[3 * MiB - 5 : 3 * MiB + 6]
        wait_until(lambda: h.stats()["evictions"]["capacity"] > 0, "capacity evictions")
        stats = h.stats()
        assert 0 < stats["used"] <= MiB and stats["capacity"] == MiB

        def settled() -> bool:
            try:
                files = page_files(h.cache_dir)
                return sum(f.stat().st_size for f in files) <= MiB and len(files) <= 3
            except FileNotFoundError:  # evicted while we looked: look again
                return False

        # A response can end while its last pages are still being written (up to
        # cache.write_buffer of them): their temporary files exist before the commit that makes
        # room for them (CI once saw 7 files of 3 pages' room). The disk must settle within it.
        wait_until(settled, "the page files on disk within the capacity")


def test_a_cache_directory_whose_file_system_fills_up_keeps_serving_and_makes_room(
    tmp_path: Path, moto: Moto
) -> None:
    """The cache's size (1 GiB) is far above what its file system holds (6 MiB): writes there fail
    with ENOSPC. Every read still gets correct bytes, and the cache evicts to make room, so the
    objects read last are hits the next time (before, the first pages stayed and no new one was
    stored). Writes through Hoard go to the UFS and are acknowledged."""
    with small_file_system(tmp_path / "cache", "8m"):
        cache = {"size": "1GiB", "page_size": "256KiB"}
        with running_hoard(tmp_path, moto, "full-disk", cache=cache) as h:
            s3 = h.s3()
            data = {f"d/{i}": blob(MiB, f"full-{i}") for i in range(16)}  # twice the disk
            put_many(moto.client(), h.bucket, data)
            for _ in range(2):
                for key, body in data.items():
                    got, _ = get(s3, key)
                    assert sha(got) == sha(body)
            wait_until(lambda: h.stats()["evictions"]["capacity"] > 0, "evictions for the full disk")
            # The last object read becomes a hit: each read fetches again the pages that found no
            # room (the index's log takes some of what an eviction frees on a disk this small).

            def last_is_a_hit() -> bool:
                got, xcache = get(s3, "d/15")
                assert sha(got) == sha(data["d/15"])
                return xcache == "HIT"

            wait_until(last_is_a_hit, "d/15 served from the cache")
            body = blob(MiB, "full-put")
            s3.put_object(Bucket="s3", Key="d/put", Body=body)
            stored = moto.client().get_object(Bucket=h.bucket, Key=f"{UFS_PREFIX}/d/put")["Body"].read()
            assert sha(stored) == sha(body)
            got, _ = get(s3, "d/put")
            assert sha(got) == sha(body)
