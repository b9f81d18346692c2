from __future__ import annotations

from pathlib import Path

import pytest

from ufs_adapters.local import LocalAdapter
from ufs_adapters.registry import normalize_options, open_adapter, scheme_of
from ufs_adapters.s3 import S3Adapter
from ufs_adapters.s3_options import parse_s3_uri


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("file:///srv/data", "file"),
        ("/srv/data", "file"),
        ("./data", "file"),
        ("data", "file"),
        ("s3://b/p", "s3"),
    ],
)
def test_scheme_of(uri: str, scheme: str) -> None:
    assert scheme_of(uri) == scheme


async def test_opens_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri in (f"file://{tmp_path}", str(tmp_path), "./"):
        adapter = await open_adapter(uri, {})
        assert isinstance(adapter, LocalAdapter) and adapter.root == str(tmp_path)
        await adapter.aclose()


async def test_opens_s3_with_alluxio_names(moto_endpoint: str) -> None:
    adapter = await open_adapter(
        "s3://bucket/data/set",
        {
            "aws.accessKeyId": "testing",
            "aws.secretKey": "testing",
            "alluxio.underfs.s3.endpoint": moto_endpoint,
        },
    )
    try:
        assert isinstance(adapter, S3Adapter)
        assert (adapter.bucket, adapter.prefix) == ("bucket", "data/set/")
    finally:
        await adapter.aclose()


async def test_unknown_scheme_is_named() -> None:
    with pytest.raises(ValueError, match="'gs'"):
        await open_adapter("gs://bucket/x", {})


def test_normalize_options() -> None:
    assert normalize_options(
        {
            "s3a.accessKeyId": "AK",
            "s3a.secretKey": "SK",
            "alluxio.underfs.s3.region": "eu-west-1",
            "alluxio.underfs.s3.endpoint": "http://minio:9000",
            "alluxio.underfs.s3.disable.dns.buckets": "true",
            "other.key": "kept",
        }
    ) == {
        "access_key_id": "AK",
        "secret_access_key": "SK",
        "region": "eu-west-1",
        "endpoint_url": "http://minio:9000",
        "addressing_style": "path",
        "other.key": "kept",
    }
    assert normalize_options({"fs.s3a.path.style.access": "false"}) == {}
    assert normalize_options({"access_key_id": "AK", "aws.accessKeyId": "AK"}) == {"access_key_id": "AK"}
    with pytest.raises(ValueError, match="'access_key_id' and 's3a.accessKeyId'"):
        normalize_options({"access_key_id": "AK", "s3a.accessKeyId": "OTHER"})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b", ("b", "")),
        ("s3://b/", ("b", "")),
        ("s3://b/x/y", ("b", "x/y/")),
        ("s3a://b/x/", ("b", "x/")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


def test_parse_s3_uri_needs_a_bucket() -> None:
    with pytest.raises(ValueError):
        parse_s3_uri("s3:///x")
