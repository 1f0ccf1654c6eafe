#!/usr/bin/env bash
# The project's checks, exactly as CI runs them in every environment (README quotes this file; .ci/envs.sh runs it):
# lint, formatting, then the whole test suite. Extra arguments go to pytest (e.g. `scripts/check.sh -x -k chat`).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
python -m pytest -q tests "$@"
