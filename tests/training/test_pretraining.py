"""Pretraining helpers: packing, the Trainer run, blank filling, loss curve and model card; the pretrain CLI."""

import json
import re

import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from glm_hf import GLMConfig, GLMForConditionalGeneration, GLMTokenizer
from glm_hf.cli import main
from glm_hf.training.pretraining import fill_blanks, pack_documents, packed_dataset, pretrain, save_loss_curve
from tests.helpers.tiny import tiny_config

TEXTS = [
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "法国的首都是巴黎。",
    "Two plus three is five.",
] * 40


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(TEXTS, vocab_size=300)


def small_config(tokenizer: GLMTokenizer, **overrides) -> GLMConfig:
    return tiny_config(**{"vocab_size": len(tokenizer), "num_attention_heads": 2, **overrides})


@settings(max_examples=200, deadline=None)
@given(
    documents=st.lists(st.lists(st.integers(10, 99), max_size=30), max_size=12),
    row_length=st.integers(2, 16),
)
def test_packing_keeps_every_token_in_order_within_row_limits(documents, row_length):
    rows = pack_documents(documents, row_length, separator_id=3)
    assert [token for row in rows for token in row] == [token for doc in documents for token in [*doc, 3]]
    assert all(0 < len(row) <= row_length for row in rows)
    if all(documents):  # a separator never makes a row alone (the collator would have no text to blank)
        assert [3] not in rows
    if all(len(doc) < row_length for doc in documents):  # every document fits a row: rows hold whole documents
        assert all(row[-1] == 3 for row in rows) and len(rows) <= len(documents)


def test_packing_rejects_rows_without_room_for_a_separator():
    with pytest.raises(ValueError, match="row_length"):
        pack_documents([[10, 11]], 1, 3)


def test_packed_dataset_skips_empty_texts_and_names_a_missing_column(tokenizer):
    rows = packed_dataset(Dataset.from_dict({"text": ["Paris.", "", "  ", "Tokyo."]}), tokenizer, 32, "text")
    assert rows["input_ids"] == [tokenizer("Paris.")["input_ids"] + [3] + tokenizer("Tokyo.")["input_ids"] + [3]]
    with pytest.raises(ValueError, match="no column 'body'"):
        packed_dataset(Dataset.from_dict({"text": ["a"]}), tokenizer, 32, "body")


def test_pretrain_lowers_the_loss_and_checks_sizes(tokenizer, tmp_path):
    texts = Dataset.from_dict({"text": TEXTS})
    options = dict(row_length=24, max_steps=40, batch_size=8, learning_rate=3e-3, progress_bar=False)
    trainer = pretrain(texts, tokenizer, small_config(tokenizer), tmp_path, **options)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) >= 10 and losses[-1] < 0.8 * losses[0]
    with pytest.raises(ValueError, match="config.vocab_size"):
        pretrain(texts, tokenizer, small_config(tokenizer, vocab_size=100), tmp_path, **options)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        pretrain(texts, tokenizer, small_config(tokenizer, max_position_embeddings=20), tmp_path, **options)
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(texts.select(range(3)), tokenizer, small_config(tokenizer), tmp_path, **options)


@pytest.mark.parametrize("position_encoding", ["learned_2d", "rotary_2d"])
def test_pretrain_refuses_rows_past_the_positions_before_training(tokenizer, tmp_path, position_encoding):
    """Rotary models bound positions by max_position_embeddings too; pretrain() checked only learned ones, so a rotary
    run failed at a training step with a message about generation."""
    config = small_config(tokenizer, position_encoding=position_encoding, max_position_embeddings=20)
    expected = "row_length=24 needs positions up to 25.*max_position_embeddings=20.*row_length <= 18 or .* >= 26"
    with pytest.raises(ValueError, match=expected):
        pretrain(Dataset.from_dict({"text": TEXTS}), tokenizer, config, tmp_path, row_length=24, max_steps=2)
    assert not list(tmp_path.iterdir())  # refused before the Trainer ran


def test_fill_blanks_in_batches_equals_one_at_a_time(tokenizer):
    torch.manual_seed(0)
    model = GLMForConditionalGeneration(small_config(tokenizer))
    texts = ["The capital of France is [MASK].", "法国的首都是[MASK]。", "[MASK] plus three is five."]
    batched = fill_blanks(model, tokenizer, texts, max_new_tokens=5, batch_size=2)
    assert batched == [fill_blanks(model, tokenizer, [text], max_new_tokens=5)[0] for text in texts]
    assert all("[MASK]" not in fill and "<|endofpiece|>" not in fill for fill in batched)


def test_loss_curve_is_a_png_and_needs_logged_losses(tmp_path):
    save_loss_curve(
        [{"loss": 3.0, "step": 1}, {"loss": 2.0, "step": 2}, {"train_runtime": 1.0, "step": 2}], tmp_path / "c.png"
    )
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="logging_steps"):
        save_loss_curve([{"train_runtime": 1.0, "step": 2}], tmp_path / "d.png")


@pytest.mark.parametrize("kind", ["text", "jsonl"])
def test_pretrain_command_trains_and_saves_a_loadable_model(tmp_path, kind):
    if kind == "text":
        data = tmp_path / "corpus.txt"
        data.write_text("\n".join(TEXTS), encoding="utf-8")
        source = ["--train-file", str(data)]
    else:
        data = tmp_path / "corpus.jsonl"
        data.write_text("\n".join(json.dumps({"body": text}) for text in TEXTS), encoding="utf-8")
        source = ["--train-file", str(data), "--text-column", "body"]
    out = tmp_path / "model"
    main(
        ["pretrain", *source, "--output", str(out), "--vocab-size", "300", "--hidden-size", "32", "--num-layers",
         "1", "--num-heads", "2", "--row-length", "32", "--max-steps", "5", "--batch-size", "4"]
    )  # fmt: skip
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, GLMForConditionalGeneration) and model.config.vocab_size == len(tokenizer)
    assert model.config.mask_token_id == tokenizer.mask_token_id
    assert {"loss_curve.png", "README.md", "log_history.json", "model.safetensors"} <= {p.name for p in out.iterdir()}


def test_pretrain_command_reads_a_saved_dataset(tmp_path):
    from datasets import DatasetDict

    DatasetDict({"train": Dataset.from_dict({"text": TEXTS})}).save_to_disk(tmp_path / "saved")
    out = tmp_path / "model"
    main(
        ["pretrain", "--dataset", str(tmp_path / "saved"), "--output", str(out), "--vocab-size", "300",
         "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--row-length", "32", "--max-steps", "3",
         "--batch-size", "4"]
    )  # fmt: skip
    assert (out / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match="no split 'validation'"):
        main(
            [
                "pretrain",
                "--dataset",
                str(tmp_path / "saved"),
                "--split",
                "validation",
                "--output",
                str(out),
                "--overwrite",
            ]
        )


def test_pretrain_command_reports_bad_input(tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text(json.dumps({"body": "Paris."}), encoding="utf-8")
    with pytest.raises(SystemExit, match="no column 'text'"):
        main(["pretrain", "--train-file", str(data), "--output", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["pretrain", "--train-file", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "m")])
    (tmp_path / "a.txt").write_text("Paris.", encoding="utf-8")
    with pytest.raises(SystemExit, match="not both"):
        main(["pretrain", "--train-file", str(tmp_path / "a.txt"), str(data), "--output", str(tmp_path / "m")])
    (tmp_path / "newline.jsonl").write_text("\n", encoding="utf-8")
    (tmp_path / "blank.json").write_text(" \r\n\t\n", encoding="utf-8")
    for files in ([tmp_path / "newline.jsonl"], [data, tmp_path / "blank.json"]):
        with pytest.raises(SystemExit, match=re.escape(f"{files[-1]} holds no documents (only whitespace)")):
            main(["pretrain", "--train-file", *map(str, files), "--output", str(tmp_path / "m")])
