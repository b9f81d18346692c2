#!/usr/bin/env bash
# Quick start: install Hoard into ./.venv and serve ./hoard-data as the root mount on 127.0.0.1:8080.
# Extra arguments go to `hoard serve` (e.g. --port 9000, --mount /s3=s3://bucket/prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
make_venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/hoard serve "$@"
