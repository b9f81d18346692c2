"""Cache policy as data: rules matched by namespace path prefix, first match wins.

A rule's path is a directory: `/s3/imagenet` and `/s3/imagenet/` both match `/s3/imagenet` and
everything below it, never `/s3/imagenet-old`. Every field of a rule is optional; what a rule leaves
unset takes the default (filter maxAge with the metadata TTL, priority MEDIUM, no TTL, no quota).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

Filter = Literal["immutable", "maxAge", "skipCache"]
FILTERS: tuple[Filter, ...] = ("immutable", "maxAge", "skipCache")


class Priority(enum.IntEnum):
    """Eviction class: LOW pages go before MEDIUM before HIGH. Stored in the index as the int."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"priority '{value}' is not one of low, medium, high") from None


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy row. Durations in seconds, sizes in bytes.

    filter: `immutable` caches metadata and pages and never revalidates; `maxAge` revalidates the
    version with the UFS after `max_age`; `skipCache` streams through and stores nothing.
    ttl: pages are evicted `ttl` after they were cached. quota: bytes of pages under `path`.
    """

    path: str = "/"
    filter: Filter | None = None
    max_age: float | None = None
    priority: Priority = Priority.MEDIUM
    ttl: float | None = None
    quota: int | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"rule path '{self.path}' must start with '/'")
        if self.filter is not None and self.filter not in FILTERS:
            raise ValueError(f"rule {self.path}: filter '{self.filter}' is not one of {', '.join(FILTERS)}")
        if self.max_age is not None:
            if self.filter not in ("maxAge", None):
                raise ValueError(f"rule {self.path}: max_age needs filter maxAge, not '{self.filter}'")
            if self.max_age < 0:
                raise ValueError(f"rule {self.path}: max_age {self.max_age} is negative")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"rule {self.path}: ttl {self.ttl} must be positive")
        if self.quota is not None and self.quota < 0:
            raise ValueError(f"rule {self.path}: quota {self.quota} is negative")
        if not isinstance(self.priority, Priority):
            raise ValueError(f"rule {self.path}: priority {self.priority!r} is not a Priority")

    @property
    def prefix(self) -> str:
        """The path as a directory prefix, ending with '/'."""
        return self.path if self.path.endswith("/") else self.path + "/"

    def matches(self, namespace_path: str) -> bool:
        prefix = self.prefix
        return namespace_path.startswith(prefix) or namespace_path == prefix[:-1]

    @property
    def stores(self) -> bool:
        return self.filter != "skipCache"


class Policy:
    """The rules of `cache.rules` in order, plus a catch-all default.

    `match` returns rules with their defaults resolved (filter and max_age always set), built once
    here, so matching allocates nothing per request.
    """

    def __init__(self, rules: Sequence[Rule] = (), *, metadata_ttl: float) -> None:
        if metadata_ttl < 0:
            raise ValueError(f"metadata_ttl {metadata_ttl} is negative")
        self.metadata_ttl = metadata_ttl
        self.rules: tuple[Rule, ...] = tuple(self._resolve(r) for r in rules)
        self.default = self._resolve(Rule("/"))

    def _resolve(self, rule: Rule) -> Rule:
        if rule.filter is None:
            return replace(
                rule, filter="maxAge", max_age=self.metadata_ttl if rule.max_age is None else rule.max_age
            )
        if rule.filter == "maxAge" and rule.max_age is None:
            return replace(rule, max_age=self.metadata_ttl)
        return rule

    def match(self, namespace_path: str) -> Rule:
        for rule in self.rules:
            if rule.matches(namespace_path):
                return rule
        return self.default

    def fingerprint(self) -> str:
        """What the index stores per page (priority, expiry, quota owner) depends on these fields;
        when they change between runs the index recomputes them (see PageIndex.reapply)."""
        return repr([(r.prefix, r.priority.value, r.ttl, r.quota) for r in self.rules])

    @property
    def quotas(self) -> dict[str, int]:
        """Quota owner (the rule's directory prefix) -> quota bytes."""
        return {r.prefix: r.quota for r in self.rules if r.quota is not None}
