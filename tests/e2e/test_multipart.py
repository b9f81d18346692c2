"""Multipart uploads through the real gateway with boto3."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import Target

MiB = 1024 * 1024


def _aws_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def test_multipart_full_cycle(target: Target) -> None:
    s3 = target.client()
    key = f"mp-{uuid.uuid4().hex[:8]}/big.bin"
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(123)]
    upload = s3.create_multipart_upload(
        Bucket=target.bucket, Key=key, ContentType="application/x-test", Metadata={"m": "1"}
    )
    uid = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=target.bucket, Prefix=key)
    assert [u["UploadId"] for u in listed.get("Uploads", [])] == [uid]
    etags = []
    for i, body in enumerate(parts, 1):
        etags.append(
            s3.upload_part(Bucket=target.bucket, Key=key, UploadId=uid, PartNumber=i, Body=body)["ETag"]
        )
    # A retried part replaces the first attempt.
    etags[1] = s3.upload_part(Bucket=target.bucket, Key=key, UploadId=uid, PartNumber=2, Body=parts[1])[
        "ETag"
    ]
    got_parts = s3.list_parts(Bucket=target.bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in got_parts] == [
        (i, e, len(b)) for i, (e, b) in enumerate(zip(etags, parts, strict=True), 1)
    ]
    out = s3.complete_multipart_upload(
        Bucket=target.bucket,
        Key=key,
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]},
    )
    assert out["ETag"] == _aws_etag(parts)
    got = s3.get_object(Bucket=target.bucket, Key=key)
    assert got["Body"].read() == b"".join(parts)
    assert (
        got["ETag"] == out["ETag"]
        and got["ContentType"] == "application/x-test"
        and got["Metadata"] == {"m": "1"}
    )
    head = s3.head_object(Bucket=target.bucket, Key=key)
    assert head["ETag"] == out["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=target.bucket, Key=key, UploadId=uid)
    assert exc.value.response["Error"]["Code"] == "NoSuchUpload"


def _complete(s3: object, bucket: str, key: str, parts: list[bytes]) -> str:
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]  # type: ignore[attr-defined]
    etags = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=b)["ETag"]  # type: ignore[attr-defined]
        for i, b in enumerate(parts, 1)
    ]
    multipart = {"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]}
    out = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload=multipart)  # type: ignore[attr-defined]
    return str(out["ETag"])


def test_get_and_head_by_part_number(target: Target) -> None:
    """GetObject/HeadObject ?partNumber=N of a multipart object: that part's bytes, 206 with its
    Content-Range, the parts count; twice (the second from the cache), on both backends (moto
    gives no Content-Range: Hoard adds up the parts' sizes), also for a local copy of the object;
    bad numbers and Range with partNumber are S3's errors."""
    s3 = target.client()
    key = f"pn-{uuid.uuid4().hex[:8]}/big.bin"
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(5 * MiB + 7), os.urandom(123)]
    etag = _complete(s3, target.bucket, key, parts)
    whole = b"".join(parts)
    s3.copy_object(Bucket=target.bucket, Key=key + ".copy", CopySource={"Bucket": target.bucket, "Key": key})
    offsets = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    # A copy keeps the parts where the backend keeps the multipart ETag (local); S3's CopyObject
    # makes a one-part object, which is part 1 of 1.
    copied = s3.head_object(Bucket=target.bucket, Key=key + ".copy")["ETag"]
    assert copied == etag if target.kind == "local" else "-" not in copied
    if target.kind != "local":
        got = s3.get_object(Bucket=target.bucket, Key=key + ".copy", PartNumber=1)
        assert got["Body"].read() == whole and got["PartsCount"] == 1
    for name in (key, key + ".copy") if target.kind == "local" else (key,):
        for _ in range(2):
            for n in (3, 1, 4, 2):
                got = s3.get_object(Bucket=target.bucket, Key=name, PartNumber=n)
                start, end = offsets[n - 1], offsets[n - 1] + len(parts[n - 1])
                assert got["Body"].read() == whole[start:end]
                assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
                assert got["ContentRange"] == f"bytes {start}-{end - 1}/{len(whole)}"
                assert (got["PartsCount"], got["ETag"], got["ContentLength"]) == (4, etag, end - start)
        head = s3.head_object(Bucket=target.bucket, Key=name, PartNumber=2)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert (head["ContentLength"], head["PartsCount"]) == (5 * MiB, 4)
        assert head["ContentRange"] == f"bytes {5 * MiB}-{10 * MiB - 1}/{len(whole)}"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, PartNumber=5)
    assert exc.value.response["Error"]["Code"] == "InvalidPartNumber"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, PartNumber=1, Range="bytes=0-9")
    assert exc.value.response["Error"]["Code"] == "InvalidRequest"
    # An object uploaded in one piece is part 1 of 1.
    s3.put_object(Bucket=target.bucket, Key=key + ".one", Body=b"single")
    got = s3.get_object(Bucket=target.bucket, Key=key + ".one", PartNumber=1)
    assert got["Body"].read() == b"single" and got["PartsCount"] == 1


def test_multipart_errors(target: Target) -> None:
    s3 = target.client()
    key = f"mp-{uuid.uuid4().hex[:8]}/bad.bin"
    uid = s3.create_multipart_upload(Bucket=target.bucket, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=target.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=target.bucket, Key=key, UploadId=uid, PartNumber=2, Body=b"tail")["ETag"]

    def complete(parts: list[dict[str, object]]) -> str:
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(
                Bucket=target.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
            )
        return str(exc.value.response["Error"]["Code"])

    assert complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]) == "InvalidPartOrder"
    assert complete([{"PartNumber": 1, "ETag": '"0000"'}]) == "InvalidPart"
    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}]) == "InvalidPart"
    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=uid)
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=target.bucket, Key=key, UploadId=uid)
    assert exc.value.response["Error"]["Code"] == "NoSuchUpload"
    if target.kind == "local":  # moto answers an UploadPart to an aborted upload with a 500
        with pytest.raises(ClientError) as exc:
            s3.upload_part(Bucket=target.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"x")
        assert exc.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=target.bucket, Key=key)


def test_upload_file_uses_multipart(target: Target, tmp_path: object) -> None:
    from pathlib import Path

    from boto3.s3.transfer import TransferConfig

    s3 = target.client()
    src = Path(str(tmp_path)) / "src.bin"
    src.write_bytes(os.urandom(18 * MiB))
    key = f"mp-{uuid.uuid4().hex[:8]}/file.bin"
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_file(str(src), target.bucket, key, Config=cfg)
    dst = Path(str(tmp_path)) / "dst.bin"
    s3.download_file(target.bucket, key, str(dst), Config=cfg)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert s3.head_object(Bucket=target.bucket, Key=key)["ETag"].endswith('-3"')
