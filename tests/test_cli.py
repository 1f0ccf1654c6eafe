"""The `glm-hf` command line."""

from transformers import AutoModelForSeq2SeqLM

from glm_hf import GLMForConditionalGeneration
from glm_hf.cli import main


def test_tiny_trains_generates_and_saves(tmp_path, capsys):
    main(["tiny", "--steps", "60", "--eval-prompts", "5", "--save", str(tmp_path)])
    printed = capsys.readouterr().out
    losses = [float(line.split("loss")[1]) for line in printed.splitlines() if line.startswith("step")]
    assert losses[-1] < losses[0]
    assert "exact fills:" in printed
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(tmp_path), GLMForConditionalGeneration)
