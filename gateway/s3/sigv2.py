"""AWS Signature Version 2 for S3: `Authorization: AWS AKID:sig` and `?AWSAccessKeyId=&Expires=&Signature=`.

boto3's `generate_presigned_url` (by default), clients configured with `signature_version="s3"`
and COSBench still sign this way. The rules are those of RESTAuthentication.html, with botocore's `HmacV1Auth` and
`HmacV1QueryAuth` as the reference signers:

    Signature    = Base64(HMAC-SHA1(secret, StringToSign))
    StringToSign = Verb \\n Content-MD5 \\n Content-Type \\n Date \\n
                   CanonicalizedAmzHeaders CanonicalizedResource

- Date is the Date header; empty when an x-amz-date header is present (x-amz-date is then signed
  as an amz header and is the request's time); the Expires parameter for query authentication.
  Signers disagree about x-amz-date, so the two other forms in use are accepted too (`verify_header`).
- CanonicalizedAmzHeaders: each `x-amz-*` header as `name:value\\n`, sorted by name, repeated ones
  joined with ",". For query authentication `x-amz-*` query parameters count too: botocore signs
  e.g. x-amz-security-token or x-amz-acl as headers and then moves them into the URL.
- CanonicalizedResource: `/bucket` for a virtual-hosted-style request, then the path exactly as
  sent (not decoded, not normalised; a bare `/bucket` gains the `/` that S3 and the SDKs sign,
  and is accepted without it too), then the sub-resources of `SUB_RESOURCES` the query carries,
  sorted by name, each with its value decoded (`?acl`, `?partNumber=2&uploadId=a b`,
  `?response-content-type=text/plain`). Every other query parameter is unsigned, as in S3.

V2 never signs the body; Content-MD5, when sent, is signed and then checked by the body verifier.

The functions take what `sigv4` takes: the path and query exactly as sent and the headers as a
mapping of lower-case names, wire strings being their bytes decoded as latin-1, so the StringToSign
is rebuilt byte for byte. Query values are decoded as the endpoint decodes them (`+` is a space),
so what is verified is what the handlers act on.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from operator import itemgetter
from urllib.parse import unquote_to_bytes

from gateway.s3.errors import (
    ACCESS_DENIED,
    INVALID_ACCESS_KEY_ID,
    INVALID_ARGUMENT,
    REQUEST_TIME_TOO_SKEWED,
    SIGNATURE_DOES_NOT_MATCH,
    S3Error,
)

AUTH_PREFIX = "AWS "
MAX_SKEW = timedelta(minutes=15)

# Query parameters that are part of the resource and so signed: RESTAuthentication.html's list and
# the response-* overrides, plus what botocore's HmacV1Auth.QSAOfInterest adds (the AWS SDK for
# Java's S3Signer signs the same set, less defaultObjectAcl and storageClass).
SUB_RESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_BUCKET_ONLY = re.compile(r"/[^/]+")
_FOLD = re.compile(r"\r?\n[ \t]*")


def is_query_auth(raw_query: str) -> bool:
    """Whether the query carries V2 query authentication (AWSAccessKeyId or Signature)."""
    return any(name in ("AWSAccessKeyId", "Signature") for name, _, _ in _pairs(raw_query))


def virtual_host_bucket(host: str, suffix: str | None) -> str | None:
    """The bucket a virtual-hosted-style request names in its Host header (`<bucket><suffix>`, the
    suffix being `.<domain>`), or None for a path-style request. The endpoint routes by this too."""
    if suffix is None:
        return None
    name = host.rsplit(":", 1)[0].lower()
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


def canonical_resource(raw_path: str, raw_query: str, *, bucket: str | None = None) -> str:
    """`/bucket` (virtual-hosted style only) + the path as sent + `?` the signed sub-resources.

    A path-style request for a bucket itself signs as `/bucket/` whether or not it was sent with the
    slash, as S3 wants it and botocore and the AWS SDK for Java sign it."""
    path = raw_path or "/"
    if bucket:
        path = f"/{bucket}{path}"
    elif _BUCKET_ONLY.fullmatch(path):
        path += "/"
    return path + _sub_resources(raw_query)


def canonical_amz_headers(headers: Mapping[str, str], raw_query: str | None = None) -> str:
    """`name:value\\n` for every x-amz-* header, sorted; with `raw_query`, x-amz-* query parameters
    (query authentication) join the headers of the same name."""
    values: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.startswith("x-amz-"):
            values.setdefault(name, []).append(_FOLD.sub(" ", value).strip())
    if raw_query is not None:
        for name, _, value in _pairs(raw_query):
            lowered = name.lower()
            if lowered.startswith("x-amz-"):
                values.setdefault(lowered, []).append(_unquote(value).strip())
    return "".join(f"{name}:{','.join(parts)}\n" for name, parts in sorted(values.items()))


def string_to_sign(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    *,
    expires: str | None = None,
    bucket: str | None = None,
) -> str:
    """The StringToSign of a request signed with the Authorization header, or, given `expires` (the
    Expires parameter as sent), of a presigned URL."""
    if expires is not None:
        date = expires
    elif "x-amz-date" in headers:
        date = ""
    else:
        date = headers.get("date", "")
    amz = canonical_amz_headers(headers, raw_query if expires is not None else None)
    return _candidates(method, raw_path, raw_query, headers, [(date, amz)], bucket)[0]


def signature(secret: str, string_to_sign: str) -> str:
    """Base64(HMAC-SHA1(secret, StringToSign)); the string's wire bytes are signed."""
    digest = hmac.digest(secret.encode(), _wire_bytes(string_to_sign), "sha1")
    return base64.b64encode(digest).decode()


def parse_authorization(authorization: str) -> tuple[str, str]:
    """`AWS AKID:signature` → (access key, signature); InvalidArgument if malformed."""
    access_key, sep, provided = authorization[len(AUTH_PREFIX) :].strip().rpartition(":")
    if not authorization.startswith(AUTH_PREFIX) or not sep or not access_key or not provided:
        raise S3Error(
            INVALID_ARGUMENT,
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
            extra={"ArgumentName": "Authorization", "ArgumentValue": authorization},
        )
    return access_key.strip(), provided.strip()


def verify_header(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_for: Callable[[str], str | None],
    now: datetime,
    *,
    max_skew: timedelta = MAX_SKEW,
    bucket: str | None = None,
) -> str:
    """Authenticate an `Authorization: AWS AKID:sig` request; its access key, or S3Error."""
    access_key, provided = parse_authorization(headers.get("authorization", ""))
    date_text = headers.get("x-amz-date", headers.get("date"))
    when = _parse_date(date_text) if date_text is not None else None
    if date_text is None or when is None:
        raise S3Error(ACCESS_DENIED, "AWS authentication requires a valid Date or x-amz-date header")
    now = _aware(now)
    if abs(now - when) > max_skew:
        raise S3Error(
            REQUEST_TIME_TOO_SKEWED,
            extra={
                "RequestTime": date_text,
                "ServerTime": _iso(now),
                "MaxAllowedSkewMilliseconds": str(int(max_skew.total_seconds() * 1000)),
            },
        )
    secret = _secret(secret_for, access_key)
    amz = canonical_amz_headers(headers)
    date = headers.get("date", "")
    variants = [(date, amz)]
    if "x-amz-date" in headers:
        # S3 signs an empty Date, x-amz-date being among the amz headers (so does the AWS SDK for
        # Java); botocore's HmacV1Auth signs the Date header all the same; the examples of
        # RESTAuthentication.html put x-amz-date's value in Date's place instead.
        without = canonical_amz_headers({k: v for k, v in headers.items() if k != "x-amz-date"})
        variants = [("", amz)] if not date else [("", amz), (date, amz)]
        variants.append((headers["x-amz-date"].strip(), without))
    _check(secret, _candidates(method, raw_path, raw_query, headers, variants, bucket), provided, access_key)
    return access_key


def verify_query(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_for: Callable[[str], str | None],
    now: datetime,
    *,
    bucket: str | None = None,
) -> str:
    """Authenticate a `?AWSAccessKeyId=&Expires=&Signature=` request; its access key, or S3Error."""
    params: dict[str, str] = {}
    for name, _, value in _pairs(raw_query):
        params.setdefault(name, _unquote(value))
    access_key = params.get("AWSAccessKeyId")
    provided = params.get("Signature")
    expires = params.get("Expires")
    if not access_key or not provided or expires is None:
        raise S3Error(
            ACCESS_DENIED,
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
        )
    if not expires.isascii() or not expires.isdigit() or len(expires) > 18:
        raise S3Error(ACCESS_DENIED, f"Invalid date (should be seconds since epoch): {expires}")
    now = _aware(now)
    if now.timestamp() > int(expires):
        raise S3Error(
            ACCESS_DENIED,
            "Request has expired",
            extra={"Expires": _iso(datetime.fromtimestamp(int(expires), UTC)), "ServerTime": _iso(now)},
        )
    secret = _secret(secret_for, access_key)
    # Base64 never holds a space: one here is a `+` the client left unencoded.
    provided = provided.replace(" ", "+")
    variants = [(expires, canonical_amz_headers(headers, raw_query))]
    _check(secret, _candidates(method, raw_path, raw_query, headers, variants, bucket), provided, access_key)
    return access_key


def _candidates(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    variants: list[tuple[str, str]],
    bucket: str | None,
) -> list[str]:
    """The StringToSign for each (Date, CanonicalizedAmzHeaders) variant, S3's own first, with the
    resource S3 signs and then, for a bucket path sent without its slash, the path exactly as sent."""
    resources = [canonical_resource(raw_path, raw_query, bucket=bucket)]
    if bucket is None and _BUCKET_ONLY.fullmatch(raw_path):
        resources.append(raw_path + _sub_resources(raw_query))
    head = f"{method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n"
    return [f"{head}{date}\n{amz}{resource}" for date, amz in variants for resource in resources]


def _sub_resources(raw_query: str) -> str:
    subs = sorted(
        ((name, f"{name}={_unquote(value)}" if sep else name) for name, sep, value in _pairs(raw_query)),
        key=itemgetter(0),
    )
    signed = [text for name, text in subs if name in SUB_RESOURCES]
    return f"?{'&'.join(signed)}" if signed else ""


def _secret(secret_for: Callable[[str], str | None], access_key: str) -> str:
    secret = secret_for(access_key)
    if secret is None:
        raise S3Error(INVALID_ACCESS_KEY_ID, extra={"AWSAccessKeyId": access_key})
    return secret


def _check(secret: str, candidates: list[str], provided: str, access_key: str) -> None:
    given = provided.encode("latin-1", "replace")  # compare_digest refuses non-ASCII str
    for candidate in candidates:
        if hmac.compare_digest(signature(secret, candidate).encode(), given):
            return
    wire = _wire_bytes(candidates[0])
    raise S3Error(
        SIGNATURE_DOES_NOT_MATCH,
        extra={
            "AWSAccessKeyId": access_key,
            "StringToSign": wire.decode("utf-8", "replace"),
            "SignatureProvided": provided,
            "StringToSignBytes": " ".join(f"{byte:02x}" for byte in wire),
        },
    )


def _pairs(raw_query: str) -> list[tuple[str, str, str]]:
    """(decoded name, "=" or "", raw value) for each parameter, in order."""
    out = []
    for item in raw_query.split("&"):
        if item:
            name, sep, value = item.partition("=")
            out.append((_unquote(name), sep, value))
    return out


def _unquote(component: str) -> str:
    """Percent-decoded, `+` a space, as wire bytes decoded as latin-1 (a UTF-8 value stays bytes)."""
    return unquote_to_bytes(_wire_bytes(component).replace(b"+", b" ")).decode("latin-1")


def _wire_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # not a latin-1 decoding of wire bytes: a caller passed real text
        return text.encode("utf-8")


def _parse_date(value: str) -> datetime | None:
    """An HTTP date (RFC 1123 and its relatives), or the ISO 8601 basic form some clients send."""
    try:
        if _AMZ_DATE.fullmatch(value):
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return _aware(parsedate_to_datetime(value)).astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
