"""DataCollatorForBlankInfilling: GLM pretraining batches from tokenized text (token, sentence and document blanks)."""

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import DataCollatorMixin

from ..model.blank_infilling import batch_infilling, infilling_arrays

OBJECTIVES = ("token", "sentence", "document")
# The tokens every layout uses: the three blanks, the span start / end, and the padding of the batch.
GLM_TOKENS = ("mask_token", "smask_token", "gmask_token", "sop_token", "eop_token", "pad_token")


def require_glm_tokenizer(tokenizer, user: str) -> None:
    """Raises a ValueError, saying how to get a GLM tokenizer, when `tokenizer` lacks a token GLM's layouts need (a
    GPT-2 or BERT tokenizer has no `[sMASK]`, `[gMASK]`, `<|startofpiece|>` or `<|endofpiece|>`); `user` names the
    collator that needs it."""
    missing = [name for name in GLM_TOKENS if not isinstance(getattr(tokenizer, f"{name}_id", None), int)]
    if missing:
        raise ValueError(
            f"{user} needs a GLM tokenizer (glm_hf.GLMTokenizer, with the [MASK], [sMASK], [gMASK], "
            f"<|startofpiece|>, <|endofpiece|> and padding tokens); the given {type(tokenizer).__name__} has no "
            f"{', '.join(missing)}. Load a GLM model's tokenizer with GLMTokenizer.from_pretrained(folder), train one "
            "with GLMTokenizer.train_bpe(texts) (or `glm-hf tokenizer train`), or wrap a tokenizers.Tokenizer holding "
            "those tokens with GLMTokenizer.from_backend(backend)."
        )


SENTENCE_ENDS = (".", "!", "?", "。", "！", "？", "…")


@dataclass
class DataCollatorForBlankInfilling(DataCollatorMixin):
    """Turns examples with `input_ids` into GLM's autoregressive blank-infilling batches.

    Per example one objective is drawn with `objective_probs` (token, sentence, document), as in THUDM's
    `ConstructBlockStrategy`:
    - token (`[MASK]`): span lengths from a Poisson(`poisson_lambda`) on 1..`max_span_length`, drawn until
      `mask_ratio` of the tokens are covered (the last span is shortened to hit it exactly), placed at random with at
      least one kept token between spans;
    - sentence (`[sMASK]`): whole sentences, in random order, until `mask_ratio` of the tokens are covered; a
      sentence ends at a token in `sentence_end_token_ids` (default: tokens ending in English or Chinese sentence
      punctuation), or where the example's optional `sentence_ends` says (token offsets into its `input_ids`,
      exclusive ends, e.g. from a sentence splitter's character offsets);
    - document (`[gMASK]`): one span of `document_min_ratio`..1 of the text, at its end.
    Each span becomes one blank in Part A and, in a random order (`shuffle_spans`), a Part B segment
    `<|startofpiece|> span` with targets `span <|endofpiece|>`. Special tokens at either end of the text (`[CLS]`,
    eos, padding) stay in Part A and are never masked.

    Output: `input_ids`, `position_ids` `[batch, 2, seq]`, `attention_mask` as Part A lengths `[batch]` (rows are
    right-padded) and `labels` (-100 outside Part B), as torch tensors (`return_tensors="pt"`) or numpy arrays
    (`"np"`). With `max_length`, the text is shortened until the finished layout fits; every row keeps at least one
    blank, and a row that cannot (no text between its special tokens, or special tokens at its ends that leave no
    room for a blank within `max_length`) raises a ValueError naming the example.

    What determines the blanks: `seed` and the batch, nothing else. Each call seeds a fresh numpy Generator with
    `seed` and a 128-bit digest (BLAKE2b) of the batch's `input_ids` (and `sentence_ends`), and lays its examples
    out in order from it. No state carries from one call to the next, so:
    - the same seed and the same batch give the same layout in every call, process, DataLoader worker and rank;
    - different batches draw independently by construction, so DataLoader workers (each holding a copy of the
      collator) and data-parallel ranks (each collating its own share of the data) never repeat each other's
      blanks without any per-worker or per-rank seed; only identical batches get identical blanks, so pass
      `seed + rank` where ranks may hold duplicate rows;
    - a `Trainer` run resumed from a checkpoint draws exactly the blanks of the uninterrupted run: the Trainer
      replays the sampler's order and skips the batches already trained on without collating them, which would
      shift any stateful generator;
    - a row gets new blanks in each epoch in which the sampler puts it into a different batch (any shuffling
      sampler); an unshuffled epoch repeats the previous epoch's blanks.
    `seed=None` draws a random seed once, when the collator is built.
    """

    tokenizer: PreTrainedTokenizerBase
    mask_ratio: float = 0.15
    poisson_lambda: float = 3.0
    max_span_length: int = 40
    objective_probs: tuple[float, float, float] = (1.0, 0.0, 0.0)
    document_min_ratio: float = 0.5
    shuffle_spans: bool = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    sentence_end_token_ids: list[int] | None = None
    return_tensors: str = "pt"
    entropy: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        require_glm_tokenizer(self.tokenizer, type(self).__name__)
        self._check_settings()
        self.entropy = np.random.SeedSequence(self.seed).entropy
        lengths = np.arange(1, self.max_span_length + 1)
        log_pmf = (
            lengths * math.log(self.poisson_lambda)
            - self.poisson_lambda
            - np.array([math.lgamma(k + 1) for k in lengths])
        )
        self.span_length_cdf = np.cumsum(np.exp(log_pmf) / np.exp(log_pmf).sum())
        tok = self.tokenizer
        self.blank_ids = (tok.mask_token_id, tok.smask_token_id, tok.gmask_token_id)
        self.span_ids = (tok.sop_token_id, tok.eop_token_id)
        self.vocab_size = len(tok)
        if self.sentence_end_token_ids is None:
            self.sentence_end_token_ids = self._sentence_end_ids()
        elif not all(0 <= i < self.vocab_size for i in self.sentence_end_token_ids):
            raise ValueError(
                f"sentence_end_token_ids must be ids of the tokenizer's vocabulary (0..{self.vocab_size - 1}), "
                f"got {self.sentence_end_token_ids}."
            )
        # Per-id lookup tables: indexing them is much cheaper than np.isin on every example.
        self.is_special = np.zeros(self.vocab_size, dtype=bool)
        self.is_special[sorted(set(tok.all_special_ids))] = True
        self.is_sentence_end = np.zeros(self.vocab_size, dtype=bool)
        self.is_sentence_end[self.sentence_end_token_ids] = True
        self.objective_cdf = np.cumsum(self.objective_probs)

    def _check_settings(self) -> None:
        """Raises a ValueError saying what to change for settings that would fail later or give wrong batches."""
        if not 0.0 < self.mask_ratio <= 0.5:
            raise ValueError(
                f"mask_ratio must be in (0, 0.5] so spans fit with gaps between them, got {self.mask_ratio}."
            )
        probs = np.asarray(self.objective_probs, dtype=np.float64)
        if probs.shape != (3,) or (probs < 0).any() or not math.isclose(probs.sum(), 1.0):
            raise ValueError(
                f"objective_probs must be 3 non-negative numbers summing to 1, got {self.objective_probs}."
            )
        if not 0.0 < self.document_min_ratio <= 1.0:
            raise ValueError(f"document_min_ratio must be in (0, 1], got {self.document_min_ratio}.")
        if not 0.0 < self.poisson_lambda < math.inf:
            raise ValueError(
                f"poisson_lambda (the mean span length of the token objective) must be a positive number, "
                f"got {self.poisson_lambda}."
            )
        if not _is_int(self.max_span_length) or self.max_span_length < 1:
            raise ValueError(f"max_span_length must be an integer >= 1, got {self.max_span_length}.")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 8):
            raise ValueError(
                f"max_length must be None or an integer >= 8 (room for a blank and its span), got {self.max_length}."
            )
        if self.pad_to_multiple_of is not None and (
            not _is_int(self.pad_to_multiple_of) or self.pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of must be None or an integer >= 1, got {self.pad_to_multiple_of}.")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {self.seed}.")
        if self.return_tensors not in ("pt", "np"):
            raise ValueError(
                f"return_tensors must be 'pt' (torch tensors) or 'np' (numpy arrays), got {self.return_tensors!r}."
            )

    def _sentence_end_ids(self) -> list[int]:
        """Ids of tokens whose text ends a sentence (English or Chinese punctuation)."""
        vocab = self.tokenizer.get_vocab()
        ids = list(vocab.values())
        texts = self.tokenizer.batch_decode([[i] for i in ids])
        return sorted(i for i, text in zip(ids, texts, strict=True) if text.strip().endswith(SENTENCE_ENDS))

    def torch_call(self, examples: list[Mapping]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("got an empty batch (no examples); the collator needs at least one example.")
        checked = [self._checked_example(example, index) for index, example in enumerate(examples)]
        rng = self._generator(checked)
        rows = []
        for index, (ids, sentence_ends) in enumerate(checked):
            try:
                rows.append(self._layout(ids, sentence_ends, rng))
            except ValueError as error:
                raise ValueError(f"example {index}: {error}") from None
        return batch_infilling(rows, self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def numpy_call(self, examples: list[Mapping]) -> dict[str, np.ndarray]:
        return {name: tensor.numpy() for name, tensor in self.torch_call(examples).items()}

    def layout(self, ids: np.ndarray, sentence_ends: list[int] | None = None) -> dict[str, np.ndarray]:
        """One example's blank-infilling layout, shortened to `max_length` if needed; `sentence_ends` overrides
        the punctuation-based sentence boundaries. The same layout as the row of a batch of this example alone."""
        checked = self._checked_example({"input_ids": ids, "sentence_ends": sentence_ends}, 0)
        return self._layout(*checked, self._generator([checked]))

    def _checked_example(self, example: Mapping, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The example's `input_ids` (a non-empty row of vocabulary ids) and optional `sentence_ends` as int64
        arrays, after checking them; errors name the example's `index` in the batch."""
        if "input_ids" not in example:
            raise ValueError(f"example {index} has no input_ids (its keys: {sorted(example)}).")
        ids = np.asarray(example["input_ids"])
        if ids.size == 0:
            raise ValueError(f"example {index} has empty input_ids; drop empty texts before collating.")
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"example {index}: input_ids must be one flat list of integer token ids, got an array of shape "
                f"{ids.shape} and dtype {ids.dtype}."
            )
        if not 0 <= ids.min() <= ids.max() < self.vocab_size:
            raise ValueError(
                f"example {index}: input_ids hold ids outside the tokenizer's vocabulary of {self.vocab_size} "
                f"(min {ids.min()}, max {ids.max()}); tokenize with the collator's tokenizer."
            )
        sentence_ends = example.get("sentence_ends")
        if sentence_ends is not None:
            try:
                sentence_ends = _checked_sentence_ends(sentence_ends, len(ids))
            except ValueError as error:
                raise ValueError(f"example {index}: {error}") from None
        return ids.astype(np.int64, copy=False), sentence_ends

    def _generator(self, examples: list[tuple[np.ndarray, np.ndarray | None]]) -> np.random.Generator:
        """The Generator of one batch of checked examples, seeded by `seed` and a digest of the batch (see the
        class docstring)."""
        digest = hashlib.blake2b(digest_size=16)
        for ids, sentence_ends in examples:
            ends = np.zeros(0, dtype=np.int64) if sentence_ends is None else sentence_ends
            digest.update(np.array([len(ids), len(ends), sentence_ends is None], dtype=np.int64).tobytes())
            digest.update(ids.tobytes())
            digest.update(ends.tobytes())
        return np.random.default_rng([self.entropy, int.from_bytes(digest.digest(), "little")])

    def _layout(
        self, ids: np.ndarray, sentence_ends: np.ndarray | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """`layout` drawing from `rng`: the special tokens at the ends stay in Part A, the text between them is
        blanked and, with `max_length`, shortened from its end until the layout fits."""
        lead = _run_length(self.is_special[ids])
        if lead == len(ids):
            raise ValueError(
                f"all its {len(ids)} input_ids are special tokens (e.g. [CLS], eos, padding), so there is no text "
                "to blank; drop such rows (empty texts) before collating."
            )
        trail = _run_length(self.is_special[ids[::-1]])
        if sentence_ends is not None:
            sentence_ends = sentence_ends - lead
        prefix, body, suffix = ids[:lead], ids[lead : len(ids) - trail], ids[len(ids) - trail :]
        objective = min(int(np.searchsorted(self.objective_cdf, rng.random(), side="right")), 2)
        if self.max_length is None:
            return self._draw(prefix, body, suffix, objective, sentence_ends, rng)
        budget = min(len(body), self._text_room(lead, trail))
        # The budget strictly falls while it is above 1, so the loop ends; one text token always fits.
        while budget > 1:
            example = self._draw(prefix, body[:budget], suffix, objective, sentence_ends, rng)
            overflow = len(example["input_ids"]) - self.max_length
            if overflow <= 0:
                return example
            budget = max(budget - overflow, 1)
        return self._draw(prefix, body[:1], suffix, objective, sentence_ends, rng)

    def _text_room(self, lead: int, trail: int) -> int:
        """Positions of `max_length` left for the text and its Part B by `lead` + `trail` special tokens at the
        ends; raises when fewer than the 3 of the smallest layout (one text token: its blank, `<|startofpiece|>`
        and the token) are left."""
        room = self.max_length - lead - trail
        if room < 3:
            raise ValueError(
                f"its special tokens at the ends ({lead} leading, {trail} trailing: [CLS], eos, padding, ...) take "
                f"{lead + trail} of the max_length={self.max_length} positions, leaving {max(room, 0)}, and a blank "
                f"needs 3 (the blank, <|startofpiece|> and one text token). Raise max_length to at least "
                f"{lead + trail + 3}, or pass rows without padding (the collator pads batches itself)."
            )
        return room

    def _draw(
        self,
        prefix: np.ndarray,
        body: np.ndarray,
        suffix: np.ndarray,
        objective: int,
        sentence_ends: np.ndarray | None,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """The layout of one draw of spans of `objective` in the non-empty `body`."""
        spans = self._spans(objective, body, sentence_ends, rng)
        return self._assemble(prefix, body, suffix, spans, objective, rng)

    def _spans(
        self, objective: int, body: np.ndarray, sentence_ends: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """`[k, 2]` (start, end) of the masked spans in the non-empty `body`, sorted; at least one."""
        if objective == 0:
            return self._token_spans(len(body), rng)
        if objective == 1:
            return self._sentence_spans(body, sentence_ends, rng)
        length = max(1, round(rng.uniform(self.document_min_ratio, 1.0) * len(body)))
        return np.array([[len(body) - length, len(body)]], dtype=np.int64)

    def _token_spans(self, n: int, rng: np.random.Generator) -> np.ndarray:
        target = math.ceil(self.mask_ratio * n)
        cdf = self.span_length_cdf
        draws = np.minimum(np.searchsorted(cdf, rng.random(target), side="right"), cdf.size - 1) + 1
        ends = np.minimum(np.cumsum(draws), target)
        count = int(np.searchsorted(ends, target) + 1)
        lengths = np.diff(np.concatenate([[0], ends[:count]]))
        free = n - target - (count - 1)
        places = np.sort(rng.integers(0, free + 1, size=count))
        starts = places + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
        return np.stack([starts, starts + lengths], axis=1)

    def _sentence_spans(
        self, body: np.ndarray, sentence_ends: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        if sentence_ends is None:
            ends = np.flatnonzero(self.is_sentence_end[body]) + 1
        else:
            ends = sentence_ends[(sentence_ends > 0) & (sentence_ends < len(body))]
        bounds = np.unique(np.concatenate([[0], ends, [len(body)]]))
        sentences = np.stack([bounds[:-1], bounds[1:]], axis=1)
        order = rng.permutation(len(sentences))
        covered = np.cumsum(sentences[order, 1] - sentences[order, 0])
        count = int(np.searchsorted(covered, self.mask_ratio * len(body)) + 1)
        return sentences[np.sort(order[:count])]

    def _assemble(
        self,
        prefix: np.ndarray,
        body: np.ndarray,
        suffix: np.ndarray,
        spans: np.ndarray,
        objective: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        starts, ends = spans[:, 0], spans[:, 1]
        depth = np.zeros(len(body) + 1, dtype=np.int64)
        np.add.at(depth, starts + 1, 1)
        np.add.at(depth, ends, -1)
        inside = np.cumsum(depth)[: len(body)] > 0  # masked, but not the span's first token (that becomes the blank)
        marked = body.copy()
        marked[starts] = self.blank_ids[objective]
        part_a = np.concatenate([prefix, marked[~inside], suffix])
        blanks = len(prefix) + starts - np.concatenate([[0], np.cumsum(ends - starts - 1)[:-1]]).astype(np.int64)
        order = rng.permutation(len(spans)) if self.shuffle_spans else np.arange(len(spans))
        pieces = [body[starts[k] : ends[k]] for k in order]
        return infilling_arrays(part_a, pieces, blanks[order], *self.span_ids)


def _checked_sentence_ends(sentence_ends: list[int], length: int) -> np.ndarray:
    """`sentence_ends` as an int64 array, after checking they are increasing offsets within the example."""
    ends = np.asarray(sentence_ends)
    integers = ends.size == 0 or ends.dtype.kind in "iu"
    if not integers or ends.ndim != 1 or (ends < 1).any() or (ends > length).any() or (np.diff(ends) <= 0).any():
        raise ValueError(
            f"sentence_ends must be increasing token offsets in 1..{length} (exclusive ends of the sentences in "
            f"input_ids), got {sentence_ends}."
        )
    return ends.astype(np.int64)


def _is_int(value: object) -> bool:
    """Whether `value` is an integer (a Python or numpy int, not a bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _run_length(flags: np.ndarray) -> int:
    """Length of the leading run of True values."""
    return int(np.argmin(flags)) if not flags.all() else len(flags)


__all__ = ["DataCollatorForBlankInfilling"]
