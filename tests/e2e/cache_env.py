"""The harness of the end-to-end cache tests: moto in server mode with its request recorder
(what the under-storage saw, counted at moto itself), a Hoard gateway subprocess over it, and
helpers to put, get and compare objects."""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import AdminClient
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, Gateway, hoard_command, s3_client, start_gateway

KiB = 1024
MiB = 1024 * KiB
UFS_PREFIX = "datasets"  # every mount here maps bucket `s3` to s3://<bucket>/datasets


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(size: int, seed: int | str) -> bytes:
    return random.Random(seed).randbytes(size)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --- moto, with its request recorder -----------------------------------------------------------


@dataclass(frozen=True)
class UfsCall:
    """One request moto received, as its recorder logged it."""

    method: str
    bucket: str
    key: str  # '' for bucket-level requests (listings)
    query: str
    headers: Mapping[str, str]


class Moto:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self) -> Any:
        return s3_client(self.endpoint, "testing", "testing")

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def _recorder(self, action: str) -> httpx.Response:
        method = "GET" if action == "download-recording" else "POST"
        response = httpx.request(method, f"{self.endpoint}/moto-api/recorder/{action}", timeout=30)
        response.raise_for_status()
        return response

    @contextmanager
    def recording(self) -> Iterator[list[UfsCall]]:
        """Every request moto receives inside the block; the list is filled when the block ends."""
        calls: list[UfsCall] = []
        self._recorder("reset-recording")
        self._recorder("start-recording")
        try:
            yield calls
        finally:
            self._recorder("stop-recording")
            for line in self._recorder("download-recording").text.splitlines():
                if line.strip():
                    entry = json.loads(line)
                    url = urlsplit(entry["url"])
                    bucket, _, key = unquote(url.path).lstrip("/").partition("/")
                    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
                    calls.append(UfsCall(entry["method"], bucket, key, url.query, headers))


def object_reads(calls: list[UfsCall], bucket: str, prefix: str) -> list[UfsCall]:
    """GET/HEAD requests for object keys (not listings) under `prefix` of the mount."""
    full = f"{UFS_PREFIX}/{prefix}"
    return [c for c in calls if c.method in ("GET", "HEAD") and c.bucket == bucket and c.key.startswith(full)]


def put_many(ufs: Any, bucket: str, objects: Mapping[str, bytes]) -> None:
    """Put objects straight into moto, behind the gateway, under the mounted prefix."""

    def put(item: tuple[str, bytes]) -> None:
        ufs.put_object(Bucket=bucket, Key=f"{UFS_PREFIX}/{item[0]}", Body=item[1])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, objects.items()))


# --- the gateway --------------------------------------------------------------------------------


@dataclass
class Hoard:
    gw: Gateway
    bucket: str  # the moto bucket behind the mount /s3
    tmp: Path

    @property
    def cache_dir(self) -> Path:
        return self.tmp / "cache"

    def s3(self) -> Any:
        return self.gw.client()

    def admin(self) -> AdminClient:
        return AdminClient(self.gw.endpoint, ACCESS_KEY, SECRET_KEY)

    def explain(self, key: str) -> dict[str, Any]:
        with self.admin() as admin:
            result: dict[str, Any] = admin.cache_explain(f"/s3/{key}")
        return result

    def pages(self, key: str) -> int:
        return int(self.explain(key)["pages_cached"])

    def stats(self) -> dict[str, Any]:
        with self.admin() as admin:
            result: dict[str, Any] = admin.cache_stats()
        return result

    def wait_pages(self, key: str, expected: int) -> None:
        wait_until(lambda: self.pages(key) == expected, f"{expected} cached pages of {key}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.gw.endpoint}/_hoard/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def hoard(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The `hoard` CLI, as a user runs it against this gateway."""
        env = {
            **self.gw.env,
            "HOARD_ENDPOINT": self.gw.endpoint,
            "HOARD_ACCESS_KEY": ACCESS_KEY,
            "HOARD_SECRET_KEY": SECRET_KEY,
        }
        return subprocess.run(
            [*hoard_command(), *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def hoard_json(self, *args: str) -> Any:
        out = self.hoard(*args)
        assert out.returncode == 0, f"hoard {' '.join(args)} failed: {out.stderr}"
        return json.loads(out.stdout)


def s3_mount(endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "path": "/s3",
        "uri": f"s3://{bucket}/{UFS_PREFIX}",
        "options": {
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
    }


def start_hoard(tmp: Path, moto: Moto, bucket: str, *, cache: Mapping[str, Any] | None = None) -> Hoard:
    moto.new_bucket(bucket)
    # reserved 0: the tests control the cache size; free disk space of the test machine must not.
    settings = {"reserved": 0, **(cache or {})}
    gw = start_gateway(tmp, mounts=[s3_mount(moto.endpoint, bucket)], extra={"cache": settings})
    return Hoard(gw, bucket, tmp)


@contextmanager
def running_hoard(
    tmp: Path, moto: Moto, bucket: str, *, cache: Mapping[str, Any] | None = None
) -> Iterator[Hoard]:
    hoard = start_hoard(tmp, moto, bucket, cache=cache)
    try:
        yield hoard
    finally:
        hoard.gw.stop()


def get(s3: Any, key: str, **kwargs: Any) -> tuple[bytes, str]:
    """(body, X-Cache) of a GetObject through the gateway."""
    response = s3.get_object(Bucket="s3", Key=key, **kwargs)
    return response["Body"].read(), response["ResponseMetadata"]["HTTPHeaders"].get("x-cache", "")


def read_all(s3: Any, keys: list[str], threads: int = 8) -> dict[str, tuple[str, str]]:
    """key -> (sha256 of the body, X-Cache), read concurrently."""

    def one(key: str) -> tuple[str, tuple[str, str]]:
        body, xcache = get(s3, key)
        return key, (sha(body), xcache)

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, keys))


def page_count(size: int, page: int = MiB) -> int:
    return math.ceil(size / page)


def page_files(cache_dir: Path) -> list[Path]:
    """The page files of a cache directory (cache/store.py: pages/ab/<name>)."""
    return sorted(p for p in (cache_dir / "pages").rglob("*") if p.is_file())
