# Shared by .ci/run and scripts/upgrade_canary.sh: fresh virtual environments built with README's own commands.
# Source it from the repository root after setting WORK (a scratch folder).

# The CPU wheel; an unpinned torch would pull a multi-GB CUDA build. README's commands must install it first.
TORCH_PIN="torch==2.13.0"
# README's test command is INSTALL_COMMAND && CHECK_COMMAND, word for word (tests/test_project.py checks it).
INSTALL_COMMAND="pip install $TORCH_PIN && pip install -e \".[test]\""
CHECK_COMMAND="scripts/check.sh"
TEST_COMMAND="$INSTALL_COMMAND && $CHECK_COMMAND"
MINIMUM_TRANSFORMERS="$(python3 -c '
import re, tomllib
dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(re.search(r">=\s*([0-9.]+)", d).group(1) for d in dependencies if re.match(r"transformers\b", d)))')"

# pin VERSION: a pip constraints file holding transformers==VERSION (empty VERSION: no file, no pin)
pin() {
    if [[ -n "$1" ]]; then
        echo "transformers==$1" > "$WORK/transformers-$1.txt"
        echo "$WORK/transformers-$1.txt"
    fi
}

# build NAME [CONSTRAINTS]: a fresh venv WORK/NAME (never the machine's site-packages): the pinned CPU torch, then
# README's install steps
build_env() {
    python3 -m venv "$WORK/$1"
    (
        source "$WORK/$1/bin/activate"
        export PIP_CONSTRAINT="${2:-}"
        {
            python -m pip install "$TORCH_PIN" && eval "$INSTALL_COMMAND"
        } > "$WORK/$1-install.log" 2>&1 || { tail -50 "$WORK/$1-install.log"; exit 1; }
    )
}

# newest_release: the newest transformers release on the package index, which a user with the full index installs
# even where pip here resolves an older one (5.25.0 requires kernels>=0.19.1, which this index lacked until 2026-12-03)
newest_release() {
    python3 -m pip index versions transformers 2>/dev/null | sed -n 's/^transformers (\([^)]*\)).*/\1/p'
}

# installed_release NAME: the transformers release in WORK/NAME
installed_release() {
    "$WORK/$1/bin/python" -c 'import transformers; print(transformers.__version__)'
}

# force_release NAME VERSION: transformers VERSION installed over WORK/NAME without its dependencies, for a release
# whose own requirements the reachable index cannot satisfy. Its suite then runs with USE_HUB_KERNELS=0 (WORK/NAME.env),
# as a user without the `kernels` package that release requires must set.
force_release() {
    "$WORK/$1/bin/python" -m pip install --no-deps "transformers==$2" >> "$WORK/$1-install.log" 2>&1 \
        || { tail -20 "$WORK/$1-install.log"; exit 1; }
    echo "USE_HUB_KERNELS=0" > "$WORK/$1.env"
}

# env_versions NAME: the transformers and torch releases in WORK/NAME
env_versions() {
    "$WORK/$1/bin/python" -c 'import torch, transformers; print(f"transformers {transformers.__version__}, torch {torch.__version__}")'
}

# fetch_common_tests NAME: transformers' tests/test_modeling_common.py and tests/test_configuration_common.py from
# the source distribution of the release installed in WORK/NAME, unpacked into WORK/NAME-transformers-tests
fetch_common_tests() {
    local version dir
    version="$(installed_release "$1")"
    dir="$WORK/$1-transformers-tests"
    mkdir -p "$dir"
    "$WORK/$1/bin/python" -m pip download --quiet --no-binary :all: --no-deps "transformers==$version" -d "$dir"
    tar xzf "$dir/transformers-$version.tar.gz" -C "$dir" --strip-components=2 \
        "transformers-$version/tests/test_modeling_common.py" "transformers-$version/tests/test_configuration_common.py"
    touch "$dir/__init__.py"
}

# run_suite NAME OTHER [CONSTRAINTS]: README's test command in WORK/NAME; the cross-version tests use WORK/OTHER,
# transformers' common tests the files fetch_common_tests unpacked
run_suite() {
    (
        source "$WORK/$1/bin/activate"
        export PIP_CONSTRAINT="${3:-}" GLM_HF_OTHER_PYTHON="$WORK/$2/bin/python"
        export GLM_HF_TRANSFORMERS_TESTS="$WORK/$1-transformers-tests"
        if [[ -f "$WORK/$1.env" ]]; then set -a; source "$WORK/$1.env"; set +a; fi
        echo "=== $1 environment: $(env_versions "$1")${USE_HUB_KERNELS:+, USE_HUB_KERNELS=$USE_HUB_KERNELS}"
        echo "=== $CHECK_COMMAND (installed with: $INSTALL_COMMAND)"
        "$CHECK_COMMAND"
    )
}
