#!/usr/bin/env bash
# Installs (scripts/install.sh) and runs the whole test suite on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# loadscope: a module's tests share one worker, so module-scoped fixtures (the two-process
# training of test_multihost.py, the loaded backbones) are built once, not once per worker.
exec .venv/bin/python -m pytest -n 2 --dist loadscope -q tests "$@"
