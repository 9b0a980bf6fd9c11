#!/usr/bin/env bash
# Installs (scripts/install.sh) and runs the whole test suite on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -n 2 -q tests "$@"
