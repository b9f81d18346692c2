"""The cache's vocabulary: where an object comes from (`Source`) and which page of it (`PageKey`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ufs_adapters.base import UfsAdapter


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """One mount as the cache sees it.

    `mount_id` names the mount in page keys and in the index, so it must be stable across restarts
    (pages cached under one id are never served for another). `namespace_path` is where the mount
    sits in the namespace (`/`, `/s3`); rules match against namespace paths. Sources compare by
    identity: two mounts with the same id but different adapters are still different objects.
    """

    mount_id: str
    namespace_path: str
    adapter: UfsAdapter

    def namespace_of(self, path: str) -> str:
        """The namespace path of a UFS-relative `path` of this mount (`/s3` + `a/b` -> `/s3/a/b`)."""
        if not path:
            return self.namespace_path
        if self.namespace_path.endswith("/"):
            return self.namespace_path + path
        return f"{self.namespace_path}/{path}"


@dataclass(frozen=True, slots=True)
class PageKey:
    """Page `index` (0-based, `page_size` bytes each) of version `version` (the ETag) of `path`.

    The version is part of the key, so a changed object can never be served from old pages: at
    worst old pages linger until the stale sweep or eviction removes them.
    """

    mount_id: str
    path: str
    version: str
    index: int

    @property
    def name(self) -> str:
        """The page's file name: a 128-bit hash of the key, so file names need no escaping and
        the file of a key can be found without the index (the hit path reads no index)."""
        h = hashlib.blake2b(digest_size=16)
        # Length-prefixed fields: keys may hold any character, and distinct keys must hash distinct inputs.
        for part in (self.mount_id, self.path, self.version):
            raw = part.encode()
            h.update(b"%d:" % len(raw))
            h.update(raw)
        h.update(b"%d" % self.index)
        return h.hexdigest()
