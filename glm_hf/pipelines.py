"""GLM pipelines, registered on `import glm_hf`:

- `pipeline("fill-blank")`: fills every `[MASK]`/`[sMASK]`/`[gMASK]` of a text left to right, each fill
  conditioning on the earlier ones (GLM's autoregressive blank infilling); generation kwargs pass through.
- `pipeline("cloze-classification")`: scores candidate labels as fills of the text's blank (or of a pattern's),
  all candidates in one forward pass; returns labels sorted by probability.

Untrusted text: both take `plain_text`. With `plain_text=True` the text is read as plain text, so a `[MASK]`,
`<|startofpiece|>` or `<|endoftext|>` typed into it is text, never a token; only the caller's own markup (a
cloze pattern, fill-blank's trailing `[gMASK]`) holds special tokens. `split_special_tokens`, the tokenizer's name
for it, is accepted as the same option.

`pipeline("text-generation")` needs nothing extra: it loads `GLMForCausalLM` through `AutoModelForCausalLM` (untrusted
prompts: `tokenizer_encode_kwargs={"split_special_tokens": True}`; chat messages are plain text by default).
"""

import torch
from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .model.blank_infilling import batch_multiple_choice, choice_scores, multiple_choice_layout
from .training.cloze import split_pattern

DEFAULT_MAX_NEW_TOKENS = 32


class _GLMPipeline(Pipeline):
    """Checks that the model is a GLM with its language-modelling head and the tokenizer knows GLM's tokens; reads
    texts as GLM markup or as plain text."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.model.config, "blank_token_ids") or not self.model.can_generate():
            raise ValueError(
                f"The {self.task} pipeline needs a GLM with its language-modelling head "
                f"(GLMForConditionalGeneration), got {type(self.model).__name__}."
            )
        if not hasattr(self.tokenizer, "mask_token_ids"):
            raise ValueError(f"The {self.task} pipeline needs a GLMTokenizer, got {type(self.tokenizer).__name__}.")
        self._frame = self._added_special_ids()

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, list | tuple) and not inputs:
            raise ValueError(f"{self.task} got an empty list of texts; give at least one text.")
        return super().__call__(inputs, *args, **kwargs)

    def _plain_text_option(self, plain_text: bool | None, split_special_tokens: bool | None) -> bool | None:
        """`plain_text`, or `split_special_tokens` (the tokenizer's name for it, which would otherwise go to
        `generate()` and be refused there as an unused model kwarg); the two must agree when both are given."""
        if split_special_tokens is None:
            return plain_text
        if plain_text is not None and bool(plain_text) != bool(split_special_tokens):
            raise ValueError(
                f"{self.task} got plain_text={plain_text} and split_special_tokens={split_special_tokens}, which "
                "are the same option; pass plain_text only."
            )
        return bool(split_special_tokens)

    def _blank_ids(self) -> set[int]:
        return set(self.tokenizer.mask_token_ids)

    def _check_text(self, text) -> None:
        if not isinstance(text, str):
            raise ValueError(f"{self.task} takes text (or a list of texts), got {type(text).__name__}.")
        if not text.strip():
            raise ValueError(f"{self.task} got an empty text ({text!r}); give text to read.")

    def _text_ids(self, text: str, plain_text: bool) -> list[int]:
        """`text`'s ids without the special tokens the tokenizer adds around a text; with `plain_text`, special-token
        strings in it are text."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=plain_text)["input_ids"]

    def _added_special_ids(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text (THUDM's `[CLS] ... <eos>`), except
        generation markers: ChatGLM's tokenizer appends `[gMASK] <sop>` (a left-to-right generation request), which
        is not part of a text to fill or classify."""
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("x")["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
        markers = self._blank_ids() | {self.tokenizer.sop_token_id}
        return full[:start], [token for token in full[start + len(plain) :] if token not in markers]

    def _framed(self, ids: list[int]) -> list[int]:
        before, after = self._frame
        return [*before, *ids, *after]

    def _check_length(self, ids: list[int], extra: int) -> None:
        limit = self.model.config.max_position_embeddings
        if self.model.config.position_encoding == "learned_2d" and len(ids) + 1 > limit:
            raise ValueError(
                f"The input has {len(ids)} tokens; this model's positions cover {limit} (max_position_embeddings). "
                "Shorten the text."
            )
        if extra < 1:
            raise ValueError("max_new_tokens must be at least 1.")


class FillBlankPipeline(_GLMPipeline):
    """Text with blanks → `{"filled_text": ..., "fills": [...], "finished": [...]}`: every blank filled, left to
    right, each fill generated with the earlier fills already in place. Options are `generate()` options
    (`max_new_tokens` per blank, default 32; `do_sample`, `num_beams`, ...); a fill that reaches `max_new_tokens`
    without `<|endofpiece|>` is kept as generated and flagged in `"finished"`. A fill is text: the generated tokens
    up to the span's end (`<|endofpiece|>`, eos or padding), without special tokens.

    `num_return_sequences=k` gives a list of k results per text, as text generation does: the first blank's k best
    (beam search) or sampled fills, each completed with one fill per later blank.

    `plain_text=True` reads the whole text as plain text (special-token strings in it stay text) and continues it
    at its end (a `[gMASK]` there): `filled_text` is the text and its continuation (`split_special_tokens=True`
    is the same). The default reads the text as GLM markup: its blank strings are the blanks; `<|startofpiece|>` /
    `<|endofpiece|>` in it are refused.
    """

    def _sanitize_parameters(
        self, plain_text: bool | None = None, split_special_tokens: bool | None = None, **generate_kwargs
    ):
        plain_text = self._plain_text_option(plain_text, split_special_tokens)
        preprocess = {"plain_text": plain_text} if plain_text is not None else {}
        if "max_new_tokens" in generate_kwargs:
            preprocess["max_new_tokens"] = generate_kwargs["max_new_tokens"]
        postprocess = {"listed": True} if "num_return_sequences" in generate_kwargs else {}
        return preprocess, generate_kwargs, postprocess

    def preprocess(self, text: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, plain_text: bool = False) -> dict:
        self._check_text(text)
        if plain_text:
            ids = self._framed([*self._text_ids(text, plain_text=True), self.tokenizer.gmask_token_id])
        else:
            ids = self._framed(self._text_ids(text, plain_text=False))
            self._check_markup(text, ids)
        self._check_length(ids, max_new_tokens)
        return {"input_ids": ids}

    def _check_markup(self, text: str, ids: list[int]) -> None:
        """Refuses a text without a blank, or with span markers (which would turn the text into a generated span)."""
        markers = [self.tokenizer.sop_token, self.tokenizer.eop_token]
        found = [marker for marker in markers if self.tokenizer.convert_tokens_to_ids(marker) in ids]
        if found:
            raise ValueError(
                f"{text[:80]!r} holds {' and '.join(found)}, GLM's span markers, which are not text: GLM would read "
                "what follows <|startofpiece|> as the answer being generated. Remove them, or pass plain_text=True to "
                "read every special-token string in the text as text (the text is then continued at its end)."
            )
        if not self._blank_ids() & set(ids):
            raise ValueError(
                f"No blank to fill in {text[:80]!r}: write [MASK], [sMASK] or [gMASK] where text is missing, or pass "
                "plain_text=True to continue the text at its end."
            )

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        options = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **generate_kwargs}
        start = {"input_ids": list(model_inputs["input_ids"]), "fills": [], "finished": []}
        chains = self._fill_next_blank(start, options)
        one = {**options, "num_return_sequences": 1}
        for chain in chains:
            while self._blank_ids() & set(chain["input_ids"]):
                chain.update(self._fill_next_blank(chain, one)[0])
        return {"chains": chains}

    def _next_blank(self, ids: list[int]) -> int:
        """The blank `generate()` fills: ChatGLM-style configs fill a `[gMASK]` first (`blank_fill_order`)."""
        first = self.model.config.first_filled_token_id
        if first in ids:
            return ids.index(first)
        return next(i for i, token in enumerate(ids) if token in self._blank_ids())

    def _fill_next_blank(self, chain: dict, options: dict) -> list[dict]:
        """`chain` with its next blank filled, once per sequence `generate()` returns. A fill ends at the first end
        token (end-of-piece, eos, padding) and keeps only text tokens, so no marker, blank or padding the model
        generates gets into the text (a generated blank would otherwise be filled in turn)."""
        ids = chain["input_ids"]
        blank = self._next_blank(ids)
        output = self.model.generate(torch.tensor([ids], device=self.device), **options)
        tokenizer = self.tokenizer
        ends = {tokenizer.eop_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        specials = set(tokenizer.all_special_ids)
        filled = []
        for row in output[:, len(ids) + 1 :].tolist():
            end = next((i for i, token in enumerate(row) if token in ends), None)
            fill = [token for token in row[:end] if token not in specials]
            filled.append(
                {
                    "input_ids": ids[:blank] + fill + ids[blank + 1 :],
                    "fills": [*chain["fills"], fill],
                    "finished": [*chain["finished"], end is not None],
                }
            )
        return filled

    def postprocess(self, model_outputs: dict, listed: bool = False) -> dict | list[dict]:
        decode = self.tokenizer.decode
        results = [
            {
                "filled_text": decode(chain["input_ids"], skip_special_tokens=True),
                "fills": [decode(fill, skip_special_tokens=True) for fill in chain["fills"]],
                "finished": chain["finished"],
            }
            for chain in model_outputs["chains"]
        ]
        return results if listed else results[0]


class ClozeClassificationPipeline(_GLMPipeline):
    """`(text, candidate_labels)` → `{"sequence", "labels", "scores"}`: each label is scored by the log-probability
    of generating it into the blank (mean over its tokens, or their sum: `config.choice_scoring`); scores are
    softmax-normalised over the labels; all labels share one forward pass. Labels must be distinct, non-empty
    strings (a list, or one comma-separated string); they are read as plain text.

    With `pattern`, e.g. "{text} It was [MASK].", the text is always put into the pattern, whose blank is scored;
    the text is then plain text by default (`plain_text=True`: a `[MASK]` typed into it stays text). Without a
    pattern, the text is GLM markup holding its own blank (its first one is scored). `plain_text=False` with a
    pattern reads the text as markup too, and refuses a blank in it (the pattern brings the blank).
    """

    def _sanitize_parameters(
        self, candidate_labels=None, pattern=None, plain_text=None, split_special_tokens=None, **kwargs
    ):
        if kwargs:
            raise ValueError(
                f"cloze-classification takes candidate_labels, pattern and plain_text, got {sorted(kwargs)}."
            )
        plain_text = self._plain_text_option(plain_text, split_special_tokens)
        given = {"candidate_labels": candidate_labels, "pattern": pattern, "plain_text": plain_text}
        return {name: value for name, value in given.items() if value is not None}, {}, {}

    def preprocess(
        self, text: str, candidate_labels=None, pattern: str | None = None, plain_text: bool | None = None
    ) -> dict:
        self._check_text(text)
        labels = _candidate_labels(candidate_labels)
        plain_text = pattern is not None if plain_text is None else plain_text
        ids, sequence = self._context(text, pattern, plain_text)
        self._check_length(ids, 1)
        blank_tokens = self.tokenizer.convert_ids_to_tokens(self.tokenizer.mask_token_ids)
        markup = text if pattern is None else pattern
        space = " " if any(f" {blank}" in markup for blank in blank_tokens) else ""
        choices = [self._text_ids(space + label, plain_text=True) for label in labels]
        layout = multiple_choice_layout(ids, choices, self.tokenizer.mask_token_ids, self.tokenizer.sop_token_id)
        batch = batch_multiple_choice([layout], self.tokenizer.pad_token_id)
        return {**batch, "sequence": sequence, "candidate_labels": labels}

    def _context(self, text: str, pattern: str | None, plain_text: bool) -> tuple[list[int], str]:
        """The ids of the text in its pattern (pattern markup around the text, read as `plain_text` says), and the
        text that makes up."""
        if pattern is None:
            if plain_text:
                raise ValueError(
                    "plain_text=True reads the text as plain text, so its blank must come from a pattern: pass "
                    "pattern='{text} It was [MASK].'."
                )
            ids = self._framed(self._text_ids(text, plain_text=False))
            if not self._blank_ids() & set(ids):
                raise ValueError(f"No blank in {text[:80]!r}: add [MASK] or pass pattern='{{text}} It was [MASK].'.")
            return ids, text
        blank_tokens = self.tokenizer.convert_ids_to_tokens(self.tokenizer.mask_token_ids)
        before, after = split_pattern(pattern, blank_tokens)
        body = self._text_ids(text, plain_text)
        if self._blank_ids() & set(body):
            raise ValueError(
                f"{text[:80]!r} holds a blank and the pattern brings one: pass plain_text=True to read special-token "
                "strings in the text as text, or leave out pattern to use the text's own blank."
            )
        ids = self._text_ids(before, plain_text=False) + body + self._text_ids(after, plain_text=False)
        return self._framed(ids), before + text + after

    def _forward(self, model_inputs: dict) -> dict:
        names = ("input_ids", "position_ids", "attention_mask")
        hidden = self.model.glm(**{name: model_inputs[name] for name in names}).last_hidden_state
        labels, index = model_inputs["choice_labels"], model_inputs["choice_index"]
        count = len(model_inputs["candidate_labels"])
        return {
            "scores": choice_scores(
                self.model.lm_head, hidden, labels, index, count, self.model.config.choice_scoring
            )[0],
            "sequence": model_inputs["sequence"],
            "candidate_labels": model_inputs["candidate_labels"],
        }

    def postprocess(self, model_outputs: dict) -> dict:
        probabilities = model_outputs["scores"].softmax(-1).tolist()
        ranked = sorted(zip(model_outputs["candidate_labels"], probabilities, strict=True), key=lambda p: -p[1])
        return {
            "sequence": model_outputs["sequence"],
            "labels": [label for label, _ in ranked],
            "scores": [score for _, score in ranked],
        }


def _candidate_labels(candidate_labels) -> list[str]:
    """The labels to score: a list of strings, or one comma-separated string. Refuses no labels, empty labels and
    repeated labels (an empty label would be scored as a real one; a repeated one splits its probability)."""
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",")]
    labels = list(candidate_labels or [])
    if not labels:
        raise ValueError("cloze-classification needs candidate_labels, e.g. ['great', 'terrible'].")
    if not all(isinstance(label, str) for label in labels):
        raise ValueError(f"candidate_labels must be strings, got {labels!r}.")
    empty = [i for i, label in enumerate(labels) if not label.strip()]
    if empty:
        raise ValueError(f"candidate_labels {labels!r} has empty labels (positions {empty}); every label needs text.")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"candidate_labels repeats {repeated}; give each label once.")
    return labels


def register_pipelines() -> None:
    """Registers `fill-blank` and `cloze-classification` with transformers' pipeline registry."""
    for task, pipeline_class in (
        ("fill-blank", FillBlankPipeline),
        ("cloze-classification", ClozeClassificationPipeline),
    ):
        if task not in PIPELINE_REGISTRY.get_supported_tasks():
            PIPELINE_REGISTRY.register_pipeline(
                task, pipeline_class=pipeline_class, pt_model=AutoModelForSeq2SeqLM, type="text"
            )


__all__ = ["ClozeClassificationPipeline", "FillBlankPipeline", "register_pipelines"]
