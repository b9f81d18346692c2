from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.s3.errors import S3Error
from gateway.s3.request import (
    ByteRange,
    Preconditions,
    parse_copy_source,
    parse_range,
    range_bounds,
    valid_bucket_name,
)

R = "/b/k"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, ByteRange(0, 10)),
        ("bytes=90-", 100, ByteRange(90, 100)),
        ("bytes=-10", 100, ByteRange(90, 100)),
        ("bytes=-1000", 100, ByteRange(0, 100)),
        ("bytes=50-1000", 100, ByteRange(50, 100)),
        ("bytes=9-0", 100, None),  # invalid: ignored
        ("items=0-1", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("bytes=-5", 0, None),  # the last 5 bytes of an empty object: all of it, a 200
        (None, 100, None),
    ],
)
def test_ranges(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size, R) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_unsatisfiable_ranges_are_416(header: str, size: int) -> None:
    with pytest.raises(S3Error) as info:
        parse_range(header, size, R)
    assert info.value.status == 416 and info.value.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (0, None)),
        ("bytes=0-", (0, None)),
        ("bytes=0-1023", (0, 1024)),
        ("bytes=10-20", (10, 21)),
        ("bytes=10-", (10, None)),
        ("bytes=-10", None),  # the last 10 bytes: where they start is not known yet
        ("bytes=9-0", (0, None)),  # ignored by parse_range: the whole object
        ("items=0-1", (0, None)),
    ],
)
def test_range_bounds_agree_with_parse_range(
    header: str | None, expected: tuple[int, int | None] | None
) -> None:
    assert range_bounds(header) == expected
    size = 10_000
    read = parse_range(header, size, R)
    if expected is not None:
        start, end = (0, size) if read is None else (read.start, read.end)
        assert (start, end) == (expected[0], size if expected[1] is None else expected[1])


T = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _check(headers: dict[str, str], read: bool = True) -> int:
    pre = Preconditions.parse(headers)
    assert pre is not None
    try:
        pre.check("abc", T, resource=R, read=read)
    except S3Error as exc:
        return exc.status
    return 200


def test_preconditions_follow_rfc9110_order() -> None:
    assert _check({"if-match": '"abc"'}) == 200
    assert _check({"if-match": '"xyz"'}) == 412
    assert _check({"if-match": "*"}) == 200
    # If-Match true takes precedence over If-Unmodified-Since false.
    assert _check({"if-match": '"abc"', "if-unmodified-since": "Wed, 01 May 2024 11:00:00 GMT"}) == 200
    assert _check({"if-unmodified-since": "Wed, 01 May 2024 11:00:00 GMT"}) == 412
    assert _check({"if-none-match": '"abc"'}) == 304
    assert _check({"if-none-match": '"abc"'}, read=False) == 412
    assert _check({"if-none-match": '"xyz"', "if-modified-since": "Wed, 01 May 2024 13:00:00 GMT"}) == 200
    assert _check({"if-modified-since": "Wed, 01 May 2024 13:00:00 GMT"}) == 304
    assert _check({"if-modified-since": "Wed, 01 May 2024 11:00:00 GMT"}) == 200
    # If-Match false and If-None-Match: 412 wins, as S3 does.
    assert _check({"if-match": '"xyz"', "if-none-match": '"abc"'}) == 412
    assert _check({"if-modified-since": "not a date"}) == 200


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("abc", True),
        ("my.bucket-1", True),
        ("ab", False),
        ("a" * 64, False),
        ("Upper", False),
        ("a..b", False),
        ("192.168.1.1", False),
        ("-abc", False),
        ("abc-", False),
        ("xn--abc", False),
        ("abc-s3alias", False),
        ("_hoard", False),
        ("a.-b", False),
    ],
)
def test_bucket_names(name: str, ok: bool) -> None:
    assert valid_bucket_name(name) is ok


def test_copy_source_is_url_decoded() -> None:
    src = parse_copy_source("/bucket/dir/a%20b%2Bc%E2%82%AC", R)
    assert (src.bucket, src.key) == ("bucket", "dir/a b+c€")
    assert parse_copy_source("bucket/k?versionId=null", R).key == "k"
    with pytest.raises(S3Error):
        parse_copy_source("bucket", R)
