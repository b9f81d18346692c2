from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import BlobBlock, ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import BlobServiceClient

from tests.azurite import ACCOUNT, ACCOUNT_KEY, connection_string
from tests.servers import free_port
from tests.ufs_adapters.conformance import (
    CASES,
    Case,
    aws_multipart_etag,
    body,
    get,
    list_all,
    md5,
    put,
    utf8_sorted,
)
from ufs_adapters.azure import AzureBlobAdapter
from ufs_adapters.azure_errors import translated
from ufs_adapters.azure_listing import after_subtree
from ufs_adapters.azure_location import AzureLocation, azure_options, parse_azure_uri
from ufs_adapters.azure_names import decode_metadata, encode_metadata
from ufs_adapters.base import (
    MIN_PART_SIZE,
    BadDigest,
    InvalidPart,
    InvalidPath,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ReadOptions,
    UfsError,
    Unavailable,
    WriteMeta,
)
from ufs_adapters.registry import open_adapter

SHARED = "hoard-shared"  # the module's container: prefix mounts live in it


def options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "account_key": ACCOUNT_KEY}


def uri(container: str, prefix: str = "") -> str:
    return f"wasbs://{container}@{ACCOUNT}.blob.core.windows.net/{prefix}"


async def new_container(client: BlobServiceClient) -> str:
    name = f"hoard-{uuid.uuid4().hex[:12]}"
    await client.create_container(name)
    return name


@pytest.fixture(scope="module")
async def opened(azurite_endpoint: str) -> AsyncIterator[AzureBlobAdapter]:
    """One client for the module; each test mounts its own place with it."""
    adapter = await AzureBlobAdapter.open(uri(SHARED), options(azurite_endpoint))
    try:
        await adapter.client.create_container(SHARED)
        await adapter.client.get_blob_client(SHARED, "some/other").upload_blob(b"outside")
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture(params=["container", "prefix"])
async def ufs(request: pytest.FixtureRequest, opened: AzureBlobAdapter) -> AzureBlobAdapter:
    """A fresh container mounted whole, or a fresh prefix of the module's container."""
    if request.param == "container":
        return AzureBlobAdapter(opened.client, await new_container(opened.client))
    prefix = f"some/prefix/{uuid.uuid4().hex[:8]}"
    # a sibling sharing the prefix's characters must not leak into the mount
    await opened.client.get_blob_client(SHARED, f"{prefix}-sibling/x").upload_blob(b"sibling")
    return AzureBlobAdapter(opened.client, SHARED, prefix)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_conformance(ufs: AzureBlobAdapter, case: Case) -> None:
    await case(ufs)


LISTING_CASES = [c for c in CASES if c.__name__.startswith("list_") or c.__name__ == "unicode_and_odd_keys"]


@pytest.mark.parametrize("case", LISTING_CASES, ids=lambda c: c.__name__)
async def test_listing_without_start_from(opened: AzureBlobAdapter, case: Case) -> None:
    """A service without List Blobs' `startFrom` gets the same listings (names are skipped)."""
    ufs = AzureBlobAdapter(opened.client, await new_container(opened.client))
    ufs._lister.start_from = False
    await case(ufs)


# --- S3 order over Azure's UTF-16 order -----------------------------------------------------------

# L, E (U+E000..U+FFFF) and S (above U+FFFF) characters, and the boundaries between them.
ALPHABET = [
    "a",
    "-",
    "/",
    "é",
    "\ud7ff",
    "\ue000",
    "\uff21",
    "\ufffd",
    "\U00010000",
    "\U0001f600",
    "\U0010fffd",
]


def model(keys: list[str], prefix: str, delimiter: str | None, start_after: str | None) -> list[str]:
    """S3's answer, by brute force: entries (keys and common prefixes) > start_after, in UTF-8 order."""
    entries = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entries.add(key[: cut + len(delimiter)] if delimiter and cut >= 0 else key)
    return [e for e in utf8_sorted(list(entries)) if start_after is None or e > start_after]


async def listed(
    ufs: AzureBlobAdapter, prefix: str, delimiter: str | None, start_after: str | None, limit: int
) -> list[str]:
    out: list[str] = []
    after = start_after
    while True:
        page = await ufs.list_objects(prefix, delimiter=delimiter, start_after=after, limit=limit)
        got = [o.path for o in page.objects] + page.common_prefixes
        assert len(got) <= limit
        out += utf8_sorted(got)
        if page.next_start_after is None:
            return out
        after = page.next_start_after


@pytest.mark.parametrize(
    ("start_from", "page_size"),
    [(True, 5000), (True, 2), (False, 10)],
    ids=["start_from", "start_from-small-pages", "skipping-small-pages"],
)
async def test_listing_order_matches_s3_for_any_characters(
    opened: AzureBlobAdapter, start_from: bool, page_size: int
) -> None:
    """Random names mixing L, E and S characters list exactly as S3 would list them, also when
    blocks span List Blobs pages (so that they are listed separately with startFrom)."""
    rng = random.Random(11)
    keys = sorted({"".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4))) for _ in range(60)})
    keys = [k for k in keys if not k.startswith("/") and "//" not in k]
    ufs = AzureBlobAdapter(opened.client, await new_container(opened.client))
    ufs._lister.start_from = start_from
    ufs.list_page_size = page_size
    await asyncio.gather(*(put(ufs, key, b"") for key in keys))
    probes = [
        None,
        "",
        "a",
        "\uff21",
        "\U0001f600",
        "\ue000",
        "a\ue000",
        "a\U0001f600/",
        "-\U0010fffd",
        *rng.sample(keys, 4),
    ]
    for prefix in ("", "a", "\U0001f600", "a/"):
        for delimiter in (None, "/", "-"):
            for start_after in probes:
                # every probe in one page; some also in pages of three entries
                for limit in (1000, 3) if start_after in probes[2:5] else (1000,):
                    expected = model(keys, prefix, delimiter, start_after)
                    got = await listed(ufs, prefix, delimiter, start_after, limit)
                    assert got == expected, (prefix, delimiter, start_after, limit)


def test_after_subtree() -> None:
    assert after_subtree("ab") == "ac"
    assert after_subtree("a\ud7ff") == "a\U00010000"  # D800.. (surrogates) follow D7FF
    assert after_subtree("a\U0010ffff") == "a\ue000"  # E000 follows the largest pair
    assert after_subtree("a\uffff\uffff") == "b"
    assert after_subtree("\uffff") is None


# --- URIs and options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "wasbs://data@acct.blob.core.windows.net/some/prefix",
            AzureLocation("data", "some/prefix/", "acct", "https://acct.blob.core.windows.net"),
        ),
        (
            "wasb://data@acct.blob.core.windows.net",
            AzureLocation("data", "", "acct", "http://acct.blob.core.windows.net"),
        ),
        (
            "abfss://data@acct.dfs.core.windows.net/p/",
            AzureLocation("data", "p/", "acct", "https://acct.blob.core.windows.net"),
        ),
        (
            "abfs://data@acct.dfs.core.chinacloudapi.cn/p",
            AzureLocation("data", "p/", "acct", "https://acct.blob.core.chinacloudapi.cn"),
        ),
        ("az://data/x%20y", AzureLocation("data", "x y/", None, None)),
        ("az://data@acct/x", AzureLocation("data", "x/", "acct", "https://acct.blob.core.windows.net")),
        (
            "wasbs://$root@acct.blob.core.windows.net",
            AzureLocation("$root", "", "acct", "https://acct.blob.core.windows.net"),
        ),
    ],
)
def test_parse_uri(text: str, expected: AzureLocation) -> None:
    assert parse_azure_uri(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://bucket", "not an Azure Blob URI"),
        ("wasbs://acct.blob.core.windows.net/x", "container@account"),
        ("wasbs://Data@acct.blob.core.windows.net", "container name"),
        ("wasbs://ab@acct.blob.core.windows.net", "container name"),
        ("wasbs://data@acct.file.core.windows.net", "host like"),
        ("wasbs://data@acct.blob.core.windows.net/a/../b", "'..'"),
        ("wasbs://data@acct.blob.core.windows.net/.hoard-uploads/x", "reserved"),
    ],
)
def test_parse_uri_errors(text: str, message: str) -> None:
    with pytest.raises((ValueError, InvalidPath), match=message):
        parse_azure_uri(text)


def test_hadoop_option_names() -> None:
    location = parse_azure_uri("wasbs://data@acct.blob.core.windows.net")
    opts = azure_options(
        {
            "fs.azure.account.key.acct.blob.core.windows.net": "S0VZ",
            "fs.azure.account.key.other.blob.core.windows.net": "T1RIRVI=",  # another account: ignored
            "fs.azure.sas.data.acct.blob.core.windows.net": "sv=1",
            "fs.azure.sas.elsewhere.acct.blob.core.windows.net": "sv=2",
            "fs.azure.secure.mode": "true",  # foreign and unused: ignored
        },
        location,
    )
    assert opts == {"account_key": "S0VZ", "account_name": "acct", "sas_token": "sv=1"}
    abfs = parse_azure_uri("abfss://data@acct.dfs.core.windows.net")
    assert (
        azure_options({"fs.azure.account.key.acct.dfs.core.windows.net": "S0VZ"}, abfs)["account_key"]
        == "S0VZ"
    )
    with pytest.raises(ValueError, match="different values"):
        azure_options({"account_key": "a", "fs.azure.account.key.acct.blob.core.windows.net": "b"}, location)
    with pytest.raises(ValueError, match="unknown option 'key'"):
        azure_options({"key": "x"}, location)
    with pytest.raises(ValueError, match="but the URI names"):
        azure_options({"account_name": "other"}, location)


async def test_open_refuses_bad_option_combinations() -> None:
    with pytest.raises(ValueError, match="account_name"):
        await AzureBlobAdapter.open("az://data", {})
    with pytest.raises(ValueError, match="not both"):
        await AzureBlobAdapter.open(uri("data"), {"account_key": "S0VZ", "sas_token": "sv=1"})
    with pytest.raises(ValueError, match="connection_string"):
        await AzureBlobAdapter.open(uri("data"), {"connection_string": "x", "account_key": "S0VZ"})
    with pytest.raises(ValueError, match="not base64"):
        await AzureBlobAdapter.open(uri("data"), {"account_key": "not a key!"})
    with pytest.raises(ValueError, match="max_attempts"):
        await AzureBlobAdapter.open(uri("data"), {"max_attempts": "many"})


def test_metadata_names_round_trip() -> None:
    metadata = {
        "color": "blue",
        "my-key": "1",
        "a.b": "2",
        "hoard_etag": "3",
        "Under_Score": "4",
        "x_2d": "5",
    }
    stored = encode_metadata(metadata)
    assert all(name.replace("_", "a").isalnum() for name in stored)  # C# identifiers
    assert stored["color"] == "blue" and "hoard_etag" not in stored
    assert decode_metadata(stored) == metadata
    assert decode_metadata({**stored, "hoard_etag": "0" * 32 + "-2"}) == metadata


# --- mounts, credentials, errors ------------------------------------------------------------------


async def test_registry_opens_every_scheme(azurite_endpoint: str, opened: AzureBlobAdapter) -> None:
    for scheme in ("wasb", "wasbs", "abfs", "abfss"):
        host = "dfs" if scheme.startswith("abfs") else "blob"
        adapter = await open_adapter(
            f"{scheme}://{SHARED}@{ACCOUNT}.{host}.core.windows.net/p", options(azurite_endpoint)
        )
        try:
            assert isinstance(adapter, AzureBlobAdapter) and adapter.prefix == "p/"
            await adapter.check()
        finally:
            await adapter.aclose()
    adapter = await open_adapter(f"az://{SHARED}", {**options(azurite_endpoint), "account_name": ACCOUNT})
    try:
        await adapter.check()
    finally:
        await adapter.aclose()


async def test_alluxio_key_option(azurite_endpoint: str, opened: AzureBlobAdapter) -> None:
    aliases = {
        "endpoint_url": azurite_endpoint,
        f"fs.azure.account.key.{ACCOUNT}.blob.core.windows.net": ACCOUNT_KEY,
        "alluxio.underfs.azure.whatever": "x",  # foreign: ignored
    }
    adapter = await AzureBlobAdapter.open(uri(SHARED), aliases)
    try:
        await adapter.check()
        assert await get(adapter, "some/other") == b"outside"
    finally:
        await adapter.aclose()


async def test_connection_string(azurite_endpoint: str, opened: AzureBlobAdapter) -> None:
    adapter = await AzureBlobAdapter.open(
        f"az://{SHARED}", {"connection_string": connection_string(azurite_endpoint)}
    )
    try:
        await adapter.check()
        assert await get(adapter, "some/other") == b"outside"
    finally:
        await adapter.aclose()


async def test_sas_token(azurite_endpoint: str, opened: AzureBlobAdapter) -> None:
    container = await new_container(opened.client)
    sas = generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, create=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    adapter = await AzureBlobAdapter.open(
        uri(container), {"endpoint_url": azurite_endpoint, "sas_token": "?" + sas}
    )
    try:
        await adapter.check()
        await put(adapter, "a", b"with a SAS", metadata={"k": "v"})
        copied = await adapter.copy("a", "b", meta=None)  # the copy source carries the SAS too
        assert copied.etag == md5(b"with a SAS") and await get(adapter, "b") == b"with a SAS"
    finally:
        await adapter.aclose()


async def test_wrong_key_is_permission_denied(azurite_endpoint: str, opened: AzureBlobAdapter) -> None:
    wrong = {"endpoint_url": azurite_endpoint, "account_key": "d3JvbmcgYnV0IGJhc2U2NA=="}
    adapter = await AzureBlobAdapter.open(uri(SHARED), wrong)
    try:
        with pytest.raises(PermissionDenied) as raised:
            await adapter.check()
        assert raised.value.__cause__ is not None
        with pytest.raises(PermissionDenied):
            await adapter.stat("some/other")
        with pytest.raises(PermissionDenied):
            await get(adapter, "some/other")
        with pytest.raises(PermissionDenied):
            await adapter.list_objects("", delimiter=None, start_after=None, limit=10)
        with pytest.raises(PermissionDenied):
            await put(adapter, "x", b"x")
    finally:
        await adapter.aclose()


async def test_missing_container(azurite_endpoint: str) -> None:
    adapter = await AzureBlobAdapter.open(uri("no-such-container"), options(azurite_endpoint))
    try:
        with pytest.raises(NotFound):
            await adapter.check()
        assert not await adapter.is_dir("")
    finally:
        await adapter.aclose()


async def test_unreachable_endpoint() -> None:
    opts = {"endpoint_url": f"http://127.0.0.1:{free_port()}/{ACCOUNT}", "account_key": ACCOUNT_KEY}
    adapter = await AzureBlobAdapter.open(uri("data"), {**opts, "max_attempts": "1", "connect_timeout": "1"})
    try:
        with pytest.raises(Unavailable) as raised:
            await adapter.stat("k")
        assert raised.value.__cause__ is not None
        with pytest.raises(Unavailable):
            await adapter.check()
    finally:
        await adapter.aclose()


def _http_error(code: str | None, status: int) -> HttpResponseError:
    exc = HttpResponseError(message="m")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "expected", "throttled"),
    [
        (_http_error("BlobNotFound", 404), NotFound, False),
        (_http_error("ContainerNotFound", 404), NotFound, False),
        (_http_error(None, 404), NotFound, False),  # HEAD: no body, no code
        (_http_error("ConditionNotMet", 412), PreconditionFailed, False),
        (_http_error(None, 412), PreconditionFailed, False),
        (_http_error("AuthenticationFailed", 403), PermissionDenied, False),
        (_http_error("AuthorizationPermissionMismatch", 403), PermissionDenied, False),
        (_http_error("ServerBusy", 503), Unavailable, True),
        (_http_error(None, 503), Unavailable, True),
        (_http_error("OperationTimedOut", 500), Unavailable, False),
        (_http_error("InvalidBlockList", 400), InvalidPart, False),
        (_http_error("Md5Mismatch", 400), BadDigest, False),
        (_http_error("SomethingNew", 400), UfsError, False),
        (ServiceRequestError("connection refused"), Unavailable, False),
    ],
)
def test_error_table(exc: Exception, expected: type[UfsError], throttled: bool) -> None:
    with pytest.raises(expected) as raised:
        with translated("some/key"):
            raise exc
    assert type(raised.value) is expected or expected is UfsError
    assert raised.value.__cause__ is exc and raised.value.path == "some/key"
    assert getattr(raised.value, "throttled", False) is throttled


async def test_prefix_mount_is_confined(opened: AzureBlobAdapter) -> None:
    container = await new_container(opened.client)
    client = opened.client.get_container_client(container)
    for name in ["some/prefix/a", "some/prefix-x/b", "some/other", "some/prefix/"]:
        await client.upload_blob(name, name.encode())
    adapter = AzureBlobAdapter(opened.client, container, "some/prefix/")
    assert await list_all(adapter, "") == (["a"], [])
    assert await list_all(adapter, "", limit=1) == (["a"], [])  # the marker `some/prefix/` is not ours
    assert await list_all(adapter, "", "/") == (["a"], [])
    for key in ("../other", "./a", "a/../../other"):
        with pytest.raises(InvalidPath):
            await adapter.stat(key)
    await put(adapter, "n", b"new")
    assert await (await client.download_blob("some/prefix/n")).readall() == b"new"


# --- Azure specifics ----------------------------------------------------------------------------------


async def test_metadata_azure_cannot_name(ufs: AzureBlobAdapter) -> None:
    metadata = {"my-key": "1", "hoard_etag": "mine", "dotted.name": "2"}
    await put(ufs, "m", b"m", content_type="text/x", metadata=metadata)
    st = await ufs.stat("m")
    assert (st.etag, st.content_type, dict(st.metadata)) == (md5(b"m"), "text/x", metadata)
    (listed_info,) = (await ufs.list_objects("m", delimiter=None, start_after=None, limit=5)).objects
    assert (listed_info.etag, dict(listed_info.metadata)) == (md5(b"m"), metadata)


async def test_large_write_is_staged_in_blocks(ufs: AzureBlobAdapter) -> None:
    ufs.block_size = 1024 * 1024
    data = os.urandom(3 * ufs.block_size + 1000)
    info = await ufs.write("large", body(data), size=None, meta=WriteMeta("application/x-big", {"a": "b"}))
    assert (info.etag, info.size, info.parts_count) == (md5(data), len(data), None)  # a plain MD5
    st = await ufs.stat("large")
    assert (st.etag, st.content_type, dict(st.metadata)) == (md5(data), "application/x-big", {"a": "b"})
    assert md5(await get(ufs, "large")) == md5(data)
    with pytest.raises(BadDigest):
        await ufs.write("large", body(b"x" + data), size=len(data), meta=WriteMeta())
    assert md5(await get(ufs, "large")) == md5(data)  # the old object stays
    # a known size spreads over the fewest blocks; a body that stops early is refused
    info = await ufs.write("sized", body(data), size=len(data), meta=WriteMeta())
    assert info.etag == md5(data) and md5(await get(ufs, "sized")) == md5(data)


async def test_cancelled_write_leaves_the_old_object(ufs: AzureBlobAdapter) -> None:
    ufs.block_size = 1024 * 1024
    await put(ufs, "k", b"old")
    staged = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield os.urandom(ufs.block_size + 1)
        staged.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(ufs.write("k", stalled(), size=None, meta=WriteMeta()))
    await asyncio.wait_for(staged.wait(), 10)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await get(ufs, "k") == b"old"


async def test_large_parts_are_spooled(ufs: AzureBlobAdapter, tmp_path: Any) -> None:
    ufs.block_size = 1024 * 1024  # a 6 MiB part of known size becomes 5 blocks of 2 MiB, on disk
    ufs._spool_dir = tmp_path
    p1, p2 = os.urandom(MIN_PART_SIZE + 3), os.urandom(17)
    upload_id = await ufs.create_multipart("spooled", WriteMeta())
    part1 = await ufs.upload_part("spooled", upload_id, 1, body(p1), size=len(p1))
    part2 = await ufs.upload_part("spooled", upload_id, 2, body(p2), size=None)
    assert (part1.etag, part1.size, part2.etag) == (md5(p1), len(p1), md5(p2))
    info = await ufs.complete_multipart("spooled", upload_id, [(1, part1.etag), (2, part2.etag)])
    assert info.etag == aws_multipart_etag(p1, p2)
    assert md5(await get(ufs, "spooled")) == md5(p1 + p2)
    assert list(tmp_path.iterdir()) == []  # temp files are anonymous and closed
    with pytest.raises(BadDigest):
        upload_id = await ufs.create_multipart("short", WriteMeta())
        await ufs.upload_part("short", upload_id, 1, body(p2), size=len(p2) + 1)
    assert (await ufs.list_parts("short", upload_id, marker=0, limit=10)).parts == []


async def test_multipart_copy_keeps_its_etag(ufs: AzureBlobAdapter) -> None:
    p1, p2 = os.urandom(MIN_PART_SIZE), b"tail"
    upload_id = await ufs.create_multipart("mp", WriteMeta("text/plain", {"k": "v"}))
    for number, data in ((1, p1), (2, p2)):
        await ufs.upload_part("mp", upload_id, number, body(data), size=len(data))
    info = await ufs.complete_multipart("mp", upload_id, [(1, md5(p1)), (2, md5(p2))])
    kept = await ufs.copy("mp", "kept", meta=None)
    replaced = await ufs.copy("mp", "replaced", meta=WriteMeta("application/json", {}))
    assert kept.etag == replaced.etag == info.etag == aws_multipart_etag(p1, p2)
    assert (kept.parts_count, dict(kept.metadata), kept.content_type) == (2, {"k": "v"}, "text/plain")
    assert (dict(replaced.metadata), replaced.content_type) == ({}, "application/json")
    same = await ufs.copy("mp", "mp", meta=WriteMeta("text/x", {"n": "1"}))  # onto itself
    assert (same.etag, same.content_type, dict(same.metadata)) == (info.etag, "text/x", {"n": "1"})
    listing = await ufs.list_objects("", delimiter=None, start_after=None, limit=10)
    assert {o.path: o.etag for o in listing.objects} == dict.fromkeys(["kept", "mp", "replaced"], info.etag)


async def test_a_commit_discards_parts_in_progress(ufs: AzureBlobAdapter) -> None:
    """Azure drops a blob's uncommitted blocks when a block list is committed to it (a staged
    write, another upload's completion): an upload in progress on that key then fails cleanly."""
    upload_id = await ufs.create_multipart("contested", WriteMeta())
    part = await ufs.upload_part("contested", upload_id, 1, body(b"part"), size=4)
    written = os.urandom(ufs.single_put_size + 1)  # staged in blocks, committed as a list
    await put(ufs, "contested", written)
    assert (await ufs.list_parts("contested", upload_id, marker=0, limit=10)).parts == []
    with pytest.raises(InvalidPart):
        await ufs.complete_multipart("contested", upload_id, [(1, part.etag)])
    assert await get(ufs, "contested") == written
    await ufs.abort_multipart("contested", upload_id)


async def test_upload_markers_are_hidden(opened: AzureBlobAdapter) -> None:
    ufs = AzureBlobAdapter(opened.client, await new_container(opened.client))
    await put(ufs, "a", b"a")
    upload_id = await ufs.create_multipart("b", WriteMeta())
    assert await list_all(ufs, "") == (["a"], [])
    assert await list_all(ufs, "", "/") == (["a"], [])
    with pytest.raises(InvalidPath):
        await put(ufs, ".hoard-uploads/b/x", b"")
    await ufs.abort_multipart("b", upload_id)


async def test_foreign_blob_without_md5_uses_azure_etag(ufs: AzureBlobAdapter) -> None:
    blob = ufs._container.get_blob_client(ufs.prefix + "foreign")
    await blob.stage_block("b1", b"written elsewhere")
    await blob.commit_block_list([BlobBlock("b1")])
    st = await ufs.stat("foreign")
    props = await blob.get_blob_properties()
    assert st.etag == props.etag.strip('"') and st.etag.startswith("0x")
    assert await get(ufs, "foreign", 8, if_match=st.etag) == b"elsewhere"
    with pytest.raises(PreconditionFailed):
        await get(ufs, "foreign", if_match=md5(b"written elsewhere"))


async def test_if_match_past_the_end(ufs: AzureBlobAdapter) -> None:
    info = await put(ufs, "short", b"abc")
    assert await get(ufs, "short", 10, if_match=info.etag) == b""
    with pytest.raises(PreconditionFailed):
        await get(ufs, "short", 10, if_match="0" * 32)


async def test_refused_start_from_falls_back(
    opened: AzureBlobAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    ufs = AzureBlobAdapter(opened.client, await new_container(opened.client))
    for key in ("a", "b", "c"):
        await put(ufs, key, b"")
    original = ufs._lister._list_pages

    def refusing(prefix: str, start_from: str | None, delimiter: str | None, page_size: int) -> Any:
        if start_from is None:
            return original(prefix, start_from, delimiter, page_size)

        async def pages() -> AsyncIterator[Any]:
            raise _http_error("UnsupportedQueryParameter", 400)
            yield

        return pages()

    monkeypatch.setattr(ufs._lister, "_list_pages", refusing)
    page = await ufs.list_objects("", delimiter=None, start_after="a", limit=10)
    assert [o.path for o in page.objects] == ["b", "c"] and not ufs._lister.start_from


async def test_a_read_never_mixes_versions(
    azurite_endpoint: str, opened: AzureBlobAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK fetches a long range in several requests; all of them are pinned to the version of
    the first, so an overwrite in between fails the read instead of splicing two objects."""
    monkeypatch.setattr(AzureBlobAdapter, "read_chunk_size", 1024 * 1024)
    container = await new_container(opened.client)
    adapter = await AzureBlobAdapter.open(uri(container), options(azurite_endpoint))
    try:
        old = os.urandom(3 * 1024 * 1024)
        await put(adapter, "moving", old)
        stream = adapter.read("moving", ReadOptions())
        first = await anext(stream)
        assert first == old[: len(first)]
        await put(adapter, "moving", os.urandom(len(old)))
        with pytest.raises(PreconditionFailed):
            async for _ in stream:
                pass
    finally:
        await adapter.aclose()


async def test_list_uploads_pages_and_delimiter(ufs: AzureBlobAdapter) -> None:
    ids = {key: await ufs.create_multipart(key, WriteMeta()) for key in ("d/a", "d/b/x", "d/b/y", "e")}
    second = await ufs.create_multipart("d/a", WriteMeta())  # two uploads of one key, by initiation
    page = await ufs.list_uploads("d/", delimiter="/", key_marker=None, upload_id_marker=None, limit=10)
    assert [(u.path, u.upload_id) for u in page.uploads] == [("d/a", ids["d/a"]), ("d/a", second)]
    assert page.common_prefixes == ["d/b/"] and page.next_key_marker is None
    seen: list[tuple[str, str | None]] = []
    key_marker: str | None = None
    upload_marker: str | None = None
    while True:
        page = await ufs.list_uploads(
            "", delimiter=None, key_marker=key_marker, upload_id_marker=upload_marker, limit=2
        )
        seen += [(u.path, u.upload_id) for u in page.uploads]
        if page.next_key_marker is None:
            break
        key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker
    assert seen == sorted([*ids.items(), ("d/a", second)])
    for key, upload_id in [*ids.items(), ("d/a", second)]:
        await ufs.abort_multipart(key, upload_id)
