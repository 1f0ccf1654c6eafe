import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from glm_hf import GLMConfig, GLMForConditionalGeneration  # noqa: E402

MASK, SMASK, GMASK, SOP, EOP, PAD = 4, 5, 6, 7, 8, 0


def pytest_report_header(config) -> str:
    """Every suite's log names the releases it ran on (CI runs it under several)."""
    import transformers

    kernels = os.environ.get("USE_HUB_KERNELS", "unset")
    releases = f"transformers {transformers.__version__}, torch {torch.__version__}"
    return f"glm-hf suite on {releases}; USE_HUB_KERNELS={kernels}"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def tiny_config(**overrides) -> GLMConfig:
    """A GLM small enough for fast tests; dropout off so runs are deterministic."""
    values = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    values.update(overrides)
    return GLMConfig(**values)


def tiny_model(seed: int = 0, attn: str = "sdpa", **overrides) -> GLMForConditionalGeneration:
    torch.manual_seed(seed)
    model = GLMForConditionalGeneration(tiny_config(**overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def random_words(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Random ordinary token ids (never a special token)."""
    return torch.randint(9, 60, shape, generator=generator)


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


def other_python() -> str:
    """The interpreter of a second environment with another transformers release (`.ci/run` sets
    GLM_HF_OTHER_PYTHON: the minimum release for the newest suite and the other way round). Cross-version tests
    skip without it locally, and fail in CI, where it must be set."""
    python = os.environ.get("GLM_HF_OTHER_PYTHON")
    if not python:
        if os.environ.get("CI"):
            pytest.fail("GLM_HF_OTHER_PYTHON is not set: CI must run the cross-version tests (see .ci/run).")
        pytest.skip("set GLM_HF_OTHER_PYTHON to a Python whose environment has another transformers release")
    return python


SPECIALS = ["<pad>", "<unk>", "[CLS]", "<eos>", "[MASK]", "[sMASK]", "[gMASK]", "<|startofpiece|>", "<|endofpiece|>"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose special ids match GLMConfig's defaults (the GLM tokenizer is a
    separate issue; this one only has to agree on ids)."""
    vocab = {token: i for i, token in enumerate(SPECIALS)} | {f"w{i}": i for i in range(9, 60)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        mask_token="[MASK]",
        additional_special_tokens=SPECIALS[5:],
    )
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture(scope="session")
def chatglm_chat(tmp_path_factory):
    """A converted tiny ChatGLM-6B folder with THUDM's chat template: (folder, THUDM state dict, THUDM config)."""
    from chatglm_folder import write_converted_chatglm

    return write_converted_chatglm(tmp_path_factory.mktemp("chatglm_chat"))


class ChatServer:
    """A `glm-hf serve` subprocess on a free local port (a real server: uvicorn, the CLI, the engine thread)."""

    API_KEY = "test-key"

    def __init__(self, folder, log_path, *options: str):
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")  # noqa: SIM115  (closed in stop)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "glm_hf.cli", "serve", str(folder), "--port", str(self.port)]
        command += ["--model-name", "tiny-chatglm", "--api-key", self.API_KEY, *options]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"glm-hf serve did not start: {open(log_path).read()[-3000:]}")

    def client(self, **options):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.API_KEY, max_retries=0, **options)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def chat_server(chatglm_chat, tmp_path_factory):
    server = ChatServer(
        chatglm_chat[0],
        tmp_path_factory.mktemp("serve") / "server.log",
        "--max-tokens",
        "64",
        "--max-body-bytes",
        "20000",
    )
    yield server
    server.stop()
