"""Data parallel: the fine-tuning example and `glm-hf pretrain` run unchanged on 2 CPU processes (torchrun and
`accelerate launch`, gloo), and 2 processes match 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoTokenizer

from glm_hf import GLMForConditionalGeneration, corpus
from glm_hf.training.pretraining import packed_dataset
from tests.helpers.examples import load_example
from tests.helpers.launch import free_port, torchrun
from tests.helpers.paths import EXAMPLES


def training_losses(folder: Path) -> list[float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


FINETUNE = ["--max-steps", "3", "--eval-pairs", "4"]


@pytest.fixture(scope="module")
def single_process(example_base, tmp_path_factory) -> Path:
    """The seq2seq example on 1 process with a batch of 8: the reference for the distributed runs."""
    finetune_seq2seq = load_example("finetune_seq2seq.py")

    output = tmp_path_factory.mktemp("single")
    finetune_seq2seq.main(["--base", str(example_base), *FINETUNE, "--output", str(output), "--batch-size", "8"])
    return output


def assert_same_training(distributed: Path, single: Path, base: Path) -> None:
    """Same losses and final weights; the tolerance is far below how far three AdamW steps at lr 1e-3 move them."""
    assert len(training_losses(distributed)) == 3
    assert training_losses(distributed) == pytest.approx(training_losses(single), rel=1e-5)
    trained, reference, initial = (load_file(folder / "model.safetensors") for folder in (distributed, single, base))
    assert reference.keys() <= trained.keys()  # DeepSpeed also writes the tied output layer
    for tied in trained.keys() - reference.keys():
        assert tied == "lm_head.weight" and torch.equal(trained[tied], trained["glm.word_embeddings.weight"])
    for name, weight in reference.items():
        torch.testing.assert_close(trained[name], weight, rtol=0, atol=2e-5, msg=name)
    assert max((reference[name] - initial[name]).abs().max() for name in reference) > 5e-4
    assert (distributed / "tokenizer.json").is_file()


def test_two_processes_match_one_process_with_the_same_global_batch(example_base, single_process, tmp_path):
    options = ["--base", str(example_base), *FINETUNE, "--output", str(tmp_path), "--batch-size", "4"]
    torchrun(EXAMPLES / "finetune_seq2seq.py", *options)
    assert_same_training(tmp_path, single_process, example_base)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_two_cpu_processes_matches_one_process(example_base, single_process, tmp_path, stage):
    pytest.importorskip("deepspeed")
    config = EXAMPLES / "distributed" / f"ds_zero{stage}.json"
    options = ["--base", str(example_base), *FINETUNE, "--output", str(tmp_path), "--batch-size", "4", "--deepspeed"]
    torchrun(EXAMPLES / "finetune_seq2seq.py", *options, str(config), env={"DS_ACCELERATOR": "cpu"})
    assert_same_training(tmp_path, single_process, example_base)


def test_pretrain_command_runs_under_accelerate_launch(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(corpus.documents()[:300]), encoding="utf-8")
    output = tmp_path / "pretrained"
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port())),
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
        *("-m", "glm_hf.cli", "pretrain", "--train-file", str(texts), "--output", str(output)),
        *("--max-steps", "2", "--batch-size", "4", "--row-length", "32", "--vocab-size", "300"),
        *("--hidden-size", "32", "--num-layers", "1", "--num-heads", "2"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    steps = [entry for entry in json.loads((output / "log_history.json").read_text()) if "loss" in entry]
    assert len(steps) == 2 and all(entry["loss"] > 0 for entry in steps)
    # An epoch is len(train dataloader) steps; with 2 processes of 4 rows a step covers 8 of the packed rows.
    tokenizer = AutoTokenizer.from_pretrained(output)
    rows = len(packed_dataset(Dataset.from_dict({"text": texts.read_text().splitlines()}), tokenizer, 32, "text"))
    assert 1 / steps[0]["epoch"] == pytest.approx(rows / 8, abs=1)
    assert result.stdout.count("saved model, tokenizer") == 1
    assert GLMForConditionalGeneration.from_pretrained(output).config.hidden_size == 32
