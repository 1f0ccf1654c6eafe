#!/usr/bin/env bash
# Upgrade canary: does glm-hf work on a transformers release a user may install today?
#
#   scripts/upgrade_canary.sh [VERSION]     (default: the newest release on the package index)
#
# Builds two fresh virtual environments with README's install steps, one with transformers VERSION and one with the
# minimum pyproject.toml declares; runs README's test command (ruff + the whole suite, cross-version remote-code
# tests against the minimum included) under VERSION; then runs `glm-hf demo` there and reports its time and score.
# A VERSION whose own requirements pip cannot meet from the reachable index (5.25.0 needs kernels>=0.19.1) is
# installed --no-deps over the resolved environment and run with USE_HUB_KERNELS=0, as .ci/run does.
# Nothing outside a scratch folder is touched; the scratch folder is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HOME="${HF_HOME:-$(mktemp -d)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
source .ci/envs.sh

version="${1:-$(newest_release)}"
[[ -n "$version" ]] || { echo "pip index versions transformers named no release; give VERSION" >&2; exit 1; }
candidate_pin="$(pin "$version")"
if ! build_env candidate "$candidate_pin"; then
    echo "=== pip cannot install transformers $version with its requirements here: installing it --no-deps"
    rm -rf "$WORK/candidate"
    candidate_pin=""
    build_env candidate
    force_release candidate "$version"
fi
build_env minimum "$(pin "$MINIMUM_TRANSFORMERS")"
fetch_common_tests candidate
run_suite candidate minimum "$candidate_pin"
echo "=== glm-hf demo under $(env_versions candidate)"
started=$(date +%s)
(
    if [[ -f "$WORK/candidate.env" ]]; then set -a; source "$WORK/candidate.env"; set +a; fi
    "$WORK/candidate/bin/glm-hf" demo --output "$WORK/glm-demo" | tail -n 20
)
echo "=== canary passed: $(env_versions candidate); demo took $(( $(date +%s) - started )) s"
