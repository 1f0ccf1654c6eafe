"""The one place where GLM's blank-infilling layout is turned into 2D positions and attention masks.

A GLM sequence is Part A (the corrupted text, holding blank tokens `[MASK]`/`[sMASK]`/`[gMASK]`) followed by
Part B (the spans, each `<|startofpiece|> span`). Part A attends bidirectionally within A; Part B attends to all
of A and causally within B. Every token has a 2D position (position, block position): Part A token i gets (i, 0);
the k-th token of a span gets (position of its blank in A, k).

Sections: positions and masks from tokens (a mask is a `MaskRule`, carried by a `LayoutMask` until it takes the
form of the attention implementation: dense tensor, flex attention's `BlockMask`, or none for plain causal
attention); reading and checking what callers pass the model (`model_layout`); the causal head's left-to-right
layout (padding, packed rows, 4D masks); generation (prompts, continuation, left padding); training examples;
multiple choice and cloze scoring. The heads, `generate()`, the tokenizer builders, the collator and the serving
engine call these pure functions; no other module derives positions or masks.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


def part_a_length(input_ids: torch.Tensor, sop_token_id: int) -> torch.Tensor:
    """Per-row length of Part A ("sep", THUDM's compact mask): the index of the first `<|startofpiece|>`, or the
    row length when the row has no Part B."""
    is_sop = input_ids == sop_token_id
    seq_len = input_ids.shape[-1]
    first = torch.where(is_sop, torch.arange(seq_len, device=input_ids.device), seq_len)
    return first.min(dim=-1).values


def part_a_length_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Per-row Part A length read off 2D positions `[batch, 2, seq]`: Part B starts at the first token with a block
    position (for inputs without token ids, e.g. embeddings)."""
    in_b = position_ids[:, 1] > 0
    seq_len = in_b.shape[-1]
    return torch.where(in_b, torch.arange(seq_len, device=in_b.device), seq_len).min(dim=-1).values


def build_position_ids(
    input_ids: torch.Tensor,
    blank_token_ids: list[int],
    sop_token_id: int,
    padding_mask: torch.Tensor | None = None,
    first_filled_token_id: int | None = None,
) -> torch.Tensor:
    """2D positions `[batch, 2, seq]` derived from the tokens.

    Part A positions count real tokens only (left padding is skipped, so a padded row gets the positions of the
    same row unpadded). In Part B, the k-th span (the k-th `<|startofpiece|>`) is placed at the k-th blank of
    Part A; layouts whose spans are shuffled relative to their blanks must pass explicit positions instead.
    With `first_filled_token_id` (ChatGLM's `[gMASK]`, see `GLMConfig.blank_fill_order`), the blanks of that token
    come first in that order, then the others.
    """
    batch, seq_len = input_ids.shape
    device = input_ids.device
    idx = torch.arange(seq_len, device=device).expand(batch, seq_len)
    real = torch.ones_like(input_ids, dtype=torch.bool) if padding_mask is None else padding_mask.bool()
    in_b = idx >= part_a_length(input_ids, sop_token_id).unsqueeze(-1)

    position_a = (real & ~in_b).long().cumsum(-1) - 1
    position_a = position_a.clamp(min=0)
    is_blank = torch.isin(input_ids, torch.tensor(blank_token_ids, device=device)) & real & ~in_b
    is_sop = (input_ids == sop_token_id) & in_b

    n_spans, n_blanks = is_sop.sum(-1), is_blank.sum(-1)
    if (n_spans > n_blanks).any():
        row = int((n_spans > n_blanks).nonzero()[0, 0])
        raise ValueError(
            f"Row {row} has {int(n_spans[row])} Part B spans (<|startofpiece|> tokens) but only "
            f"{int(n_blanks[row])} blank tokens in Part A; every span needs its own [MASK]/[sMASK]/[gMASK]."
        )
    later = seq_len if first_filled_token_id is None else torch.where(input_ids == first_filled_token_id, 0, seq_len)
    blank_slots = torch.where(is_blank, idx + later, 3 * seq_len).argsort(dim=-1, stable=True)
    blank_positions = position_a.gather(1, blank_slots)
    span_index = (is_sop.long().cumsum(-1) - 1).clamp(min=0)
    position_b = blank_positions.gather(1, span_index)
    span_start = torch.where(is_sop, idx, 0).cummax(dim=-1).values
    block_b = idx - span_start + 1

    position = torch.where(in_b, position_b, position_a)
    block = torch.where(in_b, block_b, 0)
    return torch.stack([position, block], dim=1)


def part_a_position_ids(padding_mask: torch.Tensor | None, batch: int, seq_len: int, device) -> torch.Tensor:
    """2D positions `[batch, 2, seq]` of a sequence that is all Part A (position i counting real tokens, block
    position 0): what `build_position_ids` gives token ids without a span, for inputs given as embeddings."""
    position = text_positions(padding_mask, 0, seq_len, device).expand(batch, seq_len)
    return torch.stack([position, torch.zeros_like(position)], dim=1)


def span_after_part_a_position_ids(padding_mask: torch.Tensor) -> torch.Tensor:
    """2D positions `[batch, 2, seq]` of a Part A ending in a blank followed by the `<|startofpiece|>` that opens its
    span (the last column): Part A as in `part_a_position_ids`, the span token at (the blank's position, 1)."""
    batch, seq_len = padding_mask.shape
    part_a = part_a_position_ids(padding_mask[:, :-1], batch, seq_len - 1, padding_mask.device)
    blank = part_a[:, 0, -1:]
    return torch.cat([part_a, torch.stack([blank, torch.ones_like(blank)], dim=1)], dim=-1)


def read_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 2D padding mask as booleans (True = token): HF's 1/0 masks as they are, and an additive mask (0 for a token,
    -inf or a large negative for padding; recognised by holding a negative value) by its meaning. Computed on the
    device without reading values on the host; `check_padding_mask` refuses values of neither form."""
    if not attention_mask.is_floating_point():
        return attention_mask.bool()
    additive = (attention_mask < 0).any()
    return torch.where(additive, attention_mask == 0, attention_mask != 0)


def read_attention_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 4D mask as booleans "may attend": a boolean mask as it is, an integer one as 1/0, and a floating one as
    transformers' additive masks read (0 = may attend, -inf or a large negative = blocked); `check_attention_mask_4d`
    refuses values of neither form."""
    if attention_mask.is_floating_point():
        return attention_mask == 0
    return attention_mask.bool()


def check_padding_mask(attention_mask: torch.Tensor) -> None:
    """Refuses a 2D mask that is neither 1/0 nor additive (0 and negatives)."""
    additive = attention_mask.is_floating_point() and bool((attention_mask < 0).any())
    if not additive and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError(
            "A 2D attention_mask holds 1 for tokens and 0 for padding (or, additively, 0 for tokens and -inf for "
            f"padding); got the values {attention_mask.unique()[:8].tolist()}."
        )


def check_attention_mask_4d(attention_mask: torch.Tensor) -> None:
    """Refuses a floating 4D mask with positive values (additive masks hold 0 and negatives) and an integer one
    with values other than 1/0."""
    if attention_mask.is_floating_point():
        if bool((attention_mask > 0).any()):
            raise ValueError(
                "A floating 4D attention_mask is additive (0 where a query may attend, -inf or a large negative "
                "where not), but this one has positive values; pass a boolean mask (True = may attend) instead."
            )
    elif attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("An integer 4D attention_mask holds 1 (may attend) and 0 (blocked) only; got other values.")


def check_attention_mask(attention_mask: torch.Tensor) -> None:
    """Refuses a 2D (padding) or 4D mask whose values are of neither form its kind takes."""
    if attention_mask.dim() == 4:
        check_attention_mask_4d(attention_mask)
    elif attention_mask.dim() == 2:
        check_padding_mask(attention_mask)


def check_part_a_lengths(sep: torch.Tensor, length: int) -> None:
    """Part A lengths (a 1D attention_mask) must lie in [0, length], the tokens of their rows."""
    if sep.numel() and not 0 <= int(sep.min()) <= int(sep.max()) <= length:
        raise ValueError(
            f"A 1D attention_mask holds each row's Part A length, in [0, {length}] for these rows; got lengths from "
            f"{int(sep.min())} to {int(sep.max())}."
        )


# Attention masks. GLM states each mask as a `MaskRule`: which keys each query may attend to, in the two forms
# attention implementations read. `LayoutMask` carries a rule and the mask's size until the body knows its attention
# implementation, and `LayoutMask.for_attention` then gives the mask that implementation's form: a dense boolean
# tensor for eager and SDPA, a `BlockMask` for flex attention, or None for plain causal attention (SDPA's
# `is_causal`, no mask tensor at all).


class MaskRule(ABC):
    """Which keys each query may attend to, in two forms: called on index tensors `(batch, head, query, key)` (flex
    attention's `mask_mod`, evaluated under vmap), and as the boolean tensor `[batch, 1, query, key]` computed by
    broadcasting (`dense`: eager and SDPA; slices rather than gathers, which compiled CPU code handles less well)."""

    @abstractmethod
    def __call__(
        self, batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        """Whether query `query` of row `batch` may attend to key `key`."""

    @abstractmethod
    def dense(self, batch: int, query_length: int, key_length: int, device) -> torch.Tensor:
        """The "may attend" tensor `[batch, 1, query_length, key_length]`."""


def glm_rule(
    query: torch.Tensor,
    key: torch.Tensor,
    key_in_part_a: torch.Tensor | None,
    key_seen: torch.Tensor | None,
    same_document: torch.Tensor | None,
) -> torch.Tensor:
    """GLM's mask on query and key indices (broadcast together): causal, or key inside the row's Part A; keys not
    `key_seen` and keys of another document are hidden; each query always sees itself, so a padding query never has
    an empty row (which would turn the softmax into NaN)."""
    allowed = key <= query
    if key_in_part_a is not None:
        allowed = allowed | key_in_part_a
    if key_seen is not None:
        allowed = allowed & key_seen
    if same_document is not None:
        allowed = allowed & same_document
    return allowed | (key == query)


class GLMMask(MaskRule):
    """GLM's mask (`glm_rule`) over `key_length` keys.

    `sep` `[batch]`: each row's Part A length (None: no Part A). `query_offset`: the number of cached tokens before
    the queries (an int, or the 0-d tensor a static cache counts in: nothing is read on the host). `padding_mask`
    covers the tokens seen so far (`[batch, query_offset + query_length]`, or a static cache's every slot); keys
    where it is False, and key slots past it (a static cache's unused tail), are hidden. `documents`
    (`[batch, keys]`, see `document_ids`; rows without cached tokens) hides keys of another document than the
    query's. Part A and padding are kept per key (`[batch, keys]`), the form flex attention's compiled CPU kernels
    take for any batch size (a per-row lookup such as `sep[batch]` does not compile there once sizes vary).
    """

    def __init__(
        self,
        sep: torch.Tensor | None,
        key_length: int,
        padding_mask: torch.Tensor | None = None,
        query_offset: int | torch.Tensor = 0,
        documents: torch.Tensor | None = None,
    ):
        self.part_a = None
        if sep is not None:
            self.part_a = torch.arange(key_length, device=sep.device) < sep[:, None]
        if padding_mask is not None:
            padding_mask = padding_mask.bool()[:, :key_length]
            padding_mask = nn.functional.pad(padding_mask, (0, key_length - padding_mask.shape[-1]), value=False)
        self.padding_mask, self.query_offset, self.documents = padding_mask, query_offset, documents

    def __call__(
        self, batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        part_a, padding, documents = self.part_a, self.padding_mask, self.documents
        return glm_rule(
            query + self.query_offset,
            key,
            None if part_a is None else part_a[batch, key],
            None if padding is None else padding[batch, key],
            None if documents is None else documents[batch, query] == documents[batch, key],
        )

    def dense(self, batch: int, query_length: int, key_length: int, device) -> torch.Tensor:
        part_a, padding, documents = self.part_a, self.padding_mask, self.documents
        query = (torch.arange(query_length, device=device) + self.query_offset).view(1, 1, -1, 1)
        key = torch.arange(key_length, device=device).view(1, 1, 1, -1)
        allowed = glm_rule(
            query,
            key,
            None if part_a is None else part_a[:, None, None, :],
            None if padding is None else padding[:, None, None, :],
            None if documents is None else documents[:, None, :query_length, None] == documents[:, None, None, :],
        )
        return allowed.expand(batch, 1, query_length, key_length)


class TensorMask(MaskRule):
    """The rule of a boolean "may attend" tensor `[batch, 1, query, key]` (a caller's 4D mask)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(
        self, batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        return self.mask[batch, 0, query, key]

    def dense(self, batch: int, query_length: int, key_length: int, device) -> torch.Tensor:
        return self.mask


@dataclass(frozen=True)
class LayoutMask:
    """An attention mask as GLM states it, before it takes the form the attention implementation reads.

    `rule` covers `batch` rows, `query_length` queries and `key_length` keys; None is plain causal attention with
    the queries aligned to the last keys, which only arises where that needs no mask tensor: a sequence without
    cached keys (queries = keys), or one new token that sees every cached one.
    """

    rule: MaskRule | None
    batch: int
    query_length: int
    key_length: int
    device: torch.device

    def for_attention(self, implementation: str | None) -> "torch.Tensor | BlockMask | None":
        """The mask in the form `implementation` reads: a `BlockMask` for flex attention (None for one query that
        sees every key), None for plain causal attention elsewhere (SDPA's `is_causal`, eager's causal default),
        else the dense boolean tensor."""
        if implementation == "flex_attention":
            return self.block_mask()
        if self.rule is None:
            return None
        return self.rule.dense(self.batch, self.query_length, self.key_length, self.device)

    def block_mask(self) -> "BlockMask | None":
        """Flex attention's `BlockMask` of this mask: blocks in which no query sees any key are skipped, and the
        rule is evaluated inside the partly visible ones (GLM's prefix-LM `mask_mod`)."""
        from torch.nn.attention.flex_attention import create_block_mask

        rule = self.rule
        if rule is None:
            if self.query_length == 1:
                return None  # flex attention without a block mask sees every key
            rule = GLMMask(None, self.key_length, query_offset=self.key_length - self.query_length)
        return create_block_mask(rule, self.batch, None, self.query_length, self.key_length, device=self.device)


def build_attention_mask(
    sep: torch.Tensor,
    query_length: int,
    key_length: int,
    padding_mask: torch.Tensor | None = None,
    query_offset: int | torch.Tensor = 0,
) -> torch.Tensor:
    """GLM's boolean "may attend" tensor `[batch, 1, query, key]` (see `GLMMask`): causal, or key inside Part A
    (`key < sep`)."""
    return GLMMask(sep, key_length, padding_mask, query_offset).dense(
        sep.shape[0], query_length, key_length, sep.device
    )


def check_not_empty(inputs: torch.Tensor) -> None:
    """Refuses inputs that are not a batch of rows (`[batch, seq]` ids or `[batch, seq, hidden]` embeddings) or
    that hold no token, which would otherwise fail deep inside attention."""
    if inputs.dim() < 2 or inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(
            f"The inputs must be a non-empty batch [batch, seq] of token ids (or [batch, seq, hidden] embeddings); "
            f"got shape {list(inputs.shape)}."
        )


def one_input(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
    """The one input a forward was given, token ids or embeddings, checked to be a non-empty batch."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    inputs = input_ids if input_ids is not None else inputs_embeds
    check_not_empty(inputs)
    return inputs


def padding_fits(
    padding: torch.Tensor, batch: int, seq_len: int, past_length: int | torch.Tensor, key_length: int
) -> bool:
    """Whether a 2D padding mask covers the cached and new tokens, or (static caches, whose length is a device
    tensor not read here) up to all `key_length` slots."""
    if padding.shape[0] != batch:
        return False
    if isinstance(past_length, torch.Tensor):
        return seq_len <= padding.shape[-1] <= key_length
    return padding.shape[-1] in (past_length + seq_len, key_length)


def previous_real_positions(
    position_ids: torch.Tensor, padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per token of 1D positions `[batch, seq]`: whether it is real (not padding), whether a real token comes before
    it in its row, and that token's position. The tokens are a row's first (no cached ones); `padding_mask` covers
    at least them."""
    seq_len = position_ids.shape[-1]
    index = torch.arange(seq_len, device=position_ids.device)
    real = torch.ones_like(position_ids, dtype=torch.bool)
    if padding_mask is not None:
        real = real & padding_mask[:, :seq_len].bool()
    last_real = torch.where(real, index, -1).cummax(dim=-1).values
    previous = nn.functional.pad(last_real[:, :-1], (1, 0), value=-1)
    return real, previous >= 0, position_ids.gather(-1, previous.clamp(min=0))


def check_positions_increase(position_ids: torch.Tensor | None, padding_mask: torch.Tensor | None = None) -> None:
    """Refuses 1D positions that go back inside a row among its real tokens: sequences packed into one row would
    attend to each other in GLM's layouts. Padding's positions are ignored, so transformers' left-padding convention
    (pads at 1, then 0, 1, ...) passes."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[-1] < 2:
        return
    real, has_previous, previous = previous_real_positions(position_ids, padding_mask)
    if bool((real & has_previous & (position_ids < previous)).any()):
        raise ValueError(
            "1D position_ids restart inside a row: packed sequences (e.g. DataCollatorWithFlattening) would attend "
            "to each other in GLM's blank-infilling layouts; pad them into separate rows, or train plain text "
            "packed with GLMForCausalLM, which reads each restart as a new document."
        )


def document_ids(position_ids: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Which document each token of a row belongs to `[batch, seq]` (1, 2, ...; padding before a row's first real
    token 0), for rows that hold several documents one after another (packed, padding-free batches, as
    `DataCollatorWithFlattening` and TRL's `packing=True` make them): a document starts at every real token whose
    position does not continue the previous real token's by one, transformers' rule
    (`masking_utils.find_packed_sequence_indices`). Padding is skipped, so transformers' left-padding convention
    (pads at 1, then 0, 1, ...) is one document. Computed on the device."""
    real, has_previous, previous = previous_real_positions(position_ids, padding_mask)
    starts = real & (~has_previous | (position_ids != previous + 1))
    return starts.long().cumsum(-1)


def several_documents(documents: torch.Tensor) -> bool:
    """Whether some row of `document_ids` holds more than one document (reads the host)."""
    return bool((documents[:, -1] > 1).any())


def check_model_inputs(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    shape: tuple[int, int],
    vocab_size: int,
) -> None:
    """The checks that read values on the host (token ids in the vocabulary, mask values, Part A lengths, positions
    that never restart); the model runs them where inputs enter, not at every decode step. `shape`: [batch, seq]."""
    batch, seq_len = shape
    if input_ids is not None and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < vocab_size:
        raise ValueError(
            f"input_ids must lie in [0, vocab_size={vocab_size}); got ids from "
            f"{int(input_ids.min())} to {int(input_ids.max())}. Was the tokenizer made for this model?"
        )
    if isinstance(attention_mask, LayoutMask):
        return  # a head's own layout, built from inputs it checked
    if attention_mask is not None:
        if attention_mask.dim() <= 1:
            if attention_mask.numel() not in (1, batch) or attention_mask.is_floating_point():
                raise ValueError(
                    f"A 1D attention_mask holds one integer Part A length per row ([batch] = [{batch}]), got "
                    f"shape {list(attention_mask.shape)} of {attention_mask.dtype}."
                )
            check_part_a_lengths(attention_mask, seq_len)
        else:
            check_attention_mask(attention_mask)
    padding = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
    check_positions_increase(position_ids, None if padding is None else read_padding_mask(padding))


def check_position_range(position_ids: torch.Tensor, max_position_embeddings: int) -> None:
    """Refuses negative positions and positions past the position table."""
    smallest, largest = (int(value) for value in torch.aminmax(position_ids))
    if smallest < 0:
        raise ValueError(f"position_ids must be non-negative; got {smallest}.")
    if largest >= max_position_embeddings:
        raise ValueError(
            f"The input needs position {largest} but the model has max_position_embeddings="
            f"{max_position_embeddings}: shorten the text before the blank, or generate fewer "
            f"tokens (max_new_tokens) for this span."
        )


def read_attention_mask(
    attention_mask: torch.Tensor | None,
    shape: tuple[int, int],
    past_length: int | torch.Tensor,
    key_length: int,
) -> torch.Tensor | None:
    """The attention mask in the form the model computes with: Part A lengths as they are, 2D padding and 4D masks
    as booleans (see `read_padding_mask` / `read_attention_mask_4d` for the additive forms). A 2D mask covers the
    cached and new tokens, or a static cache's every slot. A `LayoutMask` (a head's own layout) is taken as it is."""
    if attention_mask is None or isinstance(attention_mask, LayoutMask) or attention_mask.dim() <= 1:
        return attention_mask
    if attention_mask.dim() == 4:
        return read_attention_mask_4d(attention_mask)
    batch, seq_len = shape
    if not padding_fits(attention_mask, batch, seq_len, past_length, key_length):
        raise ValueError(
            "A 2D attention_mask (padding) must have shape [batch, past + seq] = "
            f"{[batch, past_length + seq_len]}, got {list(attention_mask.shape)}."
        )
    return read_padding_mask(attention_mask)


def model_position_ids(
    config,
    input_ids: torch.Tensor | None,
    padding: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    shape: tuple[int, int],
    past_length: int | torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """`[batch, 2, seq]` positions: as given (a 2D tensor means block position 0), or derived from the tokens
    (`build_position_ids`; embeddings without token ids are all Part A). A cache continuation needs them given."""
    batch, seq_len = shape
    if position_ids is None:
        if isinstance(past_length, torch.Tensor) or past_length > 0:
            raise ValueError(
                "position_ids are required when continuing from a KV cache: the new tokens' positions "
                "depend on the blank they fill. Use blank_infilling.next_position_ids or model.generate()."
            )
        if input_ids is None:
            position_ids = part_a_position_ids(padding, batch, seq_len, device)
        else:
            position_ids = build_position_ids(
                input_ids, config.blank_token_ids, config.sop_token_id, padding, config.first_filled_token_id
            )
    elif position_ids.dim() == 2:
        position_ids = torch.stack([position_ids, torch.zeros_like(position_ids)], dim=1)
    if position_ids.shape != (batch, 2, seq_len):
        raise ValueError(
            f"position_ids must have shape [batch, 2, seq] = {[batch, 2, seq_len]} (position, block position), "
            f"got {list(position_ids.shape)}."
        )
    return position_ids


def model_attention_mask(
    config,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | LayoutMask | None,
    position_ids: torch.Tensor,
    key_length: int,
    past_length: int | torch.Tensor,
    prefix_length: int = 0,
) -> LayoutMask:
    """The mask over `[batch, seq]` queries and `prefix + keys` keys. A `LayoutMask` (a head's own layout) and a
    4D mask are taken as they are; Part A lengths and padding masks give GLM's mask (`GLMMask`), with
    Part A read off the tokens (or, for embeddings, the positions). Continuing from a cache, the cached tokens hold
    Part A."""
    batch, _, seq_len = position_ids.shape
    device = position_ids.device
    if isinstance(attention_mask, LayoutMask) or (attention_mask is not None and attention_mask.dim() == 4):
        key_length += prefix_length
        shape = (batch, seq_len, key_length)
        if isinstance(attention_mask, LayoutMask):
            if (attention_mask.batch, attention_mask.query_length, attention_mask.key_length) != shape:
                raise ValueError(f"A LayoutMask must cover [batch, seq, keys] = {list(shape)}.")
            return attention_mask
        if attention_mask.shape[0] != batch or attention_mask.shape[-2:] != shape[1:]:
            raise ValueError(
                f"A 4D attention_mask must have shape [batch, 1, seq, keys] (keys: prefix + cached tokens + seq)"
                f" = {[batch, 1, seq_len, key_length]}, got {list(attention_mask.shape)}."
            )
        return LayoutMask(TensorMask(attention_mask), *shape, device)
    if prefix_length:
        raise ValueError("prefix_key_values need a 4D attention_mask that covers the prefix keys.")
    if attention_mask is not None and attention_mask.dim() <= 1:
        sep = attention_mask.to(device, torch.long).reshape(-1).expand(batch)
        return LayoutMask(GLMMask(sep, key_length, None, past_length), batch, seq_len, key_length, device)
    if isinstance(past_length, int) and past_length > 0 and seq_len == 1 and attention_mask is None:
        return LayoutMask(None, batch, seq_len, key_length, device)  # one new token that sees every cached one
    if input_ids is None:
        sep = part_a_length_from_positions(position_ids)
    else:
        sep = part_a_length(input_ids, config.sop_token_id)
    sep = sep * (past_length == 0)  # decided on the device
    return LayoutMask(GLMMask(sep, key_length, attention_mask, past_length), batch, seq_len, key_length, device)


def model_layout(
    config,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | LayoutMask | None,
    position_ids: torch.Tensor | None,
    past_length: int | torch.Tensor,
    key_length: int,
    prefix_length: int = 0,
    check_range: bool = True,
) -> tuple[torch.Tensor, "torch.Tensor | BlockMask | None"]:
    """What `GLMModel` computes with, from what its caller passed: `[batch, 2, seq]` positions and the attention
    mask in the form `config._attn_implementation` reads (see `model_position_ids`, `model_attention_mask` and
    `LayoutMask.for_attention`). `config` is a `GLMConfig`; `check_range` reads the positions on the host to refuse
    ones past the position table."""
    shape = tuple(inputs_embeds.shape[:2])
    attention_mask = read_attention_mask(attention_mask, shape, past_length, key_length)
    padding = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 else None
    position_ids = model_position_ids(
        config, input_ids, padding, position_ids, shape, past_length, inputs_embeds.device
    )
    if check_range:
        check_position_range(position_ids, config.max_position_embeddings)
    mask = model_attention_mask(
        config, input_ids, attention_mask, position_ids, key_length, past_length, prefix_length
    )
    return position_ids, mask.for_attention(config._attn_implementation)


# GLM's left-to-right layout for plain text: the text is one causal Part B span after `[gMASK] <|startofpiece|>`
# (the blank at position 0). These two tokens come before every text the causal head reads; the k-th text token
# gets the 2D position (0, k + 2).
LEFT_TO_RIGHT_PREFIX_LENGTH = 2


def left_to_right_prefix(gmask_token_id: int, sop_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` `[1, 2]` and `position_ids` `[1, 2, 2]` of the left-to-right prefix `[gMASK] <|startofpiece|>`:
    `[gMASK]` is Part A at (0, 0), `<|startofpiece|>` starts the span at (0, 1)."""
    return torch.tensor([[gmask_token_id, sop_token_id]]), torch.tensor([[[0, 0], [0, 1]]])


def left_to_right_position_ids(text_positions: torch.Tensor) -> torch.Tensor:
    """2D positions `[batch, 2, seq]` of text tokens read left to right after the prefix: position 0 (the blank),
    block position `text position + 2`."""
    return torch.stack([torch.zeros_like(text_positions), text_positions + LEFT_TO_RIGHT_PREFIX_LENGTH], dim=1)


def text_positions(
    padding_mask: torch.Tensor | None, past_length: int | torch.Tensor, query_length: int, device
) -> torch.Tensor:
    """Positions `[batch, query]` of the text tokens at indices `past_length ..` (after the cached ones), counting
    real tokens only (so left padding never shifts them); without a padding mask, `past_length, past_length + 1,
    ...`. The padding mask covers at least the cached and new tokens (a static cache's may run to its full size);
    `past_length` may be a 0-d tensor, so no value is read on the host."""
    indices = torch.arange(query_length, device=device) + past_length
    if padding_mask is None:
        return indices[None]
    positions = (padding_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions.index_select(-1, indices)


def read_causal_mask(
    attention_mask: torch.Tensor | None, shape: tuple[int, int], past_length: int | torch.Tensor, key_length: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The causal head's attention mask as booleans: `(padding, None)` for a 2D padding mask (either side; it covers
    the cached and new tokens, or every slot of a static cache), `(None, mask)` for a 4D "may attend" mask over the
    caller's tokens `[batch, 1, seq, past + seq]` (boolean, 1/0 or additive), its key slots widened to a static
    cache's size. Refuses Part A lengths: GLM layouts with blanks belong to the seq2seq head."""
    if attention_mask is None:
        return None, None
    batch, seq_len = shape
    if attention_mask.dim() == 4:
        if attention_mask.shape[:3] != (batch, 1, seq_len) or not padding_fits(
            attention_mask[:, 0, 0], batch, seq_len, past_length, key_length
        ):
            raise ValueError(
                "A 4D attention_mask for GLMForCausalLM says which of the caller's tokens each token may attend to: "
                f"[batch, 1, seq, past + seq] = {[batch, 1, seq_len, past_length + seq_len]}, got "
                f"{list(attention_mask.shape)} (the [gMASK] <|startofpiece|> prefix stays visible to every token)."
            )
        mask = read_attention_mask_4d(attention_mask)
        return None, nn.functional.pad(mask, (0, key_length - mask.shape[-1]), value=False)
    if attention_mask.dim() != 2 or not padding_fits(attention_mask, batch, seq_len, past_length, key_length):
        raise ValueError(
            f"GLMForCausalLM takes a 2D padding mask [batch, past + seq] = {[batch, past_length + seq_len]} (or a 4D "
            f"mask over its tokens), got {list(attention_mask.shape)}; GLM layouts with blanks and Part B spans "
            "belong to GLMForConditionalGeneration."
        )
    return read_padding_mask(attention_mask), None


def causal_text_positions(
    position_ids: torch.Tensor | None,
    padding: torch.Tensor | None,
    past_length: int | torch.Tensor,
    seq_len: int,
    device: torch.device,
) -> torch.Tensor:
    """The causal head's 1D text positions `[batch or 1, seq]`: as given, or counted from the padding mask."""
    if position_ids is None:
        return text_positions(padding, past_length, seq_len, device)
    if position_ids.dim() != 2 or position_ids.shape[-1] != seq_len:
        raise ValueError(
            f"GLMForCausalLM takes 1D text positions per row ([batch, seq], seq = {seq_len}), got shape "
            f"{list(position_ids.shape)}."
        )
    return position_ids


def causal_text_mask(
    padding: torch.Tensor | None,
    mask_4d: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    batch: int,
    key_length: int,
    past_length: int | torch.Tensor,
    new_tokens_only: bool,
    read_host: bool,
) -> MaskRule | None:
    """The causal head's mask over the text (the caller's tokens, cached ones first; the prefix left out), None when
    the text is read plainly causally (no padding, one document per row).

    A 4D mask says it all. Otherwise text is read causally, padding hidden; when the caller gave `position_ids` for
    a row with no cached tokens (`new_tokens_only`), each restart begins a new document (`document_ids`), which sees
    only itself besides the prefix: packed rows give each document the logits it gets alone. With `read_host`
    (inputs entering the model, not traced), a padding mask without padding and rows of one document are dropped, so
    that such batches are plain causal attention, which needs no mask tensor (SDPA's `is_causal`)."""
    if mask_4d is not None:
        return TensorMask(mask_4d)
    documents = None
    if position_ids is not None and new_tokens_only:
        documents = document_ids(position_ids.expand(batch, -1), padding)
    if read_host:
        if padding is not None and bool(padding.all()):
            padding = None
        if documents is not None and not several_documents(documents):
            documents = None
    if padding is None and documents is None:
        return None
    if documents is not None:  # key slots past the tokens (a static cache's) belong to no document
        documents = nn.functional.pad(documents, (0, key_length - documents.shape[-1]), value=-1)
    return GLMMask(None, key_length, padding, past_length, documents)


def causal_text_layout(
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    shape: tuple[int, int],
    past_length: int | torch.Tensor,
    key_length: int,
    new_tokens_only: bool,
    read_host: bool,
    device: torch.device,
) -> tuple[torch.Tensor, MaskRule | None]:
    """What the causal head computes with, from what its caller passed: the 1D text positions `[batch or 1, seq]`
    and the text's mask rule, None for plainly causal text (see `read_causal_mask`, `causal_text_positions`
    and `causal_text_mask`). `shape`: [batch, seq]."""
    padding, mask_4d = read_causal_mask(attention_mask, shape, past_length, key_length)
    positions = causal_text_positions(position_ids, padding, past_length, shape[1], device)
    text_mask = causal_text_mask(
        padding, mask_4d, position_ids, shape[0], key_length, past_length, new_tokens_only, read_host
    )
    return positions, text_mask


class LeftToRightMask(MaskRule):
    """The causal head's mask over the prefix `[gMASK] <|startofpiece|>` and the text: the prefix reads causally
    (`[gMASK]`, its Part A, sees itself; `<|startofpiece|>` sees both), every text query sees the prefix, and text
    queries see text keys as `text` says (its indices count from the text's first token). Keys are the prefix's,
    then the text's; queries are the prefix's and the text's (`prefix_queries`: one sequence, no cache) or the
    text's only (after the prefix's stored keys and values)."""

    def __init__(self, text: MaskRule, prefix_queries: bool):
        self.text, self.prefix_queries = text, prefix_queries

    def __call__(
        self, batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        prefix = LEFT_TO_RIGHT_PREFIX_LENGTH
        query = query if self.prefix_queries else query + prefix
        text = self.text(batch, head, (query - prefix).clamp(min=0), (key - prefix).clamp(min=0))
        in_prefix = key < prefix
        return (in_prefix & (key <= query)) | (~in_prefix & (query >= prefix) & text)

    def dense(self, batch: int, query_length: int, key_length: int, device) -> torch.Tensor:
        prefix = LEFT_TO_RIGHT_PREFIX_LENGTH
        text_queries = query_length - prefix if self.prefix_queries else query_length
        text = self.text.dense(batch, text_queries, key_length - prefix, device)
        rows = torch.cat([text.new_ones(batch, 1, text_queries, prefix), text], dim=-1)
        if not self.prefix_queries:
            return rows
        prefix_rows = torch.ones(prefix, key_length, dtype=torch.bool, device=device).tril()
        return torch.cat([prefix_rows.expand(batch, 1, -1, -1), rows], dim=2)


def left_to_right_text_mask(
    text_mask: MaskRule | None,
    batch: int,
    seq_len: int,
    key_length: int,
    past_length: int | torch.Tensor,
    device: torch.device,
) -> LayoutMask:
    """The mask of text read after the prefix's stored keys and values (queries: the text's `seq_len` new tokens;
    keys: the prefix's, then `key_length` cached and new ones); `text_mask` None is plain causal text."""
    keys = LEFT_TO_RIGHT_PREFIX_LENGTH + key_length
    if text_mask is None and seq_len == 1 and isinstance(past_length, int) and key_length == past_length + 1:
        return LayoutMask(None, batch, seq_len, keys, device)  # one new token that sees every key
    if text_mask is None:
        text_mask = GLMMask(None, key_length, query_offset=past_length)
    return LayoutMask(LeftToRightMask(text_mask, prefix_queries=False), batch, seq_len, keys, device)


def left_to_right_sequence(
    text_positions: torch.Tensor, text_mask: MaskRule | None, batch: int
) -> tuple[torch.Tensor, LayoutMask]:
    """Positions `[batch, 2, 2 + seq]` and mask of the prefix and the text in one sequence (no cache): `[gMASK]`
    is Part A, `<|startofpiece|>` and the text one causal span, so with `text_mask` None (plain causal text) the
    whole sequence is plain causal attention."""
    device = text_positions.device
    prefix = left_to_right_prefix(0, 0)[1].to(device).expand(batch, -1, -1)
    positions = torch.cat([prefix, left_to_right_position_ids(text_positions).expand(batch, -1, -1)], -1)
    length = positions.shape[-1]
    rule = None if text_mask is None else LeftToRightMask(text_mask, prefix_queries=True)
    return positions, LayoutMask(rule, batch, length, length, device)


def next_position_ids(position_ids: torch.Tensor, num_new_tokens: int = 1) -> torch.Tensor:
    """Positions of the next generated tokens of a span: same position as the last token, block position + 1."""
    last = position_ids[..., -1:]
    steps = torch.arange(1, num_new_tokens + 1, dtype=position_ids.dtype, device=position_ids.device)
    return torch.stack([last[:, 0].expand(-1, num_new_tokens), last[:, 1] + steps], dim=1)


def span_continuation(prompt_position_ids: torch.Tensor, start: int | torch.Tensor, length: int) -> torch.Tensor:
    """Positions `[batch, 2, length]` of the tokens at indices `start .. start + length - 1` of a sequence whose
    first tokens have `prompt_position_ids`; tokens past the prompt continue its last span (same position, block
    position + 1 per token). `start` may be a 0-d tensor (a static cache's length): computed on the device."""
    last = prompt_position_ids.shape[-1] - 1
    indices = torch.arange(length, device=prompt_position_ids.device) + start
    gathered = prompt_position_ids.index_select(-1, indices.clamp(max=last))
    beyond = (indices - last).clamp(min=0).to(prompt_position_ids.dtype)
    return torch.stack([gathered[:, 0], gathered[:, 1] + beyond], dim=1)


@dataclass
class GenerationLayout:
    """Inputs that make `generate()` fill the first blank of each row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def generation_request(
    ids: list[int], blank_token_ids: list[int], gmask_token_id: int, sop_token_id: int
) -> list[int]:
    """One prompt's ids as a started GLM generation request, the layout `generation_layout` gives it: kept when it
    already has a started span (chat templates, ChatGLM's tokenizer: `... [gMASK] <sop>`), else `<sop>` appended,
    after a `[gMASK]` when the prompt has no blank (plain text is continued left to right). Prompts in this form
    batch together whatever they held."""
    if sop_token_id in ids:
        return list(ids)
    if not set(blank_token_ids) & set(ids):
        ids = [*ids, gmask_token_id]
    return [*ids, sop_token_id]


def generation_layout(
    input_ids: torch.Tensor,
    blank_token_ids: list[int],
    sop_token_id: int,
    padding_mask: torch.Tensor | None = None,
    first_filled_token_id: int | None = None,
) -> GenerationLayout:
    """Appends `<|startofpiece|>` and builds the positions for filling the first blank of each row; rows that already
    hold a started span (a previous output being continued) are continued as they are. Rows must be left-padded and
    must contain a blank before the span starts. `first_filled_token_id`: see `build_position_ids`."""
    if padding_mask is None:
        padding_mask = torch.ones_like(input_ids)
    if not padding_mask[:, -1].bool().all():
        raise ValueError(
            "generate() needs left-padded inputs: the last column of attention_mask has padding. "
            "Set tokenizer.padding_side = 'left' before batching prompts."
        )
    started = (input_ids == sop_token_id).any(-1)
    if started.any() and not started.all():
        raise ValueError(
            "generate() got a batch mixing prompts with a started span (<|startofpiece|>, a previous output being "
            "continued) and prompts without one; continue them in separate batches."
        )
    if not started.all():
        sop = torch.full_like(input_ids[:, :1], sop_token_id)
        input_ids = torch.cat([input_ids, sop], dim=-1)
        padding_mask = torch.cat([padding_mask, torch.ones_like(padding_mask[:, :1])], dim=-1)
    sep = part_a_length(input_ids, sop_token_id)
    in_a = torch.arange(input_ids.shape[-1], device=input_ids.device) < sep.unsqueeze(-1)
    has_blank = (torch.isin(input_ids, torch.tensor(blank_token_ids, device=input_ids.device)) & in_a).any(-1)
    if not has_blank.all():
        row = int((~has_blank).nonzero()[0, 0])
        if (torch.isin(input_ids[row], torch.tensor(blank_token_ids, device=input_ids.device)) & ~in_a[row]).any():
            raise ValueError(
                f"Prompt {row} holds <|startofpiece|> before its blank: GLM reads everything from <|startofpiece|> "
                "on as the span being generated, so the blank after it is not in Part A. Remove <|startofpiece|> "
                "from the prompt, or tokenize the text with split_special_tokens=True to read it as text."
            )
        raise ValueError(
            f"Prompt {row} has no blank to fill: add [MASK] (a word or phrase), [sMASK] (a sentence) or [gMASK] "
            f"at the end (left-to-right generation) before the text the model should continue."
        )
    position_ids = build_position_ids(input_ids, blank_token_ids, sop_token_id, padding_mask, first_filled_token_id)
    return GenerationLayout(input_ids=input_ids, attention_mask=padding_mask, position_ids=position_ids)


def left_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists as a left-padded batch (what `generate()` takes) and its padding mask."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    padding = torch.zeros(len(rows), width, dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        padding[index, width - len(row) :] = 1
    return input_ids, padding


def left_padded_part_a(
    input_ids: torch.Tensor, part_a_lengths: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Part A of each row of a right-padded training batch, left-padded for generation, with its padding mask."""
    rows = [row[:length] for row, length in zip(input_ids.tolist(), part_a_lengths.tolist(), strict=True)]
    prompts, padding = left_pad(rows, pad_token_id)
    return prompts.to(input_ids.device, input_ids.dtype), padding.to(input_ids.device)


def continue_plain_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Appends `[gMASK]` to each prompt that has no blank and no started span, so plain text is continued left to
    right; the other rows of the batch get one more left padding instead, keeping the batch left-padded."""
    special = torch.tensor([*config.blank_token_ids, config.sop_token_id], device=input_ids.device)
    plain = ~torch.isin(input_ids, special).any(-1, keepdim=True)
    if config.gmask_token_id is None or not plain.any():
        return input_ids, attention_mask
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    column = torch.ones_like(input_ids[:, :1])
    appended = torch.cat([input_ids, column * config.gmask_token_id], -1), torch.cat([mask, column], -1)
    shifted = torch.cat([column * config.pad_token_id, input_ids], -1), torch.cat([column * 0, mask], -1)
    return torch.where(plain, appended[0], shifted[0]), torch.where(plain, appended[1], shifted[1])


def embedded_prompt_layout(padding_mask: torch.Tensor | None, batch: int, seq_len: int, device) -> tuple:
    """Mask and positions of an embedded prompt continued left to right: the embeddings as Part A, then
    `[gMASK] <|startofpiece|>` (two more columns)."""
    if padding_mask is None:
        padding_mask = torch.ones(batch, seq_len, dtype=torch.long, device=device)
    padding_mask = torch.cat([padding_mask, torch.ones_like(padding_mask[:, :2])], dim=1)
    return padding_mask, span_after_part_a_position_ids(padding_mask)


def check_room_to_generate(last_position: int, new_tokens: int, max_position_embeddings: int) -> None:
    """Refuses, before any token is generated, a call whose new tokens would need positions past the position
    table: each new token but the last is fed back one (block) position further than the prompt's
    `last_position`."""
    largest = last_position + max(new_tokens - 1, 0)
    if largest >= max_position_embeddings:
        room = max_position_embeddings - last_position
        raise ValueError(
            f"Generating {new_tokens} tokens would need position {largest}, but the model has "
            f"max_position_embeddings={max_position_embeddings}: ask for at most {max(room, 0)} new "
            "tokens (max_new_tokens) or shorten the prompt."
        )


def infilling_arrays(
    part_a: np.ndarray, spans: list[np.ndarray], span_blanks: np.ndarray, sop_token_id: int, eop_token_id: int
) -> dict[str, np.ndarray]:
    """The blank-infilling layout as arrays: Part A, then each span as `<|startofpiece|> span` with targets
    `span <|endofpiece|>`; span k gets the position of the blank at `span_blanks[k]` and block positions 1, 2, ...

    Returns `input_ids`, `labels` (-100 on Part A), `position_ids` `[2, seq]` and `sep` (Part A length)."""
    n_a = len(part_a)
    lengths = np.array([len(span) for span in spans], dtype=np.int64)
    sops = np.full(len(spans), sop_token_id, dtype=np.int64)
    eops = np.full(len(spans), eop_token_id, dtype=np.int64)
    pieces, targets = [np.asarray(part_a, dtype=np.int64)], [np.full(n_a, -100, dtype=np.int64)]
    for k, span in enumerate(spans):
        span = np.asarray(span, dtype=np.int64)
        pieces += [sops[k : k + 1], span]
        targets += [span, eops[k : k + 1]]
    sizes = lengths + 1
    block = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    positions = np.concatenate([np.arange(n_a, dtype=np.int64), np.repeat(np.asarray(span_blanks, np.int64), sizes)])
    blocks = np.concatenate([np.zeros(n_a, dtype=np.int64), block])
    return {
        "input_ids": np.concatenate(pieces),
        "labels": np.concatenate(targets),
        "position_ids": np.stack([positions, blocks]),
        "sep": n_a,
    }


def batch_infilling(
    rows: list[dict], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pads infilling layouts (`infilling_arrays` / `infilling_example` rows) into a batch whose
    `attention_mask` is the compact Part A length; padding sits after Part B, so it never changes real outputs."""
    width = max(len(row["input_ids"]) for row in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    labels = np.full((len(rows), width), -100, dtype=np.int64)
    position_ids = np.zeros((len(rows), 2, width), dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = row["input_ids"]
        labels[i, :n] = row["labels"]
        position_ids[i, :, :n] = row["position_ids"]
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids),
        "attention_mask": torch.tensor([int(row["sep"]) for row in rows], dtype=torch.long),
    }


def check_targets(spans: list[list[int]], layout_token_ids: dict[str, int]) -> None:
    """Refuses a target holding a blank or span marker (`layout_token_ids` maps their strings to ids): a blank would
    be trained as a label to generate, an end-of-piece would end the span in its middle."""
    for row, span in enumerate(spans):
        found = [name for name, token in layout_token_ids.items() if token in span]
        if found:
            raise ValueError(
                f"target {row} holds {', '.join(found)}, which would be trained as layout tokens, not text; remove "
                "them, or pass plain_text=True to read special-token strings in targets as text."
            )


def infilling_example(
    part_a: list[int],
    spans: list[list[int]],
    blank_token_ids: list[int],
    sop_token_id: int,
    eop_token_id: int,
    span_blanks: list[int] | None = None,
) -> dict[str, list]:
    """One training example as lists (see `infilling_arrays`), with its blanks checked.

    `span_blanks[k]` is the index in `part_a` of the blank that span k fills (default: the k-th blank in order, so
    spans may be given shuffled by passing their blank indices).
    """
    blanks = np.flatnonzero(np.isin(np.asarray(part_a, dtype=np.int64), blank_token_ids)).tolist()
    if span_blanks is None:
        if len(spans) > len(blanks):
            raise ValueError(f"{len(spans)} spans but only {len(blanks)} blanks in Part A.")
        span_blanks = blanks[: len(spans)]
    if len(span_blanks) != len(spans) or not set(span_blanks) <= set(blanks):
        raise ValueError(f"span_blanks {span_blanks} must name one blank of Part A (blanks at {blanks}) per span.")
    arrays = infilling_arrays(
        np.asarray(part_a), [np.asarray(s) for s in spans], span_blanks, sop_token_id, eop_token_id
    )
    return {
        "input_ids": arrays["input_ids"].tolist(),
        "labels": arrays["labels"].tolist(),
        "position_ids": arrays["position_ids"].tolist(),
        "sep": arrays["sep"],
    }


def multiple_choice_layout(
    part_a: list[int], choices: list[list[int]], blank_token_ids: list[int], sop_token_id: int
) -> dict:
    """All choices of one cloze example in one sequence: Part A, then each choice as its own span
    `<|startofpiece|> c_1 .. c_{n-1}` with labels `c_1 .. c_n`, filling the first blank of Part A.

    Each span sees Part A and its own prefix only (not the other choices), so one forward pass scores every
    choice as if it were generated alone. Returns `input_ids`, `position_ids` `[2, seq]`, a boolean
    `attention_mask` `[seq, seq]`, `choice_labels` and `choice_index` (the choice each labelled position scores,
    else -1).
    """
    blanks = [i for i, token in enumerate(part_a) if token in blank_token_ids]
    if not blanks:
        raise ValueError("The multiple-choice prompt has no blank ([MASK], [sMASK] or [gMASK]) for the choices.")
    if any(len(choice) == 0 for choice in choices):
        raise ValueError("Every choice needs at least one token.")
    blank, n_a = blanks[0], len(part_a)
    input_ids, labels, choice_index = list(part_a), [-100] * n_a, [-1] * n_a
    positions, blocks, segment = list(range(n_a)), [0] * n_a, [-1] * n_a
    for k, choice in enumerate(choices):
        input_ids += [sop_token_id, *choice[:-1]]
        labels += choice
        choice_index += [k] * len(choice)
        positions += [blank] * len(choice)
        blocks += list(range(1, len(choice) + 1))
        segment += [k] * len(choice)
    seg = torch.tensor(segment)
    idx = torch.arange(len(input_ids))
    same_span = (seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None]) & (seg[:, None] >= 0)
    attention_mask = (idx[None, :] < n_a) | same_span
    return {
        "input_ids": input_ids,
        "position_ids": [positions, blocks],
        "attention_mask": attention_mask,
        "choice_labels": labels,
        "choice_index": choice_index,
    }


def batch_multiple_choice(layouts: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pads `multiple_choice_layout`s into a batch; padding rows attend only to themselves."""
    batch_size, width = len(layouts), max(len(layout["input_ids"]) for layout in layouts)
    batch = {
        "input_ids": torch.full((batch_size, width), pad_token_id),
        "position_ids": torch.zeros(batch_size, 2, width, dtype=torch.long),
        "attention_mask": torch.eye(width, dtype=torch.bool).repeat(batch_size, 1, 1, 1),
        "choice_labels": torch.full((batch_size, width), -100),
        "choice_index": torch.full((batch_size, width), -1),
    }
    for row, layout in enumerate(layouts):
        n = len(layout["input_ids"])
        batch["input_ids"][row, :n] = torch.tensor(layout["input_ids"])
        batch["position_ids"][row, :, :n] = torch.tensor(layout["position_ids"])
        batch["attention_mask"][row, 0, :n, :n] = layout["attention_mask"]
        batch["choice_labels"][row, :n] = torch.tensor(layout["choice_labels"])
        batch["choice_index"][row, :n] = torch.tensor(layout["choice_index"])
    return batch


def cloze_layouts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config, plain_text: bool | None = None
) -> dict[str, torch.Tensor]:
    """The multiple-choice layout of each text with every verbalizer of `config` as a choice: the text put into the
    cloze pattern (`config.cloze_prefix_ids` / `cloze_suffix_ids`) unless `plain_text=False` (the text holds its
    own blank). Padding (`attention_mask`, either side) is dropped first."""
    prefix, suffix = config.cloze_prefix_ids or [], config.cloze_suffix_ids or []
    plain_text = bool(prefix or suffix) if plain_text is None else plain_text
    if plain_text and not (prefix or suffix):
        raise ValueError(
            "plain_text=True puts each text into the cloze pattern, but the config has none (cloze_prefix_ids / "
            "cloze_suffix_ids): build it with glm_hf.training.cloze.cloze_config(tokenizer, pattern, label_words)."
        )
    keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    layouts = []
    for row, (ids, real) in enumerate(zip(input_ids.tolist(), keep.tolist(), strict=True)):
        text = [token for token, is_real in zip(ids, real, strict=True) if is_real]
        if plain_text:
            text = [*prefix, *_text_for_pattern(text, row, config), *suffix]
        layouts.append(
            multiple_choice_layout(text, config.verbalizer_ids, config.blank_token_ids, config.sop_token_id)
        )
    batch = batch_multiple_choice(layouts, config.pad_token_id)
    return {name: tensor.to(input_ids.device) for name, tensor in batch.items()}


def _text_for_pattern(text: list[int], row: int, config) -> list[int]:
    """The text to put into the pattern, without the generation request ChatGLM's tokenizer appends to every text
    (`[gMASK] <sop>`); refuses other GLM layout tokens in it: the pattern's blank is the one scored."""
    request = [config.gmask_token_id, config.sop_token_id]
    text = text[: -len(request)] if text[-len(request) :] == request else text
    layout_tokens = {*config.blank_token_ids, config.sop_token_id} & set(text)
    if layout_tokens:
        raise ValueError(
            f"Text {row} holds the token ids {sorted(layout_tokens)} (a blank or <|startofpiece|>), but it is put "
            "into the cloze pattern, which brings the blank: tokenize untrusted text with "
            "split_special_tokens=True (a [MASK] typed into it stays text), or pass plain_text=False if the "
            "text's own blank is meant."
        )
    return text


def choice_scores(
    lm_head: nn.Module,
    hidden_states: torch.Tensor,
    choice_labels: torch.Tensor,
    choice_index: torch.Tensor,
    num_choices: int | None,
    scoring: str = "mean",
) -> torch.Tensor:
    """`[batch, choices]` scores: per choice, the mean (`scoring="mean"`) or sum of its tokens' log-probabilities;
    -inf for choices an example does not have. Only the labelled positions go through the vocabulary projection."""
    picked = choice_index >= 0
    if choice_labels.shape != choice_index.shape or (choice_labels[picked] < 0).any():
        raise ValueError("choice_labels and choice_index must have the same shape and label every choice position.")
    batch_size = choice_index.shape[0]
    width = num_choices if num_choices is not None else int(choice_index.max()) + 1
    log_probs = lm_head(hidden_states[picked]).float().log_softmax(-1)
    token_scores = log_probs.gather(-1, choice_labels[picked][:, None])[:, 0]
    rows = torch.arange(batch_size, device=choice_index.device)[:, None].expand_as(choice_index)[picked]
    slot = rows * width + choice_index[picked]
    sums = token_scores.new_zeros(batch_size * width).index_add(0, slot, token_scores)
    counts = token_scores.new_zeros(batch_size * width).index_add(0, slot, torch.ones_like(token_scores))
    scores = sums / counts.clamp(min=1) if scoring == "mean" else sums
    return scores.masked_fill(counts == 0, float("-inf")).view(batch_size, width)
