"""Packed (padding-free) rows on GLMForCausalLM: each document of a row that holds several reads the
`[gMASK] <|startofpiece|>` prefix and itself only, so a packed batch gives the logits, loss and gradients of the
padded one; transformers' left-padding convention for `position_ids` and custom 4D masks are accepted.

The last four tests are transformers' own `GenerationTesterMixin` tests of these behaviours as in its 5.24 release
(`tests/generation/test_utils.py`), restated for the causal head with the inputs of GLM's model tester: the source
distribution that `test_transformers_common.py` reads ships no `tests/generation/`, so they cannot run from it."""

import pytest
import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, DataCollatorWithFlattening

from glm_hf import GLMForCausalLM
from tests.helpers.tiny import random_words, tiny_config, word_tokenizer

VARIANTS = {
    "glm": {},
    "chatglm": dict(position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False),
}
LENGTHS = (5, 3, 7)


def causal_model(attn: str = "sdpa", **overrides) -> GLMForCausalLM:
    torch.manual_seed(0)
    model = GLMForCausalLM(tiny_config(initializer_range=0.3, **overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def documents(lengths=LENGTHS, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [random_words(generator, length).tolist() for length in lengths]


def padded_batch(docs: list[list[int]]) -> dict[str, torch.Tensor]:
    """The documents as a right-padded batch with HF causal labels, by transformers' stock causal collator."""
    tokenizer = word_tokenizer()
    tokenizer.padding_side = "right"
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return collator([{"input_ids": doc} for doc in docs])


def packed_batch(docs: list[list[int]]) -> dict[str, torch.Tensor]:
    """The documents as one padding-free row, by transformers' `DataCollatorWithFlattening`."""
    return DataCollatorWithFlattening()([{"input_ids": doc} for doc in docs])


def per_document(packed: torch.Tensor, docs: list[list[int]]) -> list[torch.Tensor]:
    return list(packed[0].split([len(doc) for doc in docs]))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_row_gives_each_document_its_padded_logits(variant, use_cache, attn):
    model = causal_model(attn, **VARIANTS[variant])
    docs = documents()
    padded = padded_batch(docs)
    packed = packed_batch(docs)
    assert packed["position_ids"].tolist() == [[*range(5), *range(3), *range(7)]]
    with torch.no_grad():
        reference = model(padded["input_ids"], attention_mask=padded["attention_mask"], use_cache=use_cache).logits
        logits = model(packed["input_ids"], position_ids=packed["position_ids"], use_cache=use_cache).logits
    for row, (doc, doc_logits) in enumerate(zip(docs, per_document(logits, docs), strict=True)):
        torch.testing.assert_close(doc_logits, reference[row, : len(doc)], atol=1e-5, rtol=1e-5)


def test_packed_and_padded_batches_give_the_same_loss_and_gradients():
    docs = documents((6, 2, 9, 4))
    results = []
    for batch in (padded_batch(docs), packed_batch(docs)):
        model = causal_model().train()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in model.named_parameters()}))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-6, rtol=1e-6)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_packed_rows_in_a_batch_and_with_right_padding():
    """Two packed rows of different lengths in one batch, the shorter right-padded: every document still reads
    itself only."""
    model = causal_model()
    docs = documents((4, 3, 6, 2))
    reference = model(**{k: v for k, v in padded_batch(docs).items() if k != "labels"}, use_cache=False).logits
    rows = [docs[0] + docs[1], docs[2] + docs[3]]
    ids = torch.tensor([rows[0] + [0], rows[1]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5, 0, 1]])
    mask = torch.tensor([[1] * 7 + [0], [1] * 8])
    for use_cache in (True, False):
        logits = model(ids, attention_mask=mask, position_ids=positions, use_cache=use_cache).logits
        spans = [(0, 0, 4), (0, 4, 7), (1, 0, 6), (1, 6, 8)]
        for doc, (row, start, end) in enumerate(spans):
            torch.testing.assert_close(logits[row, start:end], reference[doc, : end - start], atol=1e-5, rtol=1e-5)


def test_left_padding_positions_in_transformers_convention():
    """`cumsum(mask) - 1` with padding at 1 (transformers' convention) is one document per row, not a packed one."""
    model = causal_model()
    ids = random_words(torch.Generator().manual_seed(1), 2, 6)
    reference = model(ids).logits
    padded_ids = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 6, dtype=torch.long)], 1)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    for use_cache in (True, False):
        logits = model(padded_ids, attention_mask=mask, position_ids=positions, use_cache=use_cache).logits
        torch.testing.assert_close(logits[:, 3:], reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["boolean", "additive"])
def test_4d_mask_over_the_callers_tokens(form):
    """A 4D mask says which of the caller's tokens each token sees; the prefix stays visible: three endings that
    share a prefix in one row, each blind to the others, score as three rows."""
    model = causal_model()
    rows = torch.tensor([[10, 11, 12, 13], [10, 11, 12, 14], [10, 11, 12, 15]])
    shared = torch.tensor([[10, 11, 12, 13, 14, 15]])
    sees = torch.ones(6, 6).tril().bool()
    sees[4:, 3:] = torch.eye(3)[1:].bool()
    mask = sees[None, None] if form == "boolean" else torch.zeros(1, 1, 6, 6).masked_fill(~sees, float("-inf"))
    positions = torch.tensor([[0, 1, 2, 3, 3, 3]])
    for use_cache in (True, False):
        logits = model(rows, use_cache=use_cache).logits[:, -1]
        shared_logits = model(shared, attention_mask=mask, position_ids=positions, use_cache=use_cache).logits
        torch.testing.assert_close(shared_logits[0, 3:], logits, atol=1e-5, rtol=1e-5)


def test_a_4d_mask_of_the_wrong_shape_names_the_shape():
    with pytest.raises(ValueError, match=r"\[batch, 1, seq, past \+ seq\] = \[1, 1, 4, 4\]"):
        causal_model()(torch.tensor([[10, 11, 12, 13]]), attention_mask=torch.ones(1, 1, 4, 6, dtype=torch.bool))


# transformers' GenerationTesterMixin tests (5.24), restated for the causal head.


def common_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """GLM's model tester inputs for transformers' common tests: 3 rows of 7 ordinary ids, the first left-padded."""
    ids = torch.randint(9, 60, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    return ids, mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_padding_matches_padding_free_with_position_ids(attn, tmp_path):
    """`test_eager_padding_matches_padding_free_with_position_ids` / `test_sdpa_...`: bfloat16, left-padded batch
    with positions `(cumsum(mask) - 1) * mask` against its real tokens flattened into one row."""
    torch.manual_seed(0)
    ids, mask = common_inputs()
    config = tiny_config(max_position_embeddings=30 + ids.shape[1] + 1)
    GLMForCausalLM(config).save_pretrained(tmp_path)
    ids[~mask.bool()] = config.pad_token_id
    positions = (mask.cumsum(dim=1) - 1) * mask
    model = GLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, attn_implementation=attn).eval()
    packed_positions = torch.cat([torch.arange(length) for length in mask.sum(1).tolist()]).long().unsqueeze(0)
    padded = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    padfree = model(input_ids=ids[mask.bool()].unsqueeze(0), position_ids=packed_positions, use_cache=False)
    tol = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(padded.logits[mask.bool()], padfree.logits[0], rtol=tol, atol=tol)


def test_left_padding_compatibility():
    """Next-token logits unchanged by 32 more left pads, `position_ids` in transformers' convention (pads at 1)."""
    torch.manual_seed(0)
    ids, mask = (tensor[:2] for tensor in common_inputs())
    model = GLMForCausalLM(tiny_config()).eval()
    model.generation_config.use_cache = False

    def with_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        position_ids = torch.cumsum(attention_mask, dim=-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    unpadded = model(**with_positions(ids, mask)).logits[:, -1, :]
    padding = torch.ones(2, 32, dtype=ids.dtype) * model.config.pad_token_id
    padded_ids = torch.cat((padding, ids), dim=1)
    padded_mask = torch.cat((torch.zeros(2, 32, dtype=ids.dtype), mask), dim=1)
    padded = model(**with_positions(padded_ids, padded_mask)).logits[:, -1, :]
    torch.testing.assert_close(unpadded, padded, rtol=1e-5, atol=1e-5)


def test_custom_4d_attention_mask():
    """Three rows sharing a 3-token prefix against one row whose 4D additive float mask keeps the endings apart."""
    model = GLMForCausalLM(tiny_config()).to(dtype=torch.float32).eval()
    input_ids = torch.tensor([[10, 11, 12, 13], [10, 11, 12, 14], [10, 11, 12, 15]])
    position_ids = torch.tensor([[0, 1, 2, 3]] * 3)
    input_ids_shared_prefix = torch.cat([input_ids[0][:-1], input_ids[:, -1]]).unsqueeze(0)
    sees = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 0, 1, 0],
            [1, 1, 1, 0, 0, 1],
        ]
    )
    mask_shared_prefix = sees.eq(0.0)[None, None].to(torch.float32) * torch.finfo(torch.float32).min
    position_ids_shared_prefix = torch.tensor([[0, 1, 2, 3, 3, 3]])
    logits = model.forward(input_ids, position_ids=position_ids).logits
    logits_shared_prefix = model(
        input_ids_shared_prefix, attention_mask=mask_shared_prefix, position_ids=position_ids_shared_prefix
    )[0]
    normalized_0 = F.softmax(logits[:, -1, :], dim=-1)
    normalized_1 = F.softmax(logits_shared_prefix[0, -3:, :], dim=-1)
    torch.testing.assert_close(normalized_0, normalized_1, rtol=1e-3, atol=1e-3)
