"""GLMModel / GLMForConditionalGeneration forward, training, masks, switches, save/load and Auto classes."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.cache_utils import DynamicCache

from glm_hf import GLMConfig, GLMForCausalLM, GLMForConditionalGeneration, GLMModel
from glm_hf.model.blank_infilling import batch_infilling, build_attention_mask, infilling_example
from glm_hf.model.transformers_compat import CACHE_FIELD, output_cache
from tests.helpers.reference_glm import reference_logits
from tests.helpers.tiny import MASK, PAD, SOP, random_words, tiny_config, tiny_model

BLANKS = [4, 5, 6]
EOP = 8

VARIANTS = {
    "glm": {},
    "chatglm": dict(position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False),
    "glm130b": dict(
        position_encoding="rotary_2d", layernorm_style="deepnorm", use_glu=True, embedding_grad_shrink=0.1
    ),
}


def infill_batch(seed: int = 0, batch: int = 3) -> dict[str, torch.Tensor]:
    """A batch of equal-length infilling examples: Part A of 8 tokens with 2 blanks, spans of 2 and 1 tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        part_a = random_words(g, 8).tolist()
        part_a[2], part_a[6] = MASK, MASK
        spans = random_words(g, 3).tolist()
        rows.append(infilling_example(part_a, [spans[:2], spans[2:]], BLANKS, SOP, EOP))
    return batch_infilling(rows, PAD)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_independent_reference(variant):
    model = tiny_model(seed=1, **VARIANTS[variant])
    batch = infill_batch()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    for row in range(batch["input_ids"].shape[0]):
        expected = reference_logits(
            model,
            batch["input_ids"][row].tolist(),
            batch["position_ids"][row, 0].tolist(),
            batch["position_ids"][row, 1].tolist(),
            int(batch["attention_mask"][row]),
        )
        torch.testing.assert_close(logits[row].double(), expected, atol=1e-5, rtol=0)


def test_shapes_and_dtypes():
    model = tiny_model()
    batch = infill_batch(batch=2)
    out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], 60)
    assert out.logits.dtype == torch.float32
    assert out.loss.ndim == 0
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    base = GLMModel(tiny_config())
    assert base(batch["input_ids"]).last_hidden_state.shape == (2, batch["input_ids"].shape[1], 32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite(dtype):
    model = tiny_model(**VARIANTS["glm130b"]).to(dtype)
    logits = model(infill_batch()["input_ids"]).logits
    assert logits.dtype == dtype
    assert torch.isfinite(logits).all()


def test_loss_is_unshifted_cross_entropy_over_labels():
    model = tiny_model()
    batch = infill_batch()
    out = model(**batch)
    labels = batch["labels"]
    expected = torch.nn.functional.cross_entropy(out.logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(out.loss, expected)


def test_training_projects_only_labelled_positions_with_the_same_loss():
    model = tiny_model()
    batch = infill_batch()
    full = model(**batch)
    full.loss.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sparse = model.train()(**batch)
    assert sparse.logits is None
    torch.testing.assert_close(sparse.loss, full.loss)
    sparse.loss.backward()
    for expected, parameter in zip(full_grads, model.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, expected, atol=1e-7, rtol=1e-5)


def test_tiny_model_overfits_a_batch():
    model = tiny_model().train()
    batch = infill_batch(batch=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model(**batch).loss
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.1 * first


@pytest.mark.parametrize("variant", VARIANTS)
def test_part_b_never_changes_part_a_and_later_b_never_changes_earlier(variant):
    model = tiny_model(**VARIANTS[variant])
    batch = infill_batch(batch=1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    base = model(**inputs).logits
    sep = int(batch["attention_mask"][0])
    last = batch["input_ids"].shape[1] - 1

    changed_b = dict(inputs, input_ids=inputs["input_ids"].clone())
    changed_b["input_ids"][0, sep + 1] = 55
    out = model(**changed_b).logits
    torch.testing.assert_close(out[:, : sep + 1], base[:, : sep + 1], atol=0, rtol=0)
    assert not torch.allclose(out[:, sep + 1 :], base[:, sep + 1 :])

    changed_last = dict(inputs, input_ids=inputs["input_ids"].clone())
    changed_last["input_ids"][0, last] = 55
    out = model(**changed_last).logits
    torch.testing.assert_close(out[:, :last], base[:, :last], atol=0, rtol=0)

    changed_a = dict(inputs, input_ids=inputs["input_ids"].clone())
    changed_a["input_ids"][0, sep - 1] = 55
    out = model(**changed_a).logits
    assert not torch.allclose(out[:, 0], base[:, 0]), "Part A must be bidirectional"


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdpa_equals_eager(variant):
    batch = infill_batch()
    sdpa = tiny_model(attn="sdpa", **VARIANTS[variant])
    eager = tiny_model(attn="eager", **VARIANTS[variant])
    torch.testing.assert_close(sdpa(**batch).logits, eager(**batch).logits, atol=1e-5, rtol=1e-5)


def test_attention_mask_forms_agree():
    model = tiny_model()
    batch = infill_batch()
    ids, positions, sep = batch["input_ids"], batch["position_ids"], batch["attention_mask"]
    compact = model(ids, attention_mask=sep, position_ids=positions).logits
    padding = model(ids, attention_mask=torch.ones_like(ids), position_ids=positions).logits
    derived = model(ids).logits
    full = build_attention_mask(sep, ids.shape[1], ids.shape[1])
    explicit = model(ids, attention_mask=full, position_ids=positions).logits
    for other in (padding, derived, explicit):
        torch.testing.assert_close(other, compact, atol=0, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cache_equals_no_cache(variant):
    model = tiny_model(**VARIANTS[variant])
    batch = infill_batch()
    ids, positions = batch["input_ids"], batch["position_ids"]
    full = model(ids, attention_mask=batch["attention_mask"], position_ids=positions).logits
    split = 9  # Part A (8 tokens) + <sop>: the prefix a generate() prefill would see
    prefix = model(ids[:, :split], position_ids=positions[..., :split], use_cache=True)
    cache = output_cache(prefix)
    step_logits = []
    for i in range(split, ids.shape[1]):
        out = model(ids[:, i : i + 1], position_ids=positions[..., i : i + 1], **{CACHE_FIELD: cache}, use_cache=True)
        step_logits.append(out.logits)
    torch.testing.assert_close(prefix.logits, full[:, :split], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(step_logits, 1), full[:, split:], atol=1e-5, rtol=1e-5)


def test_forward_takes_the_cache_under_either_name():
    """transformers 5.24 passes the cache as `cache=`, 5.23 as `past_key_values=`; both reach the layers."""
    model = tiny_model()
    ids = random_words(torch.Generator().manual_seed(0), 2, 6)
    for name in ("cache", "past_key_values"):
        cache = DynamicCache(config=model.config)
        out = model(ids, use_cache=True, **{name: cache})
        assert output_cache(out) is cache and cache.get_seq_length() == 6
    with pytest.raises(ValueError, match="not as both"):
        model(ids, cache=DynamicCache(config=model.config), past_key_values=DynamicCache(config=model.config))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("positions", ["learned_2d", "rotary_2d"])
def test_left_padded_equals_unpadded(attn, positions):
    model = tiny_model(attn=attn, position_encoding=positions)
    g = torch.Generator().manual_seed(3)
    short = torch.cat([random_words(g, 1, 3), torch.tensor([[MASK, SOP]]), random_words(g, 1, 2)], 1)
    long = torch.cat([random_words(g, 1, 6), torch.tensor([[MASK, SOP]]), random_words(g, 1, 2)], 1)
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat([torch.cat([torch.full((1, pad), PAD), short], 1), long])
    padding = torch.ones_like(batch)
    padding[0, :pad] = 0
    together = model(batch, attention_mask=padding).logits
    torch.testing.assert_close(together[0, pad:], model(short).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1], model(long).logits[0], atol=1e-5, rtol=1e-5)


def test_right_padded_part_b_with_compact_mask_equals_unpadded():
    model = tiny_model()
    batch = infill_batch(batch=1)
    ids, positions, sep = batch["input_ids"], batch["position_ids"], batch["attention_mask"]
    padded_ids = torch.cat([ids, torch.full((1, 3), PAD)], 1)
    padded_positions = torch.cat([positions, torch.zeros(1, 2, 3, dtype=torch.long)], -1)
    out = model(padded_ids, attention_mask=sep, position_ids=padded_positions).logits
    torch.testing.assert_close(out[:, : ids.shape[1]], model(ids, attention_mask=sep, position_ids=positions).logits)


SWITCHES = {
    "position_encoding": "rotary_2d",
    "layernorm_style": "post_alpha",
    "use_glu": True,
    "attention_scale": 4.0,
    "attention_softmax_in_fp32": False,
    "tie_word_embeddings": False,
    "qkv_bias": False,
    "hidden_act": "relu",
    "embedding_grad_shrink": 0.1,
}


@pytest.mark.parametrize("name", list(SWITCHES) + ["deepnorm"])
def test_every_switch_builds_runs_forward_backward(name):
    overrides = {"layernorm_style": "deepnorm"} if name == "deepnorm" else {name: SWITCHES[name]}
    model = tiny_model(**overrides).train()
    loss = model(**infill_batch()).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "name", ["position_encoding", "layernorm_style", "use_glu", "tie_word_embeddings", "qkv_bias", "hidden_act"]
)
def test_structural_switch_changes_output(name):
    batch = infill_batch()
    base = tiny_model(seed=0)(**batch).logits
    assert not torch.allclose(tiny_model(seed=0, **{name: SWITCHES[name]})(**batch).logits, base)


def test_post_ln_styles_share_a_forward_and_differ_in_init():
    chatglm = tiny_model(seed=0, layernorm_style="post_alpha")
    deepnorm = tiny_model(seed=0, layernorm_style="deepnorm")
    batch = infill_batch()
    assert not torch.allclose(chatglm(**batch).logits, deepnorm(**batch).logits)
    deepnorm.load_state_dict(chatglm.state_dict())
    torch.testing.assert_close(deepnorm(**batch).logits, chatglm(**batch).logits, atol=0, rtol=0)


def test_deepnorm_init_scales_value_output_and_mlp():
    config = tiny_config(hidden_size=256, num_attention_heads=4, num_hidden_layers=8, layernorm_style="deepnorm")
    torch.manual_seed(0)
    attention = GLMForConditionalGeneration(config).glm.layers[0].attention
    qkv = attention.query_key_value.weight.view(4, 3, 64, 256)
    xavier_std = (2 / (256 + 256)) ** 0.5
    beta = (2 * 8) ** -0.5
    assert qkv[:, 0].std().item() == pytest.approx(xavier_std, rel=0.05)
    assert qkv[:, 2].std().item() == pytest.approx(beta * xavier_std, rel=0.05)
    assert attention.dense.weight.std().item() == pytest.approx(beta * xavier_std, rel=0.05)


def test_embedding_grad_shrink_scales_only_the_gradient():
    batch = infill_batch()
    untied = dict(tie_word_embeddings=False)
    plain, shrunk = tiny_model(seed=0, **untied), tiny_model(seed=0, embedding_grad_shrink=0.1, **untied)
    plain_out, shrunk_out = plain(**batch), shrunk(**batch)
    torch.testing.assert_close(shrunk_out.logits, plain_out.logits, atol=1e-6, rtol=0)
    plain_out.loss.backward()
    shrunk_out.loss.backward()
    torch.testing.assert_close(
        shrunk.glm.word_embeddings.weight.grad, 0.1 * plain.glm.word_embeddings.weight.grad, atol=1e-7, rtol=1e-4
    )
    torch.testing.assert_close(shrunk.lm_head.weight.grad, plain.lm_head.weight.grad, atol=1e-6, rtol=1e-4)


def test_fp32_softmax_switch_changes_half_precision_attention():
    batch = infill_batch()
    guarded = dict(attn="eager", initializer_range=0.3, attention_scale=8.0)
    fp32 = tiny_model(seed=0, **guarded).to(torch.bfloat16)
    low = tiny_model(seed=0, attention_softmax_in_fp32=False, **guarded).to(torch.bfloat16)
    torch.testing.assert_close(low(**batch).logits, fp32(**batch).logits, atol=0.5, rtol=0.1)
    assert not torch.equal(low(**batch).logits, fp32(**batch).logits)


def test_attention_scale_guard_is_a_numerical_no_op():
    batch = infill_batch()
    plain = tiny_model(seed=0, attn="eager")
    guarded = tiny_model(seed=0, attn="eager", attention_scale=8.0)
    torch.testing.assert_close(guarded(**batch).logits, plain(**batch).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_name", [None, "cache", "past_key_values"])
def test_gradient_checkpointing_gives_the_same_gradients(cache_name):
    """Also when a cache is asked for under either name: the backward replay must not write it a second time."""
    batch = infill_batch()
    reference, checkpointed = tiny_model(seed=0).train(), tiny_model(seed=0).train()
    checkpointed.activation_checkpointing_enable()
    reference(**batch).loss.backward()
    cache = {} if cache_name is None else {"use_cache": True, cache_name: DynamicCache(config=checkpointed.config)}
    checkpointed(**batch, **cache).loss.backward()
    for (name, a), b in zip(reference.named_parameters(), checkpointed.parameters(), strict=False):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_output_attentions_show_the_glm_mask():
    model = tiny_model(attn="eager")
    batch = infill_batch(batch=1)
    out = model(**batch, output_attentions=True)
    sep = int(batch["attention_mask"][0])
    assert len(out.attentions) == model.config.num_hidden_layers
    weights = out.attentions[0][0]
    assert weights.shape[-2:] == (batch["input_ids"].shape[1],) * 2
    assert (weights[:, :sep, sep:] == 0).all()
    assert (weights[:, :sep, :sep] > 0).all()


def test_tied_and_untied_output_layer():
    tied, untied = tiny_model(), tiny_model(tie_word_embeddings=False)
    assert tied.lm_head.weight is tied.glm.word_embeddings.weight
    assert untied.lm_head.weight is not untied.glm.word_embeddings.weight


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_are_bit_identical(tmp_path, variant):
    model = tiny_model(**VARIANTS[variant])
    batch = infill_batch()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert type(loaded) is GLMForConditionalGeneration
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    assert loaded.generation_config.eos_token_id == [EOP, 3]


def test_parameters_are_contiguous_for_flat_views_and_sharding(tmp_path):
    """Every parameter is a plain contiguous tensor after init and load (flat views, FSDP2, DeepSpeed and tensor
    parallelism need no special case)."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    for candidate in (model, GLMForConditionalGeneration.from_pretrained(tmp_path)):
        assert all(p.is_contiguous() for p in candidate.parameters())
        flat = torch.nn.utils.parameters_to_vector(candidate.parameters())
        assert flat.numel() == sum(p.numel() for p in candidate.parameters())


def test_auto_classes_resolve(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is GLMConfig and loaded.model_type == "glm_hf"
    assert type(AutoModel.from_config(config)) is GLMModel
    assert type(AutoModelForCausalLM.from_config(config)) is GLMForCausalLM
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is GLMForConditionalGeneration


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30), "divisible by num_attention_heads"),
        (dict(position_encoding="alibi"), "position_encoding must be one of"),
        (dict(layernorm_style="post"), "layernorm_style must be one of"),
        (dict(position_encoding="rotary_2d", hidden_size=24, num_attention_heads=4), "divisible by 4"),
        (dict(embedding_grad_shrink=0.0), "embedding_grad_shrink"),
        (dict(mask_token_id=99), "outside the vocabulary"),
        (dict(hidden_dropout=1.0), "hidden_dropout"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive"),
    ],
)
def test_bad_config_values_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids = torch.tensor([[10, MASK, SOP, 11]])
    with pytest.raises(ValueError, match="shape \\[batch, 2, seq\\]"):
        model(ids, position_ids=torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(torch.randint(9, 60, (1, 70)))
    with pytest.raises(ValueError, match="4D attention_mask"):
        model(ids, attention_mask=torch.ones(1, 1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="one integer Part A length per row"):
        model(torch.cat([ids, ids]), attention_mask=torch.tensor([2, 2, 2]))
    with pytest.raises(ValueError, match="2D attention_mask"):
        model(ids, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="labels must align"):
        model(ids, labels=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size=60"):
        model(torch.tensor([[10, 60]]))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    cache = output_cache(model(ids, use_cache=True))
    with pytest.raises(ValueError, match="position_ids are required when continuing"):
        model(torch.tensor([[12]]), **{CACHE_FIELD: cache})


def test_inputs_embeds_with_a_padding_mask_read_as_part_a():
    """Embeddings cannot show a <|startofpiece|>, so with a 2D mask they are Part A, like token ids without a span."""
    model = tiny_model()
    ids = random_words(torch.Generator().manual_seed(0), 2, 6)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    embeds = model.get_input_embeddings()(ids)
    expected = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(model(inputs_embeds=embeds, attention_mask=mask).logits, expected)


def test_left_padding_positions_in_transformers_convention_are_accepted():
    """`cumsum(mask) - 1` with padding at 1: the pads' positions are not read, so the row is not taken as packed."""
    model = tiny_model()
    ids = random_words(torch.Generator().manual_seed(0), 2, 6)
    padded = torch.cat([torch.full((2, 2), PAD), ids], 1)
    mask = torch.cat([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 6, dtype=torch.long)], 1)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    logits = model(padded, attention_mask=mask, position_ids=positions).logits[:, 2:]
    torch.testing.assert_close(logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_packed_sequences_are_refused_and_bos_token_id_exists():
    model = tiny_model()
    with pytest.raises(ValueError, match="packed sequences"):
        model(torch.tensor([[10, 11, 12, 13]]), position_ids=torch.tensor([[0, 1, 0, 1]]))
    assert model.config.bos_token_id is None
