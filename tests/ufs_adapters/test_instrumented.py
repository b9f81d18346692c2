"""Instrumented's outcome labels, around a real LocalAdapter on a temp dir."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest

from ufs_adapters.base import NotFound, ReadOptions
from ufs_adapters.instrumented import Instrumented
from ufs_adapters.local import LocalAdapter

MiB = 1024 * 1024


async def test_read_outcomes_ok_closed_and_not_found(tmp_path: Path) -> None:
    """A stream read to its end is "ok"; one its consumer closed early (a client gone, the cache's
    parked stream given up) is "closed", not an error of the UFS."""
    (tmp_path / "f").write_bytes(b"x" * (3 * MiB))
    ufs = Instrumented(LocalAdapter(tmp_path))
    assert sum([len(c) async for c in ufs.read("f", ReadOptions())]) == 3 * MiB
    stream = cast(AsyncGenerator[bytes, None], ufs.read("f", ReadOptions()))
    await anext(stream)
    await stream.aclose()
    with pytest.raises(NotFound):
        async for _ in ufs.read("missing", ReadOptions()):
            pass
    assert ufs.requests == Counter({("read", "ok"): 1, ("read", "closed"): 1, ("read", "not_found"): 1})
