"""Multipart uploads of the local adapter (local.py), staged as files:

    <staging>/<upload id>/upload.json         the key, content type, metadata, initiation time
    <staging>/<upload id>/part-NNNNN          a part's bytes
    <staging>/<upload id>/part-NNNNN.json     its ETag, beside the size, mtime and inode it was for

Every file is written under a temporary name and renamed into place, so a crash leaves whole
records and parts or none. The staging directory is shared by every gateway mounting the same
directory; completing an upload (the adapter's) copies the parts into the object and removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

from ._util import CHUNK_SIZE
from .base import BadDigest, NoSuchUpload, PartInfo, PartsPage, UploadInfo, UploadsPage, WriteMeta
from .local_fs import Temp, TempRegistry, mtime, open_temp

UPLOAD_RECORD = "upload.json"
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PART_FILE = re.compile(r"part-(\d{5})")


class Staging:
    """The uploads staged under one directory. Every method blocks (the adapter runs them in a
    thread); an unknown upload, or one for another key, raises NoSuchUpload."""

    def __init__(self, directory: str, temps: TempRegistry | None = None) -> None:
        self.directory = directory
        self.temps = temps  # parts are the large files: tracked while written (local_fs.TempRegistry)

    def _upload_dir(self, path: str, upload_id: str) -> str:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NoSuchUpload(path, f"no upload {upload_id!r}")
        return os.path.join(self.directory, upload_id)

    def load(self, path: str, upload_id: str) -> tuple[str, dict[str, Any]]:
        """The upload's directory and record."""
        directory = self._upload_dir(path, upload_id)
        try:
            with open(os.path.join(directory, UPLOAD_RECORD), "rb") as f:
                record = json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise NoSuchUpload(path, f"no upload {upload_id!r}") from None
        if record.get("path") != path:
            raise NoSuchUpload(path, f"upload {upload_id!r} is for another key")
        return directory, dict(record)

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(upload id, record) of every whole upload."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if not _UPLOAD_ID.fullmatch(name):
                continue
            try:
                with open(os.path.join(self.directory, name, UPLOAD_RECORD), "rb") as f:
                    record = json.load(f)
                if isinstance(record.get("path"), str) and isinstance(record.get("initiated_ns"), int):
                    yield name, dict(record)
            except (OSError, ValueError):
                continue  # being created or removed

    def remove(self, upload_id: str) -> None:
        shutil.rmtree(os.path.join(self.directory, upload_id), ignore_errors=True)

    def create(self, path: str, meta: WriteMeta) -> str:
        """A new upload of `path` (checked by the adapter): its id."""
        os.makedirs(self.directory, exist_ok=True)
        upload_id = secrets.token_urlsafe(24)
        directory = os.path.join(self.directory, upload_id)
        os.mkdir(directory)
        record = {
            "path": path,
            "content_type": meta.content_type,
            "metadata": dict(meta.metadata),
            "initiated_ns": time.time_ns(),
        }
        temp = open_temp(directory, os.path.join(directory, UPLOAD_RECORD))
        try:
            os.write(temp.fd, json.dumps(record).encode())
            os.fsync(temp.fd)
            temp.commit()
        except BaseException:
            temp.discard()
            raise
        return upload_id

    @staticmethod
    def part_file(directory: str, number: int) -> str:
        return os.path.join(directory, f"part-{number:05d}")

    @staticmethod
    def part_info(directory: str, number: int) -> PartInfo | None:
        """A staged part; its ETag comes from the sidecar record if that still describes the file,
        else from hashing the file (only after a crash or a race between two uploads of it)."""
        path = Staging.part_file(directory, number)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        etag = None
        try:
            with open(path + ".json", "rb") as f:
                side = json.load(f)
            if [side.get("size"), side.get("mtime_ns"), side.get("ino")] == [
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
            ]:
                etag = str(side["etag"])
        except (OSError, ValueError, KeyError):
            pass
        if etag is None:
            digest = hashlib.md5()
            with open(path, "rb") as f:
                while data := f.read(CHUNK_SIZE):
                    digest.update(data)
            etag = digest.hexdigest()
        return PartInfo(number, etag, st.st_size, mtime(st.st_mtime_ns))

    def begin_part(self, path: str, upload_id: str, number: int) -> Temp:
        """The temporary file a part's bytes go to, then `commit_part`."""
        directory, _ = self.load(path, upload_id)
        return open_temp(directory, self.part_file(directory, number), self.temps)

    def commit_part(self, path: str, temp: Temp, number: int, etag: str, expected: int | None) -> PartInfo:
        os.fsync(temp.fd)
        st = os.fstat(temp.fd)
        if expected is not None and st.st_size != expected:
            raise BadDigest(path, f"part {number}: expected {expected} bytes, received {st.st_size}")
        try:
            temp.commit()
            side = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
            side_temp = open_temp(os.path.dirname(temp.dest), temp.dest + ".json")
        except FileNotFoundError:
            raise NoSuchUpload(path, "the upload was aborted or completed meanwhile") from None
        try:
            os.write(side_temp.fd, json.dumps(side).encode())
            side_temp.commit()
        except BaseException:
            side_temp.discard()
            raise
        return PartInfo(number, etag, st.st_size, mtime(st.st_mtime_ns))

    def abort(self, path: str, upload_id: str) -> None:
        directory, _ = self.load(path, upload_id)
        shutil.rmtree(directory, ignore_errors=True)

    def list_parts(self, path: str, upload_id: str, marker: int, limit: int) -> PartsPage:
        directory, _ = self.load(path, upload_id)
        numbers = sorted(
            int(m.group(1)) for name in os.listdir(directory) if (m := _PART_FILE.fullmatch(name))
        )
        numbers = [n for n in numbers if n > marker]
        parts = [p for n in numbers[: max(limit, 0)] if (p := self.part_info(directory, n)) is not None]
        more = len(numbers) > max(limit, 0)
        return PartsPage(parts, numbers[limit - 1] if more and limit > 0 else None)

    def list_uploads(
        self,
        prefix: str,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        uploads = sorted(
            (record["path"], record["initiated_ns"], upload_id)
            for upload_id, record in self.records()
            if record["path"].startswith(prefix)
        )
        if key_marker is not None:
            marker_pos = next(
                ((p, t, u) for p, t, u in uploads if p == key_marker and u == upload_id_marker), None
            )
            if upload_id_marker and marker_pos is not None:
                uploads = [u for u in uploads if u > marker_pos]
            else:
                uploads = [u for u in uploads if u[0] > key_marker]
        result: list[UploadInfo] = []
        prefixes: list[str] = []
        next_key: str | None = None
        next_id: str | None = None
        for path, initiated_ns, upload_id in uploads:
            common = None
            if delimiter and (cut := path.find(delimiter, len(prefix))) >= 0:
                common = path[: cut + len(delimiter)]
                if (prefixes and prefixes[-1] == common) or (key_marker is not None and common <= key_marker):
                    continue
            if len(result) + len(prefixes) >= limit:
                return UploadsPage(result, prefixes, next_key, next_id)
            if common is not None:
                prefixes.append(common)
                next_key, next_id = common, None
            else:
                result.append(UploadInfo(path, upload_id, mtime(initiated_ns)))
                next_key, next_id = path, upload_id
        return UploadsPage(result, prefixes, None, None)
