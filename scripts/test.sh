#!/usr/bin/env bash
# Installs everything the test suite needs (into ./.venv and ./.venv-aws), then runs the linters,
# the type checker and the whole test suite. Exits non-zero on any failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

make_venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/python -m pip check
# The aws CLI pins its own botocore, which aiobotocore's pin does not allow: it gets its own venv.
make_venv .venv-aws
.venv-aws/bin/python -m pip install -q --disable-pip-version-check awscli==1.46.3
export HOARD_AWS_CLI="$PWD/.venv-aws/bin/aws"
# Azurite (the Azure Blob emulator, from npm) for the Azure adapter's tests.
.venv/bin/python -m tests.azurite

.venv/bin/ruff check gateway cache ufs_adapters tests
.venv/bin/ruff format --check gateway cache ufs_adapters tests
.venv/bin/mypy --strict gateway cache ufs_adapters
.venv/bin/lint-imports
.venv/bin/pytest "$@"
