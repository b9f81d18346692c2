#!/usr/bin/env bash
# Installs everything the test suite needs (into ./.venv and ./.venv-aws), then runs the linters,
# the type checker and the whole test suite. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/python -m pip check
# The aws CLI pins its own botocore, which aiobotocore's pin does not allow: it gets its own venv.
python3 -m venv .venv-aws
.venv-aws/bin/python -m pip install -q --disable-pip-version-check awscli==1.46.3
export HOARD_AWS_CLI="$PWD/.venv-aws/bin/aws"

.venv/bin/ruff check gateway cache ufs_adapters tests
.venv/bin/ruff format --check gateway cache ufs_adapters tests
.venv/bin/mypy --strict gateway cache ufs_adapters
.venv/bin/lint-imports
.venv/bin/pytest "$@"
