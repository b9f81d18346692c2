from __future__ import annotations

import pytest

from cache.policy import Policy, Priority, Rule


def test_first_match_wins_and_paths_are_directories() -> None:
    policy = Policy(
        [
            Rule("/s3/imagenet/", filter="immutable", priority=Priority.HIGH, ttl=7 * 86400, quota=500),
            Rule("/s3/", filter="skipCache"),
            Rule("/s3/imagenet/val", priority=Priority.LOW),  # shadowed by the first rule
        ],
        metadata_ttl=60,
    )
    assert policy.match("/s3/imagenet/train/x.jpg").filter == "immutable"
    assert policy.match("/s3/imagenet/val/y").filter == "immutable"
    assert policy.match("/s3/imagenet").priority is Priority.HIGH  # the directory itself
    assert policy.match("/s3/imagenet-old/x").filter == "skipCache"  # not a prefix match
    assert policy.match("/s3").filter == "skipCache"
    default = policy.match("/other/x")
    assert default is policy.default
    assert (default.filter, default.max_age, default.priority, default.ttl, default.quota) == (
        "maxAge",
        60,
        Priority.MEDIUM,
        None,
        None,
    )


def test_defaults_resolve_max_age_and_match_allocates_nothing() -> None:
    policy = Policy([Rule("/a", ttl=5), Rule("/b", filter="maxAge"), Rule("/c", max_age=7)], metadata_ttl=30)
    assert (policy.match("/a/x").filter, policy.match("/a/x").max_age) == ("maxAge", 30)
    assert policy.match("/b/x").max_age == 30
    assert policy.match("/c/x").max_age == 7
    assert policy.match("/a/x") is policy.match("/a/y")
    assert policy.quotas == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "s3"}, "must start with '/'"),
        ({"filter": "never"}, "is not one of"),
        ({"filter": "immutable", "max_age": 3}, "max_age needs filter maxAge"),
        ({"ttl": 0}, "ttl 0 must be positive"),
        ({"quota": -1}, "quota -1 is negative"),
    ],
)
def test_invalid_rules_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule(**kwargs)  # type: ignore[arg-type]


def test_priority_parse() -> None:
    assert Priority.parse("high") is Priority.HIGH
    assert Priority.parse(0) is Priority.LOW
    with pytest.raises(ValueError, match="'urgent' is not one of"):
        Priority.parse("urgent")


def test_fingerprint_follows_stored_fields_only() -> None:
    a = Policy([Rule("/a", quota=1)], metadata_ttl=1)
    assert a.fingerprint() == Policy([Rule("/a/", quota=1)], metadata_ttl=99).fingerprint()
    assert a.fingerprint() != Policy([Rule("/a", quota=2)], metadata_ttl=1).fingerprint()
