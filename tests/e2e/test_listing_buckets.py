"""Listing (v1, v2) and bucket operations through the real gateway."""

from __future__ import annotations

import uuid

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import Gateway, Target

# Keys whose S3 order (UTF-8 binary) differs from a naive directory walk.
KEYS = ["a-b", "a.txt", "a/b", "a/c/d", "a0", "b", "é", "z/ü/1"]


def _fill(target: Target) -> str:
    base = f"l{uuid.uuid4().hex[:6]}/"
    s3 = target.client()
    for k in KEYS:
        s3.put_object(Bucket=target.bucket, Key=base + k, Body=k.encode())
    return base


def test_list_v2_order_and_delimiter(target: Target) -> None:
    s3 = target.client()
    base = _fill(target)
    out = s3.list_objects_v2(Bucket=target.bucket, Prefix=base)
    assert [o["Key"][len(base) :] for o in out["Contents"]] == sorted(KEYS, key=lambda k: k.encode())
    assert out["KeyCount"] == len(KEYS) and out["IsTruncated"] is False
    out = s3.list_objects_v2(Bucket=target.bucket, Prefix=base, Delimiter="/")
    assert [o["Key"][len(base) :] for o in out["Contents"]] == ["a-b", "a.txt", "a0", "b", "é"]
    assert [p["Prefix"][len(base) :] for p in out["CommonPrefixes"]] == ["a/", "z/"]
    out = s3.list_objects_v2(Bucket=target.bucket, Prefix=base + "a/", Delimiter="/")
    assert [o["Key"][len(base) :] for o in out["Contents"]] == ["a/b"]
    assert [p["Prefix"][len(base) :] for p in out["CommonPrefixes"]] == ["a/c/"]


def test_list_v2_pagination(target: Target) -> None:
    s3 = target.client()
    base = _fill(target)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs = {"Bucket": target.bucket, "Prefix": base, "MaxKeys": 3, "Delimiter": "/"}
        if token:
            kwargs["ContinuationToken"] = token
        out = s3.list_objects_v2(**kwargs)
        pages += 1
        seen += [o["Key"][len(base) :] for o in out.get("Contents", [])]
        seen += [p["Prefix"][len(base) :] for p in out.get("CommonPrefixes", [])]
        if not out["IsTruncated"]:
            break
        token = out["NextContinuationToken"]
    assert sorted(seen, key=lambda k: k.encode()) == ["a-b", "a.txt", "a/", "a0", "b", "z/", "é"]
    assert len(seen) == len(set(seen)) and pages == 3
    out = s3.list_objects_v2(Bucket=target.bucket, Prefix=base, StartAfter=base + "a0")
    assert [o["Key"][len(base) :] for o in out["Contents"]] == ["b", "z/ü/1", "é"]


def test_list_v1_markers_and_url_encoding(target: Target) -> None:
    s3 = target.client()
    base = _fill(target)
    out = s3.list_objects(Bucket=target.bucket, Prefix=base, MaxKeys=2)
    assert out["IsTruncated"] is True
    keys = [o["Key"] for o in out["Contents"]]
    marker = out.get("NextMarker", keys[-1])
    rest = s3.list_objects(Bucket=target.bucket, Prefix=base, Marker=marker)
    assert keys + [o["Key"] for o in rest["Contents"]] == sorted(
        (base + k for k in KEYS), key=lambda k: k.encode()
    )
    # Asked for explicitly, encoding-type=url comes back undecoded by boto3: the XML carries encoded keys.
    raw = s3.list_objects_v2(Bucket=target.bucket, Prefix=base + "é", EncodingType="url")
    assert [o["Key"] for o in raw["Contents"]] == [base + "%C3%A9"]


def test_max_keys_zero_and_bad_arguments(target: Target) -> None:
    s3 = target.client()
    out = s3.list_objects_v2(Bucket=target.bucket, MaxKeys=0)
    assert out["KeyCount"] == 0 and out["IsTruncated"] is False
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=target.bucket, ContinuationToken="!!!not-base64")
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"


def test_bucket_lifecycle(local_gateway: Gateway) -> None:
    s3 = local_gateway.client()
    name = f"life-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] in (None, "us-east-1")
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name)
    assert exc.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"1")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert exc.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert exc.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="Bad_Name")
    assert exc.value.response["Error"]["Code"] == "InvalidBucketName"


def test_mount_appears_as_bucket(s3_gateway: Gateway) -> None:
    names = [b["Name"] for b in s3_gateway.client().list_buckets()["Buckets"]]
    assert "s3" in names


def test_virtual_host_style(local_gateway: Gateway) -> None:
    s3 = local_gateway.client()
    s3.create_bucket(Bucket="vhost")
    s3.put_object(Bucket="vhost", Key="dir/k", Body=b"virtual")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "vhost", "Key": "dir/k"})
    assert httpx.get(url).content == b"virtual"
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY

    port = local_gateway.endpoint.rsplit(":", 1)[1]
    req = AWSRequest(
        "GET",
        f"http://vhost.s3.hoard.test:{port}/dir/k",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    headers = {**dict(req.headers.items()), "host": f"vhost.s3.hoard.test:{port}"}
    r = httpx.get(f"{local_gateway.endpoint}/dir/k", headers=headers)
    assert r.status_code == 200 and r.content == b"virtual"


def test_unknown_operation_is_501_and_errors_are_xml(local_gateway: Gateway) -> None:
    s3 = local_gateway.client()
    s3.create_bucket(Bucket="subres")
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_policy(Bucket="subres")
    assert exc.value.response["Error"]["Code"] == "NotImplemented"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
