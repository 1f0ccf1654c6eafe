"""The one place where GLM's blank-infilling layout is turned into 2D positions and attention masks.

A GLM sequence is Part A (the corrupted text, holding blank tokens `[MASK]`/`[sMASK]`/`[gMASK]`) followed by
Part B (the spans, each `<|startofpiece|> span`). Part A attends bidirectionally within A; Part B attends to all
of A and causally within B. Every token has a 2D position (position, block position): Part A token i gets (i, 0);
the k-th token of a span gets (position of its blank in A, k).

The model, `generate()`, the tokenizer builders and the collator call these functions; nothing
else derives positions or masks.
"""

from dataclasses import dataclass

import numpy as np
import torch


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


def check_part_a_lengths(sep: torch.Tensor, length: int) -> None:
    """Part A lengths (a 1D attention_mask) must lie in [0, length], the tokens of their rows."""
    if sep.numel() and not 0 <= int(sep.min()) <= int(sep.max()) <= length:
        raise ValueError(
            f"A 1D attention_mask holds each row's Part A length, in [0, {length}] for these rows; got lengths from "
            f"{int(sep.min())} to {int(sep.max())}."
        )


def build_attention_mask(
    sep: torch.Tensor,
    query_length: int,
    key_length: int,
    padding_mask: torch.Tensor | None = None,
    query_offset: int | torch.Tensor = 0,
    visible_prefix: int = 0,
) -> torch.Tensor:
    """Boolean "may attend" mask `[batch, 1, query, visible_prefix + key]`: causal, or key inside Part A
    (`key < sep`).

    `query_offset` is the number of cached tokens before the queries (an int, or the 0-d tensor a static cache
    counts in: the mask is built on the device either way). `padding_mask` covers the tokens seen so far
    (`[batch, query_offset + query_length]`); key slots past it (a static cache's unused tail) are hidden. Each
    query always sees itself, so a padding query never has an empty row (which would turn the softmax into NaN).
    `visible_prefix` key columns come first and are seen by every query (the left-to-right prefix, see
    `LEFT_TO_RIGHT_PREFIX`).
    """
    device = sep.device
    q = (torch.arange(query_length, device=device) + query_offset).view(1, 1, -1, 1)
    k = torch.arange(key_length, device=device).view(1, 1, 1, -1)
    allowed = (k <= q) | (k < sep.view(-1, 1, 1, 1))
    if padding_mask is not None:
        seen = padding_mask.bool()[:, :key_length]
        unused = key_length - seen.shape[-1]
        if unused > 0:
            seen = torch.nn.functional.pad(seen, (0, unused), value=False)
        allowed = allowed & seen[:, None, None, :]
    allowed = allowed | (k == q)
    if visible_prefix:
        prefix = torch.ones(*allowed.shape[:-1], visible_prefix, dtype=torch.bool, device=device)
        allowed = torch.cat([prefix.expand(allowed.shape[0], -1, -1, -1), allowed], dim=-1)
    return allowed


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
