"""Pipeline parallelism: `examples/distributed/pipeline_parallel.py` splits a GLM into 2 stages on 2 CPU processes
(torchrun, gloo) and, with each schedule (GPipe, 1F1B), gets the unsplit model's loss, gradients and updated
weights on the same global batches; once for the GLM layout (learned 2D positions, tied embeddings: the first and
last stage share the word embedding) and once for a GLM-130B-style one (rotary 2D, DeepNorm, GeGLU, embedding
gradient shrink, separate LM head)."""

import re

import pytest
import torch

from glm_hf import GLMForConditionalGeneration
from glm_hf.demo.run import load_demo_tokenizer
from tests.helpers.examples import load_example
from tests.helpers.launch import torchrun
from tests.helpers.paths import EXAMPLES
from tests.helpers.tiny import tiny_config

EXAMPLE = EXAMPLES / "distributed" / "pipeline_parallel.py"
GLM_130B_STYLE = dict(
    position_encoding="rotary_2d",
    layernorm_style="deepnorm",
    use_glu=True,
    embedding_grad_shrink=0.1,
    tie_word_embeddings=False,
)
CHECK_LINE = re.compile(r"check step (\d+) .*loss (\S+), grads (\S+) \(largest grad (\S+)\), weights after step (\S+)")


def tiny_glm(**overrides) -> GLMForConditionalGeneration:
    """A 4-layer GLM on the demo tokenizer (so the example's corpus batches fit its vocabulary)."""
    torch.manual_seed(0)
    return GLMForConditionalGeneration(
        tiny_config(vocab_size=len(load_demo_tokenizer()), num_hidden_layers=4, **overrides)
    )


@pytest.mark.parametrize(
    ("schedule", "overrides"), [("gpipe", {}), ("1f1b", GLM_130B_STYLE)], ids=["gpipe-glm", "1f1b-glm130b"]
)
def test_two_stage_pipeline_matches_the_unsplit_model(tmp_path, schedule, overrides):
    folder = tmp_path / "model"
    tiny_glm(**overrides).save_pretrained(folder)
    options = ["--batch-size", "8", "--microbatches", "4", "--seq-length", "48", "--steps", "2"]
    result = torchrun(
        EXAMPLE, "--model", str(folder), "--schedule", schedule, *options, "--optimizer", "sgd", "--check", nprocs=2
    )
    checks = [[float(value) for value in match.groups()] for match in CHECK_LINE.finditer(result.stdout)]
    assert [int(step) for step, *_ in checks] == [1, 2], result.stdout
    for _, loss, grads, largest_grad, weights in checks:
        # The example asserts these itself; the largest gradient shows the comparison is not vacuous.
        assert max(loss, grads, weights) <= 1e-5 and largest_grad > 1e-2, result.stdout
    losses = [float(loss) for loss in re.findall(r"^step \d+: loss (\S+)", result.stdout, flags=re.MULTILINE)]
    assert len(losses) == 2 and losses[1] < losses[0], result.stdout


@pytest.mark.parametrize("overrides", [{}, GLM_130B_STYLE], ids=["glm", "glm130b"])
def test_chained_stage_modules_reproduce_the_model_logits(overrides):
    """In one process: the stage modules, run one after another, give the model's logits."""
    example = load_example("distributed/pipeline_parallel.py")
    GLMPipelineStage, stage_layer_ranges = example.GLMPipelineStage, example.stage_layer_ranges

    model = tiny_glm(**overrides).train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(9, model.config.vocab_size, (3, 12), generator=generator)
    input_ids[:, 7], input_ids[:, 3] = 7, 4  # Part B starts at 7; the blank it fills is at 3
    part_a = torch.tensor([7, 7, 7])
    position_ids = torch.stack([torch.arange(12).expand(3, 12), torch.zeros(3, 12, dtype=torch.long)], dim=1)
    position_ids[:, 0, 7:], position_ids[:, 1, 7:] = 3, torch.arange(1, 6)
    expected = model(input_ids, attention_mask=part_a, position_ids=position_ids).logits

    ranges = stage_layer_ranges(model.config.num_hidden_layers, 3)
    assert ranges == [(0, 2), (2, 3), (3, 4)]
    stages = [GLMPipelineStage(model, start, end, i == 0, i == 2) for i, (start, end) in enumerate(ranges)]
    boundary = (input_ids, part_a, position_ids)
    for stage in stages[:-1]:
        boundary = stage(*boundary)
    logits = stages[-1](*boundary)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_layer_ranges_are_contiguous_and_balanced():
    stage_layer_ranges = load_example("distributed/pipeline_parallel.py").stage_layer_ranges

    assert stage_layer_ranges(7, 3) == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError, match="cannot fill"):
        stage_layer_ranges(2, 3)
