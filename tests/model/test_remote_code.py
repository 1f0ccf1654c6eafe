"""Saved folders carry their code: they load with `trust_remote_code=True` where glm_hf is not installed, and
`push_to_hub` uploads exactly those files."""

import json
import os
from unittest import mock

import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError

from glm_hf import GLMForConditionalGeneration, GLMTokenizer
from tests.helpers.clean_process import load_in_clean_process
from tests.helpers.tiny import tiny_config

CLEAN_LOAD = """
import sys
sys.modules["glm_hf"] = None  # this user does not have glm_hf: importing it fails
import torch
from transformers import AutoModelForMultipleChoice, AutoModelForSeq2SeqLM, AutoTokenizer
folder, out = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
choice = AutoModelForMultipleChoice.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
batch = tokenizer(["The capital of France is [MASK].", "北京是[MASK]的首都。"], padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    choices = tokenizer.build_inputs_for_multiple_choice(tokenizer(["Paris is in [MASK]."]), [["France", "Japan"]])
    scores = choice(**choices).logits
torch.save({"ids": batch["input_ids"], "logits": logits, "generated": generated, "scores": scores}, out)
"""

TEXTS = ["The capital of France is Paris.", "北京是中国的首都。", "Paris is in France, Tokyo in Japan."] * 30


def saved_model(folder) -> tuple[GLMForConditionalGeneration, GLMTokenizer]:
    tokenizer = GLMTokenizer.train_bpe(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), initializer_range=0.3)
    model = GLMForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_saved_folder_loads_without_glm_hf_and_gives_identical_outputs(tmp_path):
    folder = tmp_path / "glm-remote"
    model, tokenizer = saved_model(folder)
    expected_files = {
        "configuration_glm.py",
        "modeling_glm.py",
        "blank_infilling.py",
        "tokenization_glm.py",
        "transformers_compat.py",
        "hub_glm.py",
    }
    assert expected_files <= {p.name for p in folder.iterdir()}
    remote = load_in_clean_process(CLEAN_LOAD, folder, tmp_path)
    batch = tokenizer(["The capital of France is [MASK].", "北京是[MASK]的首都。"], padding=True, return_tensors="pt")
    assert torch.equal(remote["ids"], batch["input_ids"])
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(**batch).logits)
        assert torch.equal(remote["generated"], model.generate(**batch, max_new_tokens=6, do_sample=False))
    assert remote["scores"].shape == (1, 2) and torch.isfinite(remote["scores"]).all()


def test_push_to_hub_uploads_weights_code_config_and_tokenizer(tmp_path):
    model, tokenizer = saved_model(tmp_path / "local")
    commits = []

    def fake_commit(self, repo_id, operations, **kwargs):
        commits.append({op.path_in_repo: _content(op.path_or_fileobj) for op in operations})
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message="",
            commit_description="",
            oid="0" * 40,
        )

    with (
        mock.patch.object(
            HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}")
        ),
        mock.patch.object(HfApi, "create_commit", fake_commit),
        mock.patch.object(ModelCard, "load", side_effect=EntryNotFoundError("no card yet")),
    ):
        model.push_to_hub("someone/glm-tiny", token="dummy", tags=["my-tag"])
        tokenizer.push_to_hub("someone/glm-tiny", token="dummy")
    model_files, tokenizer_files = commits
    assert set(model_files) >= {
        "config.json",
        "configuration_glm.py",
        "modeling_glm.py",
        "blank_infilling.py",
        "transformers_compat.py",
        "hub_glm.py",
        "generation_config.json",
        "model.safetensors",
    }
    tokenizer_expected = {"tokenization_glm.py", "blank_infilling.py", "tokenizer.json", "tokenizer_config.json"}
    assert set(tokenizer_files) >= tokenizer_expected

    card = model_files["README.md"].decode()
    assert "## Intended use" in card and "trust_remote_code=True" in card and "library_name: transformers" in card
    assert "- my-tag" in card and "- glm-hf" in card
    config = json.loads(model_files["config.json"])
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_glm.GLMForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_glm.GLMConfig"
    tokenizer_config = json.loads(tokenizer_files["tokenizer_config.json"])
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_glm.GLMTokenizer"
    source = (tmp_path / "local" / "modeling_glm.py").read_bytes()
    assert model_files["modeling_glm.py"] == source and b"import glm_hf" not in source


def _content(path_or_fileobj) -> bytes:
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        with open(path_or_fileobj, "rb") as handle:
            return handle.read()
    return path_or_fileobj if isinstance(path_or_fileobj, bytes) else path_or_fileobj.read()


QUANTIZED_LOAD = """
import sys
sys.modules["glm_hf"] = None
import torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
layer = model.glm.layers[0].mlp.dense_h_to_4h
assert type(layer).__name__ == "QuantizedLinear" and layer.weight.dtype == torch.uint8, type(layer)
with torch.no_grad():
    torch.save(model(torch.tensor([[10, 11, 4, 12]])).logits, sys.argv[2])
"""


def test_quantized_folder_loads_without_glm_hf(tmp_path):
    from glm_hf.model.quantization import GLMQuantizationConfig

    model, _ = saved_model(tmp_path / "float")
    quantized = GLMForConditionalGeneration.from_pretrained(
        tmp_path / "float", quantization_config=GLMQuantizationConfig(bits=4, method="zeropoint", group_size=16)
    ).eval()
    quantized.save_pretrained(tmp_path / "int4")
    remote = load_in_clean_process(QUANTIZED_LOAD, tmp_path / "int4", tmp_path)
    with torch.no_grad():
        assert torch.equal(remote, quantized(torch.tensor([[10, 11, 4, 12]])).logits)
