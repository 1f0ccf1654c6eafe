#!/usr/bin/env bash
# Upgrade canary: does glm-hf work on a transformers release a user may install today?
#
#   scripts/upgrade_canary.sh [VERSION]     (default: the newest release pip resolves)
#
# Builds two fresh virtual environments with README's install steps, one with transformers VERSION and one with the
# minimum pyproject.toml declares; runs README's test command (ruff + the whole suite, cross-version remote-code
# tests against the minimum included) under VERSION; then runs `glm-hf demo` there and reports its time and score.
# Nothing outside a scratch folder is touched; the scratch folder is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HOME="${HF_HOME:-$(mktemp -d)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
source .ci/envs.sh

candidate_pin="$(pin "${1:-}")"
build_env candidate "$candidate_pin"
build_env minimum "$(pin "$MINIMUM_TRANSFORMERS")"
fetch_common_tests candidate
run_suite candidate minimum "$candidate_pin"
echo "=== glm-hf demo under $(env_versions candidate)"
started=$(date +%s)
"$WORK/candidate/bin/glm-hf" demo --output "$WORK/glm-demo" | tail -n 20
echo "=== canary passed: $(env_versions candidate); demo took $(( $(date +%s) - started )) s"
