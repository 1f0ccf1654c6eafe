"""The per-request 2D layout (no engine): positions of prompts and generated tokens equal glm-hf's, and prompts GLM
cannot lay out are refused with a message that says how to fix them."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from glm_hf_vllm.layout import LayoutError, prompt_layout
from glm_hf_vllm.settings import GLMSettings


def settings_of(folder: str) -> GLMSettings:
    return GLMSettings.from_hf_config(SimpleNamespace(**json.loads((Path(folder) / "config.json").read_text())))


@pytest.mark.parametrize("name", ["glm", "chatglm"])
def test_positions_equal_glm_hf(expected, name):
    """Every token's 2D position, prompt and generated alike, is the one glm-hf's generate() gives it."""
    model = expected["models"][name]
    settings = settings_of(model["path"])
    stride = settings.max_positions
    for case in [*model["prompts"], model["chat"]]:
        layout = prompt_layout(case["ids"], settings.layout_tokens, stride)
        starts_span = settings.layout_tokens.sop_id in case["ids"]
        assert layout.starts_span == starts_span
        length = len(case["ids"]) + (0 if starts_span else 1) + len(case["answer"])
        encoded = layout.positions + [layout.delta + t for t in range(len(case["ids"]), length)]
        assert [[s // stride, s % stride] for s in encoded] == case["positions"], (
            case["text"] if "text" in case else ""
        )


def test_gmask_first_changes_the_filled_blank(expected):
    """A prompt holding [MASK] before [gMASK]: GLM fills [MASK], ChatGLM-style configs fill [gMASK]."""
    glm, chatglm = (settings_of(expected["models"][name]["path"]) for name in ("glm", "chatglm"))
    ids = [20, 4, 21, 6]  # text [MASK] text [gMASK]
    assert prompt_layout(ids, glm.layout_tokens, 128).delta == 1 * 128 + 1 - len(ids)
    assert prompt_layout(ids, chatglm.layout_tokens, 128).delta == 3 * 128 + 1 - len(ids)


def test_prompt_without_blank_is_refused(expected):
    settings = settings_of(expected["models"]["glm"]["path"])
    with pytest.raises(LayoutError, match=r"end it with \[gMASK\]"):
        prompt_layout([20, 21, 22], settings.layout_tokens, 128)
    with pytest.raises(LayoutError, match="no blank"):
        prompt_layout([20, 7, 21], settings.layout_tokens, 128)  # <|startofpiece|> before any blank


def test_more_spans_than_blanks_is_refused(expected):
    settings = settings_of(expected["models"]["glm"]["path"])
    with pytest.raises(LayoutError, match="2 spans"):
        prompt_layout([20, 4, 7, 21, 7, 22], settings.layout_tokens, 128)


def test_unsupported_config_is_refused_by_name(expected):
    config = json.loads((Path(expected["models"]["glm"]["path"]) / "config.json").read_text())
    with pytest.raises(ValueError, match="position_encoding='alibi'"):
        GLMSettings.from_hf_config(SimpleNamespace(**{**config, "position_encoding": "alibi"}))
    with pytest.raises(ValueError, match="model_type 'glm_hf'"):
        GLMSettings.from_hf_config(SimpleNamespace(**{**config, "model_type": "chatglm"}))
