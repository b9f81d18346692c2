"""Objects through the real gateway with boto3, against a local root bucket and a moto-backed mount."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import Gateway, Target


def _key(name: str) -> str:
    return f"{uuid.uuid4().hex[:8]}/{name}"


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_put_get_head_round_trip(target: Target) -> None:
    s3 = target.client()
    key = _key("hello €.txt")
    body = os.urandom(300_000)
    put = s3.put_object(
        Bucket=target.bucket,
        Key=key,
        Body=body,
        ContentType="text/x-test",
        Metadata={"team": "vision", "n": "1"},
    )
    got = s3.get_object(Bucket=target.bucket, Key=key)
    data = got["Body"].read()
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()
    assert got["ETag"] == put["ETag"]
    assert got["ContentType"] == "text/x-test"
    assert got["Metadata"] == {"team": "vision", "n": "1"}
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=target.bucket, Key=key)
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == len(body)
    listed = s3.list_objects_v2(Bucket=target.bucket, Prefix=key)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed] == [(key, put["ETag"], len(body))]
    if target.kind == "local":
        assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'


def test_zero_byte_object(target: Target) -> None:
    s3 = target.client()
    key = _key("empty")
    s3.put_object(Bucket=target.bucket, Key=key, Body=b"")
    assert s3.get_object(Bucket=target.bucket, Key=key)["Body"].read() == b""
    # The last bytes of nothing: the whole (empty) object, as moto answers; a first byte: none.
    tail = s3.get_object(Bucket=target.bucket, Key=key, Range="bytes=-5")
    assert tail["ResponseMetadata"]["HTTPStatusCode"] == 200 and "ContentRange" not in tail
    assert tail["Body"].read() == b""
    for rng in ("bytes=0-0", "bytes=0-"):
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=target.bucket, Key=key, Range=rng)
        assert _code(exc) == ("InvalidRange", 416)


@pytest.mark.parametrize(
    ("rng", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, 5000),
        ("bytes=-10", 4990, 5000),
        ("bytes=4000-9999", 4000, 5000),
    ],
)
def test_ranges(target: Target, rng: str, start: int, end: int) -> None:
    s3 = target.client()
    key = _key("ranged")
    body = os.urandom(5000)
    s3.put_object(Bucket=target.bucket, Key=key, Body=body)
    got = s3.get_object(Bucket=target.bucket, Key=key, Range=rng)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {start}-{end - 1}/5000"
    assert got["Body"].read() == body[start:end]


def test_unsatisfiable_range_is_416(target: Target) -> None:
    s3 = target.client()
    key = _key("small")
    s3.put_object(Bucket=target.bucket, Key=key, Body=b"abc")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, Range="bytes=10-20")
    assert _code(exc) == ("InvalidRange", 416)


def test_conditional_get(target: Target) -> None:
    s3 = target.client()
    key = _key("cond")
    etag = s3.put_object(Bucket=target.bucket, Key=key, Body=b"x" * 10)["ETag"]
    assert s3.get_object(Bucket=target.bucket, Key=key, IfMatch=etag)["Body"].read() == b"x" * 10
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, IfMatch='"nope"')
    assert _code(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, IfNoneMatch=etag)
    assert _code(exc)[1] == 304
    later = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, IfModifiedSince=later)
    assert _code(exc)[1] == 304
    earlier = datetime.now(UTC) - timedelta(days=1)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=key, IfUnmodifiedSince=earlier)
    assert _code(exc) == ("PreconditionFailed", 412)


def test_conditional_writes(target: Target) -> None:
    """If-None-Match: * writes only a new key; If-Match only over that version. If-Match was
    ignored: a writer holding an old ETag overwrote the newer object."""
    s3 = target.client()
    key = _key("cond-put")
    first = s3.put_object(Bucket=target.bucket, Key=key, Body=b"first", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=target.bucket, Key=key, Body=b"other", IfNoneMatch="*")
    assert _code(exc) == ("PreconditionFailed", 412)
    second = s3.put_object(Bucket=target.bucket, Key=key, Body=b"second", IfMatch=first)["ETag"]
    with pytest.raises(ClientError) as exc:  # the writer that still holds the first ETag
        s3.put_object(Bucket=target.bucket, Key=key, Body=b"lost update", IfMatch=first)
    assert _code(exc) == ("PreconditionFailed", 412)
    got = s3.get_object(Bucket=target.bucket, Key=key)
    assert (got["Body"].read(), got["ETag"]) == (b"second", second)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=target.bucket, Key=_key("none"), Body=b"x", IfMatch=second)
    assert _code(exc) == ("NoSuchKey", 404)
    upload = s3.create_multipart_upload(Bucket=target.bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=target.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"mp")
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=target.bucket, Key=key, UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert _code(exc) == ("PreconditionFailed", 412)
    s3.complete_multipart_upload(
        Bucket=target.bucket, Key=key, UploadId=upload, MultipartUpload=parts, IfMatch=second
    )
    assert s3.get_object(Bucket=target.bucket, Key=key)["Body"].read() == b"mp"


def test_response_overrides_and_presigned_url(target: Target) -> None:
    s3 = target.client()
    key = _key("presigned.bin")
    body = os.urandom(1000)
    s3.put_object(Bucket=target.bucket, Key=key, Body=body)
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": target.bucket,
            "Key": key,
            "ResponseContentType": "image/png",
            "ResponseCacheControl": "no-cache",
        },
        ExpiresIn=60,
    )
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == body
    assert r.headers["content-type"] == "image/png" and r.headers["cache-control"] == "no-cache"
    bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    r = httpx.get(bad)
    assert r.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in r.content


def test_expired_presigned_url_is_denied(local_gateway: Gateway) -> None:
    s3 = local_gateway.client()
    s3.create_bucket(Bucket="expiry")
    s3.put_object(Bucket="expiry", Key="k", Body=b"1")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "expiry", "Key": "k"}, ExpiresIn=1)
    import time

    time.sleep(2.1)  # X-Amz-Expires=1 must have passed
    r = httpx.get(url)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content and b"expired" in r.content


def test_missing_key_and_bucket(target: Target) -> None:
    s3 = target.client()
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=target.bucket, Key=_key("absent"))
    assert _code(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="no-such-bucket-here", Key="k")
    assert _code(exc) == ("NoSuchBucket", 404)


def test_delete_and_delete_objects(target: Target) -> None:
    s3 = target.client()
    base = _key("")
    keys = [f"{base}d{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket=target.bucket, Key=k, Body=b"1")
    s3.delete_object(Bucket=target.bucket, Key=keys[0])
    s3.delete_object(Bucket=target.bucket, Key=keys[0])  # idempotent
    out = s3.delete_objects(Bucket=target.bucket, Delete={"Objects": [{"Key": k} for k in keys[1:]]})
    assert sorted(d["Key"] for d in out["Deleted"]) == keys[1:]
    quiet = s3.delete_objects(Bucket=target.bucket, Delete={"Objects": [{"Key": keys[1]}], "Quiet": True})
    assert "Deleted" not in quiet
    assert s3.list_objects_v2(Bucket=target.bucket, Prefix=base)["KeyCount"] == 0


def test_copy_object(target: Target) -> None:
    s3 = target.client()
    src = _key("src name+€")
    dst = _key("dst")
    etag = s3.put_object(
        Bucket=target.bucket, Key=src, Body=b"payload", Metadata={"a": "1"}, ContentType="text/plain"
    )["ETag"]
    out = s3.copy_object(Bucket=target.bucket, Key=dst, CopySource={"Bucket": target.bucket, "Key": src})
    assert out["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=target.bucket, Key=dst)
    assert (
        got["Body"].read() == b"payload"
        and got["Metadata"] == {"a": "1"}
        and got["ContentType"] == "text/plain"
    )
    s3.copy_object(
        Bucket=target.bucket,
        Key=dst,
        CopySource={"Bucket": target.bucket, "Key": src},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="application/json",
    )
    head = s3.head_object(Bucket=target.bucket, Key=dst)
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "application/json"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=target.bucket,
            Key=dst,
            CopySource={"Bucket": target.bucket, "Key": src},
            CopySourceIfMatch='"nope"',
        )
    assert _code(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=target.bucket, Key=src, CopySource={"Bucket": target.bucket, "Key": src})
    assert _code(exc) == ("InvalidRequest", 400)


def test_copy_and_upload_part_copy_between_backends(s3_gateway: Gateway) -> None:
    """A copy from a local root bucket into the moto mount streams through the gateway."""
    s3 = s3_gateway.client()
    s3.create_bucket(Bucket="cross")
    body = os.urandom(6 * 1024 * 1024)
    s3.put_object(Bucket="cross", Key="src", Body=body, Metadata={"k": "v"})
    key = _key("copied")
    s3.copy_object(Bucket="s3", Key=key, CopySource={"Bucket": "cross", "Key": "src"})
    got = s3.get_object(Bucket="s3", Key=key)
    assert got["Body"].read() == body and got["Metadata"] == {"k": "v"}
    upload = s3.create_multipart_upload(Bucket="s3", Key=key + ".mp")["UploadId"]
    p1 = s3.upload_part_copy(
        Bucket="s3",
        Key=key + ".mp",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": "cross", "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * 1024 * 1024 - 1}",
    )
    p2 = s3.upload_part_copy(
        Bucket="s3",
        Key=key + ".mp",
        UploadId=upload,
        PartNumber=2,
        CopySource={"Bucket": "cross", "Key": "src"},
        CopySourceRange=f"bytes={5 * 1024 * 1024}-{len(body) - 1}",
    )
    parts = [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
    ]
    s3.complete_multipart_upload(
        Bucket="s3", Key=key + ".mp", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket="s3", Key=key + ".mp")["Body"].read() == body


def test_content_md5_is_checked(target: Target) -> None:
    s3 = target.client()
    key = _key("md5")
    import base64

    good = base64.b64encode(hashlib.md5(b"data").digest()).decode()
    s3.put_object(Bucket=target.bucket, Key=key, Body=b"data", ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=target.bucket, Key=key + "2", Body=b"data", ContentMD5=bad)
    assert _code(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=target.bucket, Key=key + "2")


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_checksums(target: Target, algorithm: str) -> None:
    s3 = target.client()
    key = _key(f"sum-{algorithm}")
    body = os.urandom(70_000)
    s3.put_object(Bucket=target.bucket, Key=key, Body=body, ChecksumAlgorithm=algorithm)
    assert s3.get_object(Bucket=target.bucket, Key=key)["Body"].read() == body


def test_wrong_credentials(target: Target) -> None:
    from tests.e2e.conftest import SECRET_KEY, s3_client

    bad_secret = s3_client(target.gateway.endpoint, secret_key=SECRET_KEY + "x")
    with pytest.raises(ClientError) as exc:
        bad_secret.list_objects_v2(Bucket=target.bucket)
    assert _code(exc) == ("SignatureDoesNotMatch", 403)
    unknown = s3_client(target.gateway.endpoint, access_key="nobody")
    with pytest.raises(ClientError) as exc:
        unknown.list_objects_v2(Bucket=target.bucket)
    assert _code(exc) == ("InvalidAccessKeyId", 403)
    r = httpx.get(f"{target.gateway.endpoint}/{target.bucket}")
    assert (
        r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content and "x-amz-request-id" in r.headers
    )
