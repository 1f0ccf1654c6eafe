import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

# The helpers hold asserts that used to sit in test modules and conftest.py: pytest explains their failures too.
pytest.register_assert_rewrite("tests.helpers")

import torch  # noqa: E402

from glm_hf import GLMForConditionalGeneration  # noqa: E402
from tests.helpers.tiny import tiny_config  # noqa: E402


def pytest_report_header(config) -> str:
    """Every suite's log names the releases it ran on (CI runs it under several)."""
    import transformers

    kernels = os.environ.get("USE_HUB_KERNELS", "unset")
    releases = f"transformers {transformers.__version__}, torch {torch.__version__}"
    return f"glm-hf suite on {releases}; USE_HUB_KERNELS={kernels}"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def example_base(tmp_path_factory):
    """A saved tiny GLM (1 layer, hidden 32) on the demo tokenizer, without dropout so that runs are deterministic:
    the `--base` for runs of the examples."""
    from glm_hf.demo.run import load_demo_tokenizer

    tokenizer = load_demo_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(tokenizer), num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=160
    )
    folder = tmp_path_factory.mktemp("example_base")
    GLMForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def chatglm_chat(tmp_path_factory):
    """A converted tiny ChatGLM-6B folder with THUDM's chat template: (folder, THUDM state dict, THUDM config)."""
    from tests.helpers.chatglm_folder import write_converted_chatglm

    return write_converted_chatglm(tmp_path_factory.mktemp("chatglm_chat"))
