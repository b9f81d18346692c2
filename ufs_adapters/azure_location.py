"""Where an Azure mount points and how it signs in, for the Azure adapter (azure.py).

URIs: `wasbs://container@account.blob.core.windows.net/prefix` (`wasb://` is the same over plain
HTTP, as in Hadoop), `abfs[s]://container@account.dfs.core.windows.net/prefix` (the dfs host is
mapped to the blob endpoint of the same account) and `az://container/prefix` (the account comes
from the options). Hadoop/Alluxio option names are accepted for the mounted account and container.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ._util import check_options
from .azure_names import UPLOADS, check_key

# URI scheme -> HTTP scheme of the derived endpoint (Hadoop: wasb is plain HTTP, abfs uses TLS).
URI_SCHEMES: Mapping[str, str] = {
    "wasb": "http",
    "wasbs": "https",
    "abfs": "https",
    "abfss": "https",
    "az": "https",
}
DEFAULT_SUFFIX = "blob.core.windows.net"
OPTIONS = (
    "account_name",
    "account_key",
    "sas_token",
    "connection_string",
    "endpoint_url",
    "max_attempts",
    "connect_timeout",
    "read_timeout",
)
# Hadoop/Alluxio option names, matched against the mounted account (and container).
_KEY_ALIAS = re.compile(r"fs\.azure\.account\.key\.([a-z0-9]+)\.(?:blob|dfs)\..+")
_SAS_ALIAS = re.compile(r"fs\.azure\.sas\.([a-z0-9$-]+)\.([a-z0-9]+)\.(?:blob|dfs)\..+")
_CONTAINER = re.compile(r"\$root|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")


@dataclass(frozen=True, slots=True)
class AzureLocation:
    """What a mount URI names: a container, a prefix in it ("" or ending in `/`), and the account
    and blob endpoint when the URI spells them."""

    container: str
    prefix: str
    account: str | None
    endpoint: str | None


def parse_azure_uri(uri: str) -> AzureLocation:
    """`wasbs://container@account.blob.core.windows.net/some/prefix` and its relatives."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in URI_SCHEMES:
        raise ValueError(f"not an Azure Blob URI ({', '.join(URI_SCHEMES)}): {uri!r}")
    container, at, host = parts.netloc.rpartition("@")
    if not at:
        if scheme != "az":
            raise ValueError(f"{uri!r}: expected {scheme}://container@account.blob.core.windows.net/prefix")
        container, host = host, ""
    if not _CONTAINER.fullmatch(container):
        raise ValueError(f"{uri!r}: {container!r} is not a valid container name (3-63 of a-z, 0-9, -)")
    account = endpoint = None
    if host:
        account, _, suffix = host.lower().partition(".")
        suffix = suffix or DEFAULT_SUFFIX
        if suffix.startswith("dfs."):  # ADLS Gen2 endpoint of the same account
            suffix = "blob." + suffix[len("dfs.") :]
        if not suffix.startswith("blob.") or not _ACCOUNT.fullmatch(account):
            raise ValueError(f"{uri!r}: expected a host like account.blob.core.windows.net, not {host!r}")
        endpoint = f"{URI_SCHEMES[scheme]}://{account}.{suffix}"
    prefix = unquote(parts.path).strip("/")
    if prefix:
        check_key(prefix)
        if (prefix + "/").startswith(UPLOADS):
            raise ValueError(f"{uri!r}: the prefix {UPLOADS!r} is reserved for multipart uploads")
    return AzureLocation(container, prefix + "/" if prefix else "", account, endpoint)


def azure_options(options: Mapping[str, str], location: AzureLocation) -> dict[str, str]:
    """Resolve Hadoop/Alluxio aliases for the mounted account; keep known options, ignore foreign
    namespaces, refuse anything else. Two spellings with different values are an error."""
    account = options.get("account_name") or location.account
    result: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in options.items():
        name = key
        if match := _KEY_ALIAS.fullmatch(key):
            if account is None or match[1] == account:
                name = "account_key"
                result.setdefault("account_name", match[1])
        elif match := _SAS_ALIAS.fullmatch(key):
            if match[1] == location.container and (account is None or match[2] == account):
                name = "sas_token"
                result.setdefault("account_name", match[2])
        if name in result and name in origin and result[name] != value:
            raise ValueError(f"mount options {origin[name]!r} and {key!r} give {name!r} different values")
        result[name] = value
        origin.setdefault(name, key)
    if location.account and result.get("account_name", location.account) != location.account:
        raise ValueError(
            f"option account_name is {result['account_name']!r} but the URI names {location.account!r}"
        )
    return check_options("azure", result, OPTIONS)


def account_from_endpoint(endpoint: str) -> str:
    """The account of an endpoint: `acct.blob...` or, for emulators, the path (`/devstoreaccount1`)."""
    parts = urlsplit(endpoint)
    path = parts.path.strip("/")
    account = path.split("/")[0] if path else (parts.hostname or "").split(".")[0]
    if not account:
        raise ValueError(f"cannot tell the account from endpoint {endpoint!r}: give option account_name")
    return account


def check_account_key(key: str) -> None:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "option account_key is not base64 (copy it from the storage account's access keys)"
        ) from None


def connection_string_field(connection_string: str, field: str) -> str | None:
    for item in connection_string.split(";"):
        name, _, value = item.partition("=")
        if name.strip().lower() == field.lower():
            return value.strip()
    return None
