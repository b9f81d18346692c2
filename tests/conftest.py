from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the whole session; tests use their own buckets in it."""
    with moto_server() as endpoint:
        yield endpoint
