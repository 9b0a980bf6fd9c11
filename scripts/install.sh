#!/usr/bin/env bash
# Creates .venv in the checkout (if absent) and installs the pinned dependencies and the
# package itself. Safe to re-run: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install "$(grep -E '^torch==' requirements.txt)"
pip install -r requirements.txt
pip install --no-deps -r requirements-nodeps.txt
pip install --no-deps --no-build-isolation -e .
