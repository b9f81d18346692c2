"""Listing an Azure container in S3 order, for the Azure adapter (azure.py).

Azure returns names in UTF-16 code-unit order, S3 wants code-point (UTF-8 byte) order. Split the
characters into L (< U+E000), E (U+E000..U+FFFF) and S (> U+FFFF, a surrogate pair D800..DBFF
in UTF-16). The orders agree except that below any name prefix m Azure delivers m's children as
[L][S][E] and S3 wants [L][E][S]. So when a scan meets the first S child of some m, and the rest
of m's subtree is in the page at hand, it sorts that rest by code point; otherwise it lists m's E
block and then m's S block (each a listing with `start_from`, recursively in order) and resumes
after m's subtree. Names without S characters cost nothing extra; a caller's `start_after` with
E or S characters is split the same way (`_after`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from functools import partial
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobProperties
from azure.storage.blob.aio import BlobPrefix, ContainerClient

from .azure_errors import translated
from .base import UfsError

log = logging.getLogger("hoard.ufs.azure")

# One listing entry: the blob name and its properties, or None for a common prefix.
Entry = tuple[str, BlobProperties | None]

_E_FIRST = "\ue000"
_S_FIRST = "\U00010000"


def _astral(ch: str) -> bool:
    return ord(ch) > 0xFFFF


def _first_astral(name: str, start: int) -> int | None:
    if name.isascii():
        return None
    return next((i for i in range(start, len(name)) if _astral(name[i])), None)


def _first_high(name: str, start: int) -> int | None:
    """The first character at or after `start` that is not in L (where the orders may differ)."""
    if name.isascii():
        return None
    return next((i for i in range(start, len(name)) if ord(name[i]) >= 0xE000), None)


def after_subtree(m: str) -> str | None:
    """The least name, in Azure's order, above every name that starts with `m` (None: nothing)."""
    while m:
        last = ord(m[-1])
        if last == 0xFFFF:  # the largest code unit: carry into the previous character
            m = m[:-1]
        elif last == 0xD7FF:  # the next code unit, D800, starts the surrogate pairs
            return m[:-1] + _S_FIRST
        elif last == 0x10FFFF:  # after the largest pair comes U+E000
            return m[:-1] + _E_FIRST
        else:
            return m[:-1] + chr(last + 1)
    return None


def _azure_key(name: str) -> bytes:
    return name.encode("utf-16-be")


class S3OrderLister:
    """The entries of one container in S3 order, page by page (List Blobs underneath)."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self.start_from = True  # cleared if the service refuses List Blobs' startFrom

    async def entries(
        self, prefix: str, start_after: str | None, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[Entry]:
        """Entries named `prefix...`, greater than `start_after`, in S3 order."""
        lo = start_after
        if lo is not None and not lo.startswith(prefix):
            if lo > prefix:
                return  # every name with this prefix sorts before start_after
            lo = None
        if lo is not None and delimiter:
            cut = lo.find(delimiter, len(prefix))
            if cut >= 0:  # names below the common prefix that holds start_after roll up into it
                lo = lo[: cut + len(delimiter)]
        if lo is None:
            entries = self._scan(prefix, None, len(prefix), None, delimiter, page_size)
        else:
            entries = self._after(prefix, lo, delimiter, page_size)
        async with aclosing(entries):
            async for entry in entries:
                if lo is None or entry[0] > lo:
                    yield entry

    async def _after(
        self, node: str, lo: str, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[Entry]:
        """Entries named `node...` greater than `lo` (which starts with `node`), in S3 order.

        While `lo` has only L characters after `node`, "greater than lo" means the same in both
        orders and one scan from `lo` does it. At its first E or S character c (position i,
        n = lo[:i]): first the rest of n+c's subtree, then n's children after c in S3 order,
        then everything after n's subtree.
        """
        i = _first_high(lo, len(node))
        if i is None:
            scan = self._scan(node, lo, len(node), None, delimiter, page_size)
            async with aclosing(scan):
                async for entry in scan:
                    yield entry
            return
        n, nc = lo[:i], lo[: i + 1]
        after_c, after_n = after_subtree(nc), after_subtree(n)
        parts: list[Callable[[], AsyncGenerator[Entry]]] = [
            partial(self._after, nc, lo, delimiter, page_size)
        ]
        if after_c is not None and after_c.startswith(n):  # n's children after c, in c's block
            stop = i if _astral(lo[i]) else None
            parts.append(partial(self._scan, n, after_c, i + 1, stop, delimiter, page_size))
        if not _astral(lo[i]):  # c is in E: n's S block follows
            parts.append(partial(self._scan, n, n + _S_FIRST, i + 1, i, delimiter, page_size))
        if n != node and after_n is not None and after_n.startswith(node):
            parts.append(partial(self._scan, node, after_n, len(node), None, delimiter, page_size))
        for make in parts:
            async with aclosing(make()) as part:
                async for entry in part:
                    yield entry

    async def _scan(
        self,
        prefix: str,
        floor: str | None,
        skip: int,
        stop_at: int | None,
        delimiter: str | None,
        page_size: int,
    ) -> AsyncGenerator[Entry]:
        """Entries named `prefix...`, from `floor` on (Azure order), in S3 order.

        S characters at positions >= `skip` start the reordering described above. With `stop_at`
        = i the scan is confined to an S block: it ends at the first name whose character i is not
        astral. `floor`, when given, has no E or S characters after `prefix`, or starts a block.
        """
        while True:
            jumped, resume = False, None
            pages = self._pages(prefix, floor, delimiter, page_size)
            async with aclosing(pages):
                async for entries, final in pages:
                    k = 0
                    while k < len(entries):
                        name = entries[k][0]
                        if stop_at is not None and (len(name) <= stop_at or not _astral(name[stop_at])):
                            return
                        j = _first_astral(name, skip)
                        if j is None:
                            yield entries[k]
                            k += 1
                            continue
                        m = name[:j]  # `name` is the first of m's S block: m's E block comes first
                        end = next(
                            (x for x in range(k, len(entries)) if not entries[x][0].startswith(m)), None
                        )
                        if end is not None or final:
                            # The rest of m's subtree is in this page: sort it here.
                            end = len(entries) if end is None else end
                            for entry in sorted(entries[k:end], key=lambda e: e[0]):
                                yield entry
                            k = end
                            continue
                        for floor_m, stop in ((m + _E_FIRST, None), (m + _S_FIRST, j)):
                            block = self._scan(m, floor_m, j + 1, stop, delimiter, page_size)
                            async with aclosing(block):
                                async for entry in block:
                                    yield entry
                        jumped, resume = True, after_subtree(m)
                        break
                    if jumped:
                        break
            if resume is None or not resume.startswith(prefix):
                return  # the listing ended, or m's subtree was the rest of prefix's
            floor = resume

    async def _pages(
        self, prefix: str, floor: str | None, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[tuple[list[Entry], bool]]:
        """List Blobs pages of entries named `prefix...` and >= `floor`, each in Azure's order, and
        whether it is the last page.

        `floor` goes to the service as `startFrom`; names below it are skipped here as well, so a
        service that ignores `startFrom` costs time, not correctness, and one that refuses it is
        asked without it from then on.
        """
        floor_key = _azure_key(floor) if floor else None
        use_start = floor is not None and self.start_from
        pages = self._list_pages(prefix, floor if use_start else None, delimiter, page_size)
        first = True
        while True:
            try:
                with translated(prefix):
                    page = await anext(pages, None)
                    items = [item async for item in page] if page is not None else None
            except UfsError as exc:
                cause = exc.__cause__
                if first and use_start and isinstance(cause, HttpResponseError) and cause.status_code == 400:
                    log.info(
                        "the service refused List Blobs with startFrom (%s); skipping names instead", exc
                    )
                    self.start_from = use_start = False
                    pages = self._list_pages(prefix, None, delimiter, page_size)
                    continue
                raise
            if items is None:
                return
            first = False
            final = getattr(pages, "continuation_token", "unknown") is None
            # A page holds a range of names, but the SDK puts its common prefixes before its blobs.
            entries = sorted(
                (
                    (item.name, item if isinstance(item, BlobProperties) else None)
                    for item in items
                    if floor_key is None or _azure_key(item.name) >= floor_key
                ),
                key=lambda entry: _azure_key(entry[0]),
            )
            yield entries, final
            if final:
                return

    def _list_pages(
        self, prefix: str, start_from: str | None, delimiter: str | None, page_size: int
    ) -> AsyncIterator[AsyncIterator[BlobProperties | BlobPrefix]]:
        kwargs: dict[str, Any] = {
            "name_starts_with": prefix,
            "include": ["metadata"],
            "results_per_page": page_size,
        }
        if start_from is not None:
            kwargs["start_from"] = start_from
        if delimiter:
            return self._container.walk_blobs(delimiter=delimiter, **kwargs).by_page()
        return self._container.list_blobs(**kwargs).by_page()
