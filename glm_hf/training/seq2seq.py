"""Sequence-to-sequence fine-tuning with GLM: the source is Part A (ending in `[gMASK]` unless it holds a blank) and
the target is generated into the blank as Part B, so `Seq2SeqTrainer(predict_with_generate=True)` works as is.

`DataCollatorForGLMSeq2Seq` builds the training layout; `GLMForConditionalGeneration.generate()` given such a batch
generates from Part A only; `Seq2SeqMetrics` turns `Seq2SeqTrainer` predictions into exact match and token F1.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from transformers import EvalPrediction, PreTrainedTokenizerBase

from ..model.blank_infilling import batch_infilling, infilling_example
from .collator import require_glm_tokenizer


@dataclass
class DataCollatorForGLMSeq2Seq:
    """Batches `{source_key: str, target_key: str}` examples as GLM blank infilling: Part A is the tokenized source
    (with `[gMASK]` appended when it has no blank), Part B is `<|startofpiece|> target` with targets
    `target <|endofpiece|>`. Over-long sources or targets raise an error (nothing is cut silently)."""

    tokenizer: PreTrainedTokenizerBase
    source_key: str = "source"
    target_key: str = "target"
    max_source_length: int | None = None
    max_target_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        require_glm_tokenizer(self.tokenizer, type(self).__name__)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows = []
        for example in examples:
            if self.source_key not in example or self.target_key not in example:
                raise ValueError(
                    f"Seq2seq examples need {self.source_key!r} and {self.target_key!r}; got {sorted(example)}."
                )
            source = self._source_ids(example[self.source_key])
            target = tok(example[self.target_key], add_special_tokens=False)["input_ids"]
            self._check_length("source", source, self.max_source_length, example[self.source_key])
            self._check_length("target", target, self.max_target_length, example[self.target_key])
            rows.append(infilling_example(source, [target], tok.mask_token_ids, tok.sop_token_id, tok.eop_token_id))
        return batch_infilling(rows, tok.pad_token_id, self.pad_to_multiple_of)

    def _source_ids(self, text: str) -> list[int]:
        """The source as Part A: `[gMASK]` is added to the text (so tokenizers that wrap inputs, e.g. `[CLS] ...
        <eos>`, place it as THUDM's do) unless it has a blank; a trailing `<sop>` (ChatGLM's template) is left
        to the layout, which starts Part B with it."""
        tok = self.tokenizer
        ids = tok(text)["input_ids"]
        if not set(ids) & set(tok.mask_token_ids):
            ids = tok(f"{text} {tok.gmask_token}")["input_ids"]
        return ids[:-1] if ids and ids[-1] == tok.sop_token_id else ids

    @staticmethod
    def _check_length(name: str, ids: list[int], limit: int | None, text: str) -> None:
        if limit is not None and len(ids) > limit:
            raise ValueError(
                f"A {name} has {len(ids)} tokens, more than max_{name}_length={limit}: {text[:60]!r}... "
                f"Raise the limit or shorten the data."
            )


@dataclass
class Seq2SeqMetrics:
    """`compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)` on GLM: compares each generated fill (the
    tokens after `<|startofpiece|>`, up to `<|endofpiece|>`) with the reference span in the labels. Reports exact
    match of the stripped texts and token-level F1 (whitespace tokens, or characters for text without spaces)."""

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        fills = [self.fill(row) for row in np.asarray(prediction.predictions)]
        references = [self.reference(row) for row in np.asarray(prediction.label_ids)]
        return {
            "exact_match": float(np.mean([f == r for f, r in zip(fills, references, strict=True)])),
            "token_f1": float(np.mean([token_f1(f, r) for f, r in zip(fills, references, strict=True)])),
        }

    def fill(self, generated: np.ndarray) -> str:
        tok = self.tokenizer
        ids = generated.tolist()
        start = ids.index(tok.sop_token_id) + 1 if tok.sop_token_id in ids else len(ids)
        span = ids[start:]
        span = span[: span.index(tok.eop_token_id)] if tok.eop_token_id in span else span
        return tok.decode([i for i in span if i >= 0], skip_special_tokens=True).strip()

    def reference(self, labels: np.ndarray) -> str:
        ids = [i for i in labels.tolist() if i != -100 and i != self.tokenizer.eop_token_id]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the multiset overlap of whitespace tokens (characters when the reference has no spaces, e.g. Chinese)."""
    split = str.split if " " in reference.strip() else lambda text: [c for c in text if not c.isspace()]
    predicted, expected = Counter(split(prediction)), Counter(split(reference))
    overlap = sum((predicted & expected).values())
    if not predicted or not expected or not overlap:
        return float(predicted == expected)
    precision, recall = overlap / sum(predicted.values()), overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


__all__ = ["DataCollatorForGLMSeq2Seq", "Seq2SeqMetrics", "token_f1"]
