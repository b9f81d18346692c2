"""Azurite, Microsoft's Azure Storage emulator (the npm package), as a real server for the tests.

`azurite_server()` starts its blob service on a free loopback port, in memory, and stops it after.
The package is installed once with npm into `.venv-azurite/` at the repository root (gitignored
like the other `.venv-*` directories), pinned to AZURITE_VERSION, on first use or ahead of time:

    python -m tests.azurite        # install (or check) Azurite; prints the path of azurite-blob

It needs Node.js (>= 18) and npm on PATH. HOARD_AZURITE_BLOB_ENDPOINT names an Azurite that is
already running instead (e.g. `http://127.0.0.1:10000/devstoreaccount1`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, wait_http

AZURITE_VERSION = "3.37.0"
INSTALL_DIR = Path(__file__).resolve().parent.parent / ".venv-azurite"
INSTALL_TIMEOUT = 600.0  # seconds; a cold npm install takes about a minute

# The emulator's well-known account; the key is public (Azurite's documentation), not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENDPOINT_ENV = "HOARD_AZURITE_BLOB_ENDPOINT"


def _installed_version(directory: Path) -> str | None:
    try:
        manifest = json.loads((directory / "node_modules" / "azurite" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def ensure_azurite(directory: Path = INSTALL_DIR, timeout: float = INSTALL_TIMEOUT) -> Path:
    """The `azurite-blob` executable, installed with npm into `directory` unless it is there.

    A file lock serialises concurrent installs (parallel test runs); a failed install leaves
    nothing that looks installed, because the version check reads Azurite's own package.json.
    """
    executable = directory / "node_modules" / ".bin" / "azurite-blob"
    if _installed_version(directory) == AZURITE_VERSION and executable.exists():
        return executable
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("the Azure tests need Node.js (>= 18) and npm on PATH to install Azurite")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(directory) != AZURITE_VERSION or not executable.exists():
            command = [
                npm,
                "install",
                "--prefix",
                str(directory),
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel=error",
                f"azurite@{AZURITE_VERSION}",
            ]
            try:
                subprocess.run(command, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"npm install azurite@{AZURITE_VERSION} took more than {timeout:.0f} s"
                ) from None
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(
                    f"npm install azurite@{AZURITE_VERSION} failed ({exc.returncode})"
                ) from None
    if not executable.exists():
        raise RuntimeError(f"npm installed Azurite but {executable} is missing")
    return executable


@contextmanager
def azurite_server() -> Iterator[str]:
    """Start Azurite's blob service on a free loopback port; yields the account's endpoint URL
    (`http://127.0.0.1:<port>/devstoreaccount1`)."""
    external = os.environ.get(ENDPOINT_ENV)
    if external:
        yield external.rstrip("/")
        return
    executable = ensure_azurite()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hoard-azurite-") as workspace:
        proc = subprocess.Popen(
            [
                str(executable),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",  # (excludes --location; the workspace is only its cwd)
                "--silent",
                "--skipApiVersionCheck",  # the SDK may speak a newer API version than Azurite knows
                "--loose",
                "--disableTelemetry",
            ],
            cwd=workspace,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        try:
            wait_http(f"{endpoint}?comp=list", timeout=60.0, proc=proc)  # any HTTP answer will do
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def connection_string(endpoint: str) -> str:
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={endpoint};"


if __name__ == "__main__":
    print(ensure_azurite())
    sys.exit(0)
