from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.azurite import azurite_server
from tests.servers import moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the whole session; tests use their own buckets in it."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def azurite_endpoint() -> Iterator[str]:
    """One Azurite for the session (installed with npm on first use); tests use their own containers."""
    with azurite_server() as endpoint:
        yield endpoint
