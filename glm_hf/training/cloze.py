"""Cloze-style NLU inputs (PET): a pattern with a blank, verbalizer words per label, and multiple-choice batches.

`cloze_config` turns a pattern and label words into the `GLMConfig` fields that `GLMForSequenceClassification`
reads, so a classifier takes plain tokenizer output (and works in `pipeline("text-classification")`).
`DataCollatorForClozeChoice` batches (context with a blank, choices, label) examples for `GLMForMultipleChoice`.
"""

import string
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

TEXT_SLOT = "{text}"


def split_pattern(pattern: str, blank_tokens: list[str]) -> tuple[str, str]:
    """The markup before and after `{text}` in a cloze pattern such as "{text} It was [MASK].", checked: `{text}`
    exactly once and no other placeholder (`{{` / `}}` are literal braces), and exactly one of `blank_tokens`.
    Raises a ValueError naming the pattern otherwise."""
    rule = f"must contain {TEXT_SLOT} exactly once and no other {{...}} placeholder (write {{{{ and }}}} for braces)"
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as error:
        raise ValueError(f"The pattern {pattern!r} {rule}; it does not parse: {error}.") from error
    slots = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if slots != [("text", "", None)]:
        written = [
            "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            for name, spec, conversion in slots
        ]
        found = ", ".join(written) or "none"
        raise ValueError(f"The pattern {pattern!r} {rule}; it has {found}.")
    slot = next(i for i, (_, name, _, _) in enumerate(parts) if name is not None)
    before = "".join(literal for literal, *_ in parts[: slot + 1])
    after = "".join(literal for literal, *_ in parts[slot + 1 :])
    if sum(before.count(blank) + after.count(blank) for blank in blank_tokens) != 1:
        raise ValueError(f"The pattern must contain exactly one blank ({', '.join(blank_tokens)}), got {pattern!r}.")
    return before, after


def cloze_config(tokenizer: PreTrainedTokenizerBase, pattern: str, label_words: dict[str, str]) -> dict:
    """`GLMConfig` keyword arguments for classifying `pattern.format(text=...)` by the word in its blank.

    `pattern` holds `{text}` once and one blank, e.g. "{text} It was [MASK]." (see `split_pattern`);
    `label_words` maps each label, in label-id order, to its verbalizer, e.g. {"negative": "bad", "positive":
    "great"}. A verbalizer is tokenized as it would read in the filled pattern (with the space before the blank, if
    the pattern has one), so its tokens are the ones the model learned to put there. The classifier puts every
    text into the pattern (`GLMForSequenceClassification`'s `plain_text`).
    """
    blank_tokens = tokenizer.convert_ids_to_tokens(tokenizer.mask_token_ids)
    before, after = split_pattern(pattern, blank_tokens)
    if not label_words:
        raise ValueError("label_words must name at least one label and its verbalizer.")
    space = " " if any(f" {blank}" in pattern for blank in blank_tokens) else ""
    verbalizers = [tokenizer(space + word, add_special_tokens=False)["input_ids"] for word in label_words.values()]
    empty = [label for label, ids in zip(label_words, verbalizers, strict=True) if not ids]
    if empty:
        raise ValueError(f"The verbalizers of {empty} tokenize to nothing.")
    return {
        "verbalizer_ids": verbalizers,
        "cloze_prefix_ids": tokenizer(before, add_special_tokens=False)["input_ids"],
        "cloze_suffix_ids": tokenizer(after, add_special_tokens=False)["input_ids"],
        "id2label": dict(enumerate(label_words)),
        "label2id": {label: i for i, label in enumerate(label_words)},
    }


@dataclass
class DataCollatorForClozeChoice:
    """Batches examples `{context_key: "text with [MASK]", choices_key: [choice, ...], label_key: int}` into
    `GLMForMultipleChoice` inputs: all choices of an example in one sequence, plus `labels` (the correct choice)."""

    tokenizer: PreTrainedTokenizerBase
    context_key: str = "context"
    choices_key: str = "choices"
    label_key: str = "label"

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        missing = [key for key in (self.context_key, self.choices_key) if key not in examples[0]]
        if missing:
            raise ValueError(f"Multiple-choice examples need the keys {missing}; got {sorted(examples[0])}.")
        contexts = self.tokenizer([example[self.context_key] for example in examples])
        batch = self.tokenizer.build_inputs_for_multiple_choice(
            contexts, [list(example[self.choices_key]) for example in examples]
        )
        if self.label_key in examples[0]:
            batch["labels"] = torch.tensor([int(example[self.label_key]) for example in examples])
        return batch


__all__ = ["DataCollatorForClozeChoice", "cloze_config", "split_pattern"]
