"""Real clients beyond boto3: the aws CLI (multipart 200 MiB up and down, sync, ls, rm) and s3fs."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import s3fs

from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, Target, run_aws

MiB = 1024 * 1024


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_aws_cli_cp_200mib_round_trip(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(MiB))
    url = f"s3://{target.bucket}/cli-{uuid.uuid4().hex[:8]}/big.bin"
    run_aws(target.gateway, "s3", "cp", str(src), url)
    dst = tmp_path / "back.bin"
    run_aws(target.gateway, "s3", "cp", url, str(dst))
    assert _sha(dst) == _sha(src)
    head = target.client().head_object(Bucket=target.bucket, Key=url.split("/", 3)[3])
    assert head["ContentLength"] == 200 * MiB and "-" in head["ETag"]  # the CLI used multipart


def test_aws_cli_sync_ls_rm(target: Target, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(10_000), "sub/deeper/c": b"", "é.txt": b"unicode"}
    for name, body in files.items():
        p = tree / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        # Files older than their upload, as in real use: S3's LastModified has second precision,
        # so a file written in the same second as its upload would look newer to `sync`.
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    prefix = f"sync-{uuid.uuid4().hex[:8]}"
    url = f"s3://{target.bucket}/{prefix}/"
    run_aws(target.gateway, "s3", "sync", str(tree), url)
    listing = run_aws(target.gateway, "s3", "ls", "--recursive", url).stdout
    for name in files:
        assert f"{prefix}/{name}" in listing
    top = run_aws(target.gateway, "s3", "ls", url).stdout
    assert "PRE sub/" in top and "a.txt" in top
    # A second sync uploads nothing (sizes and times match).
    again = run_aws(target.gateway, "s3", "sync", str(tree), url).stdout
    assert "upload:" not in again
    back = tmp_path / "back"
    run_aws(target.gateway, "s3", "sync", url, str(back))
    for name, body in files.items():
        assert (back / name).read_bytes() == body
    run_aws(target.gateway, "s3", "rm", "--recursive", url)
    assert run_aws(target.gateway, "s3", "ls", "--recursive", url, check=False).stdout.strip() == ""


def test_s3fs(target: Target) -> None:
    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        client_kwargs={"endpoint_url": target.gateway.endpoint, "region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}},
        use_listings_cache=False,
    )
    base = f"{target.bucket}/fs-{uuid.uuid4().hex[:8]}"
    body = os.urandom(3 * MiB + 17)
    with fs.open(f"{base}/data.bin", "wb") as f:
        f.write(body)
    fs.pipe(f"{base}/dir/small.txt", b"small")
    assert fs.cat(f"{base}/data.bin") == body
    with fs.open(f"{base}/data.bin", "rb") as f:
        f.seek(MiB)
        assert f.read(100) == body[MiB : MiB + 100]
    assert sorted(fs.ls(base)) == sorted([f"{base}/data.bin", f"{base}/dir"])
    assert fs.info(f"{base}/data.bin")["size"] == len(body)
    assert fs.find(base) == [f"{base}/data.bin", f"{base}/dir/small.txt"]
    fs.rm(base, recursive=True)
    assert not fs.exists(f"{base}/data.bin")


def _api(target: Target, *args: str) -> dict[str, object]:
    out = run_aws(target.gateway, "s3api", *args, "--output", "json").stdout
    return json.loads(out) if out.strip() else {}


def test_aws_cli_s3api_operations(target: Target, tmp_path: Path) -> None:
    """Each S3 operation through the aws CLI's own request path (s3api), on both backends."""
    b, base = target.bucket, f"api-{uuid.uuid4().hex[:8]}"
    _api(target, "head-bucket", "--bucket", b)
    assert "LocationConstraint" in _api(target, "get-bucket-location", "--bucket", b)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(6 * MiB))
    put = _api(
        target, "put-object", "--bucket", b, "--key", f"{base}/a", "--body", str(src), "--metadata", "k=v"
    )
    head = _api(target, "head-object", "--bucket", b, "--key", f"{base}/a")
    assert head["ETag"] == put["ETag"] and head["Metadata"] == {"k": "v"} and head["ContentLength"] == 6 * MiB
    _api(
        target,
        "get-object",
        "--bucket",
        b,
        "--key",
        f"{base}/a",
        "--range",
        "bytes=10-19",
        str(tmp_path / "r"),
    )
    assert (tmp_path / "r").read_bytes() == src.read_bytes()[10:20]
    _api(target, "copy-object", "--bucket", b, "--key", f"{base}/b", "--copy-source", f"{b}/{base}/a")
    v1 = _api(target, "list-objects", "--bucket", b, "--prefix", f"{base}/")
    v2 = _api(target, "list-objects-v2", "--bucket", b, "--prefix", f"{base}/", "--delimiter", "/")
    assert (
        [o["Key"] for o in v1["Contents"]] == [o["Key"] for o in v2["Contents"]] == [f"{base}/a", f"{base}/b"]
    )
    upload = str(_api(target, "create-multipart-upload", "--bucket", b, "--key", f"{base}/mp")["UploadId"])
    listed = _api(target, "list-multipart-uploads", "--bucket", b, "--prefix", f"{base}/")
    assert [u["UploadId"] for u in listed["Uploads"]] == [upload]
    p1 = _api(
        target,
        "upload-part",
        "--bucket",
        b,
        "--key",
        f"{base}/mp",
        "--upload-id",
        upload,
        "--part-number",
        "1",
        "--body",
        str(src),
    )
    p2 = _api(
        target,
        "upload-part-copy",
        "--bucket",
        b,
        "--key",
        f"{base}/mp",
        "--upload-id",
        upload,
        "--part-number",
        "2",
        "--copy-source",
        f"{b}/{base}/a",
        "--copy-source-range",
        "bytes=0-99",
    )
    parts = _api(target, "list-parts", "--bucket", b, "--key", f"{base}/mp", "--upload-id", upload)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2]
    layout = {
        "Parts": [
            {"PartNumber": 1, "ETag": p1["ETag"]},
            {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
        ]
    }
    done = _api(
        target,
        "complete-multipart-upload",
        "--bucket",
        b,
        "--key",
        f"{base}/mp",
        "--upload-id",
        upload,
        "--multipart-upload",
        json.dumps(layout),
    )
    assert str(done["ETag"]).endswith('-2"')
    _api(target, "get-object", "--bucket", b, "--key", f"{base}/mp", str(tmp_path / "mp"))
    assert (tmp_path / "mp").read_bytes() == src.read_bytes() + src.read_bytes()[:100]
    aborted = str(_api(target, "create-multipart-upload", "--bucket", b, "--key", f"{base}/x")["UploadId"])
    _api(target, "abort-multipart-upload", "--bucket", b, "--key", f"{base}/x", "--upload-id", aborted)
    keys = {"Objects": [{"Key": f"{base}/a"}, {"Key": f"{base}/b"}], "Quiet": False}
    gone = _api(target, "delete-objects", "--bucket", b, "--delete", json.dumps(keys))
    assert sorted(d["Key"] for d in gone["Deleted"]) == [f"{base}/a", f"{base}/b"]
    _api(target, "delete-object", "--bucket", b, "--key", f"{base}/mp")
    assert "Contents" not in _api(target, "list-objects-v2", "--bucket", b, "--prefix", f"{base}/")
    if target.kind == "local":
        name = f"cli-{uuid.uuid4().hex[:8]}"
        run_aws(target.gateway, "s3", "mb", f"s3://{name}")
        assert name in run_aws(target.gateway, "s3", "ls").stdout
        run_aws(target.gateway, "s3", "rb", f"s3://{name}")
        assert name not in run_aws(target.gateway, "s3", "ls").stdout
