"""Fixtures of the vLLM suite: glm-hf's expected answers (made in glm-hf's own environment) and vLLM engines.

The expected answers come from `make_expected.py`, run with the interpreter of an environment where glm-hf is
installed: set `GLM_HF_PYTHON` to it (CI: the glm-hf venv's `bin/python`). This environment holds vLLM and the plugin
only; the two cannot share one (vLLM pins an older transformers than glm-hf needs).
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# Two cores: vLLM's CPU backend must not pin threads to cores other processes use, and 1 GiB of KV cache is plenty.
CPU_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
for _name, _value in CPU_ENV.items():
    os.environ.setdefault(_name, _value)

ENGINE_ARGS = dict(trust_remote_code=True, dtype="float32", max_model_len=128, enforce_eager=True, seed=0)


@pytest.fixture(scope="session")
def expected(tmp_path_factory) -> dict:
    """glm-hf's answers and the folders they came from (see make_expected.py)."""
    python = os.environ.get("GLM_HF_PYTHON")
    if not python:
        pytest.fail(
            "Set GLM_HF_PYTHON to the python of an environment with glm-hf installed (e.g. the repo's dev venv); "
            "the expected tokens are made there, since glm-hf and vLLM need different transformers releases."
        )
    out = tmp_path_factory.mktemp("glm_folders")
    result = subprocess.run(
        [python, str(HERE / "make_expected.py"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if result.returncode != 0:
        pytest.fail(f"make_expected.py failed under {python}:\n{result.stderr[-4000:]}")
    return json.loads((out / "expected.json").read_text())


@pytest.fixture(scope="module", params=["glm", "chatglm"])
def model_case(request, expected) -> tuple[str, dict]:
    return request.param, expected["models"][request.param]


# The GLM-style engine runs with vLLM's plain renderer (tokenizer_mode="hf"), the ChatGLM-style one with the plugin's
# default (which refuses prompts without a blank), so that both the refusal and the model's own guard are tested.
TOKENIZER_MODES = {"glm": "hf", "chatglm": "auto"}


@pytest.fixture(scope="module")
def llm(model_case):
    """One vLLM engine per tiny model, shared by the module's tests (engines take most of the suite's time)."""
    from vllm import LLM

    name, model = model_case
    engine = LLM(model=model["path"], tokenizer_mode=TOKENIZER_MODES[name], **ENGINE_ARGS)
    yield engine
    engine.llm_engine.engine_core.shutdown()
    del engine
    gc.collect()


def pytest_report_header(config) -> list[str]:
    import torch
    import transformers
    import vllm

    return [
        f"vllm {vllm.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}"
    ]
