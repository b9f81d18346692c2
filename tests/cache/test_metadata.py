from __future__ import annotations

from datetime import UTC, datetime

from cache.metadata import MetadataCache
from ufs_adapters.base import ListPage, ObjectInfo


def info(path: str) -> ObjectInfo:
    return ObjectInfo(path=path, size=1, etag="e", last_modified=datetime(2024, 1, 1, tzinfo=UTC))


def test_stat_entries_are_bounded_lru() -> None:
    md = MetadataCache(max_entries=3)
    for p in "abc":
        md.put_stat("m", p, info(p), 0.0)
    assert md.get_stat("m", "a") is not None  # a becomes most recent
    md.put_stat("m", "d", None, 0.0)  # negative entries count too
    assert md.get_stat("m", "b") is None
    assert [md.get_stat("m", p) is not None for p in "acd"] == [True, True, True]
    entry = md.get_stat("m", "d")
    assert entry is not None and entry.info is None


def test_freshness() -> None:
    md = MetadataCache()
    md.put_stat("m", "a", info("a"), 100.0)
    entry = md.get_stat("m", "a")
    assert entry is not None
    assert entry.fresh(159.0, 60) and not entry.fresh(160.0, 60) and not entry.fresh(100.0, None)


def test_list_pages_expire_and_are_bounded() -> None:
    md = MetadataCache(max_list_pages=2)
    page = ListPage([info("p/a")], [], None)
    md.put_list(("m", "p/", None, None, 10), page, 0.0)
    assert md.get_list(("m", "p/", None, None, 10), 5.0, 10.0) is page
    assert md.get_list(("m", "p/", None, None, 10), 10.0, 10.0) is None
    md.put_list(("m", "q/", None, None, 10), page, 0.0)
    md.put_list(("m", "r/", None, None, 10), page, 0.0)
    assert md.get_list(("m", "p/", None, None, 10), 1.0, 10.0) is None
    assert (md.hits, md.misses) == (1, 2)


def test_invalidate_path_and_prefix() -> None:
    md = MetadataCache()
    for p in ("a/x", "a/y", "b/z"):
        md.put_stat("m", p, info(p), 0.0)
    md.put_stat("n", "a/x", info("a/x"), 0.0)
    page = ListPage([], [], None)
    for prefix in ("", "a/", "a/x", "b/"):
        md.put_list(("m", prefix, "/", None, 10), page, 0.0)
    md.invalidate("m", "a/x")
    assert md.get_stat("m", "a/x") is None and md.get_stat("n", "a/x") is not None
    assert [md.get_list(("m", p, "/", None, 10), 0.0, 9.0) is None for p in ("", "a/", "a/x", "b/")] == [
        True,
        True,
        True,
        False,
    ]
    md.invalidate_prefix("m", "a/")
    assert md.get_stat("m", "a/y") is None and md.get_stat("m", "b/z") is not None
    md.invalidate_prefix("m", "")
    assert md.get_stat("m", "b/z") is None and md.get_list(("m", "b/", "/", None, 10), 0.0, 9.0) is None
