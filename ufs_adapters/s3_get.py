"""GetObject and HeadObject without the SDK's per-call machinery, for the S3 adapter's reads and
stats (a stat is also how a cached object is revalidated after its max age).

A GetObject through aiobotocore costs about 1.3 ms of CPU (endpoint rules, event hooks, the user
agent, request and response models), more than all of Hoard's own work on a cold read of a small
object (py-spy, bench/cache_throughput.py --profile-cold 4KiB: 41% of Hoard's busy samples). Here
the parts botocore is needed for are still botocore's, done once or cheaply:

- the URL: botocore resolves the bucket's endpoint and addressing style once, in a presigned URL
  whose path up to the key is the prefix of every object URL;
- the signature: botocore's own `S3SigV4Auth` on each request (about 60 µs);
- errors: a non-2xx answer is parsed into the same `ClientError` the SDK raises, so the adapter's
  one error table applies. Answers the SDK might act on itself (a redirect to another region, a
  400 or 403) are not handled here: the adapter repeats the call through the SDK, and if the SDK
  gets an answer where this path did not, this path switches itself off for the adapter.

Bytes go over an aiohttp session of its own (aiohttp is aiobotocore's HTTP client too).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from botocore.utils import get_environ_proxies
from yarl import URL

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger(__name__)

_PROBE_KEY = "hoard-probe"
_ERRORS = create_parser("rest-xml")  # S3's error bodies, as the SDK reads them
# Statuses answered here; anything else (redirects, 400, 403, 405...) goes back to the SDK.
_HANDLED = frozenset({404, 412, 416, 429, 500, 502, 503, 504})


class SignedGet:
    """Signed GETs and HEADs of one bucket's objects on a session of its own. Open with `open`."""

    def __init__(
        self, client: S3Client, base: str, region: str, session: aiohttp.ClientSession, proxy: str | None
    ) -> None:
        self._client = client
        self._base = base  # scheme://host[:port]/[bucket/]: an object's URL is this + its quoted key
        self._region = region
        self._session = session
        self._proxy = proxy
        self.enabled = True
        self.requests = 0  # GETs sent here (the SDK's are not counted)

    @classmethod
    async def open(
        cls,
        client: S3Client,
        bucket: str,
        *,
        verify: bool | str | None,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> SignedGet | None:
        """None when the client has no region or no presigned URL names the object's path: the SDK
        does every GET. The caller opens this only for clients that sign with SigV4."""
        region = client.meta.region_name
        if not region:
            return None
        url = await client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60
        )
        path_end = url.split("?", 1)[0]
        if not path_end.endswith("/" + _PROBE_KEY):
            return None
        base = path_end[: -len(_PROBE_KEY)]
        context: ssl.SSLContext | bool
        if verify is False:
            context = False
        else:
            context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        connector = aiohttp.TCPConnector(limit=max_connections, ssl=context)
        timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        # HTTP(S)_PROXY and NO_PROXY as the SDK read them when its client was made (just now).
        proxy = get_environ_proxies(base).get(base.split(":", 1)[0])
        return cls(client, base, region, session, proxy)

    async def aclose(self) -> None:
        await self._session.close()

    async def get(
        self, key: str, headers: Mapping[str, str], method: str = "GET"
    ) -> aiohttp.ClientResponse | int:
        """GET (or HEAD) `key` with `headers` (Range, If-Match): a 2xx response (the caller
        releases it), or the status of an answer the SDK should handle instead (redirects, 400,
        403...); other errors raise the SDK's ClientError."""
        url = self._base + quote(key, safe="/~")
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        credentials = await self._credentials()
        if credentials is None:
            self.enabled = False
            return 0
        S3SigV4Auth(credentials, "s3", self._region).add_auth(request)
        self.requests += 1
        response = await self._session.request(
            method,
            URL(url, encoded=True),
            headers=dict(request.headers.items()),
            allow_redirects=False,
            proxy=self._proxy,
        )
        if response.status < 300:
            return response
        try:
            if response.status not in _HANDLED:
                return response.status
            raise _client_error(response.status, response.headers, await response.read())
        finally:
            response.release()

    def sdk_answered(self, status: int) -> None:
        """The SDK got an answer where this path got `status`: its requests are wrong for this
        store (a region, an endpoint, a signature), so every later GET goes through the SDK. (When
        the SDK is refused too, the refusal was the store's answer, and this path stays.)"""
        if self.enabled:
            self.enabled = False
            log.warning(
                "S3 GET %s answered %d to a directly signed request and not to the SDK's; this "
                "mount's reads now go through the SDK",
                self._base,
                status,
            )

    async def _credentials(self) -> Any:
        # The SDK's own credentials object: static keys, or the chain's, which may refresh.
        signer: Any = getattr(self._client, "_request_signer", None)
        credentials = getattr(signer, "_credentials", None)
        if credentials is None:
            return None
        return await credentials.get_frozen_credentials()


def _client_error(status: int, headers: Mapping[str, str], body: bytes) -> ClientError:
    """The ClientError botocore would raise for this error response, parsed by botocore."""
    response = {"status_code": status, "headers": {k.lower(): v for k, v in headers.items()}, "body": body}
    parsed = _ERRORS.parse(response, None)  # type: ignore[arg-type]  # an error needs no output shape
    return ClientError(cast(Any, parsed), "GetObject")


@asynccontextmanager
async def content_of(response: aiohttp.ClientResponse) -> AsyncIterator[aiohttp.StreamReader]:
    """A direct GET's body, opened as the SDK's StreamingBody is: released on the way out."""
    async with response:
        yield response.content


def fields_of(headers: Mapping[str, str]) -> dict[str, Any]:
    """The GetObject fields `_info` and `read_head` use, from raw response headers (as the SDK
    parses them)."""
    fields: dict[str, Any] = {"ETag": headers.get("ETag", "")}
    if "Content-Length" in headers:
        fields["ContentLength"] = int(headers["Content-Length"])
    if "Content-Range" in headers:
        fields["ContentRange"] = headers["Content-Range"]
    if "Content-Type" in headers:
        fields["ContentType"] = headers["Content-Type"]
    if "Last-Modified" in headers:
        with contextlib.suppress(TypeError, ValueError):
            fields["LastModified"] = parsedate_to_datetime(headers["Last-Modified"])
    fields["Metadata"] = {
        name[len("x-amz-meta-") :]: value
        for name, value in headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    return fields
