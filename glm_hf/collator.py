"""DataCollatorForBlankInfilling: GLM pretraining batches from tokenized text (token, sentence and document blanks)."""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import DataCollatorMixin

from .blank_infilling import batch_infilling, infilling_arrays

OBJECTIVES = ("token", "sentence", "document")
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
    eos) stay in Part A and are never masked.

    Output: `input_ids`, `position_ids` `[batch, 2, seq]`, `attention_mask` as Part A lengths `[batch]` (rows are
    right-padded) and `labels` (-100 outside Part B). With `max_length`, the text is shortened until the finished
    layout fits. Deterministic under `seed` (a numpy Generator).
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
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
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
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must leave room for a blank and its span (>= 8), got {self.max_length}.")
        self.rng = np.random.default_rng(self.seed)
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
        if self.sentence_end_token_ids is None:
            self.sentence_end_token_ids = self._sentence_end_ids()
        # Per-id lookup tables: indexing them is much cheaper than np.isin on every example.
        self.vocab_size = len(tok)
        self.is_special = np.zeros(self.vocab_size, dtype=bool)
        self.is_special[sorted(set(tok.all_special_ids))] = True
        self.is_sentence_end = np.zeros(self.vocab_size, dtype=bool)
        self.is_sentence_end[self.sentence_end_token_ids] = True
        self.objective_cdf = np.cumsum(probs)

    def _sentence_end_ids(self) -> list[int]:
        """Ids of tokens whose text ends a sentence (English or Chinese punctuation)."""
        vocab = self.tokenizer.get_vocab()
        ids = list(vocab.values())
        texts = self.tokenizer.batch_decode([[i] for i in ids])
        return sorted(i for i, text in zip(ids, texts, strict=True) if text.strip().endswith(SENTENCE_ENDS))

    def torch_call(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [
            self.layout(np.asarray(example["input_ids"], dtype=np.int64), example.get("sentence_ends"))
            for example in examples
        ]
        return batch_infilling(rows, self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def layout(self, ids: np.ndarray, sentence_ends: list[int] | None = None) -> dict[str, np.ndarray]:
        """One example's blank-infilling layout, shortened to `max_length` if needed; `sentence_ends` overrides
        the punctuation-based sentence boundaries."""
        if ids.size and not 0 <= ids.min() <= ids.max() < self.vocab_size:
            raise ValueError(
                f"input_ids hold ids outside the tokenizer's vocabulary of {self.vocab_size} "
                f"(min {ids.min()}, max {ids.max()}); tokenize with the collator's tokenizer."
            )
        lead = _run_length(self.is_special[ids])
        if sentence_ends is not None:
            sentence_ends = _checked_sentence_ends(sentence_ends, len(ids)) - lead
        trail = _run_length(self.is_special[ids[lead:][::-1]])
        prefix, body, suffix = ids[:lead], ids[lead : len(ids) - trail], ids[len(ids) - trail :]
        objective = min(int(np.searchsorted(self.objective_cdf, self.rng.random(), side="right")), 2)
        budget = len(body)
        if self.max_length is not None:
            budget = max(min(budget, self.max_length - len(prefix) - len(suffix)), 0)
        while True:
            spans = self._spans(objective, body[:budget], sentence_ends)
            example = self._assemble(prefix, body[:budget], suffix, spans, objective)
            overflow = 0 if self.max_length is None else len(example["input_ids"]) - self.max_length
            if overflow <= 0:
                return example
            budget = max(budget - overflow, 0)

    def _spans(self, objective: int, body: np.ndarray, sentence_ends: np.ndarray | None) -> np.ndarray:
        """`[k, 2]` (start, end) of the masked spans in `body`, sorted."""
        if len(body) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        if objective == 0:
            return self._token_spans(len(body))
        if objective == 1:
            return self._sentence_spans(body, sentence_ends)
        length = max(1, round(self.rng.uniform(self.document_min_ratio, 1.0) * len(body)))
        return np.array([[len(body) - length, len(body)]], dtype=np.int64)

    def _token_spans(self, n: int) -> np.ndarray:
        target = math.ceil(self.mask_ratio * n)
        cdf = self.span_length_cdf
        draws = np.minimum(np.searchsorted(cdf, self.rng.random(target), side="right"), cdf.size - 1) + 1
        ends = np.minimum(np.cumsum(draws), target)
        count = int(np.searchsorted(ends, target) + 1)
        lengths = np.diff(np.concatenate([[0], ends[:count]]))
        free = n - target - (count - 1)
        places = np.sort(self.rng.integers(0, free + 1, size=count))
        starts = places + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
        return np.stack([starts, starts + lengths], axis=1)

    def _sentence_spans(self, body: np.ndarray, sentence_ends: np.ndarray | None) -> np.ndarray:
        if sentence_ends is None:
            ends = np.flatnonzero(self.is_sentence_end[body]) + 1
        else:
            ends = sentence_ends[(sentence_ends > 0) & (sentence_ends < len(body))]
        bounds = np.unique(np.concatenate([[0], ends, [len(body)]]))
        sentences = np.stack([bounds[:-1], bounds[1:]], axis=1)
        order = self.rng.permutation(len(sentences))
        covered = np.cumsum(sentences[order, 1] - sentences[order, 0])
        count = int(np.searchsorted(covered, self.mask_ratio * len(body)) + 1)
        return sentences[np.sort(order[:count])]

    def _assemble(
        self, prefix: np.ndarray, body: np.ndarray, suffix: np.ndarray, spans: np.ndarray, objective: int
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
        order = self.rng.permutation(len(spans)) if self.shuffle_spans else np.arange(len(spans))
        pieces = [body[starts[k] : ends[k]] for k in order]
        return infilling_arrays(part_a, pieces, blanks[order], *self.span_ids)


def _checked_sentence_ends(sentence_ends: list[int], length: int) -> np.ndarray:
    """`sentence_ends` as an array, after checking they are increasing offsets within the example."""
    ends = np.asarray(sentence_ends, dtype=np.int64)
    if ends.ndim != 1 or (ends < 1).any() or (ends > length).any() or (np.diff(ends) <= 0).any():
        raise ValueError(
            f"sentence_ends must be increasing token offsets in 1..{length} (exclusive ends of the sentences in "
            f"input_ids), got {list(sentence_ends)}."
        )
    return ends


def _run_length(flags: np.ndarray) -> int:
    """Length of the leading run of True values."""
    return int(np.argmin(flags)) if not flags.all() else len(flags)


__all__ = ["DataCollatorForBlankInfilling"]
