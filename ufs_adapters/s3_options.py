"""Mount options of the S3 adapter: Hoard's names, the Alluxio/Hadoop spellings users already
have (OPTION_ALIASES, FLAG_ALIASES), `s3://bucket/prefix` URIs, and typed reads of option strings
that name the option in their errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

# Alluxio / Hadoop names users already have in their mount options -> Hoard's own names.
OPTION_ALIASES: Mapping[str, str] = {
    "s3a.accessKeyId": "access_key_id",
    "s3a.secretKey": "secret_access_key",
    "aws.accessKeyId": "access_key_id",
    "aws.secretKey": "secret_access_key",
    "alluxio.underfs.s3.region": "region",
    "alluxio.underfs.s3.endpoint.region": "region",
    "alluxio.underfs.s3.endpoint": "endpoint_url",
    "fs.s3a.access.key": "access_key_id",
    "fs.s3a.secret.key": "secret_access_key",
    "fs.s3a.session.token": "session_token",
    "fs.s3a.endpoint": "endpoint_url",
    "fs.s3a.endpoint.region": "region",
}
# Boolean aliases: when true, they stand for one of Hoard's options with a fixed value.
FLAG_ALIASES: Mapping[str, tuple[str, str]] = {
    "alluxio.underfs.s3.disable.dns.buckets": ("addressing_style", "path"),
    "fs.s3a.path.style.access": ("addressing_style", "path"),
}
OPTIONS = (
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "addressing_style",
    "signature_version",
    "max_attempts",
    "connect_timeout",
    "read_timeout",
    "max_pool_connections",
    "verify",
    "direct_get",
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def normalize_options(options: Mapping[str, str]) -> dict[str, str]:
    """Rename alias options to Hoard's names; other keys pass through unchanged.

    Two spellings of one option with different values are an error naming both.
    """
    result: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in options.items():
        if key in FLAG_ALIASES:
            if value.strip().lower() not in _TRUE:
                continue
            name, value = FLAG_ALIASES[key]
        else:
            name = OPTION_ALIASES.get(key, key)
        if name in result and result[name] != value:
            raise ValueError(f"mount options {origin[name]!r} and {key!r} give {name!r} different values")
        result[name] = value
        origin.setdefault(name, key)
    return result


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is "" for a whole bucket."""
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise ValueError(f"not an S3 URI (s3://bucket/optional/prefix): {uri!r}")
    prefix = unquote(parts.path).strip("/")
    return parts.netloc, prefix + "/" if prefix else ""


def flag_option(opts: Mapping[str, str], name: str, default: bool) -> bool:
    value = opts.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"option {name!r} is {value!r}; use true or false")


def verify_option(opts: Mapping[str, str]) -> bool | str | None:
    """`verify`: true/false, or the path of a CA bundle."""
    value = opts.get("verify")
    if value is None:
        return None
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    if not os.path.exists(value):
        raise ValueError(f"option 'verify' is {value!r}: neither true/false nor an existing CA bundle")
    return value
