"""generate(): blank filling with a KV cache, decoding strategies, batching and errors."""

import pytest
import torch

from glm_hf.model.transformers_compat import CACHE_FIELD, output_cache
from tests.helpers.tiny import EOP, GMASK, MASK, PAD, SMASK, SOP, random_words, tiny_model

VARIANTS = {
    "glm": {},
    "chatglm": dict(position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False),
    "glm130b": dict(position_encoding="rotary_2d", layernorm_style="deepnorm", use_glu=True),
}


def prompt(seed: int, before: int, after: int, blank: int = MASK) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([random_words(g, 1, before), torch.tensor([[blank]]), random_words(g, 1, after)], 1)


def greedy_by_full_recompute(model, ids: list[int], blank_index: int, steps: int) -> list[int]:
    """Fills the blank by re-running the whole sequence each step, with positions written out by hand."""
    part_a = len(ids)
    tokens = ids + [SOP]
    for _ in range(steps):
        span = len(tokens) - part_a
        positions = list(range(part_a)) + [blank_index] * span
        blocks = [0] * part_a + list(range(1, span + 1))
        with torch.no_grad():
            logits = model(
                torch.tensor([tokens]),
                attention_mask=torch.tensor([part_a]),
                position_ids=torch.tensor([[positions, blocks]]),
            ).logits
        tokens.append(int(logits[0, -1].argmax()))
    return tokens


def gen_model(seed: int = 0, attn: str = "sdpa", **overrides):
    """A random GLM whose greedy output varies from step to step (a tied, small-init model tends to repeat its
    last input token, which would make token comparisons weak)."""
    return tiny_model(seed=seed, attn=attn, **{"initializer_range": 0.3, "tie_word_embeddings": False, **overrides})


def no_stop(model) -> dict:
    """Generation kwargs that never stop early, so every strategy yields the same number of tokens."""
    return dict(eos_token_id=None, pad_token_id=PAD, min_new_tokens=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("blank", [MASK, SMASK, GMASK])
def test_greedy_matches_full_recompute_reference(variant, blank):
    model = gen_model(**VARIANTS[variant])
    ids = prompt(1, 4, 0 if blank == GMASK else 3, blank)
    out = model.generate(ids, max_new_tokens=6, do_sample=False, **no_stop(model))
    expected = greedy_by_full_recompute(model, ids[0].tolist(), 4, 6)
    assert out[0].tolist() == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_cache_and_no_cache_give_identical_greedy_tokens(variant):
    model = gen_model(**VARIANTS[variant])
    ids = prompt(2, 5, 4)
    cached = model.generate(ids, max_new_tokens=8, do_sample=False, **no_stop(model))
    uncached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, **no_stop(model))
    assert cached.tolist() == uncached.tolist()


def test_generate_uses_a_real_cache_without_recomputing_the_prefix():
    model = tiny_model()
    ids = prompt(2, 5, 4)
    seen_lengths = []
    hook = model.glm.register_forward_pre_hook(
        lambda module, args, kwargs: seen_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        out = model.generate(ids, max_new_tokens=5, do_sample=False, return_dict_in_generate=True, **no_stop(model))
    finally:
        hook.remove()
    assert seen_lengths == [ids.shape[1] + 1] + [1] * 4
    assert output_cache(out).get_seq_length() == ids.shape[1] + 1 + 4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("positions", ["learned_2d", "rotary_2d"])
def test_left_padded_batch_matches_each_prompt_alone(attn, positions):
    model = gen_model(attn=attn, position_encoding=positions)
    short, long = prompt(3, 2, 2), prompt(4, 6, 3)
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat([torch.cat([torch.full((1, pad), PAD), short], 1), long])
    padding = torch.ones_like(batch)
    padding[0, :pad] = 0
    together = model.generate(batch, attention_mask=padding, max_new_tokens=6, do_sample=False, **no_stop(model))
    alone_short = model.generate(short, max_new_tokens=6, do_sample=False, **no_stop(model))
    alone_long = model.generate(long, max_new_tokens=6, do_sample=False, **no_stop(model))
    assert together[0, pad:].tolist() == alone_short[0].tolist()
    assert together[1].tolist() == alone_long[0].tolist()


def test_beam_search_with_cache_matches_without():
    model = gen_model(position_encoding="rotary_2d")
    ids = torch.cat([prompt(5, 3, 2), prompt(6, 3, 2)])
    kwargs = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2, do_sample=False, **no_stop(model))
    cached = model.generate(ids, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (4, ids.shape[1] + 1 + 5)
    assert cached.tolist() == uncached.tolist()


def test_beam_search_with_one_beam_equals_greedy():
    model = gen_model()
    ids = prompt(7, 4, 2)
    beams = model.generate(ids, max_new_tokens=5, num_beams=1, do_sample=False, **no_stop(model))
    greedy = model.generate(ids, max_new_tokens=5, do_sample=False, **no_stop(model))
    assert beams.tolist() == greedy.tolist()


def test_sampling_is_reproducible_and_cache_independent():
    model = gen_model()
    ids = torch.cat([prompt(8, 4, 2)] * 2)
    kwargs = dict(max_new_tokens=6, do_sample=True, top_k=20, temperature=1.5, **no_stop(model))
    torch.manual_seed(0)
    cached = model.generate(ids, **kwargs)
    torch.manual_seed(0)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.tolist() == uncached.tolist()
    assert cached[:, : ids.shape[1] + 1].tolist() == torch.cat([ids, torch.full((2, 1), SOP)], 1).tolist()


def test_generation_stops_at_end_of_piece():
    model = tiny_model(tie_word_embeddings=False)
    with torch.no_grad():
        model.glm.final_layernorm.weight.zero_()
        model.glm.final_layernorm.bias.fill_(1.0)
        model.lm_head.weight[EOP] = 10.0
    out = model.generate(prompt(9, 3, 1), max_new_tokens=10, do_sample=False)
    assert out[0, -2:].tolist() == [SOP, EOP]


def test_prompt_already_ending_with_sop_is_used_as_is():
    model = gen_model()
    ids = prompt(10, 3, 2)
    with_sop = torch.cat([ids, torch.tensor([[SOP]])], 1)
    a = model.generate(ids, max_new_tokens=4, do_sample=False, **no_stop(model))
    b = model.generate(with_sop, max_new_tokens=4, do_sample=False, **no_stop(model))
    assert a.tolist() == b.tolist()


def test_prompts_without_blanks_are_continued_after_an_appended_gmask():
    model = tiny_model(initializer_range=0.3)
    plain = torch.tensor([[10, 11, 12], [PAD, 13, 14]])
    padding = torch.tensor([[1, 1, 1], [0, 1, 1]])
    continued = model.generate(plain, attention_mask=padding, max_new_tokens=3, do_sample=False, **no_stop(model))
    with_gmask = torch.cat([plain, torch.full((2, 1), GMASK)], 1)
    explicit = model.generate(
        with_gmask, attention_mask=torch.cat([padding, torch.ones(2, 1, dtype=torch.long)], 1), max_new_tokens=3,
        do_sample=False, **no_stop(model),
    )  # fmt: skip
    assert continued.tolist() == explicit.tolist()


def test_bad_prompts_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="mixing prompts with a started span"):
        model.generate(torch.tensor([[10, 11, MASK, SOP], [10, MASK, 12, 13]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model.generate(prompt(11, 70, 0), max_new_tokens=2)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(torch.tensor([[10, MASK, PAD]]), attention_mask=torch.tensor([[1, 1, 0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt(12, 3, 0), max_new_tokens=80, do_sample=False, **no_stop(model))


@pytest.mark.parametrize("variant", VARIANTS)
def test_static_cache_matches_dynamic_cache(variant):
    model = gen_model(**VARIANTS[variant])
    short, long = prompt(13, 2, 2), prompt(14, 5, 2)
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat([torch.cat([torch.full((1, pad), PAD), short], 1), long])
    padding = torch.ones_like(batch)
    padding[0, :pad] = 0
    kwargs = dict(
        attention_mask=padding, max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    dynamic = model.generate(batch, **kwargs, **no_stop(model))
    static = model.generate(batch, cache_implementation="static", **kwargs, **no_stop(model))
    assert static.sequences.tolist() == dynamic.sequences.tolist()
    torch.testing.assert_close(torch.stack(static.scores), torch.stack(dynamic.scores), atol=1e-5, rtol=1e-5)
    assert len(set(dynamic.sequences[:, -6:].flatten().tolist())) > 2, "degenerate output proves nothing"


def test_a_batch_may_mix_prompts_with_and_without_blanks():
    """Each prompt without a blank gets its own [gMASK] (plain continuation); the others keep their blank."""
    model = gen_model()
    plain, blank = torch.tensor([[10, 11, 12, 13]]), torch.tensor([[14, MASK, 15, 16]])
    mixed = model.generate(torch.cat([plain, blank]), max_new_tokens=4, do_sample=False, **no_stop(model))
    for row, alone in enumerate((plain, blank)):
        expected = model.generate(alone, max_new_tokens=4, do_sample=False, **no_stop(model))
        assert torch.equal(mixed[row, -4:], expected[0, -4:])


def test_generation_continues_from_a_previous_output_and_its_cache():
    model = gen_model()
    ids = prompt(15, 3, 2)
    options = dict(do_sample=False, return_dict_in_generate=True, **no_stop(model))
    first = model.generate(ids, max_new_tokens=3, **options)
    continued = model.generate(first.sequences, **{CACHE_FIELD: output_cache(first)}, max_new_tokens=4, **options)
    assert torch.equal(continued.sequences, model.generate(ids, max_new_tokens=7, **options).sequences)


@pytest.mark.parametrize("assistant", ["draft_model", "itself", "prompt_lookup"])
def test_assisted_decoding_equals_greedy(assistant):
    """Draft tokens are verified at the blank's position with increasing block positions, like greedy steps."""
    model = gen_model()
    ids = torch.cat([prompt(16, 3, 2), random_words(torch.Generator().manual_seed(3), 1, 4)], 1)
    greedy = model.generate(ids, max_new_tokens=8, do_sample=False, **no_stop(model))
    options = {
        "draft_model": {"assistant_model": gen_model(seed=1, num_hidden_layers=1)},
        "itself": {"assistant_model": gen_model()},
        "prompt_lookup": {"prompt_lookup_num_tokens": 2},
    }[assistant]
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False, **no_stop(model), **options), greedy)


def test_an_embedded_prompt_is_continued_like_the_same_plain_prompt():
    model = gen_model()
    ids = random_words(torch.Generator().manual_seed(4), 2, 5)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    options = dict(attention_mask=mask, max_new_tokens=4, do_sample=False, **no_stop(model))
    from_ids = model.generate(ids, **options)
    from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(ids), **options)
    assert torch.equal(from_embeds, from_ids[:, -4:])
