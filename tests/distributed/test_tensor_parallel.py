"""Tensor parallelism: `examples/distributed/tp_inference.py` loads a saved GLM with `tp_plan="auto"` on 2 CPU
processes (torchrun, gloo) and gets the unsharded model's logits and greedy tokens, for the GLM layout (learned 2D
positions, tied embeddings) and a ChatGLM-style one with GeGLU (rotary 2D, post-LN alpha, separate LM head)."""

from pathlib import Path

import pytest
import torch

from glm_hf import GLMForConditionalGeneration, GLMModel
from glm_hf.demo.run import load_demo_tokenizer
from glm_hf.model.transformers_compat import TP_STYLE_GLU_UP
from tests.helpers.launch import torchrun
from tests.helpers.paths import EXAMPLES
from tests.helpers.tiny import tiny_config

EXAMPLE = EXAMPLES / "distributed" / "tp_inference.py"
CHATGLM_GEGLU = dict(
    position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False, use_glu=True
)


def saved_model(folder: Path, **overrides) -> None:
    """A tiny GLM on the demo tokenizer with large random weights and non-zero biases, so that a wrongly sharded
    weight or bias (e.g. a GeGLU bias split contiguously) shows in the logits and the greedy tokens."""
    tokenizer = load_demo_tokenizer()
    torch.manual_seed(0)
    model = GLMForConditionalGeneration(tiny_config(vocab_size=len(tokenizer), initializer_range=0.3, **overrides))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("overrides", [{}, CHATGLM_GEGLU], ids=["glm", "chatglm-geglu"])
def test_two_process_tensor_parallel_matches_one_process(tmp_path, overrides):
    folder, dump = tmp_path / "model", tmp_path / "tp.pt"
    saved_model(folder, **overrides)
    result = torchrun(EXAMPLE, "--model", str(folder), "--max-new-tokens", "8", "--dump", str(dump), nprocs=2)
    assert "2 tensor-parallel processes" in result.stdout and "[MASK]. -> " in result.stdout

    sharded = torch.load(dump)
    model = GLMForConditionalGeneration.from_pretrained(folder).eval()
    batch = {"input_ids": sharded["input_ids"], "attention_mask": sharded["attention_mask"]}
    with torch.no_grad():
        logits = model(**batch).logits
        generated = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert logits.abs().max() > 1.0  # large enough that a mis-sharded layer cannot hide in the tolerance
    torch.testing.assert_close(sharded["logits"], logits, rtol=0, atol=2e-5)
    assert torch.equal(sharded["generated"], generated)
    assert generated.shape[1] > batch["input_ids"].shape[1] + 1  # it generated beyond <|startofpiece|>


@pytest.mark.parametrize("use_glu", [False, True])
def test_tp_plan_covers_every_projection_and_is_not_serialized(use_glu):
    model = GLMModel(tiny_config(use_glu=use_glu))
    up_style = TP_STYLE_GLU_UP if use_glu else "colwise"
    assert model.tp_plan == {
        "word_embeddings": "embedding_rowwise",
        "layers.*.attention.query_key_value": "colwise",
        "layers.*.attention.dense": "rowwise",
        "layers.*.mlp.dense_h_to_4h": up_style,
        "layers.*.mlp.dense_4h_to_h": "rowwise",
    }
    head = GLMForConditionalGeneration(tiny_config(use_glu=use_glu))
    assert head.tp_plan["glm.layers.*.mlp.dense_h_to_4h"] == up_style
    assert head.tp_plan["lm_head"] == "colwise_gather_output"
    assert "base_model_tp_plan" not in head.config.to_dict()
