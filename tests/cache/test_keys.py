from __future__ import annotations

from pathlib import Path

from cache.keys import PageKey, Source
from ufs_adapters.local import LocalAdapter


def test_namespace_of(tmp_path: Path) -> None:
    adapter = LocalAdapter(tmp_path)
    assert Source("m", "/s3", adapter).namespace_of("a/b") == "/s3/a/b"
    assert Source("m", "/", adapter).namespace_of("bucket/k") == "/bucket/k"
    assert Source("m", "/s3", adapter).namespace_of("") == "/s3"


def test_page_names_are_distinct_and_stable() -> None:
    keys = [
        PageKey("m", "a", "e", 0),
        PageKey("m", "a", "e", 1),
        PageKey("m", "a", "f", 0),
        PageKey("m", "b", "e", 0),
        PageKey("n", "a", "e", 0),
        PageKey("m", "a1:", "e", 0),  # length prefixes: ("a1:", "e") vs ("a", "1:e") differ
        PageKey("m", "a", "1:e", 0),
    ]
    names = {k.name for k in keys}
    assert len(names) == len(keys)
    assert PageKey("m", "a", "e", 0).name == PageKey("m", "a", "e", 0).name
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in names)
