"""SDK and transport errors of S3 calls, as the UfsErrors the rest of Hoard understands: one table
of S3 error codes, one of HTTP statuses for answers without a code (HEAD has no body)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import (
    AlreadyExists,
    BadDigest,
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    InvalidPath,
    NoSuchUpload,
    NotEmpty,
    NotFound,
    NotSupported,
    PermissionDenied,
    PreconditionFailed,
    RangeNotSatisfiable,
    UfsError,
    Unavailable,
)

_throttled = partial(Unavailable, throttled=True)

# S3 error code -> UfsError. HEAD responses carry no body, so their code is the HTTP status.
ERROR_CODES: Mapping[str, Callable[[str, str], UfsError]] = {
    "NoSuchKey": NotFound,
    "NotFound": NotFound,
    "404": NotFound,
    "NoSuchBucket": NotFound,
    "AccessDenied": PermissionDenied,
    "403": PermissionDenied,
    "AllAccessDisabled": PermissionDenied,
    "InvalidAccessKeyId": PermissionDenied,
    "SignatureDoesNotMatch": PermissionDenied,
    "InvalidToken": PermissionDenied,
    "ExpiredToken": PermissionDenied,
    "AccountProblem": PermissionDenied,
    "PreconditionFailed": PreconditionFailed,
    "412": PreconditionFailed,
    "NoSuchUpload": NoSuchUpload,
    "InvalidPart": InvalidPart,
    "InvalidPartOrder": InvalidPartOrder,
    "EntityTooSmall": EntityTooSmall,
    "BadDigest": BadDigest,
    "InvalidDigest": BadDigest,
    "InvalidRange": RangeNotSatisfiable,
    "416": RangeNotSatisfiable,
    "KeyTooLongError": InvalidPath,
    "BucketAlreadyOwnedByYou": AlreadyExists,
    "BucketAlreadyExists": AlreadyExists,
    "BucketNotEmpty": NotEmpty,
    "NotImplemented": NotSupported,
    "501": NotSupported,
    "SlowDown": _throttled,
    "503": _throttled,
    "ServiceUnavailable": _throttled,
    "429": _throttled,
    "TooManyRequests": _throttled,
    "TooManyRequestsException": _throttled,
    "Throttling": _throttled,
    "ThrottlingException": _throttled,
    "RequestLimitExceeded": _throttled,
    "RequestTimeout": Unavailable,
    "RequestTimeTooSkewed": PermissionDenied,
    "InternalError": Unavailable,
    "500": Unavailable,
    "502": Unavailable,
    "504": Unavailable,
}
# When the code is unknown, the HTTP status decides.
ERROR_STATUSES: Mapping[int, Callable[[str, str], UfsError]] = {
    403: PermissionDenied,
    404: NotFound,
    412: PreconditionFailed,
    416: RangeNotSatisfiable,
    429: _throttled,
    500: Unavailable,
    501: NotSupported,
    502: Unavailable,
    503: _throttled,
    504: Unavailable,
}


def translate_error(exc: Exception, path: str) -> UfsError:
    """One SDK or transport exception -> the UfsError the rest of Hoard understands."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or exc.operation_name
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        factory = ERROR_CODES.get(code) or ERROR_STATUSES.get(status) or UfsError
        return factory(path, f"{code}: {message}")
    if isinstance(exc, (HTTPClientError, BotoConnectionError, aiohttp.ClientError, TimeoutError)):
        return Unavailable(path, str(exc))
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return PermissionDenied(path, str(exc))
    return UfsError(path, f"{type(exc).__name__}: {exc}")


@contextmanager
def translated(path: str) -> Iterator[None]:
    try:
        yield
    except UfsError:
        raise
    except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
        raise translate_error(exc, path) from exc
