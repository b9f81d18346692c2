"""End-to-end fixtures: the real gateway (`hoard serve` in a subprocess on a loopback port), a moto
server as S3 under-storage, and real clients (boto3, the aws CLI, httpx)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

from tests.servers import free_port, wait_http

ACCESS_KEY = "e2e-access"
SECRET_KEY = "e2e-secret-key"


@dataclass
class Gateway:
    endpoint: str
    data_dir: Path
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **config: Any) -> Any:
        return s3_client(self.endpoint, **config)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def s3_client(
    endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **config: Any
) -> Any:
    config.setdefault("signature_version", "s3v4")
    cfg = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=cfg,
    )


def hoard_command() -> list[str]:
    return [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]


def start_gateway(
    tmp: Path,
    *,
    mounts: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    root: bool = True,
) -> Gateway:
    """A gateway over `tmp`: its data directory mounted at `/` (unless `root` is false) and `mounts`."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "domain": "s3.hoard.test"},
        "auth": {"users": [{"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "admin": True}]},
        "cache": {"dir": str(tmp / "cache")},
        "metastore": {"dir": str(tmp / "meta")},
        "mounts": [*([{"path": "/", "uri": f"file://{data}"}] if root else []), *(mounts or [])],
    }
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    config_path = tmp / "hoard.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return launch(config_path, data, port)


def launch(config_path: Path, data: Path, port: int) -> Gateway:
    log_path = config_path.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOARD_")}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*hoard_command(), "serve", "--config", str(config_path)], stdout=log, stderr=log, env=env
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/_hoard/health", proc=proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(log_path.read_text()) from None
    return Gateway(endpoint, data, config_path, proc, log_path, env)


@pytest.fixture(scope="session")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("local-gw"))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def moto_bucket(moto_endpoint: str) -> str:
    client = s3_client(moto_endpoint, "testing", "testing")
    client.create_bucket(Bucket="under-store")
    return "under-store"


@pytest.fixture(scope="session")
def s3_gateway(
    tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str, moto_bucket: str
) -> Iterator[Gateway]:
    """A gateway whose bucket `s3` is a moto bucket (under a prefix, to exercise the mapping)."""
    mount = {
        "path": "/s3",
        "uri": f"s3://{moto_bucket}/datasets",
        "options": {
            "endpoint_url": moto_endpoint,
            "region": "us-east-1",
            "s3a.accessKeyId": "testing",
            "s3a.secretKey": "testing",
        },
    }
    gw = start_gateway(tmp_path_factory.mktemp("s3-gw"), mounts=[mount])
    yield gw
    gw.stop()


@dataclass(frozen=True)
class Target:
    """Where a backend-generic test writes: the gateway and a bucket served by that backend."""

    gateway: Gateway
    bucket: str
    kind: str

    def client(self, **config: Any) -> Any:
        return self.gateway.client(**config)


_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each backend-generic test runs against a local root bucket and against the moto mount."""
    if request.param == "local":
        gw: Gateway = request.getfixturevalue("local_gateway")
        bucket = f"e2e-{next(_counter)}"
        gw.client().create_bucket(Bucket=bucket)
        return Target(gw, bucket, "local")
    gw = request.getfixturevalue("s3_gateway")
    return Target(gw, "s3", "s3")


def aws_cli() -> str:
    for candidate in (os.environ.get("HOARD_AWS_CLI"), str(Path(__file__).parents[2] / ".venv-aws/bin/aws")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("the aws CLI is not installed: run the test command from the README (it installs it)")


def run_aws(
    gw: Gateway, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    proc = subprocess.run(
        [aws_cli(), "--endpoint-url", gw.endpoint, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"aws {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@contextmanager
def small_file_system(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only: CI runs as root)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
