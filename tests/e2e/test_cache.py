"""The page cache end to end: a real gateway subprocess over a real moto server.

What the under-storage sees is counted at moto itself, with its request recorder (moto-api
/recorder), never with Hoard's own metrics: "zero UFS reads" means moto logged no GET/HEAD of
those keys. Bytes are compared by SHA-256 of whole bodies everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from gateway.s3.request import range_bounds
from tests.e2e.cache_env import (
    UFS_PREFIX,
    Hoard,
    KiB,
    MiB,
    Moto,
    blob,
    get,
    object_reads,
    page_count,
    page_files,
    put_many,
    read_all,
    running_hoard,
    s3_mount,
    sha,
    wait_until,
)
from tests.e2e.conftest import start_gateway
from tests.servers import moto_server


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server of this module's own, its recorder writing to a temporary file."""
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    with moto_server(env={"MOTO_RECORDER_FILEPATH": str(recording)}) as endpoint:
        yield Moto(endpoint)


# --- one gateway for the read path and the policies ----------------------------------------------

MAX_AGE = 2.0
TTL = 2.0
POLICY_RULES = [
    {"path": "/s3/imm/", "filter": "immutable"},
    {"path": "/s3/age/", "filter": "maxAge", "max_age": f"{MAX_AGE}s"},
    {"path": "/s3/skip/", "filter": "skipCache"},
    {"path": "/s3/ttl/", "ttl": f"{TTL}s"},
]


@pytest.fixture(scope="module")
def hoard(tmp_path_factory: pytest.TempPathFactory, moto: Moto) -> Iterator[Hoard]:
    """Page size 1 MiB, metadata TTL 1 min (the default rule: maxAge 1 min), plus POLICY_RULES."""
    with running_hoard(
        tmp_path_factory.mktemp("hoard"), moto, "cache-ufs", cache={"rules": POLICY_RULES}
    ) as h:
        yield h


def dataset_sizes() -> list[int]:
    """200 sizes from 4 KiB to 8 MiB, about 50 MB in all, with the page-boundary cases."""
    rnd = random.Random(200)
    fixed = [8 * MiB, 8 * MiB - 1, 5 * MiB + 3, 4 * MiB, 3 * MiB, 2 * MiB + 1, 2 * MiB, 2 * MiB - 1]
    fixed += [MiB + 1, MiB, MiB - 1, MiB, 4 * KiB, 4 * KiB + 1]
    rest = [
        int(math.exp(rnd.uniform(math.log(4 * KiB), math.log(512 * KiB)))) for _ in range(200 - len(fixed))
    ]
    sizes = fixed + rest
    rnd.shuffle(sizes)
    return sizes


def test_second_pass_makes_zero_ufs_reads(moto: Moto, hoard: Hoard) -> None:
    sizes = dataset_sizes()
    assert len(sizes) == 200 and min(sizes) == 4 * KiB and max(sizes) == 8 * MiB
    assert 40e6 < sum(sizes) < 60e6
    data = {f"ds/obj-{i:03d}": blob(size, f"ds-{i}") for i, size in enumerate(sizes)}
    expected = {key: sha(body) for key, body in data.items()}
    put_many(moto.client(), hoard.bucket, data)
    keys = sorted(data)
    s3 = hoard.s3()
    pages_before = hoard.stats()["pages"]

    with moto.recording() as first_calls:
        first = read_all(s3, keys)
    assert {k: h for k, (h, _) in first.items()} == expected
    assert {x for _, x in first.values()} == {"MISS"}
    # The recorder works and counts what we think. Pass 1 made one GET per object and no HEAD:
    # the metadata came with the first page, and the rest of a longer object with the same response.
    reads = object_reads(first_calls, hoard.bucket, "ds/")
    assert not [c for c in reads if c.method == "HEAD"]
    gets = Counter(c.key for c in reads if c.method == "GET")
    assert gets == Counter({f"{UFS_PREFIX}/{k}": 1 for k in keys})

    pages = pages_before + sum(page_count(s) for s in sizes)
    wait_until(lambda: hoard.stats()["pages"] == pages, f"{pages} pages stored")

    with moto.recording() as second_calls:
        second = read_all(s3, keys)
    assert object_reads(second_calls, hoard.bucket, "ds/") == []
    assert {k: h for k, (h, _) in second.items()} == expected
    assert {x for _, x in second.values()} == {"HIT"}


# --- policies -----------------------------------------------------------------------------------


def test_immutable_object_deleted_behind_the_gateway_is_still_served(moto: Moto, hoard: Hoard) -> None:
    ufs, s3 = moto.client(), hoard.s3()
    frozen, control = blob(3 * MiB // 2, "imm"), blob(200 * KiB, "imm-control")
    put_many(ufs, hoard.bucket, {"imm/frozen": frozen, "age/deleted": control})
    started = time.monotonic()
    assert get(s3, "imm/frozen") == (frozen, "MISS")
    assert get(s3, "age/deleted") == (control, "MISS")
    hoard.wait_pages("imm/frozen", 2)
    hoard.wait_pages("age/deleted", 1)
    assert hoard.explain("imm/frozen")["filter"] == "immutable"
    for key in ("imm/frozen", "age/deleted"):
        ufs.delete_object(Bucket=hoard.bucket, Key=f"{UFS_PREFIX}/{key}")
    time.sleep(max(0.0, started + MAX_AGE + 0.5 - time.monotonic()))

    with moto.recording() as calls:
        body, xcache = get(s3, "imm/frozen")
        head = s3.head_object(Bucket="s3", Key="imm/frozen")
    assert sha(body) == sha(frozen) and xcache == "HIT"
    assert (
        head["ContentLength"] == len(frozen) and head["ResponseMetadata"]["HTTPHeaders"]["x-cache"] == "HIT"
    )
    assert object_reads(calls, hoard.bucket, "imm/") == []  # not even a HEAD: never revalidated
    # The control under a maxAge rule, deleted the same way, is gone once its age has passed.
    with pytest.raises(ClientError) as exc:
        get(s3, "age/deleted")
    assert exc.value.response["Error"]["Code"] == "NoSuchKey"


def test_max_age_serves_the_old_version_until_the_age_then_the_new_one(moto: Moto, hoard: Hoard) -> None:
    ufs, s3 = moto.client(), hoard.s3()
    size = 3 * MiB + 5  # 4 pages: a mixed read would show in the hash
    v1, v2 = blob(size, "age-v1"), blob(size, "age-v2")
    put_many(ufs, hoard.bucket, {"age/obj": v1})
    t1 = time.monotonic()
    assert get(s3, "age/obj") == (v1, "MISS")  # the version is confirmed during this read
    t1_end = time.monotonic()
    hoard.wait_pages("age/obj", 4)
    put_many(ufs, hoard.bucket, {"age/obj": v2})  # overwritten at the UFS, behind the gateway

    reads: list[tuple[float, float, str, str]] = []
    while time.monotonic() < t1_end + MAX_AGE + 1.0:
        start = time.monotonic()
        body, xcache = get(s3, "age/obj")
        reads.append((start, time.monotonic(), sha(body), xcache))
        time.sleep(0.1)
    versions = {sha(v1): "v1", sha(v2): "v2"}
    seen = [versions.get(h, "mixed") for _, _, h, _ in reads]
    assert "mixed" not in seen, seen
    assert seen == sorted(seen), f"went back to the old version: {seen}"  # v1... then v2...
    before = [(v, x) for (s, e, _, x), v in zip(reads, seen, strict=True) if e < t1 + MAX_AGE]
    after = [v for (s, _, _, _), v in zip(reads, seen, strict=True) if s > t1_end + MAX_AGE]
    assert before and all(v == ("v1", "HIT") for v in before), before  # never fresh before the age
    assert after and set(after) == {"v2"}, after  # always fresh after it
    body, _ = get(s3, "age/obj")
    assert sha(body) == sha(v2)


def test_max_age_partially_cached_object_never_mixes_versions(moto: Moto, hoard: Hoard) -> None:
    """Page 0 of v1 is cached, the rest is not, and the UFS now has v2: whatever the gateway
    answers within the age, a complete body is one version, never v1's page 0 with v2's rest."""
    ufs, s3 = moto.client(), hoard.s3()
    size = 3 * MiB
    v1, v2 = blob(size, "part-v1"), blob(size, "part-v2")
    put_many(ufs, hoard.bucket, {"age/part": v1})
    body, _ = get(s3, "age/part", Range="bytes=0-99")
    assert body == v1[:100]
    hoard.wait_pages("age/part", 1)
    put_many(ufs, hoard.bucket, {"age/part": v2})
    # Within the age the gateway still believes in v1, so page 0 may come from the cache while
    # the rest must come from a UFS that no longer has v1 (the fetch is pinned to v1's ETag).
    # Today the gateway then cuts the body short: the client sees an error, never wrong bytes.
    received, complete = b"", True
    with httpx.stream("GET", presigned(s3, "age/part"), timeout=30) as response:
        assert response.status_code == 200 and int(response.headers["content-length"]) == size
        try:
            for chunk in response.iter_bytes():
                received += chunk
        except httpx.RemoteProtocolError:
            complete = False
    if complete:
        assert sha(received) in (sha(v1), sha(v2))
    else:
        assert len(received) < size
        assert received in (v1[: len(received)], v2[: len(received)])  # one version's prefix
    # Either way the gateway has learnt of v2: the next read is v2, whole.
    body, _ = get(s3, "age/part")
    assert sha(body) == sha(v2)


def presigned(s3: Any, key: str) -> str:
    url: str = s3.generate_presigned_url("get_object", Params={"Bucket": "s3", "Key": key}, ExpiresIn=600)
    return url


def get_with(s3: Any, key: str, cache_control: str | None = None) -> tuple[bytes, str]:
    """GET on a presigned URL with httpx, optionally with a Cache-Control request header."""
    headers = {"cache-control": cache_control} if cache_control else {}
    response = httpx.get(presigned(s3, key), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.content, response.headers["x-cache"]


def test_skip_cache_streams_through_every_time(moto: Moto, hoard: Hoard) -> None:
    s3, data = hoard.s3(), blob(2 * MiB + 7, "skip")
    put_many(moto.client(), hoard.bucket, {"skip/obj": data})
    with moto.recording() as calls:
        outcomes = []
        for _ in range(3):
            body, xcache = get(s3, "skip/obj")
            assert sha(body) == sha(data)
            outcomes.append(xcache)
    assert outcomes == ["MISS"] * 3
    gets = [c for c in object_reads(calls, hoard.bucket, "skip/obj") if c.method == "GET"]
    assert len(gets) == 3  # one UFS read per client read
    time.sleep(0.3)  # a write, if any had been started, would have landed by now
    explained = hoard.explain("skip/obj")
    assert explained["filter"] == "skipCache" and explained["pages_cached"] == 0


def test_ttl_evicts_pages_after_the_ttl(moto: Moto, hoard: Hoard) -> None:
    s3, data = hoard.s3(), blob(MiB + 1, "ttl")
    put_many(moto.client(), hoard.bucket, {"ttl/obj": data})
    before = hoard.stats()["evictions"]["ttl"]
    assert get(s3, "ttl/obj") == (data, "MISS")
    hoard.wait_pages("ttl/obj", 2)
    stored = time.monotonic()  # the pages were stored by now
    assert hoard.explain("ttl/obj")["ttl"] == TTL
    assert get(s3, "ttl/obj") == (data, "HIT")
    time.sleep(max(0.0, stored + TTL + 0.3 - time.monotonic()))
    assert get(s3, "ttl/obj") == (data, "MISS")
    assert hoard.stats()["evictions"]["ttl"] == before + 2
    hoard.wait_pages("ttl/obj", 2)  # cached again, for another TTL
    assert get(s3, "ttl/obj") == (data, "HIT")


def test_no_cache_revalidates_at_once(moto: Moto, hoard: Hoard) -> None:
    ufs, s3 = moto.client(), hoard.s3()
    v1, v2 = blob(MiB + 100, "nc-v1"), blob(MiB + 100, "nc-v2")
    put_many(ufs, hoard.bucket, {"cc/obj": v1})
    assert get_with(s3, "cc/obj") == (v1, "MISS")
    hoard.wait_pages("cc/obj", 2)
    put_many(ufs, hoard.bucket, {"cc/obj": v2})
    # Without the header the cache answers within the default max age (1 min): still v1.
    body, xcache = get_with(s3, "cc/obj")
    assert sha(body) == sha(v1) and xcache == "HIT"
    body, xcache = get_with(s3, "cc/obj", "no-cache")
    assert sha(body) == sha(v2) and xcache == "MISS"
    body, _ = get_with(s3, "cc/obj")  # the revalidation is remembered
    assert sha(body) == sha(v2)
    hoard.wait_pages("cc/obj", 2)
    assert get_with(s3, "cc/obj") == (v2, "HIT")


def test_no_store_bypasses_the_cache(moto: Moto, hoard: Hoard) -> None:
    s3, data = hoard.s3(), blob(MiB + 3, "ns")
    put_many(moto.client(), hoard.bucket, {"cc/nostore": data})
    with moto.recording() as calls:
        assert get_with(s3, "cc/nostore", "no-store") == (data, "MISS")
        assert get_with(s3, "cc/nostore", "no-store") == (data, "MISS")
    assert len([c for c in object_reads(calls, hoard.bucket, "cc/nostore") if c.method == "GET"]) == 2
    time.sleep(0.3)
    assert hoard.pages("cc/nostore") == 0
    assert get_with(s3, "cc/nostore") == (data, "MISS")  # nothing was stored
    hoard.wait_pages("cc/nostore", 2)
    assert get_with(s3, "cc/nostore") == (data, "HIT")
    # On a cached object too, no-store reads the UFS and says so.
    with moto.recording() as calls:
        assert get_with(s3, "cc/nostore", "no-store") == (data, "MISS")
    assert len([c for c in object_reads(calls, hoard.bucket, "cc/nostore") if c.method == "GET"]) == 1


@pytest.mark.parametrize(
    ("wanted", "asked"),
    [
        (None, "bytes=0-"),  # the whole object: page 0 with the metadata, the rest of the response
        ("bytes=0-{2MiB+5}", "bytes=0-{3MiB-1}"),  # a range: its pages exactly, one response
        ("bytes={2MiB+5}-{4MiB}", "bytes={2MiB}-{5MiB-1}"),  # one that starts further in too
        ("bytes={3MiB+1}-", "bytes={3MiB}-"),  # from there to the end
        ("bytes=10-20", "bytes=0-{1MiB-1}"),  # within one page: that page
    ],
)
def test_a_cold_get_is_one_ufs_get_of_the_pages_it_reads(
    moto: Moto, hoard: Hoard, wanted: str | None, asked: str
) -> None:
    """A cold GET is one UFS GET: the metadata and the first page it reads, then the rest of the
    same response, which asks for the read's pages exactly (none past what the client wants);
    its pages are then cached, and the same GET is a hit."""
    s3 = hoard.s3()
    key = "ask/" + hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    data = blob(6 * MiB + 7, key)
    put_many(moto.client(), hoard.bucket, {key: data})

    def mib(text: str) -> str:
        return re.sub(r"\{(\d)MiB([+-]\d+)?\}", lambda m: str(int(m[1]) * MiB + int(m[2] or 0)), text)

    extra = {} if wanted is None else {"Range": mib(wanted)}
    bounds = range_bounds(extra.get("Range"))
    assert bounds is not None
    expected = data[bounds[0] : bounds[1]]
    with moto.recording() as calls:
        body, xcache = get(s3, key, **extra)
        assert sha(body) == sha(expected) and xcache == "MISS"
    gets = [c.headers.get("range") for c in object_reads(calls, hoard.bucket, key) if c.method == "GET"]
    assert gets == [mib(asked)] and not [
        c for c in object_reads(calls, hoard.bucket, key) if c.method == "HEAD"
    ]
    first, last = bounds[0] // MiB, (min(bounds[1] or len(data), len(data)) - 1) // MiB
    hoard.wait_pages(key, last - first + 1)
    with moto.recording() as calls:
        body, xcache = get(s3, key, **extra)
        assert sha(body) == sha(expected) and xcache == "HIT"
    assert not object_reads(calls, hoard.bucket, key)


def test_x_cache_miss_partial_hit(moto: Moto, hoard: Hoard) -> None:
    s3, data = hoard.s3(), blob(3 * MiB, "xc")
    put_many(moto.client(), hoard.bucket, {"xc/obj": data})
    with moto.recording() as calls:
        body, xcache = get(s3, "xc/obj", Range="bytes=0-1023")
        assert body == data[:1024] and xcache == "MISS"
        hoard.wait_pages("xc/obj", 1)
        body, xcache = get(s3, "xc/obj")
        assert sha(body) == sha(data) and xcache == "PARTIAL"
    # The first read fetched page 0 only, the second only the missing pages 1-2, in one request.
    ranges = [
        c.headers.get("range") for c in object_reads(calls, hoard.bucket, "xc/obj") if c.method == "GET"
    ]
    assert ranges == [f"bytes=0-{MiB - 1}", f"bytes={MiB}-{3 * MiB - 1}"]
    hoard.wait_pages("xc/obj", 3)
    body, xcache = get(s3, "xc/obj")
    assert sha(body) == sha(data) and xcache == "HIT"
    body, xcache = get(s3, "xc/obj", Range=f"bytes={MiB - 10}-{MiB + 10}")
    assert body == data[MiB - 10 : MiB + 11] and xcache == "HIT"
    head = s3.head_object(Bucket="s3", Key="xc/obj")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-cache"] == "HIT"


# --- eviction order and quotas ------------------------------------------------------------------

PAGE = 256 * KiB


def test_priority_order_under_pressure(tmp_path: Path, moto: Moto) -> None:
    """4 MiB of cache holds 15 pages of 256 KiB (each file has a small header). The objects are
    read HIGH first and LOW last, so LRU alone would evict them in the opposite order."""
    rules = [
        {"path": "/s3/low/", "priority": "low"},
        {"path": "/s3/med/", "priority": "medium"},
        {"path": "/s3/high/", "priority": "high"},
        {"path": "/s3/fill/", "priority": "medium"},
    ]
    cache = {"size": "4MiB", "page_size": "256KiB", "rules": rules}
    with running_hoard(tmp_path, moto, "prio-ufs", cache=cache) as h:
        s3 = h.s3()
        data = {k: blob(MiB, k) for k in ("high/obj", "med/obj", "low/obj", "fill/p1", "fill/p2", "fill/p3")}
        put_many(moto.client(), h.bucket, data)

        def read(key: str) -> None:
            body, _ = get(s3, key)
            assert sha(body) == sha(data[key])
            h.wait_pages(key, 4)

        def cached() -> tuple[int, int, int]:
            return h.pages("low/obj"), h.pages("med/obj"), h.pages("high/obj")

        for key in ("high/obj", "med/obj", "low/obj"):
            read(key)
        assert cached() == (4, 4, 4)
        read("fill/p1")  # 16 pages wanted: one must go, and it is LOW's
        assert cached() == (3, 4, 4)
        read("fill/p2")  # LOW's last 3, then the least recently used MEDIUM page
        assert cached() == (0, 3, 4)
        read("fill/p3")  # MEDIUM goes before HIGH although HIGH was read first
        assert cached() == (0, 0, 4)
        stats = h.stats()
        assert stats["evictions"]["capacity"] == 9 and stats["used"] <= 4 * MiB
        explained = h.hoard_json("cache", "explain", "/s3/high/obj")
        assert explained["priority"] == "high" and explained["pages_cached"] == 4
        assert h.explain("low/obj")["priority"] == "low"
        # Evicted pages come back from the UFS with the right bytes.
        body, xcache = get(s3, "low/obj")
        assert sha(body) == sha(data["low/obj"]) and xcache == "MISS"


def test_a_directory_over_its_quota_evicts_only_its_own_pages(tmp_path: Path, moto: Moto) -> None:
    """Quota 1 MiB holds 3 pages of 256 KiB. The LOW pages of /s3/other would be the first
    victims of any capacity eviction: they survive, so the quota never pushed anyone out."""
    rules = [
        {"path": "/s3/qa/", "quota": "1MiB"},
        {"path": "/s3/qb/", "quota": "1MiB"},
        {"path": "/s3/other/", "priority": "low"},
    ]
    cache = {"size": "32MiB", "page_size": "256KiB", "rules": rules}
    with running_hoard(tmp_path, moto, "quota-ufs", cache=cache) as h:
        s3 = h.s3()
        data = {
            "other/obj": blob(MiB, "other"),
            "qb/obj": blob(2 * PAGE, "qb"),
            "qa/x1": blob(MiB, "x1"),
            "qa/x2": blob(3 * PAGE, "x2"),
        }
        put_many(moto.client(), h.bucket, data)
        for key, pages in (("other/obj", 4), ("qb/obj", 2)):
            assert sha(get(s3, key)[0]) == sha(data[key])
            h.wait_pages(key, pages)

        assert sha(get(s3, "qa/x1")[0]) == sha(data["qa/x1"])
        h.wait_pages("qa/x1", 3)  # its 4th page evicted one of its own
        explained = h.explain("qa/x1")
        assert explained["quota"] == MiB and 3 * PAGE < explained["quota_used"] <= MiB
        time.sleep(0.2)
        assert h.pages("qa/x1") == 3

        assert sha(get(s3, "qa/x2")[0]) == sha(data["qa/x2"])
        h.wait_pages("qa/x2", 3)
        wait_until(lambda: h.pages("qa/x1") == 0, "qa/x1 evicted by its own directory")
        assert h.explain("qa/x2")["quota_used"] <= MiB
        assert (h.pages("other/obj"), h.pages("qb/obj")) == (4, 2)  # nobody else lost a page
        evictions = h.stats()["evictions"]
        assert evictions["quota"] == 4 and evictions["capacity"] == 0
        body, xcache = get(s3, "other/obj")
        assert sha(body) == sha(data["other/obj"]) and xcache == "HIT"
        body, xcache = get(s3, "qa/x1")  # still served right, from the UFS
        assert sha(body) == sha(data["qa/x1"]) and xcache == "MISS"


# --- free and load ------------------------------------------------------------------------------


def test_free_evicts_the_path_and_only_it(moto: Moto, hoard: Hoard) -> None:
    s3 = hoard.s3()
    data = {
        "free/a": blob(3 * MiB // 2, "fa"),
        "free/b": blob(300 * KiB, "fb"),
        "freeze/c": blob(200 * KiB, "fc"),
    }
    put_many(moto.client(), hoard.bucket, data)
    for key in data:
        assert get(s3, key)[1] == "MISS"
    for key, pages in (("free/a", 2), ("free/b", 1), ("freeze/c", 1)):
        hoard.wait_pages(key, pages)
        assert get(s3, key) == (data[key], "HIT")
    before = hoard.stats()["evictions"]["free"]

    out = hoard.hoard_json("free", "/s3/free/")
    assert out["pages_freed"] == 3
    assert hoard.stats()["evictions"]["free"] == before + 3
    assert (hoard.pages("free/a"), hoard.pages("free/b"), hoard.pages("freeze/c")) == (0, 0, 1)
    with moto.recording() as calls:
        assert get(s3, "free/a") == (data["free/a"], "MISS")
        assert get(s3, "free/b") == (data["free/b"], "MISS")
        assert get(s3, "freeze/c") == (data["freeze/c"], "HIT")  # a sibling prefix is untouched
    assert {c.key for c in object_reads(calls, hoard.bucket, "free") if c.method == "GET"} == {
        f"{UFS_PREFIX}/free/a",
        f"{UFS_PREFIX}/free/b",
    }


def test_load_preloads_reports_progress_and_skips_on_rerun(moto: Moto, hoard: Hoard) -> None:
    rnd = random.Random(24)
    sizes = [4 * KiB, 2 * MiB, MiB, MiB + 1] + [rnd.randint(4 * KiB, 2 * MiB) for _ in range(20)]
    data = {f"load/obj-{i:02d}": blob(size, f"load-{i}") for i, size in enumerate(sizes)}
    total = sum(sizes)
    put_many(moto.client(), hoard.bucket, data)

    with moto.recording() as load_calls:
        out = hoard.hoard("load", "/s3/load/", "--wait")
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout)
    assert final["state"] == "done" and final["errors"] == 0
    assert final["objects_total"] == final["objects_done"] == len(data)
    assert final["bytes_total"] == final["bytes_fetched"] == total and final["bytes_skipped"] == 0
    # The progress bar: bytes, percentage, objects.
    assert re.search(r"\[#{30}\] 100% .* / .* done", out.stderr), out.stderr
    assert f"{len(data)}/{len(data)} objects" in out.stderr, out.stderr
    loaded = Counter(c.key for c in object_reads(load_calls, hoard.bucket, "load/") if c.method == "GET")
    assert set(loaded) == {f"{UFS_PREFIX}/{k}" for k in data}

    status = hoard.hoard_json("load", "status", "/s3/load/")
    assert status["state"] == "done" and status["path"] == "/s3/load/"
    assert status["objects_done"] == status["objects_total"] == len(data)
    assert status["bytes_done"] == status["bytes_total"] == total
    # Done means cached: every page is on disk when the job reports done.
    for key, body in data.items():
        assert hoard.pages(key) == page_count(len(body)), key

    with moto.recording() as calls:
        read = read_all(hoard.s3(), sorted(data))
    assert object_reads(calls, hoard.bucket, "load/") == []
    assert read == {k: (sha(v), "HIT") for k, v in data.items()}

    with moto.recording() as rerun_calls:
        out = hoard.hoard("load", "/s3/load/", "--wait")
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout)
    assert again["state"] == "done" and again["objects_done"] == len(data)
    assert again["bytes_fetched"] == 0 and again["bytes_skipped"] == total
    assert object_reads(rerun_calls, hoard.bucket, "load/") == []
    listings = [
        c for c in rerun_calls if c.bucket == hoard.bucket and c.key == "" and "list-type=2" in c.query
    ]
    assert listings  # the rerun listed the prefix at the UFS, and read no object


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_match_what_was_read(tmp_path: Path, moto: Moto) -> None:
    capacity = 64 * MiB
    with running_hoard(tmp_path, moto, "metrics-ufs", cache={"size": "64MiB"}) as h:
        s3 = h.s3()
        a, b = blob(5 * MiB // 2, "ma"), blob(100 * KiB, "mb")
        put_many(moto.client(), h.bucket, {"m/a": a, "m/b": b})

        def metric(name: str, **labels: str) -> float:
            return h.metrics()[(name, tuple(sorted(labels.items())))]

        assert metric("hoard_cache_hits_total") == metric("hoard_cache_misses_total") == 0
        with moto.recording() as calls:
            for key, body, pages in (("m/a", a, 3), ("m/b", b, 1)):
                assert get(s3, key) == (body, "MISS")
                h.wait_pages(key, pages)
                assert get(s3, key) == (body, "HIT")
        ufs_calls = Counter(c.method for c in object_reads(calls, h.bucket, "m/"))
        # What moto saw: no HEAD (the metadata came with page 0), one GET per object (a's pages 1-2
        # came with the same response as its page 0).
        assert ufs_calls == Counter({"GET": 2})

        files = page_files(h.cache_dir)
        assert len(files) == 4
        m = h.metrics()
        assert m[("hoard_cache_hits_total", ())] == 4  # pages served from disk
        assert m[("hoard_cache_misses_total", ())] == 4  # pages fetched from the UFS
        assert m[("hoard_cache_bytes_read_total", (("source", "cache"),))] == len(a) + len(b)
        assert m[("hoard_cache_bytes_read_total", (("source", "ufs"),))] == len(a) + len(b)
        assert m[("hoard_cache_pages", ())] == 4
        assert m[("hoard_cache_used_bytes", ())] == sum(f.stat().st_size for f in files)
        assert m[("hoard_cache_capacity_bytes", ())] == capacity
        reasons = ("capacity", "ttl", "quota", "free", "stale", "corrupt")
        assert {r: m[("hoard_cache_evictions_total", (("reason", r),))] for r in reasons} == dict.fromkeys(
            reasons, 0
        )
        assert m[("hoard_s3_requests_total", (("operation", "GetObject"), ("status", "200")))] == 4
        # The UFS side agrees with moto's own count.
        ufs = (("mount", "/s3"),)
        # a: read_head (page 0 + metadata) and one read of pages 1-2 (which continued read_head's
        # response: the UFS operations the cache made, not HTTP requests); b: read_head alone.
        assert m[("hoard_ufs_requests_total", (*ufs, ("operation", "read_head"), ("outcome", "ok")))] == 2
        assert m[("hoard_ufs_requests_total", (*ufs, ("operation", "read"), ("outcome", "ok")))] == 1
        assert ("hoard_ufs_requests_total", (*ufs, ("operation", "stat"), ("outcome", "ok"))) not in m
        assert m[("hoard_ufs_bytes_read_total", ufs)] == len(a) + len(b)

        with h.admin() as admin:
            assert admin.free("/s3/m/")["pages_freed"] == 4
        m = h.metrics()
        assert m[("hoard_cache_evictions_total", (("reason", "free"),))] == 4
        assert m[("hoard_cache_pages", ())] == 0 and m[("hoard_cache_used_bytes", ())] == 0
        assert page_files(h.cache_dir) == []

        stats = h.hoard_json("cache", "stats")
        assert (stats["hits"], stats["misses"], stats["hit_ratio"]) == (4, 4, 0.5)
        assert stats["bytes_from_cache"] == stats["bytes_from_ufs"] == len(a) + len(b)
        assert stats["capacity"] == capacity and stats["pages"] == 0 and stats["evictions"]["free"] == 4


def test_metrics_add_up_every_worker(tmp_path: Path, moto: Moto) -> None:
    """With 2 uvicorn workers, a scrape answered by either reports both workers' requests, cache
    reads and UFS calls (prometheus_client's multiprocess files under the metastore)."""
    bucket = "metrics-workers"
    moto.new_bucket(bucket)
    extra = {"server": {"workers": 2}, "cache": {"reserved": 0}}
    h = Hoard(
        start_gateway(tmp_path, mounts=[s3_mount(moto.endpoint, bucket)], extra=extra), bucket, tmp_path
    )
    try:
        objects = {f"w/{i}": blob(10 * KiB, f"w{i}") for i in range(40)}
        put_many(moto.client(), bucket, objects)
        s3 = h.s3()
        urls = {
            k: s3.generate_presigned_url("get_object", Params={"Bucket": "s3", "Key": k}) for k in objects
        }
        workers: Counter[str] = Counter()  # request-id prefix (random per worker) -> GETs it served

        def fetch(key: str) -> str:
            response = httpx.get(urls[key], timeout=30)  # a new connection each time
            assert response.content == objects[key]
            return response.headers["x-amz-request-id"][:6]

        for key in objects:  # one by one: each object's one miss (page 0 with its metadata)
            workers[fetch(key)] += 1
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):  # then hits, concurrent, until both workers have answered some
                workers.update(pool.map(fetch, objects))
                if len(workers) == 2:
                    break
        assert len(workers) == 2, workers
        total = sum(workers.values())

        def scrape() -> tuple[float, ...]:
            m = h.metrics()  # a new connection: either worker answers
            ufs = (("mount", "/s3"), ("operation", "read_head"), ("outcome", "ok"))
            return (
                m.get(("hoard_s3_requests_total", (("operation", "GetObject"), ("status", "200"))), 0),
                m.get(("hoard_cache_hits_total", ()), 0),
                m.get(("hoard_cache_misses_total", ()), 0),
                m.get(("hoard_cache_bytes_read_total", (("source", "ufs"),)), 0),
                m.get(("hoard_ufs_requests_total", ufs), 0),
            )

        n = len(objects)
        expected = (total, total - n, n, 10 * KiB * n, n)
        wait_until(lambda: scrape() == expected, "every worker's counts in a scrape")
        assert [scrape() for _ in range(10)] == [expected] * 10
    finally:
        h.gw.stop()
