"""The fine-tuning examples run end to end (a few steps, on a tiny base model built from the demo tokenizer)."""

import pytest

from tests.helpers.examples import load_example


@pytest.fixture
def base(example_base) -> str:
    return str(example_base)


def test_finetune_cloze_reports_accuracy_against_the_majority(base, tmp_path, capsys):
    load_example("finetune_seq2seq.py")  # finetune_cloze imports it by name
    finetune_cloze = load_example("finetune_cloze.py")

    scores = finetune_cloze.main(
        ["--base", base, "--output", str(tmp_path), "--max-steps", "3", "--train-facts", "16"]
    )
    assert 0.0 <= scores["before"] <= 1.0 and 0.0 <= scores["after"] <= 1.0 and scores["majority"] == 0.5
    assert "majority baseline 0.500" in capsys.readouterr().out
    assert (tmp_path / "config.json").is_file()


def test_finetune_seq2seq_reports_generation_metrics(base, tmp_path, capsys):
    finetune_seq2seq = load_example("finetune_seq2seq.py")

    options = ["--max-steps", "3", "--eval-pairs", "8"]
    scores = finetune_seq2seq.main(["--base", base, "--output", str(tmp_path), *options])
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert "exact_match: before" in capsys.readouterr().out


def test_finetune_lora_saves_an_adapter_that_reloads_to_the_same_scores(base, tmp_path):
    pytest.importorskip("peft")
    load_example("finetune_seq2seq.py")  # finetune_lora imports it by name
    finetune_lora = load_example("finetune_lora.py")

    scores = finetune_lora.main(
        ["--base", base, "--output", str(tmp_path), "--max-steps", "3", "--eval-pairs", "8", "--rank", "2"]
    )
    assert scores["reloaded"] == scores["after"] and 0.0 < scores["trainable"] < 0.5
    assert (tmp_path / "adapter_model.safetensors").is_file()
