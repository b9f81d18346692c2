"""Run-time mounts through the CLI and admin API: readable at once, persisted across a restart."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from gateway.cli import AdminClient, AdminError
from tests.e2e.conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    Gateway,
    hoard_command,
    launch,
    s3_client,
    start_gateway,
)


def hoard(gw: Gateway, *args: str, secret: str = SECRET_KEY) -> subprocess.CompletedProcess[str]:
    env = {
        **gw.env,
        "HOARD_ENDPOINT": gw.endpoint,
        "HOARD_ACCESS_KEY": ACCESS_KEY,
        "HOARD_SECRET_KEY": secret,
    }
    return subprocess.run([*hoard_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def test_mount_add_is_live_and_survives_restart(tmp_path: Path, moto_endpoint: str) -> None:
    ufs = s3_client(moto_endpoint, "testing", "testing")
    ufs.create_bucket(Bucket="runtime-mount")
    ufs.put_object(Bucket="runtime-mount", Key="train/shard-0", Body=b"shard zero")
    gw = start_gateway(tmp_path)
    try:
        out = hoard(
            gw,
            "mount",
            "add",
            "/ext",
            "s3://runtime-mount/train",
            "--option",
            f"endpoint_url={moto_endpoint}",
            "--option",
            "s3a.accessKeyId=testing",
            "--option",
            "s3a.secretKey=testing",
            "--option",
            "alluxio.underfs.s3.region=us-east-1",
        )
        assert out.returncode == 0, out.stderr
        assert gw.client().get_object(Bucket="ext", Key="shard-0")["Body"].read() == b"shard zero"
        listed = hoard(gw, "mount", "list")
        assert (
            listed.returncode == 0 and "/ext" in listed.stdout and "s3://runtime-mount/train" in listed.stdout
        )
        assert "testing" not in listed.stdout.replace("s3a", "")  # secrets are redacted
        gw.stop()
        gw = launch(gw.config_path, gw.data_dir, int(gw.endpoint.rsplit(":", 1)[1]))
        assert gw.client().get_object(Bucket="ext", Key="shard-0")["Body"].read() == b"shard zero"
        assert hoard(gw, "mount", "remove", "/ext").returncode == 0
        with pytest.raises(ClientError) as exc:
            gw.client().get_object(Bucket="ext", Key="shard-0")
        assert exc.value.response["Error"]["Code"] == "NoSuchBucket"
    finally:
        gw.stop()


def test_mount_add_checks_the_ufs(tmp_path: Path, moto_endpoint: str) -> None:
    gw = start_gateway(tmp_path)
    try:
        out = hoard(
            gw,
            "mount",
            "add",
            "/bad",
            "s3://no-such-bucket-anywhere",
            "--option",
            f"endpoint_url={moto_endpoint}",
            "--option",
            "access_key_id=testing",
            "--option",
            "secret_access_key=testing",
        )
        assert out.returncode != 0 and out.stderr.strip()
        out = hoard(gw, "mount", "add", "/local", f"file://{tmp_path}/does-not-exist")
        assert out.returncode != 0 and out.stderr.strip()
        denied = hoard(gw, "mount", "list", secret="wrong")
        assert denied.returncode != 0
        assert "/bad" not in hoard(gw, "mount", "list").stdout
    finally:
        gw.stop()


def test_mount_add_without_credentials_says_so(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 mount with no credentials in its options and none where the SDK looks for them: a
    clear refusal (it was a 500 and a traceback in the log)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata (not loopback)
    gw = start_gateway(tmp_path)
    try:
        out = hoard(gw, "mount", "add", "/anon", "s3://bucket/x", "--option", f"endpoint_url={moto_endpoint}")
        assert out.returncode != 0 and "Unable to locate credentials" in out.stderr, out.stderr
        assert "/anon" not in hoard(gw, "mount", "list").stdout
        assert "Traceback" not in gw.log_path.read_text()
    finally:
        gw.stop()


def test_health_ready_metrics(local_gateway: Gateway) -> None:
    assert httpx.get(local_gateway.endpoint + "/_hoard/health").json()["status"] == "ok"
    assert httpx.get(local_gateway.endpoint + "/_hoard/ready").status_code == 200
    local_gateway.client().list_buckets()
    text = httpx.get(local_gateway.endpoint + "/_hoard/metrics").text
    assert 'hoard_s3_requests_total{operation="ListBuckets",status="200"}' in text
    assert "hoard_s3_request_duration_seconds_bucket" in text


def test_serve_with_bad_config_prints_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cache:\n  size: 10XB\n")
    out = subprocess.run(
        [*hoard_command(), "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("HOARD_")},
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cache.size" in lines[0]


def test_ufs_metrics_count_calls_per_mount(s3_gateway: Gateway) -> None:
    s3 = s3_gateway.client()
    s3.put_object(Bucket="s3", Key="metrics/probe", Body=b"probe")
    s3.get_object(Bucket="s3", Key="metrics/probe", Range="bytes=0-0")
    text = httpx.get(s3_gateway.endpoint + "/_hoard/metrics").text
    assert 'hoard_ufs_requests_total{mount="/s3",operation="write",outcome="ok"}' in text
    assert 'hoard_ufs_bytes_read_total{mount="/s3"}' in text
    assert "hoard_cache_capacity_bytes" in text and 'hoard_cache_bytes_read_total{source="ufs"}' in text


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status"),
    [
        ("DELETE", "mounts", {"path": "/never-mounted"}, None, 404),
        ("DELETE", "mounts", {"path": "/"}, None, 400),
        ("POST", "free", None, {"path": "/victim/../etc"}, 400),
        ("POST", "load", None, {"path": "/../etc"}, 400),
        ("GET", "cache/explain", {"path": "/victim/./a"}, None, 400),
    ],
)
def test_admin_paths_that_name_nothing(
    local_gateway: Gateway,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, str] | None,
    status: int,
) -> None:
    """Unmounting a path that is not mounted is a 404, the root mount a 400; a path with `.` or
    `..` segments, which a shell user may expect resolved and S3 would take literally, is refused
    (400)."""
    with AdminClient(local_gateway.endpoint, ACCESS_KEY, SECRET_KEY) as admin:
        with pytest.raises(AdminError) as exc:
            admin.call(method, path, params=params, body=body)
    assert exc.value.status == status, str(exc.value)
    assert str(exc.value)


def test_admin_paths_outside_every_mount_are_404_without_a_root_mount(tmp_path: Path) -> None:
    """Without a root mount a bucket exists only as a mount: free, load and explain of any other
    bucket name no mount (404), as S3 requests to it answer NoSuchBucket."""
    nas = tmp_path / "nas"
    nas.mkdir()
    gw = start_gateway(tmp_path, mounts=[{"path": "/nas", "uri": f"file://{nas}"}], root=False)
    try:
        with AdminClient(gw.endpoint, ACCESS_KEY, SECRET_KEY) as admin:
            for method, path, params, body in [
                ("POST", "free", None, {"path": "/elsewhere/x"}),
                ("POST", "load", None, {"path": "/elsewhere"}),
                ("GET", "cache/explain", {"path": "/elsewhere/x"}, None),
            ]:
                with pytest.raises(AdminError) as exc:
                    admin.call(method, path, params=params, body=body)
                assert exc.value.status == 404, (path, str(exc.value))
                assert "elsewhere" in str(exc.value)
            assert admin.call("POST", "free", body={"path": "/nas/x"})["pages_freed"] == 0
        with pytest.raises(ClientError) as missing:
            gw.client().get_object(Bucket="elsewhere", Key="x")
        assert missing.value.response["Error"]["Code"] == "NoSuchBucket"
    finally:
        gw.stop()
