"""A folder saved under one transformers release loads with `trust_remote_code=True`, without glm_hf, under another
release (the newest and the declared minimum, both ways across CI's two suites) and gives identical logits and
greedy tokens, through the seq2seq head (blank filling) and the causal head (plain continuation)."""

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.environments import other_python

SAVE = """
import sys
import torch, transformers
from glm_hf import GLMConfig, GLMForCausalLM, GLMForConditionalGeneration, GLMTokenizer
folder, variant, out = sys.argv[1:]
texts = ["The capital of France is Paris.", "北京是中国的首都。", "Paris is in France, Tokyo in Japan."] * 30
tokenizer = GLMTokenizer.train_bpe(texts, vocab_size=300)
chatglm = dict(position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False)
switches = {"glm": {}, "chatglm": chatglm}
torch.manual_seed(0)
config = GLMConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0, initializer_range=0.3,
                   **switches[variant])
model = GLMForConditionalGeneration(config).eval()
model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
causal = GLMForCausalLM.from_pretrained(folder).eval()
"""

LOAD = """
import sys
sys.modules["glm_hf"] = None  # this user does not have glm_hf: importing it fails
import torch, transformers
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
folder, out = sys.argv[1:]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
causal = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(causal).__name__ == "GLMForCausalLM", type(causal)
"""

# Run after SAVE or LOAD (with `tokenizer`, `model`, `causal` and `out` defined): what both sides must agree on.
OUTPUTS = """
batch = tokenizer(["The capital of France is [MASK].", "北京是[MASK]的首都。"], padding=True, return_tensors="pt")
plain = tokenizer(["The capital of France is", "北京是"], padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    causal_logits = causal(**plain).logits
    continued = causal.generate(**plain, max_new_tokens=6, do_sample=False)
torch.save({"version": transformers.__version__, "logits": logits, "generated": generated,
            "causal_logits": causal_logits, "continued": continued}, out)
"""


def run_script(python: str, script: str, args: list, cwd, isolated: bool = False) -> dict:
    """Runs `script ARGS... OUT` with `python` and a fresh HF cache (with `isolated`, as `python -I`, where only the
    interpreter's own site-packages count); returns what the script saved to OUT."""
    out = cwd / f"out-{len(list(cwd.glob('out-*')))}.pt"
    env = {**os.environ, "HF_HOME": str(cwd / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    command = [python, *(["-I"] if isolated else []), "-c", script, *map(str, args), str(out)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.mark.parametrize("variant", ["glm", "chatglm"])
def test_folder_saved_under_this_release_loads_under_the_other(tmp_path, variant):
    """This interpreter's release saves, the other's loads; CI runs the suite under both releases, so each direction
    is tested once."""
    saver, loader = sys.executable, other_python()
    folder = tmp_path / "saved"
    saved = run_script(saver, SAVE + OUTPUTS, [folder, variant], tmp_path)
    loaded = run_script(loader, LOAD + OUTPUTS, [folder], tmp_path, isolated=True)
    assert saved["version"] != loaded["version"], "both interpreters have the same transformers release"
    for output in ("logits", "generated", "causal_logits", "continued"):
        assert torch.equal(loaded[output], saved[output]), output
