"""How every mounted adapter is opened and wrapped: the one place the UFS stack is assembled.

    Resilient( Limited( Instrumented( adapter ) ) )

Instrumented sits innermost so hoard_ufs_requests_total counts what really reached the UFS,
retries included; the limiter sees every attempt (so its AIMD sees each SlowDown) and the retry
wrapper retries through admission. The global budget (`ufs:` in the config) is shared by all mounts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from gateway.config import Limits
from ufs_adapters.base import UfsAdapter
from ufs_adapters.instrumented import Instrumented
from ufs_adapters.limiter import Budget, Limited, LimiterStats, LimitSpec
from ufs_adapters.registry import open_adapter, scheme_of
from ufs_adapters.resilient import Resilient, RetryPolicy

_DEFAULT_RETRY = RetryPolicy()


def _spec(limits: Limits) -> LimitSpec | None:
    if not (limits.bandwidth or limits.max_concurrency or limits.max_requests_per_second):
        return None
    return LimitSpec(
        bandwidth=limits.bandwidth,
        burst=limits.burst,
        max_concurrency=limits.max_concurrency,
        max_requests_per_second=limits.max_requests_per_second,
    )


def _pick(*values: float | None, default: float) -> float:
    return next((v for v in values if v is not None), default)


class UfsStack:
    def __init__(self, defaults: Limits) -> None:
        self.defaults = defaults
        spec = _spec(defaults)
        self.global_budget = Budget(spec) if spec is not None else None

    async def open(
        self, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> UfsAdapter:
        if scheme_of(uri) in ("s3", "s3a") and "max_attempts" not in options:
            # Retries are Resilient's (with resume and a breaker); botocore's would multiply them.
            options = {**options, "max_attempts": "0"}
        return await open_adapter(uri, options, state_dir=state_dir)

    def wrap(self, adapter: UfsAdapter, limits: Limits) -> UfsAdapter:
        d = self.defaults
        policy = RetryPolicy(
            attempts=int(_pick(limits.retries, d.retries, default=_DEFAULT_RETRY.attempts)),
            connect_timeout=_pick(
                limits.connect_timeout, d.connect_timeout, default=_DEFAULT_RETRY.connect_timeout
            ),
            first_byte_timeout=_pick(
                limits.first_byte_timeout, d.first_byte_timeout, default=_DEFAULT_RETRY.first_byte_timeout
            ),
            idle_timeout=_pick(limits.idle_timeout, d.idle_timeout, default=_DEFAULT_RETRY.idle_timeout),
        )
        limited = Limited(Instrumented(adapter), Budget(_spec(limits)), self.global_budget)
        return Resilient(limited, policy)


def layers(adapter: UfsAdapter) -> Iterator[object]:
    """The wrappers of a mounted adapter, outermost first."""
    current: object = adapter
    while current is not None:
        yield current
        current = getattr(current, "inner", None)


def mount_stats(
    adapter: UfsAdapter,
) -> tuple[Instrumented | None, LimiterStats | None, dict[str, int | str] | None]:
    counted = limited = resilient = None
    for layer in layers(adapter):
        if isinstance(layer, Instrumented):
            counted = layer
        elif isinstance(layer, Limited):
            limited = layer.stats()
        elif isinstance(layer, Resilient):
            resilient = layer.stats()
    return counted, limited, resilient
