"""GLMForCausalLM keeps the causal-LM contract: strictly left to right, padding-proof, HF's shifted labels, and a
generate() that composes with transformers' machinery (cache continuation, inputs_embeds, assisted decoding, static
cache)."""

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration
from glm_hf.model.transformers_compat import CACHE_FIELD, output_cache
from tests.helpers.tiny import random_words, tiny_config

VARIANTS = {
    "glm": {},
    "chatglm": dict(position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False),
    "glm130b": dict(position_encoding="rotary_2d", layernorm_style="deepnorm", use_glu=True),
}


def causal_model(seed: int = 0, **overrides) -> GLMForCausalLM:
    torch.manual_seed(seed)
    return GLMForCausalLM(tiny_config(initializer_range=0.3, **overrides)).eval()


def words(*shape: int, seed: int = 0) -> torch.Tensor:
    return random_words(torch.Generator().manual_seed(seed), *shape)


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_never_depend_on_later_tokens(variant):
    model = causal_model(**VARIANTS[variant])
    ids = words(2, 12)
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1 - 9) % 51 + 9
    for use_cache in (True, False):
        logits = model(ids, use_cache=use_cache).logits
        assert torch.equal(model(changed, use_cache=use_cache).logits[:, :7], logits[:, :7])


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_on_either_side_leaves_real_logits_unchanged(variant):
    model = causal_model(**VARIANTS[variant])
    ids = words(2, 10)
    reference = model(ids).logits
    pad, ones = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 10, dtype=torch.long)
    for use_cache in (True, False):
        left = model(torch.cat([pad, ids], 1), attention_mask=torch.cat([pad, ones], 1), use_cache=use_cache)
        right = model(torch.cat([ids, pad], 1), attention_mask=torch.cat([ones, pad], 1), use_cache=use_cache)
        torch.testing.assert_close(left.logits[:, 3:], reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(right.logits[:, :10], reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_is_read_as_a_gmask_span_with_the_seq2seq_heads_weights(variant):
    """The causal face is GLM's own left-to-right layout: `[gMASK] <sop> text` scored by the same weights."""
    model = causal_model(**VARIANTS[variant])
    seq2seq = GLMForConditionalGeneration(model.config).eval()
    seq2seq.load_state_dict(model.state_dict())
    ids = words(2, 9)
    config = model.config
    layout = torch.cat([torch.tensor([[config.gmask_token_id, config.sop_token_id]] * 2), ids], 1)
    positions = torch.stack([torch.zeros(2, 11, dtype=torch.long), torch.arange(11).expand(2, 11)], 1)
    expected = seq2seq(layout, position_ids=positions).logits[:, 2:]
    torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(ids, use_cache=False).logits, expected, atol=1e-5, rtol=1e-5)


def test_labels_follow_hf_causal_convention():
    model = causal_model()
    ids = words(2, 8)
    labels = ids.clone()
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, model.config.vocab_size), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)
    model.train()
    assert torch.isclose(model(ids, labels=labels).loss, expected, atol=1e-5)


def test_training_with_activation_checkpointing_gives_the_same_gradients():
    reference, checkpointed = causal_model().train(), causal_model().train()
    checkpointed.activation_checkpointing_enable()
    ids = words(2, 8)
    reference(ids, labels=ids).loss.backward()
    checkpointed(ids, labels=ids, use_cache=True).loss.backward()
    for (name, a), b in zip(reference.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_returns_input_plus_new_tokens_equal_to_step_by_step_greedy(variant):
    model = causal_model(**VARIANTS[variant])
    ids = words(2, 6)
    out = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert out.shape == (2, 11) and torch.equal(out[:, :6], ids)
    sequence = ids
    for _ in range(5):
        next_token = model(sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], 1)
    assert torch.equal(out, sequence)


def test_batched_left_padded_generation_matches_each_prompt_alone():
    model = causal_model()
    short, long = words(1, 3, seed=1), words(1, 6, seed=2)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 3), torch.ones(1, 3)], 1), torch.ones(1, 6)]).long()
    out = model.generate(batch, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=None)
    for row, prompt in enumerate((short, long)):
        alone = model.generate(prompt, max_new_tokens=4, do_sample=False, eos_token_id=None)
        assert torch.equal(out[row, -4:], alone[0, -4:])


def test_prompts_with_blank_tokens_are_plain_text_to_the_causal_head():
    """A typed [MASK] is an ordinary token: it does not open a bidirectional Part A, and generation just continues."""
    model = causal_model()
    ids = words(2, 6)
    ids[0, 2] = model.config.mask_token_id
    changed = ids.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 9) % 51 + 9
    assert torch.equal(model(changed).logits[:, :4], model(ids).logits[:, :4])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, eos_token_id=None)
    sequence = ids
    for _ in range(3):
        sequence = torch.cat([sequence, model(sequence).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, sequence)


def test_generation_continues_from_a_previous_output_and_its_cache():
    model = causal_model()
    ids = words(1, 5)
    options = dict(do_sample=False, eos_token_id=None, return_dict_in_generate=True)
    first = model.generate(ids, max_new_tokens=3, **options)
    continued = model.generate(first.sequences, **{CACHE_FIELD: output_cache(first)}, max_new_tokens=4, **options)
    whole = model.generate(ids, max_new_tokens=7, **options)
    assert torch.equal(continued.sequences, whole.sequences)


def test_inputs_embeds_in_forward_and_generate():
    model = causal_model()
    ids = words(2, 6)
    embeds = model.get_input_embeddings()(ids)
    mask = torch.ones_like(ids)
    for use_cache in (True, False):
        torch.testing.assert_close(
            model(inputs_embeds=embeds, attention_mask=mask, use_cache=use_cache).logits, model(ids).logits
        )
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=4, do_sample=False)
    from_ids = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(from_embeds, from_ids[:, 6:])


@pytest.mark.parametrize("assistant", ["draft_model", "itself", "prompt_lookup"])
def test_assisted_decoding_equals_greedy(assistant):
    model = causal_model()
    ids = torch.cat([words(1, 4), words(1, 4)], 1)  # repeated n-grams give prompt lookup candidates
    greedy = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None)
    options = {
        "draft_model": {"assistant_model": causal_model(seed=1, num_hidden_layers=1)},
        "itself": {"assistant_model": causal_model()},
        "prompt_lookup": {"prompt_lookup_num_tokens": 2},
    }[assistant]
    assisted = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, **options)
    assert torch.equal(assisted, greedy)


@pytest.mark.parametrize("variant", VARIANTS)
def test_static_cache_equals_dynamic_cache(variant):
    model = causal_model(**VARIANTS[variant])
    ids = words(2, 5)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    options = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert torch.equal(model.generate(ids, cache_implementation="static", **options), model.generate(ids, **options))


def test_beam_search_and_sampling_run():
    model = causal_model()
    ids = words(2, 4)
    beams = model.generate(ids, max_new_tokens=4, num_beams=3, num_return_sequences=2, eos_token_id=None)
    assert beams.shape == (4, 8) and torch.equal(beams[::2, :4], ids)
    sampled = model.generate(ids, max_new_tokens=4, do_sample=True, top_k=5, eos_token_id=None)
    assert sampled.shape == (2, 8)


def test_unpadded_unpacked_text_runs_attention_without_a_mask_tensor():
    """`[gMASK] <sop> text` is plain causal attention: without padding or packing, SDPA gets no mask tensor (its
    `is_causal` kernel); padding, packing and a KV cache after the prefix's stored keys need one."""
    masks = []

    def recording_sdpa(module, query, key, value, attention_mask, **kwargs):
        masks.append(attention_mask)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("glm_test_recording_sdpa", recording_sdpa)
    model = causal_model()
    model.set_attn_implementation("glm_test_recording_sdpa")
    ids = words(2, 8)
    reference = model(ids, use_cache=False).logits
    assert masks and all(mask is None for mask in masks)
    model.train()
    model(ids, labels=ids).loss.backward()
    model(ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert all(mask is None for mask in masks)
    model.eval()
    for inputs in (
        dict(attention_mask=torch.tensor([[0] + [1] * 7, [1] * 8])),
        dict(position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]] * 2)),
        dict(use_cache=True),
    ):
        masks.clear()
        model(ids, **{"use_cache": False, **inputs})
        assert all(isinstance(mask, torch.Tensor) for mask in masks), inputs
    torch.testing.assert_close(model(ids, use_cache=True).logits, reference, atol=1e-5, rtol=1e-5)


def test_clear_errors_for_long_inputs_and_glm_layouts():
    model = causal_model()
    too_long = words(1, model.config.max_position_embeddings - 1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(too_long)
    with pytest.raises(ValueError, match="2D padding mask"):
        model(words(1, 4), attention_mask=torch.tensor([3]))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


def test_auto_class_loads_any_glm_checkpoint_as_the_causal_head(tmp_path):
    torch.manual_seed(0)
    saved = GLMForConditionalGeneration(tiny_config()).eval()
    saved.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(model) is GLMForCausalLM
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    cache = DynamicCache(config=model.config)
    model(words(1, 4), cache=cache)
    assert cache.get_seq_length() == 4  # the prefix is never stored: the cache holds the caller's tokens only
