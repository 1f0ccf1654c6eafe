"""GLM's blank-infilling layout for one vLLM request: 2D positions of the prompt and of the tokens generated after it.

A GLM prompt is Part A (text holding blanks `[MASK]`/`[sMASK]`/`[gMASK]`), optionally followed by Part B (spans, each
opened by `<|startofpiece|>`). Part A token i has the 2D position (i, 0); the k-th token of a span has (position of its
blank, k). A span fills the k-th blank in fill order (ChatGLM-style configs fill `[gMASK]` blanks first). Generated
tokens continue the prompt's last span; a prompt without `<|startofpiece|>` starts the span of its first blank, whose
`<|startofpiece|>` is then the first generated token (see `model.GLMForConditionalGeneration.compute_logits`).

vLLM carries positions per request as M-RoPE rows: the prompt's rows are computed here once, and on every decode step
each row holds `delta + index in the sequence`. That is one number per token, so a 2D position travels encoded as
`position * stride + block position` (`encode`); the stride is the model's position-table size, larger than any block
position, so the model decodes it exactly (`decode`). The span's position stays fixed while its block position grows by
one per token, which is what `delta + index` gives.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LayoutTokens:
    """The token ids that shape a GLM layout, read off the model's config."""

    blank_ids: frozenset[int]
    sop_id: int
    first_filled_id: int | None = None  # ChatGLM's `[gMASK]`: its blanks are filled before the others


@dataclass(frozen=True)
class PromptLayout:
    """A prompt's encoded positions and the decode delta (generated token at sequence index t: `delta + t`)."""

    positions: list[int]
    delta: int
    starts_span: bool  # False: the prompt ends in Part A and `<|startofpiece|>` must be generated first


class LayoutError(ValueError):
    """A prompt GLM cannot generate from (no blank to fill, or more spans than blanks)."""


def encode(position: int, block: int, stride: int) -> int:
    """One integer for a 2D position (see the module docstring)."""
    return position * stride + block


def prompt_layout(tokens: list[int], special: LayoutTokens, stride: int) -> PromptLayout:
    """The layout of one prompt, exactly as glm-hf's `blank_infilling.build_position_ids` builds it for `generate()`.

    Raises LayoutError for a prompt without a blank in Part A, or with more spans than blanks.
    """
    if not tokens:
        raise LayoutError("The prompt is empty; GLM needs text with a blank ([MASK], [sMASK] or [gMASK]).")
    sep = next((i for i, token in enumerate(tokens) if token == special.sop_id), len(tokens))
    blanks = [i for i in range(sep) if tokens[i] in special.blank_ids]
    if special.first_filled_id is not None:
        blanks.sort(key=lambda i: tokens[i] != special.first_filled_id)  # stable: fill order within each kind kept
    if not blanks:
        where = " before <|startofpiece|>" if sep < len(tokens) else ""
        raise LayoutError(
            f"The prompt has no blank to fill{where}: end it with [gMASK] for left-to-right generation (or put "
            "[MASK] / [sMASK] where the text should be filled in)."
        )
    positions = [encode(i, 0, stride) for i in range(sep)]
    span, block = -1, 0
    for i in range(sep, len(tokens)):
        if tokens[i] == special.sop_id:
            span, block = span + 1, 0
            if span >= len(blanks):
                raise LayoutError(
                    f"The prompt opens {span + 1} spans (<|startofpiece|>) but has only {len(blanks)} blanks before "
                    "the first one; every span needs its own [MASK]/[sMASK]/[gMASK]."
                )
        block += 1
        positions.append(encode(blanks[span], block, stride))
    last = len(tokens) - 1
    if sep == len(tokens):  # `<|startofpiece|>` comes at index len(tokens), at (first blank, 1)
        return PromptLayout(positions, encode(blanks[0], 1, stride) - len(tokens), starts_span=False)
    return PromptLayout(positions, positions[-1] - last, starts_span=True)
