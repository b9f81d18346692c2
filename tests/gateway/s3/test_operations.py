from __future__ import annotations

import pytest

from gateway.s3.errors import S3Error
from gateway.s3.operations import Op, resolve

# (method, bucket, key, query, headers) -> operation, after the AWS API reference's request syntax.
CASES = [
    ("GET", "", "", {}, {}, Op.LIST_BUCKETS),
    ("PUT", "b", "", {}, {}, Op.CREATE_BUCKET),
    ("DELETE", "b", "", {}, {}, Op.DELETE_BUCKET),
    ("HEAD", "b", "", {}, {}, Op.HEAD_BUCKET),
    ("GET", "b", "", {"location": ""}, {}, Op.GET_BUCKET_LOCATION),
    ("GET", "b", "", {"list-type": "2", "prefix": "a"}, {}, Op.LIST_OBJECTS_V2),
    ("GET", "b", "", {"prefix": "a", "marker": "x"}, {}, Op.LIST_OBJECTS),
    ("GET", "b", "", {"uploads": ""}, {}, Op.LIST_MULTIPART_UPLOADS),
    ("POST", "b", "", {"delete": ""}, {}, Op.DELETE_OBJECTS),
    ("GET", "b", "k", {}, {}, Op.GET_OBJECT),
    ("GET", "b", "k", {"partNumber": "1"}, {}, Op.GET_OBJECT),
    ("GET", "b", "k", {"response-content-type": "x"}, {}, Op.GET_OBJECT),
    ("HEAD", "b", "k", {}, {}, Op.HEAD_OBJECT),
    ("PUT", "b", "k", {}, {}, Op.PUT_OBJECT),
    ("PUT", "b", "k", {}, {"x-amz-copy-source": "/a/b"}, Op.COPY_OBJECT),
    ("DELETE", "b", "k", {}, {}, Op.DELETE_OBJECT),
    ("POST", "b", "k", {"uploads": ""}, {}, Op.CREATE_MULTIPART_UPLOAD),
    ("PUT", "b", "k", {"partNumber": "2", "uploadId": "u"}, {}, Op.UPLOAD_PART),
    (
        "PUT",
        "b",
        "k",
        {"partNumber": "2", "uploadId": "u"},
        {"x-amz-copy-source": "/a/b"},
        Op.UPLOAD_PART_COPY,
    ),
    ("POST", "b", "k", {"uploadId": "u"}, {}, Op.COMPLETE_MULTIPART_UPLOAD),
    ("DELETE", "b", "k", {"uploadId": "u"}, {}, Op.ABORT_MULTIPART_UPLOAD),
    ("GET", "b", "k", {"uploadId": "u"}, {}, Op.LIST_PARTS),
]


@pytest.mark.parametrize(("method", "bucket", "key", "query", "headers", "op"), CASES)
def test_aws_doc_examples(
    method: str, bucket: str, key: str, query: dict[str, str], headers: dict[str, str], op: Op
) -> None:
    assert resolve(method, bucket, key, query, headers) is op


@pytest.mark.parametrize(
    ("method", "bucket", "key", "query"),
    [
        ("GET", "b", "", {"acl": ""}),
        ("PUT", "b", "", {"versioning": ""}),
        ("GET", "b", "k", {"tagging": ""}),
        ("GET", "b", "k", {"versionId": "abc"}),
        ("PUT", "b", "k", {"acl": ""}),
        ("GET", "b", "", {"versions": ""}),
        ("POST", "b", "k", {"select": "", "select-type": "2"}),
        ("GET", "b", "", {"list-type": "2", "acl": ""}),
    ],
)
def test_unimplemented_subresources_are_501(
    method: str, bucket: str, key: str, query: dict[str, str]
) -> None:
    with pytest.raises(S3Error) as info:
        resolve(method, bucket, key, query, {})
    assert (info.value.code, info.value.status) == ("NotImplemented", 501)


@pytest.mark.parametrize(
    ("method", "bucket", "key"), [("PATCH", "b", "k"), ("PUT", "", ""), ("POST", "b", "k")]
)
def test_wrong_methods_are_405(method: str, bucket: str, key: str) -> None:
    with pytest.raises(S3Error) as info:
        resolve(method, bucket, key, {}, {})
    assert (info.value.code, info.value.status) == ("MethodNotAllowed", 405)
