"""URI scheme -> adapter. The table is data: a new adapter is a new row."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .azure import AzureBlobAdapter
from .base import UfsAdapter
from .local import LocalAdapter
from .s3 import S3Adapter
from .s3_options import OPTION_ALIASES, normalize_options

__all__ = ["OPTION_ALIASES", "SCHEMES", "Opener", "normalize_options", "open_adapter", "scheme_of"]


class Opener(Protocol):
    def __call__(
        self, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> Awaitable[UfsAdapter]: ...


SCHEMES: Mapping[str, Opener] = {
    "file": LocalAdapter.open,
    "s3": S3Adapter.open,
    "s3a": S3Adapter.open,  # Alluxio/Hadoop spelling of the same thing
    **dict.fromkeys(("wasb", "wasbs", "abfs", "abfss", "az"), AzureBlobAdapter.open),  # Azure Blob
}


def scheme_of(uri: str) -> str:
    """The URI's scheme; a bare path (`/srv/data`, `./data`) is a `file` URI."""
    return urlsplit(uri).scheme.lower() or "file"


async def open_adapter(uri: str, options: Mapping[str, str], *, state_dir: Path | None = None) -> UfsAdapter:
    """Open the adapter for a mount. `state_dir` is local scratch space the adapter may use
    (the S3 adapter spools upload parts there); the caller closes the adapter with `aclose()`."""
    scheme = scheme_of(uri)
    opener = SCHEMES.get(scheme)
    if opener is None:
        raise ValueError(f"unknown UFS scheme {scheme!r} in {uri!r} (known: {', '.join(sorted(SCHEMES))})")
    return await opener(uri, normalize_options(options), state_dir=state_dir)
