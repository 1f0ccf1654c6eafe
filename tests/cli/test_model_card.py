"""Model cards: the template fills from config and run info; YAML parses; demo/convert/pretrain/card write them."""

import json
import re

import pytest
from huggingface_hub import ModelCard

from glm_hf import GLMConfig
from glm_hf.cli import main
from glm_hf.model_card import CardInfo, build_model_card, variant_description, write_model_card
from tests.helpers.tiny import tiny_model

SECTIONS = ["## Intended use", "## How to use", "## Training", "## Evaluation", "## Quantization", "## Limitations"]


def check_card(path) -> ModelCard:
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert {"glm", "glm-hf"} <= set(data["tags"]) and data["license"]
    assert all(section in card.text for section in SECTIONS)
    assert "trust_remote_code=True" in card.text and "import glm_hf" in card.text
    return card


def test_card_fills_metadata_and_sections(tmp_path):
    info = CardInfo(title="My GLM", evaluation="| metric | value |\n|---|---|\n| exact | 0.5 |", datasets=["me/facts"])
    info.metrics = ["exact_match"]
    card = build_model_card(GLMConfig(vocab_size=100, num_hidden_layers=2), info, parameters=1234)
    card.save(tmp_path / "README.md")
    loaded = check_card(tmp_path / "README.md")
    assert loaded.data.datasets == ["me/facts"] and loaded.data.metrics == ["exact_match"]
    assert "# My GLM" in loaded.text and "1,234 parameters" in loaded.text and "| exact | 0.5 |" in loaded.text
    assert "Not quantized" in loaded.text


@pytest.mark.parametrize(
    ("switches", "phrase"),
    [
        ({}, "learned 2D positions"),
        ({"position_encoding": "rotary_2d", "layernorm_style": "post_alpha"}, "ChatGLM-6B-style"),
        ({"position_encoding": "rotary_2d", "layernorm_style": "deepnorm", "use_glu": True}, "GLM-130B-style"),
    ],
)
def test_variant_is_named_from_the_config(switches, phrase):
    assert phrase in variant_description(GLMConfig(**switches))


def test_card_command_rewrites_from_card_info_and_log_history(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    (tmp_path / "log_history.json").write_text(json.dumps([{"loss": 4.0, "step": 10}, {"loss": 2.5, "step": 20}]))
    main(["card", str(tmp_path), "--title", "Tiny", "--dataset", "me/data"])
    card = check_card(tmp_path / "README.md")
    assert "# Tiny" in card.text and "2.500 at step 20" in card.text and card.data.datasets == ["me/data"]
    assert json.loads((tmp_path / "card_info.json").read_text())["title"] == "Tiny"
    with pytest.raises(SystemExit, match="no config.json"):
        main(["card", str(tmp_path / "missing")])


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ('[{"loss": 4.0, "step": 10},', "is damaged \\(not valid JSON"),
        ('{"loss": 4.0, "step": 10}', "must be a JSON list of log entries"),
        ('[{"loss": 4.0, "step": 10}, {"loss": 2.5}]', "entry 1 has a loss but no 'step' key"),
        ('[{"loss": "low", "step": 10}]', "entry 0 has loss='low', which must be a number"),
    ],
)
def test_card_command_names_a_bad_log_history_and_its_entry(tmp_path, log, message):
    tiny_model().save_pretrained(tmp_path)
    (tmp_path / "log_history.json").write_text(log)
    with pytest.raises(SystemExit, match=f"glm-hf card: {re.escape(str(tmp_path / 'log_history.json'))}:? {message}"):
        main(["card", str(tmp_path)])


def test_write_model_card_without_info_uses_defaults(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    check_card(write_model_card(tmp_path))
