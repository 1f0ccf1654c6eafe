"""Flex attention for every head: GLM's masks become block masks whose `mask_mod` is the mask's own rule (GLM's
prefix-LM rule, the causal head's prefix and documents, a caller's 4D mask), and every head's outputs equal SDPA's
and eager's. On CPU, torch's flex attention runs forward only (no backward), so these are inference checks."""

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from glm_hf import (
    GLMForCausalLM,
    GLMForConditionalGeneration,
    GLMForMultipleChoice,
    GLMForSequenceClassification,
    GLMModel,
)
from glm_hf.model.blank_infilling import (
    GLMMask,
    LeftToRightMask,
    TensorMask,
    batch_multiple_choice,
    document_ids,
    multiple_choice_layout,
)
from tests.helpers.tiny import MASK, SOP, random_words, tiny_config
from tests.model.test_modeling import infill_batch

ATTENTIONS = ("eager", "sdpa", "flex_attention")
BLANKS = [4, 5, 6]


def outputs_by_attention(head: type, run, **overrides) -> dict[str, object]:
    """`run(model)` for the same weights under each attention implementation."""
    outputs = {}
    for attention in ATTENTIONS:
        torch.manual_seed(0)
        model = head(tiny_config(initializer_range=0.3, **overrides)).eval()
        model.set_attn_implementation(attention)
        with torch.no_grad():
            outputs[attention] = run(model)
    return outputs


def assert_all_equal(outputs: dict[str, object]) -> None:
    for attention in ("sdpa", "flex_attention"):
        for got, expected in zip(outputs[attention], outputs["eager"], strict=True):
            if got.is_floating_point():
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=attention)
            else:
                assert torch.equal(got, expected), attention


def words(*shape: int, seed: int = 0) -> torch.Tensor:
    return random_words(torch.Generator().manual_seed(seed), *shape)


def rules() -> dict[str, tuple[object, int, int]]:
    """Mask rules with the (query, key) sizes they cover: every form GLM builds."""
    padding = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 0]])
    documents = document_ids(positions, None)
    shared_prefix = torch.ones(2, 1, 7, 7).tril().bool()
    shared_prefix[:, :, 5:, 4] = False
    return {
        "part_a": (GLMMask(torch.tensor([3, 5]), 7), 7, 7),
        "padding_and_cache": (GLMMask(torch.tensor([3, 0]), 9, padding, query_offset=2), 7, 9),
        "static_cache_slots": (GLMMask(torch.tensor([2, 2]), 12, padding, query_offset=2), 5, 12),
        "documents": (GLMMask(None, 7, documents=documents), 7, 7),
        "tensor": (TensorMask(shared_prefix), 7, 7),
        "prefix_then_text": (LeftToRightMask(GLMMask(None, 7, padding, documents=documents), True), 9, 9),
        "text_after_stored_prefix": (LeftToRightMask(GLMMask(None, 7, padding, query_offset=4), False), 3, 9),
    }


@pytest.mark.parametrize("name", list(rules()))
def test_the_block_masks_rule_is_the_dense_mask(name):
    """flex attention evaluates a rule on index tensors (`mask_mod`); eager and SDPA get its dense form."""
    rule, query_length, key_length = rules()[name]
    as_mask_mod = create_mask(rule, 2, 1, query_length, key_length, device="cpu")
    assert torch.equal(as_mask_mod, rule.dense(2, query_length, key_length, "cpu").expand(2, 1, -1, -1))


def test_base_model_with_glm_layouts():
    batch = infill_batch()
    padding = torch.ones(3, batch["input_ids"].shape[1], dtype=torch.long)
    padding[0, :2] = 0

    def run(model):
        return (
            model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state,
            model(batch["input_ids"], attention_mask=padding).last_hidden_state,
        )

    assert_all_equal(outputs_by_attention(GLMModel, run))


def test_seq2seq_head_infills_and_generates():
    batch = infill_batch()
    prompts = torch.tensor([[10, 11, MASK, 12, 13], [0, 14, 15, MASK, 16]])
    padding = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])

    def run(model):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        generated = model.generate(prompts, attention_mask=padding, max_new_tokens=5, eos_token_id=None)
        return logits, generated

    assert_all_equal(outputs_by_attention(GLMForConditionalGeneration, run))


def test_causal_head_padded_packed_4d_cached_and_generating():
    ids = words(2, 9)
    padding = torch.ones_like(ids)
    padding[1, :3] = 0
    packed = words(1, 12, seed=1)
    packed_positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]])
    sees = torch.ones(1, 1, 6, 6).tril().bool()
    sees[:, :, 5, 4] = False

    def run(model):
        return (
            model(ids, attention_mask=padding, use_cache=False).logits,
            model(ids, attention_mask=padding, use_cache=True).logits,
            model(ids, use_cache=False).logits,
            model(packed, position_ids=packed_positions, use_cache=False).logits,
            model(ids[:1, :6], attention_mask=sees, position_ids=torch.tensor([[0, 1, 2, 3, 4, 4]])).logits,
            model.generate(ids, attention_mask=padding, max_new_tokens=5, eos_token_id=None),
        )

    assert_all_equal(outputs_by_attention(GLMForCausalLM, run))


def test_multiple_choice_and_classification_heads():
    layouts = [
        multiple_choice_layout([10, 11, MASK, 12], [[20, 21], [22], [23, 24, 25]], BLANKS, SOP),
        multiple_choice_layout([13, MASK, 14], [[26], [27, 28]], BLANKS, SOP),
    ]
    choices = batch_multiple_choice(layouts, 0)
    classification = dict(
        cloze_suffix_ids=[30, MASK, 31], verbalizer_ids=[[40], [41, 42]], id2label={0: "no", 1: "yes"}
    )
    texts = torch.tensor([[0, 0, 15, 16], [17, 18, 19, 20]])
    padding = (texts != 0).long()
    assert_all_equal(outputs_by_attention(GLMForMultipleChoice, lambda model: (model(**choices).logits,)))
    run = lambda model: (model(texts, attention_mask=padding).logits,)  # noqa: E731
    assert_all_equal(outputs_by_attention(GLMForSequenceClassification, run, **classification))
