"""Azure SDK and transport errors -> UfsErrors, for the Azure adapter (azure.py): by the service's
error code (x-ms-error-code), else by the HTTP status, else by the exception's type."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from functools import partial

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from .base import (
    AlreadyExists,
    BadDigest,
    InvalidPart,
    InvalidPath,
    NotFound,
    NotSupported,
    PermissionDenied,
    PreconditionFailed,
    RangeNotSatisfiable,
    UfsError,
    Unavailable,
)

_throttled = partial(Unavailable, throttled=True)

# Azure error code (x-ms-error-code) -> UfsError.
ERROR_CODES: Mapping[str, Callable[[str, str], UfsError]] = {
    "BlobNotFound": NotFound,
    "ContainerNotFound": NotFound,
    "ResourceNotFound": NotFound,
    "CannotVerifyCopySource": NotFound,
    "ConditionNotMet": PreconditionFailed,
    "SourceConditionNotMet": PreconditionFailed,
    "TargetConditionNotMet": PreconditionFailed,
    "AuthenticationFailed": PermissionDenied,
    "AuthorizationFailure": PermissionDenied,
    "AuthorizationPermissionMismatch": PermissionDenied,
    "AuthorizationProtocolMismatch": PermissionDenied,
    "AuthorizationResourceTypeMismatch": PermissionDenied,
    "AuthorizationServiceMismatch": PermissionDenied,
    "AuthorizationSourceIPMismatch": PermissionDenied,
    "InsufficientAccountPermissions": PermissionDenied,
    "InvalidAuthenticationInfo": PermissionDenied,
    "NoAuthenticationInformation": PermissionDenied,
    "AccountIsDisabled": PermissionDenied,
    "PublicAccessNotPermitted": PermissionDenied,
    "ServerBusy": _throttled,
    "OperationTimedOut": Unavailable,
    "InternalError": Unavailable,
    "ContainerBeingDeleted": Unavailable,
    "InvalidRange": RangeNotSatisfiable,
    "InvalidBlockList": InvalidPart,
    "Md5Mismatch": BadDigest,
    "InvalidMd5": BadDigest,
    "ContainerAlreadyExists": AlreadyExists,
    "BlobAlreadyExists": AlreadyExists,
    "InvalidResourceName": InvalidPath,
    "InvalidUri": InvalidPath,
    "UnsupportedHeader": NotSupported,
    "UnsupportedQueryParameter": NotSupported,
    "FeatureVersionMismatch": NotSupported,
}
# When the code is unknown (or absent: HEAD responses have no body), the HTTP status decides.
ERROR_STATUSES: Mapping[int, Callable[[str, str], UfsError]] = {
    401: PermissionDenied,
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
# Without a status (transport errors), or as a last resort, the exception type decides.
ERROR_TYPES: tuple[tuple[type[BaseException], Callable[[str, str], UfsError]], ...] = (
    (ClientAuthenticationError, PermissionDenied),
    (ResourceNotFoundError, NotFound),
    (ResourceModifiedError, PreconditionFailed),
    (ResourceExistsError, AlreadyExists),
    (ServiceRequestError, Unavailable),  # connect failures and timeouts
    (ServiceResponseError, Unavailable),  # connection lost while reading the response
    (aiohttp.ClientError, Unavailable),
    (TimeoutError, Unavailable),
)


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(code.value if isinstance(code, Enum) else code or "")


def translate_error(exc: BaseException, path: str) -> UfsError:
    """One SDK or transport exception -> the UfsError the rest of Hoard understands."""
    code = _error_code(exc)
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    detail = f"{code}: {message}" if code else message
    factory = ERROR_CODES.get(code) or (ERROR_STATUSES.get(status) if status else None)
    if factory is None:
        factory = next((f for kind, f in ERROR_TYPES if isinstance(exc, kind)), UfsError)
    return factory(path, detail)


@contextmanager
def translated(path: str) -> Iterator[None]:
    try:
        yield
    except UfsError:
        raise
    except (AzureError, aiohttp.ClientError, TimeoutError) as exc:
        raise translate_error(exc, path) from exc
