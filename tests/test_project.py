"""Project hygiene that CI relies on: README shows exactly the commands CI runs."""

import re
import subprocess

from tests.helpers.paths import REPO


def ci_variable(name: str) -> str:
    script = f'source .ci/envs.sh && printf %s "${name}"'
    return subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, check=True).stdout


def readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return [line for block in re.findall(r"```bash\n(.*?)```", readme, re.S) for line in block.splitlines()]


def test_readme_shows_the_test_command_ci_runs():
    assert ci_variable("TEST_COMMAND") in readme_commands()
    assert ci_variable("CHECK_COMMAND") == "scripts/check.sh"


def test_readme_quickstart_installs_the_cpu_torch_first_and_runs_the_demo():
    torch_pin = ci_variable("TORCH_PIN")
    assert f'pip install {torch_pin} && pip install -e ".[demo]" && glm-hf demo' in readme_commands()
