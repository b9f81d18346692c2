"""Everything a request handler may use, built once by the app lifespan and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from cache.reader import ObjectCache
from gateway.config import Config
from gateway.jobstate import SharedJobs
from gateway.metrics import Metrics
from gateway.namespace import MountTable


@dataclass(slots=True)
class Services:
    config: Config
    mounts: MountTable
    metrics: Metrics
    cache: ObjectCache
    jobs: SharedJobs
    region: str = "us-east-1"
