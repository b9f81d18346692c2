from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache.pagefile import HEADER, INLINE_MAX, SLOW, TMP_SUFFIX, PageFiles


def files_in(tmp_path: Path, page_size: int = 4096, direct_io: bool = False) -> PageFiles:
    pages = tmp_path / "pages"
    pages.mkdir()
    return PageFiles(str(pages), page_size, direct_io)


def stored(files: PageFiles, name: str, data: bytes, now: float = 100.0) -> str:
    tmp = files.write_tmp(name, data, now, fsync=False)
    os.replace(tmp, files.file_of(name))
    return files.file_of(name)


@pytest.mark.parametrize("size", [4096, 2 * INLINE_MAX])  # one pread; preadv into the page's buffer
def test_a_page_reads_back_whole_and_checked(tmp_path: Path, size: int) -> None:
    files = files_in(tmp_path, size)
    data = os.urandom(size)
    path = stored(files, "ab01", data)
    assert os.path.getsize(path) == HEADER.size + size
    assert files.read_inline("ab01", size, None, 200.0) == data
    got, ino, store_time = files.read_checked("ab01", size)
    assert (got, ino, store_time) == (data, os.stat(path).st_ino, 100.0)


def test_missing_damaged_and_expired_pages(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    assert files.read_inline("ab02", 4096, None, 0.0) is None
    assert files.read_checked("ab02", 4096) == (None, -1, 0.0)
    path = stored(files, "ab02", os.urandom(4096), now=100.0)
    assert files.read_inline("ab02", 4096, 50.0, 149.0) is not SLOW
    assert files.read_inline("ab02", 4096, 50.0, 150.0) is SLOW  # stored + ttl <= now: expired
    assert files.read_inline("ab02", 4095, None, 0.0) is SLOW  # another length than stored
    with open(path, "r+b") as f:  # one bit flipped in the data
        f.seek(HEADER.size + 7)
        byte = f.read(1)
        f.seek(HEADER.size + 7)
        f.write(bytes([byte[0] ^ 1]))
    assert files.read_inline("ab02", 4096, None, 0.0) is SLOW
    assert files.read_checked("ab02", 4096) == (None, os.stat(path).st_ino, 0.0)
    os.truncate(path, HEADER.size + 100)
    assert files.read_checked("ab02", 4096)[0] is None


def test_names_sorted_skips_and_removes_dead_writers_temporary_files(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    stored(files, "cd01", b"x" * 10)
    stored(files, "ab01", b"y" * 10)
    ours = files.write_tmp("ab02", b"z" * 10, 100.0, fsync=False)  # this process: alive
    dead = files.file_of("ab03") + f".999999999.1{TMP_SUFFIX}"  # no such process
    Path(dead).write_bytes(b"partial")
    assert list(files.names_sorted(now=100.0)) == ["ab01", "cd01"]
    assert os.path.exists(ours) and not os.path.exists(dead)
