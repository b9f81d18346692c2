from __future__ import annotations

import json
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import pytest

from gateway import namespace
from gateway.config import Limits, MountConfig
from gateway.namespace import MountError, MountTable, NotMounted, mount_id
from gateway.values import file_uri
from ufs_adapters.base import PermissionDenied, UfsAdapter, Unavailable


class FakeAdapter:
    """Just enough of an adapter for the table: check, is_dir, aclose."""

    scheme = "fake"

    def __init__(self, uri: str, options: Mapping[str, str], dirs: set[str]) -> None:
        self.uri = uri
        self.options = dict(options)
        self.dirs = dirs
        self.closed = False
        self.check_error: Exception | None = None

    async def check(self) -> None:
        if self.check_error is not None:
            raise self.check_error

    async def is_dir(self, path: str) -> bool:
        return path in self.dirs

    async def aclose(self) -> None:
        self.closed = True


class FakeOpener:
    def __init__(self) -> None:
        self.opened: list[FakeAdapter] = []
        self.dirs: dict[str, set[str]] = {}  # uri -> directories its UFS has
        self.fail_check: dict[str, Exception] = {}

    async def __call__(
        self, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> UfsAdapter:
        if uri.startswith("bad://"):
            raise ValueError(f"unknown scheme in {uri!r}")
        adapter = FakeAdapter(uri, options, self.dirs.setdefault(uri, set()))
        adapter.check_error = self.fail_check.get(uri)
        self.opened.append(adapter)
        return cast(UfsAdapter, adapter)


def fake(mount: namespace.Mount) -> FakeAdapter:
    return cast(FakeAdapter, mount.adapter)


CONFIG = [
    MountConfig("/", "fake://root"),
    MountConfig("/s3", "fake://s3"),
    MountConfig("/s3/sub", "fake://sub"),
    MountConfig("/s3/sub/dir", "fake://dir"),
    MountConfig("/b/x", "fake://bx"),
]


@pytest.fixture
async def table(tmp_path: Path) -> MountTable:
    return await MountTable.open(CONFIG, tmp_path / "meta", opener=FakeOpener())


# --- resolution ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "key", "mount", "ufs_path"),
    [
        ("data", "a/b.txt", "/", "data/a/b.txt"),  # root: buckets are top-level directories
        ("data", "", "/", "data/"),
        ("s3", "k", "/s3", "k"),  # a mount bucket
        ("s3", "", "/s3", ""),
        ("s3", "sub", "/s3", "sub"),  # the key `sub` is not under `sub/`
        ("s3", "sub/", "/s3/sub", ""),
        ("s3", "sub/k", "/s3/sub", "k"),
        ("s3", "subx/k", "/s3", "subx/k"),  # whole segments only
        ("s3", "sub/dir/k/l", "/s3/sub/dir", "k/l"),  # longest prefix
        ("s3", "sub/dirx", "/s3/sub", "dirx"),
        ("s3x", "k", "/", "s3x/k"),  # `/s3x` is not below `/s3`
        ("b", "x/y", "/b/x", "y"),  # a mount inside a root bucket
        ("b", "y", "/", "b/y"),
        ("b", "xy", "/", "b/xy"),
    ],
)
async def test_resolve(table: MountTable, bucket: str, key: str, mount: str, ufs_path: str) -> None:
    found, path = table.resolve(bucket, key)
    assert (found.path, path) == (mount, ufs_path)


async def test_resolve_bucket(table: MountTable) -> None:
    def view(bucket: str) -> tuple[str, str] | None:
        found = table.resolve_bucket(bucket)
        return None if found is None else (found[0].path, found[1])

    assert view("s3") == ("/s3", "")
    assert view("data") == ("/", "data")
    assert view("b") == ("/", "b")


async def test_mount_buckets_and_children(table: MountTable) -> None:
    assert table.mount_buckets() == ["b", "s3"]

    def children(bucket: str, prefix: str) -> list[str]:
        return [m.path for m in table.children(bucket, prefix)]

    assert children("s3", "") == ["/s3/sub", "/s3/sub/dir"]
    assert children("s3", "su") == ["/s3/sub", "/s3/sub/dir"]
    assert children("s3", "sub") == ["/s3/sub", "/s3/sub/dir"]
    assert children("s3", "sub/") == ["/s3/sub", "/s3/sub/dir"]  # /s3/sub serves the prefix
    assert children("s3", "sub/d") == ["/s3/sub", "/s3/sub/dir"]
    assert children("s3", "sub/x") == ["/s3/sub"]
    assert children("s3", "sub/dir/") == ["/s3/sub/dir"]  # the deepest only: /s3/sub is hidden there
    assert children("s3", "sub/dir/k") == ["/s3/sub/dir"]
    assert children("s3", "x") == []
    assert children("b", "") == ["/b/x"]
    assert children("b", "x/y") == ["/b/x"]
    assert children("b", "y") == []
    assert children("data", "") == []


async def test_without_a_root(tmp_path: Path) -> None:
    table = await MountTable.open([MountConfig("/s3", "fake://s3")], tmp_path, opener=FakeOpener())
    assert table.resolve("s3", "k")[1] == "k"
    with pytest.raises(NotMounted) as info:
        table.resolve("data", "k")
    assert info.value.bucket == "data"
    assert table.resolve_bucket("data") is None
    assert table.resolve_bucket("s3") is not None


async def test_mounts_ids_and_public_view(table: MountTable, tmp_path: Path) -> None:
    assert [m.path for m in table.mounts()] == ["/", "/b/x", "/s3", "/s3/sub", "/s3/sub/dir"]
    assert mount_id("/s3") == mount_id("/s3") != mount_id("/s3/sub")
    assert len({m.id for m in table.mounts()}) == 5
    options = {
        "region": "x",
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "SK",
        "session_token": "T",
        "sftp.password": "p",
        "myClientSecret": "s",
    }
    mount = await table.add("/new", "fake://new", options)
    view = mount.public_view()
    assert view["options"] == {
        "region": "x",
        "access_key_id": "****MPLE",
        "secret_access_key": "****",
        "session_token": "****",
        "sftp.password": "****",
        "myClientSecret": "****",
    }
    assert (view["path"], view["uri"], view["id"], view["origin"]) == (
        "/new",
        "fake://new",
        mount_id("/new"),
        "runtime",
    )
    assert mount.options["secret_access_key"] == "SK"  # the adapter still gets the secret
    assert "SK" not in json.dumps([m.public_view() for m in table.mounts()])


async def test_alluxio_option_names_are_normalised(tmp_path: Path) -> None:
    opener = FakeOpener()
    table = await MountTable.open(
        [MountConfig("/s3", "s3://b", {"s3a.accessKeyId": "AK", "s3a.secretKey": "SK"})],
        tmp_path,
        opener=opener,
    )
    mount = table.resolve("s3", "")[0]
    assert mount.options == {"access_key_id": "AK", "secret_access_key": "SK"}
    assert mount.public_view()["options"] == {"access_key_id": "****", "secret_access_key": "****"}
    assert opener.opened[0].options == {"access_key_id": "AK", "secret_access_key": "SK"}


# --- runtime mounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("s3new", "is not an absolute path"),
        ("/new/", "is not normalised (use '/new')"),
        ("/_hoard", "reserved"),
        ("/New", "not a valid bucket name"),
        ("/", "the root mount is set in the config file"),
        ("/s3", "'/s3' is already mounted (fake://s3)"),
        ("/s3/sub", "'/s3/sub' is already mounted (fake://sub)"),
    ],
)
async def test_add_rejects(table: MountTable, path: str, message: str) -> None:
    with pytest.raises(MountError) as info:
        await table.add(path, "fake://new", {})
    assert message in str(info.value)


async def test_add_reports_the_ufs_error_and_closes_the_adapter(tmp_path: Path) -> None:
    opener = FakeOpener()
    opener.fail_check["fake://denied"] = PermissionDenied("", "AccessDenied: no")
    table = await MountTable.open(CONFIG, tmp_path, opener=opener)
    with pytest.raises(
        MountError, match=r"^'/new': cannot use fake://denied: PermissionDenied: : AccessDenied: no$"
    ):
        await table.add("/new", "fake://denied", {})
    assert opener.opened[-1].closed
    assert table.get("/new") is None
    assert not (tmp_path / "mounts.json").exists()
    with pytest.raises(MountError, match=r"^'/new' \(bad://x\): ValueError: unknown scheme in 'bad://x'$"):
        await table.add("/new", "bad://x", {})
    with pytest.raises(MountError, match="is not a URI"):
        await table.add("/new", "no-scheme", {})


async def test_add_refuses_to_hide_a_directory(tmp_path: Path) -> None:
    opener = FakeOpener()
    opener.dirs["fake://root"] = {"data"}
    opener.dirs["fake://s3"] = {"imagenet"}
    table = await MountTable.open(CONFIG, tmp_path, opener=opener)
    with pytest.raises(
        MountError, match=r"the mount '/' \(fake://root\) already has a directory 'data' there"
    ):
        await table.add("/data", "fake://x", {})
    with pytest.raises(MountError, match=r"the mount '/s3' \(fake://s3\) already has a directory 'imagenet'"):
        await table.add("/s3/imagenet", "fake://x", {})
    assert (await table.add("/s3/other", "fake://x", {})).path == "/s3/other"


async def test_add_refuses_to_serve_the_gateways_own_directories(tmp_path: Path) -> None:
    """A local mount of the metastore (runtime mounts' UFS credentials) or the cache, of a
    directory holding them, or of one inside them, would hand them to S3 clients."""
    private = {"cache.dir": tmp_path / "gw" / "cache", "metastore.dir": tmp_path / "gw" / "meta"}
    table = await MountTable.open(CONFIG, private["metastore.dir"], opener=FakeOpener(), private=private)
    for uri, key in [
        (file_uri(tmp_path / "gw"), "cache.dir"),
        (file_uri(tmp_path), "cache.dir"),
        (file_uri(tmp_path / "gw" / "meta"), "metastore.dir"),
        (file_uri(tmp_path / "gw" / "cache" / "pages"), "cache.dir"),
    ]:
        with pytest.raises(MountError, match=f"would serve the gateway's own {key} "):
            await table.add("/new", uri, {})
    assert table.get("/new") is None
    (tmp_path / "gw" / "data").mkdir()
    assert (await table.add("/new", file_uri(tmp_path / "gw" / "data"), {})).path == "/new"


async def test_add_persist_remove_and_restart(tmp_path: Path) -> None:
    opener = FakeOpener()
    table = await MountTable.open(CONFIG, tmp_path, opener=opener)
    mount = await table.add("/new", "FAKE://new", {"region": "r"}, Limits(max_concurrency=4))
    assert (mount.uri, mount.origin, mount.limits) == ("fake://new", "runtime", Limits(max_concurrency=4))
    assert table.resolve("new", "k") == (mount, "k")
    assert "new" in table.mount_buckets()

    file = tmp_path / "mounts.json"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # it holds credentials
    data = json.loads(file.read_text())
    assert data["version"] == 1
    assert data["mounts"] == [
        {
            "path": "/new",
            "uri": "fake://new",
            "options": {"region": "r"},
            "limits": {
                "bandwidth": None,
                "max_concurrency": 4,
                "max_requests_per_second": None,
                "burst": None,
                "retries": None,
                "connect_timeout": None,
                "first_byte_timeout": None,
                "idle_timeout": None,
            },
        }
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    again = await MountTable.open(CONFIG, tmp_path, opener=FakeOpener())
    restored = again.get("/new")
    assert restored is not None
    assert (restored.uri, restored.options, restored.limits, restored.origin) == (
        "fake://new",
        {"region": "r"},
        Limits(max_concurrency=4),
        "runtime",
    )
    assert restored.id == mount.id

    await again.remove("/new")
    assert again.get("/new") is None
    assert again.resolve("new", "k")[0].path == "/"
    assert json.loads(file.read_text())["mounts"] == []
    third = await MountTable.open(CONFIG, tmp_path, opener=FakeOpener())
    assert third.get("/new") is None


async def test_remove_rejects(table: MountTable) -> None:
    with pytest.raises(MountError, match=r"^'/': the root mount cannot be removed$"):
        await table.remove("/")
    with pytest.raises(MountError, match=r"^'/s3' is set in the config file; remove it there$"):
        await table.remove("/s3")
    with pytest.raises(MountError, match=r"^'/nothing' is not mounted$"):
        await table.remove("/nothing")


async def test_config_wins_over_a_persisted_mount(tmp_path: Path) -> None:
    table = await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())
    await table.add("/x", "fake://runtime-x", {})
    again = await MountTable.open(
        [*CONFIG[:1], MountConfig("/x", "fake://config-x")], tmp_path, opener=FakeOpener()
    )
    mount = again.get("/x")
    assert mount is not None and (mount.uri, mount.origin) == ("fake://config-x", "config")


async def test_workers_see_each_others_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespace, "RETIRE_GRACE", 0.0)
    one = await MountTable.open(CONFIG, tmp_path, opener=FakeOpener())
    two_opener = FakeOpener()
    two = await MountTable.open(CONFIG, tmp_path, opener=two_opener)
    assert await two.reload_if_changed() is False

    await one.add("/new", "fake://new", {})
    assert two.get("/new") is None
    assert await two.reload_if_changed() is True
    seen = two.get("/new")
    assert seen is not None and seen.origin == "runtime"
    assert await two.reload_if_changed() is False
    assert await one.reload_if_changed() is False  # its own write is not a change

    await two.remove("/new")
    assert await one.reload_if_changed() is True
    assert one.get("/new") is None
    # two's adapter for /new was retired and closes on the next tick (grace 0 here)
    assert not fake(seen).closed
    await two.reload_if_changed()
    assert fake(seen).closed


async def test_add_sees_a_clash_from_another_worker(tmp_path: Path) -> None:
    one = await MountTable.open(CONFIG, tmp_path, opener=FakeOpener())
    two = await MountTable.open(CONFIG, tmp_path, opener=FakeOpener())
    await one.add("/new", "fake://one", {})
    with pytest.raises(MountError, match=r"'/new' is already mounted \(fake://one\)"):
        await two.add("/new", "fake://two", {})
    mount = two.get("/new")
    assert mount is not None and mount.uri == "fake://one"


async def test_changed_options_reopen_the_adapter(tmp_path: Path) -> None:
    table = await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())
    first = await table.add("/x", "fake://x", {"region": "a"})
    file = tmp_path / "mounts.json"
    data = json.loads(file.read_text())
    data["mounts"][0]["options"] = {"region": "b"}
    file.write_text(json.dumps(data))
    assert await table.reload_if_changed() is True
    second = table.get("/x")
    assert second is not None and second is not first and second.options == {"region": "b"}


async def test_corrupt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())
    await table.add("/x", "fake://x", {})
    (tmp_path / "mounts.json").write_text("{not json")
    assert await table.reload_if_changed() is False
    assert table.get("/x") is not None  # the current table stays
    assert "keeping the current mounts" in caplog.text
    with pytest.raises(MountError, match="mounts.json"):
        await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())
    (tmp_path / "mounts.json").write_text(
        json.dumps({"version": 1, "mounts": [{"path": "/x/", "uri": "fake://x"}]})
    )
    with pytest.raises(MountError, match=r"mounts\[0\]\.path: '/x/' is not normalised"):
        await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())


async def test_a_runtime_mount_that_fails_to_open_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "mounts.json").write_text(
        json.dumps(
            {
                "version": 1,
                "mounts": [{"path": "/bad", "uri": "bad://x"}, {"path": "/ok", "uri": "fake://ok"}],
            }
        )
    )
    table = await MountTable.open(CONFIG[:1], tmp_path, opener=FakeOpener())
    assert [m.path for m in table.mounts()] == ["/", "/ok"]
    assert "skipping runtime mount: '/bad' (bad://x)" in caplog.text


async def test_a_config_mount_that_fails_to_open_is_fatal(tmp_path: Path) -> None:
    opener = FakeOpener()
    with pytest.raises(MountError, match=r"^'/s3' \(bad://x\): ValueError"):
        await MountTable.open(
            [MountConfig("/", "fake://root"), MountConfig("/s3", "bad://x")], tmp_path, opener=opener
        )
    assert opener.opened[0].closed


async def test_aclose_closes_everything(tmp_path: Path) -> None:
    opener = FakeOpener()
    table = await MountTable.open(CONFIG, tmp_path, opener=opener)
    await table.add("/new", "fake://new", {})
    await table.remove("/new")  # retired, within its grace period
    await table.aclose()
    assert all(a.closed for a in opener.opened)
    assert table.mounts() == []


# --- with the real registry and local directories ------------------------------------------------


async def test_local_directories(tmp_path: Path) -> None:
    root, nas = tmp_path / "root", tmp_path / "nas"
    root.mkdir()
    nas.mkdir()
    (nas / "f.txt").write_text("hello")
    meta = tmp_path / "meta"
    config = [MountConfig("/", file_uri(root))]
    table = await MountTable.open(config, meta)
    try:
        mount = await table.add("/nas", file_uri(nas), {})
        found, path = table.resolve("nas", "f.txt")
        assert found is mount and path == "f.txt"
        info = await found.adapter.stat(path)
        assert info.size == 5
        with pytest.raises(MountError, match="cannot use"):
            await table.add("/missing", file_uri(tmp_path / "missing"), {})
        (root / "taken").mkdir()
        with pytest.raises(MountError, match="already has a directory 'taken'"):
            await table.add("/taken", file_uri(nas), {})
    finally:
        await table.aclose()
    again = await MountTable.open(config, meta)
    try:
        restored = again.get("/nas")
        assert restored is not None and restored.uri == file_uri(nas)
        assert (await restored.adapter.stat("f.txt")).size == 5
    finally:
        await again.aclose()


async def test_unavailable_parent_does_not_block_a_mount(tmp_path: Path) -> None:
    class Flaky(FakeAdapter):
        async def is_dir(self, path: str) -> bool:
            raise Unavailable(path, "timeout")

    async def opener(uri: str, options: Mapping[str, str], *, state_dir: Path | None = None) -> UfsAdapter:
        return cast(UfsAdapter, (Flaky if uri == "fake://root" else FakeAdapter)(uri, options, set()))

    table = await MountTable.open(CONFIG[:1], tmp_path, opener=opener)
    assert (await table.add("/new", "fake://x", {})).path == "/new"
